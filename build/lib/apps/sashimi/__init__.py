"""SaShiMi raw-audio generation and Speech Commands classification/evaluation."""

#: one line for `ssm --help`
DESCRIPTION = "SaShiMi waveform generation; Speech Commands classifiers, zero-shot 8 kHz, IS/mIS/AM/FID"
#: the pip extra holding what this app needs beyond ssmcore: pip install 'ssm-suite[audio]'
EXTRA = "audio"
