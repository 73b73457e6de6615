"""``ssm pendulum``: S5's irregularly sampled pendulum regression.

``ssm pendulum prepare --out data/pendulum`` generates the task; ``ssm pendulum fit -c
recipes/pendulum/s5.yaml`` trains S5 with the observation times, ``recipes/pendulum/s5_blind.yaml``
the same model without them.
"""

from apps.common.pretrained import export_weights_verb
from apps.pendulum.data import PendulumData, prepare
from apps.pendulum.module import PendulumModule

MODULE = PendulumModule
DATAMODULE = PendulumData
LINKS: list = []
VERBS = {
    "prepare": (prepare, "generate the irregular pendulum frames: ssm pendulum prepare --out data/pendulum"),
    "export-weights": export_weights_verb("pendulum"),
}
