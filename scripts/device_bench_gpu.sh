#!/usr/bin/env bash
# `make bench-gpu` on a bare GPU machine, unattended, in one call (about 7-8 minutes).
# The machine has python3 with torch, torchvision, timm, numpy, pillow, pyarrow, scipy, scikit-learn and
# pyyaml but no network: the project's other imports (pydantic, open_clip_torch and their dependencies)
# travel as wheels in .whl/ and are installed into /tmp/site. Ray is not among them (its wheel alone is
# larger than what may travel), so the Ray Data row records that Ray is not installed.
#   OUT=/some/dir BUDGET_S=420 bash scripts/device_bench_gpu.sh [extra benchmarks/gpu.py arguments]
# Leaves gpu_bench.json, gpu_bench.md and gpu_bench.log in $OUT (rewritten after every row).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/bench-gpu}
BUDGET_S=${BUDGET_S:-420}
mkdir -p "$OUT"
LOG="$OUT/gpu_bench.log"
{
  echo "== $(date -Is) $(hostname) $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  echo "cpus: $(nproc)"
  python3 --version
  python3 -c "import torch, torchvision, timm; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'torchvision', torchvision.__version__, 'timm', timm.__version__, 'cuda available', torch.cuda.is_available())"
} 2>&1 | tee "$LOG"

if compgen -G ".whl/*.whl" >/dev/null; then
  if ! python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl 2>&1 | tee -a "$LOG"; then
    echo "pip install failed: unpacking the wheels instead" | tee -a "$LOG"
    for wheel in .whl/*.whl; do python3 -m zipfile -e "$wheel" /tmp/site; done
  fi
else
  echo "no .whl/ folder: using the machine's packages only" | tee -a "$LOG"
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
python3 -c "import sseg, pydantic, open_clip; print('imports ok: pydantic', pydantic.VERSION, \
'open_clip', open_clip.__version__)" 2>&1 | tee -a "$LOG"

python3 benchmarks/gpu.py --out "$OUT" --budget-s "$BUDGET_S" "$@" 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}
echo "== exit $status $(date -Is)" | tee -a "$LOG"
exit "$status"
