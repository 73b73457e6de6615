"""SaShiMi raw-audio generation (Goel et al. 2022): training, exact recurrent sampling."""

#: one line for `ssm --help`
DESCRIPTION = "SaShiMi waveform generation (piano, SC09, ...); exact recurrent sampling"
#: the pip extra holding what this app needs beyond ssmcore: pip install 'ssm-suite[audio]'
EXTRA = "audio"
