"""Tiny prepared Speech Commands sets and a tiny trained classifier, built once per test session.

Imported by the ``test_speech_*`` / ``test_sc_*`` modules (a module, not a conftest, so the
SaShiMi generation tests keep their own fixtures); the cache makes every set build only once.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from apps.common.cli import main
from apps.speech.prepare import build

ROOT = Path(__file__).resolve().parents[3]
TINY_RECIPE = str(ROOT / "recipes" / "speech" / "sc_tiny.yaml")
WORDS = ["yes", "no", "up"]
_cache: dict[str, Path] = {}


def tiny_set(tmp_path_factory, per_word: int = 10, name: str = "tiny") -> Path:
    """``WORDS`` spoken ``per_word`` times each (seed 0): 80/10/10 speaker split, 1 val + 1 test clip per word."""
    key = f"{name}-{per_word}"
    if key not in _cache:
        _cache[key] = tmp_path_factory.mktemp("speech") / name
        build(_cache[key], WORDS, per_word, seed=0, noise=0.002, jobs=2, noise_seconds=2.0)
    return _cache[key]


def digest(root: Path) -> dict[str, str]:
    """Every WAV under ``root`` by relative path: its SHA-1."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.wav"))}


def built_twice(tmp_path: Path, engine: str) -> Path:
    """A 2-word, 4-clip stand-in of ``engine`` built with 2 jobs and again with 1: the same files (deterministic
    from the seed, whatever the parallelism); the first one's root."""
    stats = build(tmp_path / "a", ["go", "stop"], 4, seed=2, jobs=2, noise_seconds=0.5, engine=engine)
    build(tmp_path / "b", ["go", "stop"], 4, seed=2, jobs=1, noise_seconds=0.5, engine=engine)
    assert stats["clips"] == 8
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    return tmp_path / "a"


def copy_of(root: Path, dest: Path) -> Path:
    """A private copy of a prepared set (for tests that add or break files)."""
    shutil.copytree(root, dest)
    return dest


def tiny_checkpoint(tmp_path_factory) -> Path:
    """best.ckpt of the tiny recipe fitted on a 3-word set with 30 clips per word (about 10 s)."""
    if "ckpt" not in _cache:
        data = tiny_set(tmp_path_factory, per_word=30, name="learn")
        runs = tmp_path_factory.mktemp("runs")
        code = main(["speech", "fit", "-c", TINY_RECIPE, "--data.root", str(data), "--data.words", str(WORDS),
                     "--trainer.default_root_dir",
                     str(runs / "tiny")])
        assert code == 0
        _cache["ckpt"] = runs / "tiny" / "checkpoints" / "best.ckpt"
    return _cache["ckpt"]
