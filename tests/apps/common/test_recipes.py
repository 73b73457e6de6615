"""Every recipe resolves with ``--print_config`` and its model builds from the resolved values."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
import yaml

from apps.common.cli import load_app, main

RECIPES = sorted((Path(__file__).resolve().parents[3] / "recipes").glob("*/*.yaml"))


def _resolved(app: str, recipe: Path, capsys) -> dict:
    with pytest.raises(SystemExit) as e:
        main([app, "fit", "-c", str(recipe), "--print_config"])
    assert e.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def _model(app: str, config: dict) -> torch.nn.Module:
    mod = load_app(app)
    model = config["model"]
    if "class_path" in model:
        module, _, name = model["class_path"].rpartition(".")
        cls, args = getattr(importlib.import_module(module), name), dict(model.get("init_args") or {})
    else:
        cls, args = mod.MODULE, dict(model)
    data = config["data"].get("init_args", config["data"]) if "class_path" in config["data"] else config["data"]
    for source, target in getattr(mod, "LINKS", []):  # link targets are left out of the printed config
        args[target.split(".", 1)[1]] = data[source.split(".", 1)[1]]
    return cls(**args)


@pytest.mark.parametrize("recipe", RECIPES, ids=[f"{p.parent.name}/{p.stem}" for p in RECIPES])
def test_recipe_resolves_and_builds_its_model(recipe, capsys):
    app = recipe.parent.name
    config = _resolved(app, recipe, capsys)
    with torch.device("meta"):  # the paper-sized models are built without allocating their weights
        model = _model(app, config)
    assert sum(p.numel() for p in model.parameters()) > 0
