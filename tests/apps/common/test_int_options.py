"""Every verb's ``--seed`` takes a whole number >= 0 (numpy's generators take no negative seed), and the
``--batch-size`` of the verbs that do not check it with their other sizes one >= 1: else argparse's one line
naming the option, exit 2, before any work."""

from __future__ import annotations

import pytest

from apps.common.cli import main

VERBS = [
    ["sashimi", "prepare", "piano"], ["sashimi", "generate"], ["synthetic", "suite"], ["synthetic", "robustness"],
    ["lra", "prepare", "listops"], ["lra", "prepare", "pathfinder"], ["sssd", "impute"], ["sssd", "forecast"],
    ["sssd", "prepare", "mujoco"], ["sssd", "generate"], ["speech", "prepare"], ["smoke", "prepare"],
    ["pendulum", "prepare"], ["vis4mer", "prepare", "digit-backbone"], ["vis4mer", "prepare", "moving-mnist"],
    ["s4nd", "prepare"],
]


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_a_negative_seed_is_one_line_naming_the_option(verb, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*verb, "--seed", "-1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and err[-1].endswith("argument --seed: must be a whole number >= 0, got -1"), err


@pytest.mark.parametrize("verb", [["speech", "zero-shot"], ["speech", "score"], ["s4nd", "zero-shot"]], ids=" ".join)
def test_a_batch_size_under_one_is_one_line_naming_the_option(verb, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*verb, "--batch-size", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and err[-1].endswith("argument --batch-size: must be a whole number >= 1, got 0"), err
