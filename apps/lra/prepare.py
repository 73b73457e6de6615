"""``ssm lra prepare listops|pathfinder``: generate the procedural LRA tasks in their released layouts.

Both write into a temporary sibling of ``--out`` and rename it into place
(:mod:`apps.common.prepared`): an existing folder that an earlier prepare made is kept (``--force``
rebuilds it, deleting only its own files), and a non-empty folder that prepare did not make is refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from apps.common.cli import seed_int
from apps.common.errors import UserError
from apps.common.prepared import already_prepared, building

KINDS = ("listops", "pathfinder")


def _positive(parser: argparse.ArgumentParser, args: argparse.Namespace, names: list[str]) -> None:
    for name in names:
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")


def prepare_listops(argv: list[str]) -> None:
    """``ssm lra prepare listops --out DIR``: ListOps (Nangia & Bowman 2018, as in LRA) in ``listops-1000/``."""
    p = argparse.ArgumentParser(prog="ssm lra prepare listops",
                                description="Generate ListOps in the LRA layout listops-1000/basic_{train,val,test}.tsv.")
    p.add_argument("--out", default="data/lra", help="output folder (default data/lra)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--n-train", type=int, default=96_000)
    p.add_argument("--n-val", type=int, default=2_000)
    p.add_argument("--n-test", type=int, default=2_000)
    p.add_argument("--min-len", type=int, default=500, help="shortest expression in tokens (LRA: 500)")
    p.add_argument("--max-len", type=int, default=2_000, help="longest expression in tokens (LRA: 2000)")
    p.add_argument("--max-depth", type=int, default=10)
    p.add_argument("--max-args", type=int, default=10)
    p.add_argument("--force", action="store_true",
                   help="rebuild a folder that an earlier prepare made (only its own files are deleted)")
    a = p.parse_args(argv)
    _positive(p, a, ["n_train", "n_val", "n_test", "min_len", "max_len", "max_depth", "max_args"])
    if a.min_len > a.max_len:
        raise UserError(f"--min-len {a.min_len} is above --max-len {a.max_len}")
    out = Path(a.out)
    settings = {k: getattr(a, k) for k in ("seed", "n_train", "n_val", "n_test", "min_len", "max_len",
                                           "max_depth", "max_args")}
    if already_prepared(out, "ssm lra prepare listops", settings, a.force):
        return
    from apps.lra.listops import generate_listops

    with building(out, "ssm lra prepare listops", settings) as tmp:
        generate_listops(tmp, progress=True, **settings)
    for split in ("train", "val", "test"):
        print(f"wrote {out / 'listops-1000' / f'basic_{split}.tsv'}")


def prepare_pathfinder(argv: list[str]) -> None:
    """``ssm lra prepare pathfinder --size 32 --out DIR``: Pathfinder (Linsley et al. 2018) with path masks,
    plus a PNG grid of examples to check by eye."""
    p = argparse.ArgumentParser(prog="ssm lra prepare pathfinder",
                                description="Generate Pathfinder in the LRA layout pathfinderNN/curv_contour_length_14/.")
    p.add_argument("--out", default="data/lra", help="output folder (default data/lra)")
    p.add_argument("--size", type=int, default=32, choices=(32, 64, 128, 256), help="image side (128 = Path-X)")
    p.add_argument("--n", type=int, default=20_000, help="images (LRA: 200,000, split 80/10/10)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--contour-length", type=int, default=14, help="LRA's difficulty: 14")
    p.add_argument("--no-masks", action="store_true", help="skip the path masks (PathfinderSegmentation needs them)")
    p.add_argument("--force", action="store_true",
                   help="rebuild a folder that an earlier prepare made (only its own files are deleted)")
    a = p.parse_args(argv)
    _positive(p, a, ["n", "contour_length"])
    out = Path(a.out)
    settings = {"size": a.size, "n": a.n, "seed": a.seed, "contour_length": a.contour_length, "masks": not a.no_masks}
    if already_prepared(out, "ssm lra prepare pathfinder", settings, a.force):
        return
    from apps.lra.pathfinder import generate_pathfinder, grid_png

    grid = f"pathfinder{a.size}_examples.png"
    with building(out, "ssm lra prepare pathfinder", settings) as tmp:
        generate_pathfinder(tmp, progress=True, **settings)
        grid_png(tmp, a.size, tmp / grid)
    print(f"wrote {a.n} images under {out / f'pathfinder{a.size}' / f'curv_contour_length_{a.contour_length}'}")
    print(f"wrote {out / grid} (a grid of examples with their labels)")


def prepare(argv: list[str]) -> None:
    """``ssm lra prepare listops|pathfinder ...``."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: ssm lra prepare {listops,pathfinder} --out DIR [options]\n\n"
              "  listops     ListOps in listops-1000/basic_{train,val,test}.tsv (96k/2k/2k by default)\n"
              "  pathfinder  Pathfinder images, metadata and path masks in pathfinderNN/curv_contour_length_14/\n\n"
              "`ssm lra prepare listops --help` lists each one's options.")
        return
    kind, rest = argv[0], argv[1:]
    if kind == "listops":
        prepare_listops(rest)
    elif kind == "pathfinder":
        prepare_pathfinder(rest)
    else:
        raise UserError(f"ssm lra prepare: unknown dataset {kind!r}; choose one of {', '.join(KINDS)} "
                        "(text, retrieval and image read their released files: see data/README.md)")
