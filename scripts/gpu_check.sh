#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run (a few minutes): the CUDA tests (model, features, our CTC loss and
# streaming against the CPU; CLI training in float32, bf16 and fp16 with its grad scaler; torch.compile; GPU
# decoding), then our CTC loss against torch's on the GPU and a training step of the large synthetic_en model.
#
#   bash scripts/gpu_check.sh [OUT_DIR]        # logs to OUT_DIR (default gpu_check/); PYTHON=... picks the interpreter
#
# Every step runs even when one before it fails; the exit status says whether all passed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_check}
py=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
mkdir -p "$out"
status=0
step() {  # step NAME COMMAND...: run, log to OUT_DIR/NAME.log, remember a failure
    local name=$1; shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "== $name failed (exit $rc)"; status=1; }
}
step gpu nvidia-smi
step versions "$py" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"
step test_cuda env ASR_REQUIRE_CUDA=1 "$py" -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py
step ctc_loss "$py" benchmarks/ctc_loss.py --device cuda --repeats 10
step training_step "$py" benchmarks/training_step.py --device cuda size=large
exit $status
