"""``ssm lra table``: our test results beside the published rows and chance."""

from __future__ import annotations

import csv
import json
import os

import pytest

from apps.common.cli import main
from apps.lra.table import CHANCE, read_published


def _result(folder, task, layer, acc, mtime=None, size=None):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "test_metrics.json"
    path.write_text(json.dumps({"task": task, "size": size, "layer": layer, "metrics": {"test/acc": acc}}))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_published_rows_carry_their_sources_and_averages():
    rows = {r["model"]: r for r in read_published()}
    assert {"S4", "S4D-LegS", "S5", "S5-PTD", "Mega", "SGConv", "Liquid-S4"} <= set(rows)
    assert rows["S4"]["avg"] == "86.09" and rows["S5"]["listops"] == "62.15" and rows["S4D-LegS"]["pathx"] == "91.95"
    for row in rows.values():
        accs = [float(row[k]) for k in ("listops", "text", "retrieval", "image", "pathfinder", "pathx")]
        assert abs(sum(accs) / 6 - float(row["avg"])) < 0.02, row["model"]
        assert "arXiv" in row["source"]


def test_table_writes_markdown_and_csv_with_chance_and_latest_runs(tmp_path, capsys):
    runs = tmp_path / "runs"
    _result(runs / "listops_s4d_cpu", "listops", "s4d", 0.50, mtime=1000)
    _result(runs / "listops_s4d_cpu-v2", "listops", "s4d", 0.55, mtime=2000)  # the latest wins
    _result(runs / "pathfinder32_s4d_cpu", "pathfinder", "s4d", 0.80, size=32)
    _result(runs / "mnist_s4d_cpu", "mnist", "s4d", 0.975)
    _result(runs / "seg", "pathfinder_segmentation", "dlr", 0.9, size=32)
    (runs / "broken").mkdir()
    (runs / "broken" / "test_metrics.json").write_text("{not json")
    out = tmp_path / "tables"
    assert main(["lra", "table", "--runs", str(runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipped" in printed and "wrote" in printed
    md = (out / "lra_table.md").read_text()
    assert "| ours: s4d | 55.00 |" in md and "80.00" in md and "| chance | 10.00 | 50.00 |" in md
    assert "S5" in md and "Other tasks" in md and "97.50" in md
    with open(out / "lra_table.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][:8] == ["model", "ListOps", "Text", "Retrieval", "Image", "Pathfinder", "Path-X", "Avg"]
    ours = next(r for r in rows if r[0] == "ours: s4d")
    assert ours[1] == "55.00" and ours[5] == "80.00" and ours[7] == ""  # no average over missing tasks
    chance = next(r for r in rows if r[0] == "chance")
    assert [float(v) for v in chance[1:7]] == list(CHANCE.values())
    with open(out / "lra_runs.csv") as f:
        assert len(list(csv.reader(f))) == 1 + 5  # every readable run, older ones too


def test_table_with_no_results_still_lists_the_papers(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["lra", "table", "--runs", str(tmp_path / "empty")]) == 0
    out = capsys.readouterr().out
    assert "No test results" in out and "S4D-LegS" in out
    assert (tmp_path / "empty" / "lra_table.md").is_file()


def test_table_refuses_a_missing_runs_folder(tmp_path, capsys):
    assert main(["lra", "table", "--runs", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "nowhere is not a folder" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("size,column", [(32, "pathfinder"), (64, "pathfinder64"), (None, "pathfinder")])
def test_pathfinder_sizes_go_to_their_own_columns(size, column):
    from apps.lra.table import column_of

    assert column_of({"task": "pathfinder", "size": size}) == column


def test_table_plots_the_validation_curves_of_runs_with_csv_logs(tmp_path, capsys):
    runs = tmp_path / "runs"
    _result(runs / "mnist_s4d_cpu", "mnist", "s4d", 0.97)
    _result(runs / "no_logs", "listops", "s4d", 0.3)
    logs = runs / "mnist_s4d_cpu" / "csv" / "version_0"
    logs.mkdir(parents=True)
    (logs / "metrics.csv").write_text("epoch,step,train/loss,val/acc\n0,10,2.0,\n0,124,,0.86\n1,249,,0.93\n")
    assert main(["lra", "table", "--runs", str(runs)]) == 0
    png = runs / "lra_curves.png"
    assert "wrote " + str(png) in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from apps.lra.table import val_curve

    assert val_curve(runs / "mnist_s4d_cpu") == [(124, 86.0), (249, 93.0)]
    assert val_curve(runs / "no_logs") == []
