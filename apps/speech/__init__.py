"""Speech Commands classification from raw audio: SSM classifiers, zero-shot sample rates, SC09 scoring."""

#: one line for `ssm --help`
DESCRIPTION = "Speech Commands classifiers from raw audio; zero-shot 8 kHz; IS/mIS/AM/FID of generated SC09"
#: the pip extra holding what this app needs beyond ssmcore: pip install 'ssm-suite[audio]'
EXTRA = "audio"
