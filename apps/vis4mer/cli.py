"""``ssm vis4mer``: long-video classification with the ViS4mer multi-scale S4 decoder."""

from apps.common.errors import UserError
from apps.common.pretrained import export_weights_verb
from apps.vis4mer.data import VideoData
from apps.vis4mer.features import extract_features_cli
from apps.vis4mer.module import VideoClassifier
from apps.vis4mer.prepare import prepare_moving_mnist_cli

#: what ``ssm vis4mer prepare <what>`` can build
PREPARERS = ("moving-mnist", "digit-backbone")


def prepare(argv: list[str]) -> None:
    """``ssm vis4mer prepare moving-mnist ...`` (:mod:`apps.vis4mer.prepare`) or ``ssm vis4mer prepare
    digit-backbone ...`` (:mod:`apps.vis4mer.digit_backbone`, which reads the video splits of the former)."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: ssm vis4mer prepare {" + ",".join(PREPARERS) + "} [options]  (--help after the name for its "
              "options)\n\n  moving-mnist    long Moving-MNIST videos in the LVU layout\n"
              "  digit-backbone  a frozen ResNet-18 trained on the digits of the moving-mnist training videos")
        return
    if argv[0] not in PREPARERS and not argv[0].startswith("-"):
        raise UserError(f"unknown dataset {argv[0]!r} to prepare; choose one of {', '.join(PREPARERS)}")
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
