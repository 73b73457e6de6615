"""A tiny procedural task (delayed recall) that proves the training plumbing end to end."""

#: one line for `ssm --help`
DESCRIPTION = "delayed-recall smoke task: proves training, checkpoints, resume and logging"
#: the pip extra holding what this app needs beyond ssmcore: pip install 'ssm-suite[apps]'
EXTRA = "apps"
