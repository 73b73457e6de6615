"""One recipe per DLR task, each naming its own task and a registered layer."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from apps.synthetic.tasks import TASKS
from ssmcore.registry import LAYERS

RECIPES = Path(__file__).resolve().parents[3] / "recipes" / "synthetic"


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_has_its_recipe(task):
    recipe = yaml.safe_load((RECIPES / f"{task}.yaml").read_text())
    assert recipe["data"]["task"] == task
    assert recipe["model"]["layer"]["name"] in LAYERS
    assert set(recipe) == {"seed_everything", "trainer", "model", "data"}


def test_every_recipe_names_a_known_task():
    for path in RECIPES.glob("*.yaml"):
        assert yaml.safe_load(path.read_text())["data"]["task"] in TASKS, path.name
