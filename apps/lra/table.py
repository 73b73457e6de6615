"""``ssm lra table --runs runs/lra``: our test accuracies per task and layer beside the published LRA numbers.

Every ``test_metrics.json`` under ``--runs`` (written by ``ssm lra test``) is one result.  The main
table has the six LRA tasks and their average (over the tasks a row has all six of; otherwise the
average is left blank), with the papers' rows from ``apps/lra/published.csv`` (each with its source)
and a chance row; a second table holds our other tasks (sequential MNIST-5k, Pathfinder at other
sizes, DLR's ListOpsSubTrees and PathfinderSegmentation).  When a task and layer has several runs, the
latest is shown; ``lra_runs.csv`` lists them all.  ``lra_curves.png`` plots each run's validation
accuracy against the training step (from the CSV logs that ``ssm lra fit`` writes into the run folder),
one panel per task, with the task's chance level and, where published, the best published figure.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apps.common.errors import UserError
from apps.common.report import markdown_table, write_csv, write_markdown

#: the LRA columns: (key in published.csv and in our results, title)
LRA_COLUMNS = (("listops", "ListOps"), ("text", "Text"), ("retrieval", "Retrieval"), ("image", "Image"),
               ("pathfinder", "Pathfinder"), ("pathx", "Path-X"))
#: chance accuracy (%) of each task: 10 classes for ListOps / Image, 2 for the rest
CHANCE = {"listops": 10.0, "text": 50.0, "retrieval": 50.0, "image": 10.0, "pathfinder": 50.0, "pathx": 50.0}
PUBLISHED = Path(__file__).with_name("published.csv")


@dataclass(frozen=True)
class Result:
    """One ``test_metrics.json``: its run folder, column key, layer label, accuracy (%) and file time."""

    run: Path
    column: str
    layer: str
    acc: float
    mtime: float
    record: dict[str, Any]


def read_published(path: Path = PUBLISHED) -> list[dict[str, str]]:
    """The rows of ``published.csv``: model, the six task accuracies and avg (%), and source."""
    with open(path, newline="") as f:
        return list(csv.DictReader(row for row in f if not row.startswith("#")))


def column_of(record: dict[str, Any]) -> str:
    """The column a result belongs to: the LRA task, ``pathfinder64`` for Pathfinder at another size, or the task."""
    task = record["task"]
    if task == "pathfinder" and record.get("size") not in (None, 32):
        return f"pathfinder{record['size']}"
    return task


def collect(runs: Path) -> list[Result]:
    """Every readable ``test_metrics.json`` under ``runs`` (a malformed one is skipped with a note)."""
    results = []
    for path in sorted(runs.rglob("test_metrics.json")):
        try:
            record = json.loads(path.read_text())
            acc = 100.0 * float(record["metrics"]["test/acc"])
            layer = str(record["layer"])
        except (OSError, ValueError, KeyError, TypeError):
            print(f"note: skipped {path}: not a test_metrics.json written by `ssm lra test`")
            continue
        results.append(Result(path.parent, column_of(record), layer, acc, path.stat().st_mtime, record))
    return results


def val_curve(run: Path) -> list[tuple[int, float]]:
    """``[(step, val acc %)]`` from the CSV logs of a run folder (``csv/version_*/metrics.csv``; [] if none)."""
    points: dict[int, float] = {}
    for path in sorted(run.glob("csv/version_*/metrics.csv")):
        try:
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    if row.get("val/acc") and row.get("step"):
                        points[int(float(row["step"]))] = 100.0 * float(row["val/acc"])
        except (OSError, ValueError, csv.Error):
            print(f"note: skipped {path}: not a metrics.csv written by `ssm lra fit`")
    return sorted(points.items())


def plot_curves(results: list[Result], published: list[dict[str, str]], path: Path) -> Path | None:
    """One panel per task: validation accuracy per step of every run with a curve, chance and the best
    published figure as dashed lines.  Returns the PNG's path, or None when no run has a curve."""
    curves = [(r, val_curve(r.run)) for r in sorted(results, key=lambda r: (r.column, str(r.run)))]
    curves = [(r, c) for r, c in curves if c]
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from apps.common.report import save_figure

    columns = sorted({r.column for r, _ in curves})
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.4), squeeze=False)
    for ax, column in zip(axes[0], columns):
        for r, c in curves:
            if r.column == column:
                steps, accs = zip(*c)
                ax.plot(steps, accs, marker="o", ms=3, label=f"{r.run.name} (test {r.acc:.1f})")
        if column in CHANCE:
            ax.axhline(CHANCE[column], color="grey", ls=":", lw=1, label="chance")
        best = [float(row[column]) for row in published if row.get(column)]
        if best:
            ax.axhline(max(best), color="black", ls="--", lw=1, label=f"best published ({max(best):.1f})")
        ax.set_title(column)
        ax.set_xlabel("training step")
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def _fmt(value: float | str | None) -> str:
    if value is None or value == "":
        return ""
    return f"{float(value):.2f}"


def build_tables(results: list[Result], published: list[dict[str, str]]) -> tuple[list[str], list[list[Any]],
                                                                                  list[str], list[list[Any]]]:
    """``(header, rows)`` of the LRA table and of the other-tasks table (values as text, % with 2 decimals)."""
    latest: dict[tuple[str, str], Result] = {}
    for r in results:
        key = (r.layer, r.column)
        if key not in latest or r.mtime >= latest[key].mtime:
            latest[key] = r
    keys = [k for k, _ in LRA_COLUMNS]
    header = ["model", *[title for _, title in LRA_COLUMNS], "Avg", "source"]
    rows: list[list[Any]] = []
    for layer in sorted({layer for layer, col in latest if col in keys}):
        accs = [latest[(layer, k)].acc if (layer, k) in latest else None for k in keys]
        avg = sum(accs) / len(accs) if all(a is not None for a in accs) else None
        rows.append([f"ours: {layer}", *map(_fmt, accs), _fmt(avg), "this run (ssm lra test)"])
    for row in published:
        rows.append([row["model"], *[_fmt(row.get(k)) for k in keys], _fmt(row.get("avg")), row.get("source", "")])
    chance = [CHANCE[k] for k in keys]
    rows.append(["chance", *map(_fmt, chance), _fmt(sum(chance) / len(chance)), "1 / classes"])
    other_cols = sorted({col for _, col in latest if col not in keys})
    other_header = ["model", *other_cols]
    other_rows = [[f"ours: {layer}", *[_fmt(latest[(layer, c)].acc) if (layer, c) in latest else "" for c in other_cols]]
                  for layer in sorted({layer for layer, col in latest if col not in keys})]
    return header, rows, other_header, other_rows


def table(argv: list[str]) -> None:
    """``ssm lra table --runs runs/lra [--out DIR]``: print and write lra_table.md / .csv, lra_runs.csv and
    lra_curves.png (validation accuracy per step of the runs that have CSV logs)."""
    p = argparse.ArgumentParser(prog="ssm lra table",
                                description="Tabulate test accuracy per task x layer beside the published LRA numbers.")
    p.add_argument("--runs", default="runs/lra", help="folder searched for test_metrics.json (default runs/lra)")
    p.add_argument("--out", default=None, help="folder for lra_table.md/.csv and lra_runs.csv (default: --runs)")
    a = p.parse_args(argv)
    runs = Path(a.runs)
    if not runs.is_dir():
        raise UserError(f"--runs {runs} is not a folder; train and test first (ssm lra fit ..., then "
                        "ssm lra test ... --ckpt_path .../best.ckpt), or point --runs at the runs folder")
    results = collect(runs)
    published = read_published()
    header, rows, other_header, other_rows = build_tables(results, published)
    lines = ["# Long Range Arena: test accuracy (%)", ""]
    if not results:
        lines += [f"No test results under {runs} yet (`ssm lra test ... --ckpt_path ...` writes test_metrics.json); "
                  "the published rows are shown alone.", ""]
    lines += markdown_table(header, rows)
    if other_rows:
        lines += ["", "## Other tasks: test accuracy (%)", "", *markdown_table(other_header, other_rows)]
    lines += ["", f"Our rows: the latest `ssm lra test` per task and layer under {runs}; published rows: "
              "apps/lra/published.csv (sources in its last column)."]
    out = Path(a.out) if a.out else runs
    written = [write_markdown(out / "lra_table.md", lines),
               write_csv(out / "lra_table.csv", header, rows)]
    if other_rows:
        written.append(write_csv(out / "lra_other_tasks.csv", other_header, other_rows))
    run_rows = [[str(r.run), r.column, r.layer, f"{r.acc:.2f}", r.record.get("ckpt_path") or ""]
                for r in sorted(results, key=lambda r: (r.column, r.layer, r.mtime))]
    written.append(write_csv(out / "lra_runs.csv", ["run", "task", "layer", "test_acc", "ckpt_path"], run_rows))
    figure = plot_curves(results, published, out / "lra_curves.png")
    if figure is not None:
        written.append(figure)
    print("\n".join(lines))
    print()
    for path in written:
        print(f"wrote {path}")
