"""``ssm vis4mer``: long-video classification with the ViS4mer multi-scale S4 decoder."""

from apps.vis4mer.data import VideoData
from apps.vis4mer.features import extract_features_cli
from apps.vis4mer.module import VideoClassifier
from apps.vis4mer.prepare import prepare

MODULE = VideoClassifier
DATAMODULE = VideoData
LINKS = [
    ("data.dataset", "model.dataset"),
    ("data.task", "model.task"),
]
VERBS = {
    "prepare": (prepare, "write long Moving-MNIST videos in the LVU layout: ssm vis4mer prepare moving-mnist "
                         "--out data/moving_mnist --videos 300 --seconds 60 [--tiny]; "
                         "or a frozen digit backbone: ssm vis4mer prepare digit-backbone"),
    "extract-features": (extract_features_cli, "cache frozen-backbone frame tokens: ssm vis4mer extract-features "
                                               "--videos DIR --out CACHE [--backbone linear|vit_b_16|...]"),
}
