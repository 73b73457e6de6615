"""LightningCLI with ssm-suite's defaults: runs under ``runs/<app>/<recipe>/`` with last and best
checkpoints (written atomically), CSV and TensorBoard logs, a rich progress bar, seeding,
and a one-line error for a bad recipe."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI

from apps.common.config_checks import check_values, check_yaml, remap_data_paths
from apps.common.errors import UserError
from apps.common.io import atomic_write_text, check_writable
from apps.common.predictions import PredictionWriter, has_predict_step
from apps.common.runs import LIGHTNING_CKPT_NAMES, fit_run_dir, run_of_checkpoint, runs_root
from apps.common.training import (
    AtomicCheckpointIO,
    default_callbacks,
    default_loggers,
    quiet_lightning_internals,
)


def model_options(args: list[str]) -> list[str]:
    """The explicit ``--model.KEY VALUE`` and ``--model.KEY=VALUE`` options of ``args``, in order, as
    ``[--model.KEY, VALUE, ...]`` (``--model.KEY`` alone when no value follows it)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--model.") and "=" in a:
            key, value = a.split("=", 1)
            out += [key, value]
        elif a.startswith("--model."):
            out.append(a)
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                out.append(args[i + 1])
                i += 1
        i += 1
    return out


def _state_dict_mismatch(message: str, ckpt_path: Any, overrides: list[str]) -> str:
    """One line for torch's multi-line "Error(s) in loading state_dict" ``message``: the first difference,
    how many more, and the cause (the explicit ``--model.*`` options, else a checkpoint of another model)."""
    details = [line.strip().rstrip(".") for line in message.splitlines()[1:] if line.strip()]
    first = details[0] if details else "the parameters differ"
    size = re.match(r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[.*?\])\) from checkpoint, "
                    r"the shape in current model is torch\.Size\((\[.*?\])\)", first)
    if size:
        first = f"{size[1]} is {size[2]} in the checkpoint, {size[3]} in the model"
    more = f", and {len(details) - 1} more difference{'s' if len(details) > 2 else ''}" if len(details) > 1 else ""
    if len(overrides) == 1:
        cause = f"{overrides[0]} changes the trained architecture; drop it (the checkpoint's value is used without it)"
    elif overrides:
        cause = (f"one of {', '.join(overrides)} changes the trained architecture; drop it (the checkpoint's value "
                 "is used without it)")
    else:
        cause = "it was made by another model or another version of it; use a checkpoint of this app's model"
    return f"checkpoint {ckpt_path} does not fit the model ({first}{more}): {cause}"


def _lookup(tree: Any, path: list[str]) -> tuple[bool, Any]:
    """``(True, value)`` of the dotted ``path`` in nested dicts / namespaces, ``(False, None)`` if absent."""
    for part in path:
        if hasattr(tree, "__contains__") and not isinstance(tree, str) and part in tree:
            tree = tree[part]
        else:
            return False, None
    return True, tree


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

    def parse_arguments(self, parser: Any, args: Any) -> None:
        """Parse as LightningCLI does, keeping the argument list for :meth:`_parse_ckpt_path`."""
        self._cli_args = [str(a) for a in args] if isinstance(args, (list, tuple)) else []
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """With ``--ckpt_path``, the checkpoint's model hyper-parameters fill the config (as Lightning does), read
        by :func:`apps.common.checkpoint.read_checkpoint` (allow-listed, once) and upgraded from older spellings.

        The ``--model.*`` options given explicitly on the command line then apply on top of them (parsed and
        type-checked again by the parser), with a note where one changes the checkpoint's value; a recipe's
        ``model:`` values do not: the checkpoint describes the model that was trained.
        """
        from apps.common.checkpoint import foreign_checkpoint, read_checkpoint, upgrade_hparams

        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and ckpt_path not in LIGHTNING_CKPT_NAMES and not Path(ckpt_path).is_file():
            # said now, before the run writes its config and its loggers make their folders
            raise UserError(f"checkpoint not found: {ckpt_path} (--ckpt_path takes a .ckpt file written by a fit, "
                            f"e.g. {self.run_dir / 'checkpoints' / 'best.ckpt'})")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        blob = read_checkpoint(ckpt_path)
        hparams = dict(blob.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        foreign = foreign_checkpoint(ckpt_path, blob, self._model_class)
        if foreign:  # e.g. another app's checkpoint: said in one line, not as an option the parser lacks
            raise UserError(foreign)
        hparams.pop("_class_path", None)  # one LightningModule per app: the checkpoint's class is the app's
        hparams = upgrade_hparams(self._model_class, hparams)
        self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        overrides = model_options(getattr(self, "_cli_args", []))
        if not overrides:
            return
        self.config = self.parser.parse_args([subcommand, *overrides], namespace=self.config)
        self._model_overrides = []  # the explicit options that changed a checkpoint value
        for key in dict.fromkeys(k for k in overrides if k.startswith("--model.")):
            path = key[len("--model."):].split(".")
            found, before = _lookup(hparams, path)
            _, after = _lookup(self.config[subcommand]["model"], path)
            after = after.as_dict() if hasattr(after, "as_dict") else after
            if found and before != after:
                self._model_overrides.append(key)
                print(f"note: {key} {after} overrides the checkpoint's {before}", flush=True)

    def _run_subcommand(self, subcommand: str) -> None:
        """Run ``subcommand``; a checkpoint whose weights do not fit the configured model is one line."""
        try:
            super()._run_subcommand(subcommand)
        except RuntimeError as e:
            if "Error(s) in loading state_dict" not in str(e):
                raise
            raise UserError(_state_dict_mismatch(str(e), self.config[subcommand].get("ckpt_path"),
                                                 getattr(self, "_model_overrides", []))) from None

    def add_arguments_to_parser(self, parser: Any) -> None:
        for source, target in getattr(self.app_module, "LINKS", []):
            parser.link_arguments(source, target)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        run_dir = self._run_dir(Path(config.get("default_root_dir") or self.run_dir))
        self._quiet_expected_warnings()
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
        if config.get("enable_progress_bar") is False:  # --trainer.enable_progress_bar false: no bar of ours
            callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
        if not config.get("plugins"):
            config["plugins"] = [AtomicCheckpointIO()]
        if self.subcommand == "predict":
            if not has_predict_step(self.model):
                raise UserError(f"{type(self.model).__name__} has no predictions to write; use `test` or the app's "
                                "own verbs (see its --help)")
            callbacks = [*callbacks, PredictionWriter(run_dir)]
        return super()._instantiate_trainer(config, callbacks)

    def _quiet_expected_warnings(self) -> None:
        """Lightning's checkpoint warnings that describe what the user asked for, not a mistake: resuming a run
        finds its checkpoint folder full, and evaluating a checkpoint kept elsewhere (a downloaded one, another
        run's) cannot restore the training's best-k bookkeeping, which validate, test and predict never use."""
        ckpt_path = self.config.get(str(self.subcommand), {}).get("ckpt_path")
        if self.subcommand != "fit":
            warnings.filterwarnings("ignore", message="The dirpath has changed from")
        elif ckpt_path:
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")

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

    def _load_data(self, stage: str) -> None:
        """Load the data before the run writes its config and its loggers make their folders, so that a dataset the
        run cannot read (missing, malformed) stops it with nothing written.  Every app's data module loads in
        ``setup()`` once, so Lightning's own call then finds the data loaded."""
        self.datamodule.setup(stage)

    def before_fit(self) -> None:
        self._load_data("fit")
        self._save_config()

    def before_validate(self) -> None:
        self._load_data("validate")
        self._save_config()

    def before_test(self) -> None:
        self._load_data("test")
        self._save_config()

    def after_fit(self) -> None:
        self._report("fit")

    def after_validate(self) -> None:
        self._report("validate")

    def after_test(self) -> None:
        self._report("test")

    def after_predict(self) -> None:
        self._report("predict")


def _recipe_hint(app: str, path: Path) -> str:
    """Where ``app``'s recipes are: the source tree's folder by its full path when the command runs elsewhere,
    naming the recipe there when one of that name exists."""
    folder = Path(__file__).resolve().parents[2] / "recipes" / app
    if not folder.is_dir() or folder == (Path.cwd() / "recipes" / app).resolve():
        return f"the recipes are in recipes/{app}/"
    if (folder / path.name).is_file():
        return f"did you mean {folder / path.name}? Relative paths are read from the current folder, {Path.cwd()}"
    return f"the recipes are in {folder}/"


def run_lightning(app: str, mod: ModuleType, verb: str, args: list[str]) -> SSMCLI:
    """Run ``verb`` of LightningCLI for ``app`` with ``args`` (recipe, overrides)."""
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    configs = _config_paths(args)
    for path in configs:
        if not path.is_file():
            raise UserError(f"recipe file not found: {path} ({_recipe_hint(app, path)})")
        check_yaml(path)
    # we pass the arguments ourselves, so LightningCLI's warning about sys.argv is noise; so is its tip
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    quiet_lightning_internals()
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
