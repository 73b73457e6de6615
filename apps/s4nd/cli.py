"""``ssm s4nd``: resolution-agnostic image classification with S4ND (train at one resolution, test at others)."""

from apps.common.pretrained import export_weights_verb
from apps.s4nd.data import ImageData, prepare
from apps.s4nd.module import ImageClassifier
from apps.s4nd.zero_shot import zero_shot

MODULE = ImageClassifier
DATAMODULE = ImageData
LINKS = [
    ("data.channels", "model.in_channels"),
    ("data.resolution", "model.train_resolution"),
    ("data.eval_resolutions", "model.eval_resolutions"),
]
VERBS = {
    "prepare": (prepare, "write MNIST-5k as an ImageFolder tree: ssm s4nd prepare mnist --out data/mnist5k"),
    "zero-shot": (zero_shot, "accuracy of a checkpoint at many resolutions: ssm s4nd zero-shot --ckpt CKPT "
                             "--resolutions 7,14,28,56 [--baseline CKPT]"),
    "export-weights": export_weights_verb("s4nd"),
}
