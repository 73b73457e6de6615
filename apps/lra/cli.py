"""``ssm lra``: Long Range Arena and DLR's two token-level tasks.

``ssm lra prepare listops|pathfinder --out DIR`` generates the procedural tasks in their released
layouts; ``ssm lra fit -c recipes/lra/<recipe>.yaml`` trains; ``ssm lra test ... --ckpt_path`` writes
``test_metrics.json``; ``ssm lra table --runs runs/lra`` tabulates them beside the published numbers.
"""

from apps.common.cli import lazy_verb
from apps.common.pretrained import export_weights_verb
from apps.lra.data import LRAData
from apps.lra.module import LRAModule

MODULE = LRAModule
DATAMODULE = LRAData
LINKS = [("data.task", "model.task")]
VERBS = {
    "prepare": (
        lazy_verb("apps.lra.prepare", "prepare"),
        "generate ListOps or Pathfinder in the LRA layout: ssm lra prepare listops --out data/lra; "
        "ssm lra prepare pathfinder --size 32 --out data/lra",
    ),
    "table": (
        lazy_verb("apps.lra.table", "table"),
        "test accuracy per task x layer beside the published numbers: ssm lra table --runs runs/lra",
    ),
    "export-weights": export_weights_verb("lra"),
}
