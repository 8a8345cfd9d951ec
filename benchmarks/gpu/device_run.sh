#!/usr/bin/env bash
# One call on a lent GPU machine (issue 9): install the carried wheels, show the machine, check that
# clipsearch imports, run the CUDA tests, measure GPU indexing throughput, then (if present) run
# benchmarks/gpu/train_reference.sh. Run from the repository root, with `.whl` carried:
#
#     bash benchmarks/gpu/device_run.sh "$OUT"
#
# Every step is time-boxed and the whole call ends within TOTAL_S seconds (default 530, under 9 minutes).
# Files this part writes into OUT (2 of the 8 that come back; the rest are train_reference.sh's):
#     OUT/device_log.txt         machine, versions, import check, tests, benchmark table
#     OUT/gpu_throughput.json    the benchmark's cells, rewritten after each one
# Overrides for a dry run on a machine without a GPU or without wheels (py3.11 cannot take py3.12 wheels):
#     SKIP_INSTALL=1 PYTHON=python BENCH_ARGS="--device cpu --quick" bash benchmarks/gpu/device_run.sh /tmp/out
# Other knobs: BENCH_TIMEOUT (default 170), TEST_TIMEOUT (60), INSTALL_TIMEOUT (60), SITE (/tmp/site).
set -u
out=${1:-${OUT:?give OUT as the first argument or in the environment}}
mkdir -p "$out"
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
TOTAL_S=${TOTAL_S:-530}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-170}
TEST_TIMEOUT=${TEST_TIMEOUT:-60}
INSTALL_TIMEOUT=${INSTALL_TIMEOUT:-60}
BENCH_ARGS=${BENCH_ARGS:-}
export PYTHONUNBUFFERED=1 HF_HUB_DISABLE_TELEMETRY=1
started=$SECONDS
log=$out/device_log.txt

step() { echo; echo "=== $1 (t=$((SECONDS - started)) s)"; }

left() { echo $((TOTAL_S - (SECONDS - started))); }

# bounded N: N seconds, or what is left of TOTAL_S less a reserve, whichever is smaller
bounded() {
  local want=$1 reserve=${2:-0} rest
  rest=$(($(left) - reserve))
  ((rest < want)) && want=$rest
  ((want < 1)) && want=1
  echo "$want"
}

install_wheels() {
  step "install carried wheels into $SITE"
  if [[ -n ${SKIP_INSTALL:-} ]]; then
    echo "skipped (SKIP_INSTALL set)"
  elif compgen -G ".whl/*.whl" >/dev/null; then
    ls -l .whl
    timeout "$(bounded "$INSTALL_TIMEOUT")" "$PYTHON" -m pip install -q --no-index --no-deps --no-compile \
      --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || echo "WHEEL INSTALL FAILED (rc $?)"
  else
    echo "no .whl/*.whl here: was .whl carried?"
  fi
  export PYTHONPATH=$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}
}

show_machine() {
  step "machine"
  timeout 20 nvidia-smi || echo "nvidia-smi: not available (rc $?)"
  echo "nproc: $(nproc)   $(uname -srm)"
  timeout 60 "$PYTHON" - <<'EOF' || echo "VERSION/IMPORT CHECK FAILED (rc $?)"
import platform, sys, time
started = time.perf_counter()
import torch
print(f"python {platform.python_version()} ({sys.executable}); torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print("GPU:", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
for name in ("retrieval", "indexer", "open_clip", "faiss", "sqlalchemy", "ftfy", "onnxruntime", "torchvision"):
    try:
        module = __import__(name)
        print(f"import {name}: ok {getattr(module, '__version__', '')} {getattr(module, '__file__', '')}")
    except Exception as exc:
        print(f"import {name}: FAILED {type(exc).__name__}: {exc}")
try:
    import onnxruntime
    print("onnxruntime providers:", onnxruntime.get_available_providers(), "device:", onnxruntime.get_device())
except Exception as exc:
    print("onnxruntime: FAILED", exc)
from retrieval.model.devices import probe_device, resolve_backend, resolve_precision
backend, device = resolve_backend("auto", "auto", "auto")
print(f"clipsearch auto: probe {probe_device()}, backend {backend} on {device}, "
      f"precision {resolve_precision('auto', device, backend)}; imports took {time.perf_counter() - started:.1f} s")
EOF
}

run_tests() {
  local limit
  limit=$(bounded "$TEST_TIMEOUT" 60)
  step "CUDA and device tests (pytest, at most $limit s)"
  timeout "$limit" "$PYTHON" -m pytest -q -rs -p no:cacheprovider -m "not slow" \
    tests/retrieval/model/test_encoder_cuda.py tests/retrieval/model/test_devices.py \
    tests/retrieval/model/test_encoder.py || echo "TESTS: rc $? (124 = timed out)"
}

run_benchmark() {
  local limit
  limit=$(bounded "$BENCH_TIMEOUT" 30)
  step "GPU throughput benchmark (at most $limit s)"
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
  timeout "$limit" "$PYTHON" benchmarks/gpu_throughput.py --out "$out" $BENCH_ARGS ||
    echo "BENCHMARK: rc $? (124 = timed out; $out/gpu_throughput.json holds the cells measured)"
}

{
  echo "device_run.sh started $(date -u +%FT%TZ) in $PWD, OUT=$out, TOTAL_S=$TOTAL_S"
  install_wheels
  show_machine
  run_tests
  run_benchmark
  step "gpubench part done"
} 2>&1 | tee "$log"
export PYTHONPATH=$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}  # the block above ran in a subshell (the pipe)

if [[ -f benchmarks/gpu/train_reference.sh ]]; then
  limit=$(bounded 600 5)
  step "benchmarks/gpu/train_reference.sh (at most $limit s)"
  timeout "$limit" bash benchmarks/gpu/train_reference.sh "$out" ||
    echo "train_reference.sh: rc $? (124 = timed out)"
else
  step "no benchmarks/gpu/train_reference.sh here: skipped"
fi
step "device_run.sh finished"
exit 0
