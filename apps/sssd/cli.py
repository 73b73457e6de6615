"""``ssm sssd``: diffusion imputation and forecasting of multivariate series with S4 denoisers (SSSD)."""

from apps.common.cli import lazy_verb
from apps.common.pretrained import export_weights_verb
from apps.sssd.data import SeriesData
from apps.sssd.forecast import forecast
from apps.sssd.infer import impute
from apps.sssd.module import SSSDModule
from apps.sssd.prepare import prepare

MODULE = SSSDModule
DATAMODULE = SeriesData
LINKS = [("data.channels", "model.channels")]
VERBS = {
    "prepare": (prepare, "build a dataset: ssm sssd prepare mujoco [--n 10000] | stocks | eeg | ett | electricity | ptbxl "
                          "| irregular [--out DIR]"),
    "impute": (impute, "impute NaN entries: ssm sssd impute --ckpt CKPT --input data.csv|npy --out imputed.csv "
                       "[--samples 100 --sampler ddim --steps 50] [--time-column NAME|none] [--times T.npy]"),
    "forecast": (forecast, "forecast H steps: ssm sssd forecast --ckpt CKPT --input data.csv|npy --out f.csv "
                           "--horizon H [--holdout] [--point shrunk|mean|median]"),
    "generate": (lazy_verb("apps.sssd.generate", "generate"),
                 "sample new series, nothing observed (a model trained with mask ratio 1): "
                 "ssm sssd generate --ckpt CKPT --n 16 --out new.npy|csv [--length L]"),
    "export": (lazy_verb("apps.sssd.export", "export"),
               "the denoiser as a torch.export program: ssm sssd export --ckpt CKPT --out DIR (writes DIR/model.pt2)"),
    "export-weights": export_weights_verb("sssd"),
}
