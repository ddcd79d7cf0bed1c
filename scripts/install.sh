#!/usr/bin/env bash
# Create .venv and install ResonFL with every extra. Installs torch first, pinned, so that pip
# never resolves an unpinned torch (which would pull a multi-GB CUDA build); a machine that
# already has a torch in the venv keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# bubblewrap confines job code (docs/security.md); without it workers refuse job code.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -q bubblewrap >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q bubblewrap >/dev/null)) || true
  fi
  command -v bwrap >/dev/null 2>&1 || echo "warning: bubblewrap (bwrap) is not installed: site workers will refuse job code (see docs/security.md)" >&2
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}" 2>&1 | grep -v "is ignored" || true
# every dependency resolves against the torch just installed (opacus needs torch): a
# constraint file pins it, so pip can never swap in another build
constraints=$(mktemp)
echo "torch==$(python -c 'import torch; print(torch.__version__.split("+")[0])')" > "$constraints"
python -m pip install -q -c "$constraints" -e ".[server,worker,dev]" 2>&1 | grep -vE "is ignored|^\s*$" || true
rm -f "$constraints"
python -c "import torch, resonfl, fastapi, celery, opacus; print('resonfl installed; torch', torch.__version__)"
