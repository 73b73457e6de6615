"""``ssm synthetic``: the DLR synthetic suite (eleven atomic tasks) and the PTD robustness study.

``ssm synthetic fit -c recipes/synthetic/shift.yaml`` trains one task through LightningCLI;
``ssm synthetic suite`` trains every task x layer pair and tabulates R^2;
``ssm synthetic robustness`` compares S4D / S4-PTD / S5 / S5-PTD under Fourier-mode input noise.
"""

from apps.common.pretrained import export_weights_verb
from apps.synthetic.data import SyntheticData
from apps.synthetic.module import SyntheticModule
from apps.synthetic.robustness import robustness
from apps.synthetic.suite import suite

MODULE = SyntheticModule
DATAMODULE = SyntheticData
LINKS = [
    ("data.task", "model.task"),
    ("data.num_shifts", "model.num_shifts"),
    ("data.mips_dim", "model.mips_dim"),
]
VERBS = {
    "suite": (
        suite,
        "train every task x layer pair, write results.md/.csv and heatmap.png: "
        "ssm synthetic suite --layers s4d,s5,dlr --length 512",
    ),
    "robustness": (
        robustness,
        "sequential MNIST-5k under Fourier-mode noise, S4D vs S4-PTD (and S5 vs S5-PTD): "
        "ssm synthetic robustness --downsample 2",
    ),
    "export-weights": export_weights_verb("synthetic"),
}
