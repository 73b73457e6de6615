"""S5's pendulum regression (Smith, Warrington, Linderman 2023, Sec. 6.3): irregularly sampled noisy frames."""

#: one line for `ssm --help`
DESCRIPTION = "pendulum regression from irregularly sampled noisy frames: S5 with per-step time steps"
#: the pip extra holding what this app needs beyond ssmcore: pip install 'ssm-suite[apps]'
EXTRA = "apps"
