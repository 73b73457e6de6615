"""``apps.common.training.EMAWeights``: the weights it keeps are the exponential moving average of the
steps' weights, the layers' kernel caches follow its swaps, and a recipe asking for it fits, resumes and
loads from the CLI."""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import torch
import yaml
from torch import nn

from apps.common.checkpoint import read_checkpoint
from apps.common.cli import main
from apps.common.training import EMAWeights
from apps.speech.module import load_speech_classifier
from ssmcore.layers.s4d import S4D
from tests.apps.speech.speech_sets import TINY_RECIPE, WORDS, tiny_set


class _Toy(pl.LightningModule):
    """An S4D layer and a linear head regressing a fixed target: enough steps that the weights move."""

    def __init__(self) -> None:
        super().__init__()
        self.ssm = S4D(d_model=4, d_state=8)
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.ssm(x)[0])  # (B, L, H) -> (B, L, 1); the layer also returns its state

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


class _Snapshots(pl.Callback):
    """Every parameter in float64 after each optimiser step."""

    def __init__(self) -> None:
        self.seen: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.seen.append({k: v.detach().double().clone() for k, v in pl_module.named_parameters()})


def _data(n: int = 6) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 32, 4, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.cumsum(1)[..., :1] / 8), batch_size=1)


def test_kept_weights_are_the_moving_average_of_every_step(tmp_path):
    torch.manual_seed(0)
    model, snaps, decay = _Toy(), _Snapshots(), 0.6
    trainer = pl.Trainer(max_epochs=1, callbacks=[EMAWeights(decay=decay), snaps], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(model, _data())
    # the average starts at the first step's weights, then avg <- decay avg + (1 - decay) new, in float64
    average = dict(snaps.seen[0])
    for step in snaps.seen[1:]:
        average = {k: decay * average[k] + (1 - decay) * step[k] for k in average}
    assert len(snaps.seen) == 6 and not torch.allclose(snaps.seen[-1]["head.weight"], average["head.weight"])
    for k, v in model.named_parameters():
        torch.testing.assert_close(v.double(), average[k], rtol=1e-5, atol=1e-6)


def test_swapped_weights_reach_the_cached_kernels():
    """Lightning swaps weights through ``param.data`` (no version bump): a kernel cached under no_grad before
    the swap must not be reused after it."""
    torch.manual_seed(0)
    model = _Toy().eval()
    x = _data().dataset.tensors[0][:2]
    ema = EMAWeights(decay=0.5)
    ema.setup(trainer=None, pl_module=model, stage="fit")
    with torch.no_grad():
        for p in ema._average_model.module.parameters():  # an average that differs from the current weights
            p.mul_(0.5)
        averaged = copy.deepcopy(ema._average_model.module)
        current = model(x)  # caches the current weights' kernel
        ema.on_validation_epoch_start(trainer=None, pl_module=model)
        torch.testing.assert_close(model(x), averaged(x), rtol=1e-6, atol=1e-6)
        ema.on_validation_epoch_end(trainer=None, pl_module=model)
        torch.testing.assert_close(model(x), current, rtol=0, atol=0)


def test_recipe_with_averaged_weights_fits_resumes_and_loads(tmp_path_factory, tmp_path):
    data = tiny_set(tmp_path_factory, per_word=10)
    recipe = yaml.safe_load(open(TINY_RECIPE))
    recipe["trainer"]["max_epochs"] = 2
    recipe["trainer"]["callbacks"] = [{"class_path": "apps.common.training.EMAWeights", "init_args": {"decay": 0.9}}]
    path = tmp_path / "ema.yaml"
    path.write_text(yaml.safe_dump(recipe))
    args = ["speech", "fit", "-c", str(path), "--data.root", str(data), "--data.words", str(WORDS),
            "--trainer.default_root_dir", str(tmp_path / "run")]
    assert main(args) == 0
    ckpts = tmp_path / "run" / "checkpoints"
    saved = read_checkpoint(ckpts / "last.ckpt")
    assert set(saved["current_model_state"]) == set(saved["state_dict"])  # the average, and the weights to resume
    assert any(not torch.equal(saved["state_dict"][k], saved["current_model_state"][k]) for k in saved["state_dict"])
    assert main([*args, "--trainer.max_epochs", "3", "--ckpt_path", str(ckpts / "last.ckpt")]) == 0
    resumed = read_checkpoint(ckpts / "last.ckpt")
    assert resumed["epoch"] == 2 and float(resumed["averaging_state"]["n_averaged"]) > float(
        saved["averaging_state"]["n_averaged"])
    model, _ = load_speech_classifier(ckpts / "best.ckpt")  # the averaged weights, as every verb reads them
    best = read_checkpoint(ckpts / "best.ckpt")["state_dict"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, best[k], rtol=0, atol=0)
