#!/bin/bash
# The GPU tables of issue 21 part 3 in one run of about 6-8 minutes on one GPU, for a session lent a device:
#   bash benchmarks/gpu_carry.sh                                                 # here, once
#   run(command="OUT=$OUT bash benchmarks/gpu_tables.sh", carry=[".gpu"], timeout_s=540)
# Each table is printed and written to $OUT (default benchmarks/gpu_out): the GPU's name, layers.py at
# L = 4,096 and 16,384 with the FFT floor in the same run, SaShiMi generation at batch 64 (fused torch
# step; torch.compile too with COMPILE=1, minutes of compilation), ViS4mer's decoder at 11,820 tokens
# against fused and explicit (math) attention, and SSSD's samplers (DDPM-200 against DDIM-50) at the
# paper's MuJoCo size, untrained (speed only; SSSD_RECIPE picks another recipe).  The first three need
# only torch and einops (the device image's python3 has both); SSSD needs diffusers, carried in .gpu/
# (without it that step says so and the others run).  Last come the CUDA tests of the layer contract, SSSD's
# sampling and mixed precision.  PY picks another interpreter.  Every step has its own time limit, so one that
# hangs or runs out of memory does not cost the others.
set -u
OUT=${OUT:-benchmarks/gpu_out}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
LENGTHS=${LENGTHS:-4096,16384}
TOKENS=${TOKENS:-11820}
STEPS=${STEPS:-1024}
mkdir -p "$OUT"
if [ -d .gpu/wheels ]; then  # what the device's image lacks (benchmarks/gpu_carry.sh)
  ${PIP:-$PY -m pip} install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_site \
    .gpu/wheels/*.whl && export PYTHONPATH=/tmp/gpu_site
fi
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
if $PY -c "import diffusers" 2>/dev/null; then
  step sssd 90 $PY benchmarks/sssd.py --recipe "${SSSD_RECIPE:-recipes/sssd/mujoco.yaml}" --data random --device "$DEVICE" \
    --n "${SSSD_SERIES:-100}" --samples 10 --samplers ddpm-200,ddim-50 --repeats 2
else
  echo "## sssd: skipped, diffusers is not importable (carry .gpu/ from benchmarks/gpu_carry.sh)" | tee "$OUT/sssd.txt"
fi
# last, with what time is left: the CUDA equivalence tests (layers against the CPU, SSSD's samplers, mixed precision)
step cuda_tests 120 $PY -m pytest -q -p no:cacheprovider tests/ssmcore/test_cuda.py tests/apps/sssd/test_cuda.py \
  tests/apps/common/test_precision_cli.py -k cuda
echo "done $(date -u +%H:%M:%S); files in $OUT"
