"""LightningCLI with ssm-suite's defaults: runs under ``runs/<app>/<recipe>/`` with last and best
checkpoints (written atomically), CSV and TensorBoard logs, a rich progress bar, seeding,
and a one-line error for a bad recipe."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from apps.common.config_checks import check_values, check_yaml, remap_data_paths
from apps.common.errors import UserError
from apps.common.io import atomic_write_text, check_writable
from apps.common.predictions import PredictionWriter, has_predict_step
from apps.common.runs import fit_run_dir, run_of_checkpoint, runs_root
from apps.common.training import AtomicCheckpointIO, default_callbacks, default_loggers


class _NoAdverts(logging.Filter):
    """Drops Lightning's product tips ("Tip: try installing ..."), which bury the run's own lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip: For seamless" not in record.getMessage()


_NO_ADVERTS = _NoAdverts()


def _config_paths(args: list[str]) -> list[Path]:
    paths = []
    for i, a in enumerate(args):
        if a in ("-c", "--config") and i + 1 < len(args):
            paths.append(Path(args[i + 1]))
        elif a.startswith("--config="):
            paths.append(Path(a.split("=", 1)[1]))
    return paths


class SSMCLI(LightningCLI):
    """LightningCLI that adds ssm-suite's loggers, checkpoints, progress bar and atomic checkpoint I/O."""

    def __init__(self, *args: Any, run_dir: Path, app_module: ModuleType, **kwargs: Any) -> None:
        self.run_dir, self.app_module = run_dir, app_module
        super().__init__(*args, **kwargs)

    def before_instantiate_classes(self) -> None:
        config = self.config.get(str(self.subcommand), self.config)
        remap_data_paths(config)
        check_values(config)

    def _parse_ckpt_path(self) -> None:
        """With ``--ckpt_path``, the checkpoint's model hyper-parameters fill the config (as Lightning does), read
        by :func:`apps.common.checkpoint.read_checkpoint` (allow-listed, once) and upgraded from older spellings."""
        from apps.common.checkpoint import read_checkpoint, upgrade_hparams

        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        hparams = dict(read_checkpoint(ckpt_path).get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        hparams.pop("_class_path", None)  # one LightningModule per app: the checkpoint's class is the app's
        hparams = upgrade_hparams(self._model_class, hparams)
        self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def add_arguments_to_parser(self, parser: Any) -> None:
        for source, target in getattr(self.app_module, "LINKS", []):
            parser.link_arguments(source, target)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        run_dir = self._run_dir(Path(config.get("default_root_dir") or self.run_dir))
        config["default_root_dir"] = str(run_dir)
        if config.get("logger") in (None, True):
            config["logger"] = default_loggers(run_dir)
        user_callbacks = config.get("callbacks") or []
        if not isinstance(user_callbacks, list):
            user_callbacks = [user_callbacks]
        if not any(isinstance(c, ModelCheckpoint) for c in [*user_callbacks, *callbacks]):
            model = self.model
            callbacks = [*callbacks, *default_callbacks(run_dir, getattr(model, "monitor", "val/loss"),
                                                         getattr(model, "monitor_mode", "min"))]
        if not config.get("plugins"):
            config["plugins"] = [AtomicCheckpointIO()]
        if self.subcommand == "predict":
            if not has_predict_step(self.model):
                raise UserError(f"{type(self.model).__name__} has no predictions to write; use `test` or the app's "
                                "own verbs (see its --help)")
            callbacks = [*callbacks, PredictionWriter(run_dir)]
        return super()._instantiate_trainer(config, callbacks)

    def _run_dir(self, requested: Path) -> Path:
        """fit: a new run folder unless resuming (apps.common.runs); other verbs: the checkpoint's run."""
        ckpt_path = self.config.get(str(self.subcommand), {}).get("ckpt_path")
        if self.subcommand == "fit":
            run_dir = fit_run_dir(self.run_dir, requested, ckpt_path)
        elif requested == self.run_dir and ckpt_path:
            run_dir = run_of_checkpoint(ckpt_path) or requested
        else:
            run_dir = requested
        check_writable(run_dir, "run folder")  # before any training, not at the first checkpoint
        return run_dir

    def _report(self, what: str) -> None:
        trainer = self.trainer
        if not trainer.is_global_zero:
            return
        lines = [f"{what} done; wrote under {self.trainer.default_root_dir}:"]
        ckpt = trainer.checkpoint_callback
        if what == "fit" and isinstance(ckpt, ModelCheckpoint) and ckpt.dirpath:
            for path in sorted(Path(ckpt.dirpath).glob("*.ckpt")):
                lines.append(f"  checkpoint: {path}")
            if ckpt.best_model_score is not None:
                lines.append(f"  best {ckpt.monitor}: {float(ckpt.best_model_score):.4g}")
        for logger in trainer.loggers:
            lines.append(f"  {type(logger).__name__.replace('Logger', '')} logs: {logger.log_dir}")
        extra = list(getattr(self.model, "written_paths", None) or [])
        extra += [p for c in trainer.callbacks if isinstance(c, PredictionWriter) for p in c.written]
        for path in extra:
            lines.append(f"  {path}")
        print("\n".join(lines), flush=True)

    def _save_config(self) -> None:
        """Write the resolved config to ``<run_dir>/config.yaml`` for fit, ``config.<verb>.yaml`` for
        validate and test (beside the run's, never over it); rank zero, atomically.

        Done here rather than by Lightning's SaveConfigCallback, whose parser cannot be pickled
        for ``ddp_spawn``.
        """
        if self.trainer.global_rank != 0:
            return
        run_dir = Path(self.trainer.default_root_dir)
        parser = self._parser(self.subcommand)
        text = parser.dump(self.config.get(str(self.subcommand), self.config), skip_none=False)
        name = "config.yaml" if self.subcommand == "fit" else f"config.{self.subcommand}.yaml"
        atomic_write_text(run_dir / name, text)

    def before_fit(self) -> None:
        self._save_config()

    def before_validate(self) -> None:
        self._save_config()

    def before_test(self) -> None:
        self._save_config()

    def after_fit(self) -> None:
        self._report("fit")

    def after_validate(self) -> None:
        self._report("validate")

    def after_test(self) -> None:
        self._report("test")

    def after_predict(self) -> None:
        self._report("predict")


def run_lightning(app: str, mod: ModuleType, verb: str, args: list[str]) -> SSMCLI:
    """Run ``verb`` of LightningCLI for ``app`` with ``args`` (recipe, overrides)."""
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    configs = _config_paths(args)
    for path in configs:
        if not path.is_file():
            raise UserError(f"recipe file not found: {path} (the recipes are in recipes/{app}/)")
        check_yaml(path)
    # we pass the arguments ourselves, so LightningCLI's warning about sys.argv is noise; so is its tip
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_NO_ADVERTS)
    if verb != "fit" and "--ckpt_path" not in " ".join(args) and not any(a in ("-h", "--help") for a in args):
        print(f"note: no --ckpt_path given; `ssm {app} {verb}` runs the freshly initialised model", flush=True)
    recipe = configs[0].stem if configs else "default"
    run_dir = runs_root() / app / recipe
    return SSMCLI(
        model_class=mod.MODULE,
        datamodule_class=mod.DATAMODULE,
        run_dir=run_dir,
        app_module=mod,
        args=[verb, *args],
        seed_everything_default=0,
        trainer_defaults={"default_root_dir": str(run_dir)},
        save_config_callback=None,
        parser_kwargs={"exit_on_error": False, verb: {"exit_on_error": False}},
        auto_configure_optimizers=False,
    )
