"""``ssm smoke``: the plumbing check (delayed recall with a small SSM)."""

from apps.common.pretrained import export_weights_verb
from apps.smoke.data import DelayedRecallData, prepare
from apps.smoke.module import DelayedRecallModule

MODULE = DelayedRecallModule
DATAMODULE = DelayedRecallData
LINKS = [("data.vocab", "model.vocab")]
VERBS = {
    "prepare": (prepare, "write fixed train/val/test splits: ssm smoke prepare --out data/smoke"),
    "export-weights": export_weights_verb("smoke"),
}
