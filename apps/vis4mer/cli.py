"""``ssm vis4mer``: long-video classification with the ViS4mer multi-scale S4 decoder."""

from apps.common.pretrained import export_weights_verb
from apps.vis4mer.data import VideoData
from apps.vis4mer.features import extract_features_cli
from apps.vis4mer.module import VideoClassifier
from apps.vis4mer.prepare import prepare_moving_mnist_cli


def prepare(argv: list[str]) -> None:
    """``ssm vis4mer prepare moving-mnist ...`` (:mod:`apps.vis4mer.prepare`) or ``ssm vis4mer prepare
    digit-backbone ...`` (:mod:`apps.vis4mer.digit_backbone`, which reads the video splits of the former)."""
    if argv[:1] == ["digit-backbone"]:
        from apps.vis4mer.digit_backbone import prepare_digit_backbone

        prepare_digit_backbone(argv[1:])
        return
    prepare_moving_mnist_cli(argv)


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
    "export-weights": export_weights_verb("vis4mer"),
}
