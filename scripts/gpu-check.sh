#!/usr/bin/env bash
# The whole GPU check in one script (npm run test:gpu runs it; it needs cmake, nvcc and a GPU, but
# no Node and no internet): builds the core with CUDA for this GPU, runs the op suite on CUDA
# against the CPU backend (attention again on the CUDA-core kernels), whole-model steps at the
# Qwen2.5-3B shape and the torch peer (bench/peer_torch_train.py), the kernel benchmarks, two more
# model configurations, then the JS suite if Node is there. Each phase has a time limit; one line
# per phase goes to the summary, printed last. Output also goes to $OUT if set.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-build-gpu/out}
mkdir -p "$out"
log() { echo "gpu-check: $*" | tee -a "$out/summary.txt"; }
t0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$out/nvidia-smi.txt"
bash scripts/cublaslt-headers.sh || true
export QN_CUBLASLT_PATH=${QN_CUBLASLT_PATH:-$(python3 - <<'PY' 2>/dev/null
import glob, os
try:
    import nvidia
    for base in nvidia.__path__:
        for p in glob.glob(os.path.join(base, "*", "lib", "libcublasLt.so*")):
            print(p); break
except Exception:
    pass
PY
)}
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
# Device code for this GPU only (half the nvcc time of the default sm_80 + sm_90 + PTX build).
arch=(); cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')
[[ "$cc" =~ ^[0-9]+$ ]] && arch=(-DCMAKE_CUDA_ARCHITECTURES="${cc}-real")
cmake -S . -B build-gpu "${gen[@]}" "${arch[@]}" -DQN_BUILD_ADDON=OFF -DQN_CUDA=ON -DCMAKE_BUILD_TYPE=Release >"$out/cmake.txt" 2>&1 \
  && cmake --build build-gpu -j "$(nproc)" >"$out/build.txt" 2>&1
build_rc=$?
log "build rc=$build_rc ($(( $(date +%s) - t0 ))s)"
[ $build_rc -eq 0 ] || { tail -40 "$out/build.txt"; exit 1; }
# Each phase has its own time limit (QN_GPU_CHECK_SCALE multiplies them) so that one hang cannot
# eat a short device lease; rc 124 in the summary means "timed out".
scale=${QN_GPU_CHECK_SCALE:-1}
lim() { echo $(( $1 * scale )); }
timeout "$(lim 150)" ./build-gpu/qn_tests --device cuda 2>&1 | tee "$out/tests-cuda.txt"
tests_rc=${PIPESTATUS[0]}
log "op suite on CUDA: $(tail -1 "$out/tests-cuda.txt") (rc=$tests_rc)"
# attention once more on the CUDA-core kernels (the fallback when WMMA does not apply)
QN_ATTENTION_NO_WMMA=1 timeout "$(lim 60)" ./build-gpu/qn_tests --device cuda --filter attention >"$out/tests-cuda-attn-core.txt" 2>&1
rc=$?
log "attention on CUDA cores (QN_ATTENTION_NO_WMMA=1): $(tail -1 "$out/tests-cuda-attn-core.txt") (rc=$rc)"
# Whole-model training steps at the Qwen2.5-3B shape (issue 4's MFU and peak-memory goal), most
# important first: a short device lease may end before the last phases.
model_bench() {  # $1: time limit (s), then qn_bench model options
  local t=$1; shift
  timeout "$(lim "$t")" ./build-gpu/qn_bench --device cuda --filter model --preset qwen2.5-3b "$@" 2>&1 | tee -a "$out/bench-model-cuda.txt"
  local rc=${PIPESTATUS[0]}
  log "model bench ($*) rc=$rc: $(grep -E '^  (tokens/s|MFU|memory)' "$out/bench-model-cuda.txt" | tail -3 | tr -s ' ' | tr '\n' ';')"
}
model_bench 60 --batch 1 --seq 2048
# The peer on the same shape, batch and step (transformers + PEFT [+ bitsandbytes NF4] when
# installed, else the plain-torch Qwen2 of bench/peer_torch_train.py), and the ratio.
if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  timeout "$(lim 90)" python3 bench/peer_torch_train.py --device cuda --preset qwen2.5-3b --batch 1 --seq 2048 \
    >"$out/peer-cuda.json" 2>"$out/peer-cuda.err"
  rc=$?
  ours=$(grep -m1 -E '^  tokens/s: ' "$out/bench-model-cuda.txt" | awk '{print $2}')
  log "peer rc=$rc: $(python3 -c "import json,sys; p=json.load(open(sys.argv[1])); o=float(sys.argv[2] or 'nan'); print(f\"{p['peer']} {p['tokens_per_s']:.1f} tok/s, peak {p['peak_memory_bytes']/2**20:.0f} MB; ours {o:.1f} tok/s = {o/p['tokens_per_s']:.2f}x\")" "$out/peer-cuda.json" "$ours" 2>&1 | tail -1)"
fi
timeout "$(lim 120)" ./build-gpu/qn_bench --device cuda 2>&1 | tee "$out/bench-cuda.txt"
rc=${PIPESTATUS[0]}
log "kernel benchmarks rc=$rc: see bench-cuda.txt"
model_bench 60 --batch 4 --seq 2048 --ckpt 1
model_bench 45 --batch 1 --seq 2048 --optim paged
if command -v node >/dev/null && [ -d node_modules ]; then
  QN_TEST_DEVICE=cuda timeout "$(lim 300)" node --test --test-concurrency=1 test/ 2>&1 | tail -15 | tee "$out/tests-js.txt"
fi
log "total $(( $(date +%s) - t0 ))s"
cat "$out/summary.txt"
exit $tests_rc
