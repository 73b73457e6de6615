"""ViS4mer long-video classification (Islam & Bertasius 2022): decord frames, cached frozen-backbone
tokens and the multi-scale S4 decoder."""

#: one line for `ssm --help`
DESCRIPTION = "ViS4mer long videos: frozen frame tokens, multi-scale S4 decoder (LVU, Breakfast, COIN)"
#: the pip extra holding what this app needs beyond ssmcore: pip install 'ssm-suite[video]'
EXTRA = "video"
