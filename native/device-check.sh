#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: build the CUDA addon, run the CUDA test subset, and time the
# gpt2-small-shaped forward (15 tokens with full cache, and 8 x 15) on WASM and CUDA side by side.
# Needs Node >= 20 (with its headers), nvcc, and the project's node_modules (npm ci, or carried over
# from a machine with registry access). Budget: under 6 minutes including the build and a rerun of
# the checks under compute-sanitizer memcheck.
set -uo pipefail
cd "$(dirname "$0")/.."
say() { echo "device-check: $*"; }
# under the device tool, $OUT comes back: the log and bench/results/cuda.json go there
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
  exec > >(tee "$OUT/device-check.log") 2>&1
  trap 'cp bench/results/cuda*.json "$OUT/" 2>/dev/null' EXIT
fi
if ! command -v node >/dev/null 2>&1 && [ -f ../node.xz ]; then
  # a device bundle (scripts/device-bundle.mjs) carries this Node, compressed
  mkdir -p /tmp/typelens-node/bin && xz -dc ../node.xz > /tmp/typelens-node/bin/node && chmod +x /tmp/typelens-node/bin/node
  export PATH="/tmp/typelens-node/bin:$PATH"
  say "using the bundled Node $(node -v)"
fi
if ! command -v node >/dev/null 2>&1; then
  say "Node.js is not installed on this machine. Provide Node >= 20: unpack the official linux-x64"
  say "tarball and put its bin/ on PATH, or carry a bundle made by scripts/device-bundle.mjs; then rerun."
  exit 3
fi
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || { say "Node $(node -v) is too old: typelens needs Node >= 20"; exit 3; }
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/device-check: GPU: /'
if [ ! -d node_modules ]; then
  say "node_modules missing: running npm ci (needs the npm registry)"
  npm ci --no-audit --no-fund >/dev/null || { say "npm ci failed: carry a bundle made by scripts/device-bundle.mjs"; exit 3; }
fi
[ -f dist/src/index.js ] || npm run build >/dev/null || { say "build failed"; exit 1; }
start=$(date +%s)
timeout 240 node native/build.mjs || { say "CUDA addon build failed"; exit 1; }
say "addon built in $(( $(date +%s) - start )) s"
checks=ok
timeout 120 node dist/bench/device-check.js || { checks=failed; say "CUDA checks FAILED (see above)"; }
timeout 180 node dist/bench/run.js cuda || say "benchmark failed"
# out-of-bounds reads whose values go unused pass every check above: memcheck sees them
if command -v compute-sanitizer >/dev/null 2>&1; then
  say "the checks again under compute-sanitizer (memcheck), for out-of-bounds accesses and API errors"
  timeout 90 compute-sanitizer --print-limit 10 node dist/bench/device-check.js 2>&1 | tail -n 80
fi
say "total $(( $(date +%s) - start )) s"
