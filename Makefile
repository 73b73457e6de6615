# ssm-suite: `make demo` and `make test` work on a fresh clone (Python 3.12 by default, 3.11 and 3.13 too).
# The environment is installed by uv from the committed uv.lock, never resolved anew:
#   make setup                  .venv with every extra and the test tools, exactly as locked
#   make setup PYTHON=3.11      the same on another Python (3.11-3.13)
#   make lock                   re-lock after editing pyproject.toml (keeps current versions)
#   make upgrade                the deliberate move to the newest releases the ranges allow
PYTHON ?= $(shell cat .python-version)
# the interpreter itself: pyenv's when it has that version (its shims answer only the selected one)
PYTHON_EXE := $(or $(shell pyenv prefix $(PYTHON) 2>/dev/null | cut -d: -f1 | sed 's|$$|/bin/python$(PYTHON)|'),python$(PYTHON))
UV_VERSION := 0.13.9
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
VENV   ?= .venv
PY     := $(VENV)/bin/python
SSM    := $(VENV)/bin/ssm
export UV_PROJECT_ENVIRONMENT := $(VENV)
# uv must use an interpreter that is here: its own Python downloads come from outside the package registries
export UV_PYTHON_DOWNLOADS := never
export SSM_DATA ?= data
DEMO_RUNS := runs/demo-$(shell date +%Y%m%d-%H%M%S)
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: setup venv system-deps lock upgrade lock-check core-check test test-slow demo bench lint clean

# Debian packages behind the offline stand-ins: espeak-ng, flite and festival with its US English voices (Speech Commands), fluidsynth and the
# TimGM6mb soundfont (piano), gcc (SaShiMi's native generation step). Installed when missing and we are root (CI is); otherwise we say how.
DEB_PACKAGES := espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts fluidsynth timgm6mb-soundfont gcc
system-deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; } >/dev/null \
	      || { echo "apt-get install$$missing failed" >&2; exit 1; }; \
	  else echo "missing Debian packages:$$missing; run: sudo apt-get install$$missing" >&2; exit 1; fi; \
	fi

setup: venv system-deps

# uv itself comes from PyPI into its own small venv: `uv sync` removes from .venv whatever the lock lacks.
$(UV):
	@$(PYTHON_EXE) -m venv $(TOOLS) 2>/dev/null || python3 -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --disable-pip-version-check -q 'uv==$(UV_VERSION)' 2>&1 | { grep -v '^WARNING: Location' || true; }

# .venv exactly as uv.lock says, on $(PYTHON): a no-op in a fraction of a second when it already is
venv: $(UV)
	@$(UV) sync --locked --all-extras --python $(PYTHON_EXE) -q
	@$(PY) -c "import sys, torch, ssmcore; print('ssm-suite', ssmcore.__version__, 'on Python', sys.version.split()[0], '+ torch', torch.__version__)"

lock: $(UV)
	$(UV) lock

upgrade: $(UV)
	$(UV) lock --upgrade

# fails when pyproject.toml and uv.lock disagree (CI runs it through `make test`)
lock-check: $(UV)
	$(UV) lock --check

lint: setup
	$(VENV)/bin/ruff check .

# `pip install ssm-suite` must stay small: ssmcore imports with torch/numpy/scipy/einops alone, and the
# CLI without an app's extra names the extra. Checked in a throwaway venv (.tools/core) from uv's cache.
CORE_ONLY := lightning jsonargparse torchaudio torchvision mujoco music21 decord av mlxtend diffusers soundfile
core-check: $(UV)
	@rm -rf $(TOOLS)/core && $(UV) venv -q --python $(PYTHON_EXE) $(TOOLS)/core
	@$(UV) pip install -q --python $(TOOLS)/core/bin/python .
	@$(TOOLS)/core/bin/python -c "import importlib.util as u, ssmcore; extra = [m for m in '$(CORE_ONLY)'.split() if u.find_spec(m)]; assert not extra, f'the core install pulled in {extra}'; print('core install: ssmcore', ssmcore.__version__, 'imports without the extras')"
	@cd $(TOOLS) && { core/bin/ssm smoke fit 2>&1; test $$? = 2; } | grep -q "pip install 'ssm-suite\[apps\]'" && echo "core install: ssm names the missing extra"

test: lock-check setup lint core-check
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

# Each demo writes its runs to a folder of its own (SSM_RUNS): a rerun never touches an earlier one.
demo: export SSM_RUNS := $(DEMO_RUNS)
demo: setup
	@echo "== smoke: delayed recall with a 2-layer S4D model =="
	$(SSM) smoke prepare --out $(SSM_DATA)/smoke
	$(SSM) smoke fit -c recipes/smoke/copy.yaml --data.data_dir $(SSM_DATA)/smoke
	$(SSM) smoke test -c recipes/smoke/copy.yaml --data.data_dir $(SSM_DATA)/smoke --ckpt_path $(DEMO_RUNS)/smoke/copy/checkpoints/best.ckpt
	@echo "== synthetic: DLR's Shift task with a tiny S4D, then a 2-task x 2-layer suite =="
	$(SSM) synthetic fit -c recipes/synthetic/tiny.yaml --trainer.max_epochs 8 --data.steps_per_epoch 25
	$(SSM) synthetic suite --layers s4d,dlr --tasks shift,cumsum --length 64 --steps 40 --d-model 16 --d-state 64 --out $(DEMO_RUNS)/synthetic/demo-suite
	@echo "== s4nd: S4ND trained at 14x14, tested zero-shot at 7, 14 and 28 =="
	$(SSM) s4nd prepare mnist --out $(SSM_DATA)/mnist5k
	$(SSM) s4nd fit -c recipes/s4nd/tiny.yaml --data.root $(SSM_DATA)/mnist5k
	$(SSM) s4nd zero-shot --ckpt $(DEMO_RUNS)/s4nd/tiny/checkpoints/best.ckpt --resolutions 7,14,28
	@echo "== sashimi: SaShiMi on 1 minute of piano, then exact recurrent generation =="
	$(SSM) sashimi prepare piano --out $(SSM_DATA)/piano_demo --minutes 1
	$(SSM) sashimi fit -c recipes/sashimi/piano_tiny.yaml --data.root $(SSM_DATA)/piano_demo
	$(SSM) sashimi generate --ckpt $(DEMO_RUNS)/sashimi/piano_tiny/checkpoints/last.ckpt --n 2 --seconds 0.5 --batch 2 --compare "$$(ls $(SSM_DATA)/piano_demo/test/*.wav | head -1)"
	@echo "== speech: Speech Commands yes/no/up from raw audio, zero-shot at 8 kHz, classifier scores =="
	$(SSM) speech prepare --out $(SSM_DATA)/speech_commands_tiny --words yes,no,up --per-word 30
	$(SSM) speech fit -c recipes/speech/sc_tiny.yaml --data.root $(SSM_DATA)/speech_commands_tiny
	$(SSM) speech zero-shot --ckpt $(DEMO_RUNS)/speech/sc_tiny/checkpoints/best.ckpt --rates 16000,8000 --data-root $(SSM_DATA)/speech_commands_tiny
	$(SSM) speech score --classifier $(DEMO_RUNS)/speech/sc_tiny/checkpoints/best.ckpt --real $(SSM_DATA)/speech_commands_tiny
	@echo "== vis4mer: tiny Moving-MNIST videos -> cached tokens -> multi-scale S4 decoder =="
	$(SSM) vis4mer prepare moving-mnist --out $(SSM_DATA)/moving_mnist_tiny --tiny
	$(SSM) vis4mer extract-features --videos $(SSM_DATA)/moving_mnist_tiny/videos --out $(SSM_DATA)/moving_mnist_tiny/features
	$(SSM) vis4mer fit -c recipes/vis4mer/tiny.yaml --data.root $(SSM_DATA)/moving_mnist_tiny
	@echo "== sssd: SSSD^S4 imputation on a small MuJoCo Hopper set, test table vs baselines, a forecast =="
	$(SSM) sssd prepare mujoco --n 500 --out $(SSM_DATA)/mujoco_small
	$(SSM) sssd fit -c recipes/sssd/tiny.yaml --data.path $(SSM_DATA)/mujoco_small/train_mujoco.npy --data.test_path $(SSM_DATA)/mujoco_small/test_mujoco.npy
	$(SSM) sssd test -c recipes/sssd/tiny.yaml --data.path $(SSM_DATA)/mujoco_small/train_mujoco.npy --data.test_path $(SSM_DATA)/mujoco_small/test_mujoco.npy --ckpt_path $(DEMO_RUNS)/sssd/tiny/checkpoints/last.ckpt
	$(SSM) sssd forecast --ckpt $(DEMO_RUNS)/sssd/tiny/checkpoints/last.ckpt --input $(SSM_DATA)/mujoco_small/test_mujoco.npy --out $(DEMO_RUNS)/sssd/tiny/forecast.csv --horizon 10 --holdout --samples 4 --sampler ddim --steps 10 --max-plots 2
	@echo "== pendulum: S5 on irregularly sampled pendulum frames, with the observation times =="
	$(SSM) pendulum prepare --out $(SSM_DATA)/pendulum_tiny --sizes 32,16,16
	$(SSM) pendulum fit -c recipes/pendulum/tiny.yaml --data.root $(SSM_DATA)/pendulum_tiny
	$(SSM) pendulum test -c recipes/pendulum/tiny.yaml --data.root $(SSM_DATA)/pendulum_tiny --ckpt_path $(DEMO_RUNS)/pendulum/tiny/checkpoints/best.ckpt
	@echo "== lra: a tiny generated ListOps and Pathfinder-32, tested, then the table beside the papers' numbers =="
	$(SSM) lra prepare listops --out $(SSM_DATA)/lra_tiny --n-train 200 --n-val 40 --n-test 40 --min-len 20 --max-len 80 --max-depth 4 --max-args 4
	$(SSM) lra fit -c recipes/lra/tiny_listops.yaml --data.root $(SSM_DATA)/lra_tiny
	$(SSM) lra test -c recipes/lra/tiny_listops.yaml --data.root $(SSM_DATA)/lra_tiny --ckpt_path $(DEMO_RUNS)/lra/tiny_listops/checkpoints/best.ckpt
	$(SSM) lra prepare pathfinder --size 32 --n 200 --out $(SSM_DATA)/lra_tiny_pathfinder
	$(SSM) lra fit -c recipes/lra/tiny_pathfinder.yaml --data.root $(SSM_DATA)/lra_tiny_pathfinder
	$(SSM) lra test -c recipes/lra/tiny_pathfinder.yaml --data.root $(SSM_DATA)/lra_tiny_pathfinder --ckpt_path $(DEMO_RUNS)/lra/tiny_pathfinder/checkpoints/best.ckpt
	$(SSM) lra table --runs $(DEMO_RUNS)/lra
	@echo "== demo done: outputs are under $(DEMO_RUNS)/ =="
	@find $(DEMO_RUNS) \( -name '*.ckpt' -o -name 'metrics.csv' -o -name '*.png' -o -name '*.md' -o -name '*.csv' \) | sort

bench: setup
	$(PY) benchmarks/layers.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
