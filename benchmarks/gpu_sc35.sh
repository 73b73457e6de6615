#!/bin/bash
# Issue 22 part 1 on one GPU, about 7 minutes on an H100: a fresh SC35 espeak-ng stand-in (300 clips per word,
# as the 2026-11-22 run), the paper-size recipe recipes/speech/sc35_s4.yaml (S4, band-limit augmentation)
# for 4 epochs, then `ssm speech zero-shot` at 16 and 8 kHz with the low-passed row and the kernels' bands.
#   bash benchmarks/gpu_carry.sh                                                 # here, once
#   run(command="OUT=$OUT bash benchmarks/gpu_sc35.sh", carry=[".gpu"], timeout_s=540)
# Files back in $OUT: gpu.txt, prepare/fit/zero_shot logs, metrics.csv, zero_shot.md, kernel_band.csv.
# PER_WORD, EPOCHS, JOBS and EXTRA (more `ssm speech fit` options) size it down for a dry run on a CPU; PY is
# the interpreter that has torch, PIP the pip that installs the carried wheels (default: PY's).
set -u
OUT=${OUT:-benchmarks/gpu_out}
PY=${PY:-python3}
G=$PWD/.gpu
WORK=${WORK:-/tmp/sc35}
mkdir -p "$OUT" "$WORK"
if [ -d "$G/wheels" ]; then  # the device's image lacks these (see gpu_carry.sh)
  ${PIP:-$PY -m pip} install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$G"/wheels/*.whl || exit 1
  export PYTHONPATH="$WORK/site"
fi
if [ -d "$G/debs" ]; then
  for d in "$G"/debs/*.deb; do dpkg -x "$d" "$WORK/esp"; done
  export PATH="$WORK/esp/usr/bin:$PATH" ESPEAK_DATA_PATH="$WORK/esp/usr/lib/x86_64-linux-gnu"
  export LD_LIBRARY_PATH="$G/lib:$WORK/esp/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
printf '#!/bin/sh\nexec %s -c "import sys; from apps.common.cli import main; sys.exit(main(sys.argv[1:]))" "$@"\n' \
  "$PY" > "$WORK/ssm" && chmod +x "$WORK/ssm"  # `ssm` without installing the package (timeout runs programs only)
ssm=$WORK/ssm
step() {  # step NAME SECONDS COMMAND...: run under a limit, output to the screen and $OUT/NAME.txt
  local name=$1 limit=$2
  shift 2
  echo "## $name ($(date -u +%H:%M:%S), limit ${limit} s): $*"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
  echo "## $name: exit ${PIPESTATUS[0]}"
}
{ date -u; (nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi")
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
  espeak-ng --version; } 2>&1 | tee "$OUT/gpu.txt"
step prepare 150 "$ssm" speech prepare --out "$WORK/data" --words sc35 --per-word "${PER_WORD:-300}" --jobs "${JOBS:-16}"
# shellcheck disable=SC2086  # EXTRA is a list of options
step fit 330 "$ssm" speech fit -c recipes/speech/sc35_s4.yaml --data.root "$WORK/data" --trainer.max_epochs "${EPOCHS:-4}" \
  --trainer.default_root_dir "$WORK/run" --data.num_workers 8 ${EXTRA:-}
cp "$(ls "$WORK"/run/csv/version_*/metrics.csv | tail -1)" "$OUT/metrics.csv" 2>/dev/null
ckpt=$(ls "$WORK"/run/checkpoints/best*.ckpt 2>/dev/null | head -1)
step zero_shot 90 "$ssm" speech zero-shot --ckpt "$ckpt" --rates 16000,8000 --out "$WORK/zs"
cp "$WORK"/zs/zero_shot.md "$WORK"/zs/kernel_band.csv "$OUT/" 2>/dev/null
echo "done $(date -u +%H:%M:%S); files in $OUT"
