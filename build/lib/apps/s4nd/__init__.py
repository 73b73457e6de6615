"""Resolution-agnostic image classification with S4ND: train at one resolution, test at others."""

#: one line for `ssm --help`
DESCRIPTION = "S4ND images: train at one resolution, test zero-shot at others, progressive resizing"
#: the pip extra holding what this app needs beyond ssmcore: pip install 'ssm-suite[images]'
EXTRA = "images"
