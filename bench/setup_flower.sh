#!/usr/bin/env bash
# The Flower peer's own venv (benchmark only; ResonFL never imports Flower). It sees ResonFL's
# CPU torch through a .pth line appended after its own site-packages, so pip never resolves a
# torch (which would pull a multi-GB CUDA build) and Flower's own pins win where they differ.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x bench/.venv-flower/bin/python ] || "$PY" -m venv bench/.venv-flower
bench/.venv-flower/bin/pip install -q "flwr[simulation]==${FLWR_VERSION:-1.42.0}" 2>&1 | grep -v "is ignored" || true
SITE=$(bench/.venv-flower/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
OURS=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$OURS" > "$SITE/zz-resonfl-torch.pth"
bench/.venv-flower/bin/python -c "import flwr, torch; print('flower', flwr.__version__, 'torch', torch.__version__)"
