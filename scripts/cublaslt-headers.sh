#!/usr/bin/env bash
# Extracts cuBLASLt's headers from the nvidia-cublas wheel in the local pip store (or one pip
# downloads) into .cache/cublas/include, so the CUDA backend compiles its cuBLASLt path. The
# library itself is loaded at run time only, so nothing else is needed at build time.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/cublas/include
[ -f "$dest/cublasLt.h" ] && exit 0
mkdir -p .cache/cublas
wheel=$(ls /opt/pypi*/files/nvidia_cublas-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download --no-deps -q -d "$tmp" nvidia-cublas >/dev/null 2>&1 || true
  wheel=$(ls "$tmp"/nvidia_cublas-*.whl 2>/dev/null | head -n 1 || true)
fi
if [ -z "$wheel" ]; then
  echo "cublaslt-headers: no nvidia-cublas wheel found; building without the cuBLASLt path" >&2
  exit 0
fi
tmp=$(mktemp -d)
python3 - "$wheel" "$tmp" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for n in z.namelist():
        if "/include/" in n and n.endswith(".h"):
            z.extract(n, out)
PY
inc=$(dirname "$(find "$tmp" -name cublasLt.h | head -n 1)")
mkdir -p "$dest"
cp "$inc"/*.h "$dest"/
rm -rf "$tmp"
echo "cublaslt-headers: $(ls "$dest" | wc -l) headers in $dest"
