"""SSSD: diffusion imputation and forecasting of multivariate series with S4 denoisers."""

#: one line for `ssm --help`
DESCRIPTION = "SSSD: diffusion imputation and forecasting of series (rm/mnr/bm/tf masks, CRPS, DDIM/DPM samplers)"
#: the pip extra holding what this app needs beyond ssmcore: pip install 'ssm-suite[timeseries]'
EXTRA = "timeseries"
