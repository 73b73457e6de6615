"""DLR's synthetic sequence tasks and the PTD noise-robustness test."""

#: one line for `ssm --help`
DESCRIPTION = "DLR's synthetic sequence tasks (Shift, CumSum, Sort, MIPS, ...) and PTD noise robustness"
#: the pip extra holding what this app needs beyond ssmcore: pip install 'ssm-suite[synthetic]'
EXTRA = "synthetic"
