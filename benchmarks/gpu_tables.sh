#!/bin/bash
# The GPU tables of issue 21 part 3 in one run of about 6-8 minutes on one GPU, for a session lent a device:
#   run(command="OUT=$OUT bash benchmarks/gpu_tables.sh", timeout_s=540)
# Each table is printed and written to $OUT (default benchmarks/gpu_out): the GPU's name, layers.py at
# L = 4,096 and 16,384 with the FFT floor in the same run, SaShiMi generation at batch 64 (fused torch
# step; torch.compile too with COMPILE=1, minutes of compilation), and ViS4mer's decoder at 11,820
# tokens against fused and explicit (math) attention.  Only torch and einops are needed (the device
# image's python3 has both); PY picks another interpreter.  Every step has its own time limit, so one
# that hangs or runs out of memory does not cost the others.
set -u
OUT=${OUT:-benchmarks/gpu_out}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
LENGTHS=${LENGTHS:-4096,16384}
TOKENS=${TOKENS:-11820}
STEPS=${STEPS:-1024}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
step() {  # step NAME SECONDS COMMAND...: run COMMAND under a limit, output to the screen and $OUT/NAME.txt
  local name=$1 limit=$2
  shift 2
  echo "## $name ($(date -u +%H:%M:%S), limit ${limit} s): $*"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
  echo "## $name: exit ${PIPESTATUS[0]}"
}
{ date -u; (nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi");
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
} | tee "$OUT/gpu.txt"
step layers 180 $PY benchmarks/layers.py --device "$DEVICE" --lengths "$LENGTHS" --repeats 3
modes=torch
[ "${COMPILE:-0}" = 1 ] && modes=torch,compile
step generation 120 $PY benchmarks/generation.py --no-cpu --modes "$modes" --steps "$STEPS" --cuda-batch 64
step vis4mer 120 $PY benchmarks/vis4mer.py --device "$DEVICE" --lengths "$TOKENS" --repeats 2
step vis4mer_math 120 $PY benchmarks/vis4mer.py --device "$DEVICE" --lengths "$TOKENS" --repeats 1 --attention-backend math
echo "done $(date -u +%H:%M:%S); files in $OUT"
