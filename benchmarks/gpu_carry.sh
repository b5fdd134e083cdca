#!/usr/bin/env bash
# Prepare what benchmarks/gpu.py needs on the lent GPU machine, which has PyTorch but not pixclass's
# captum dependency nor Fashion-MNIST, and cannot download: both go in .gpu_carry/ (in .gitignore), which
# the device tool's `carry` takes along (~30 MB of the 64 MiB that travel). Prints the command to run there.
#
#   bash benchmarks/gpu_carry.sh            # then call the device tool as it prints
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
mkdir -p .gpu_carry/fashion-mnist
src="${PIXCLASS_DATA:-/usr/share/datasets}/fashion-mnist"
[ -d "$src" ] || src="/usr/share/datasets/fashion-mnist"
cp "$src"/*-ubyte.gz .gpu_carry/fashion-mnist/
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=python3
# captum is pure Python (py3-none-any): one wheel for the device's Python 3.12; its own needs (torch,
# numpy, matplotlib, tqdm, packaging) are in the device image.
"$python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 -d .gpu_carry "captum==0.9.0"
du -sh .gpu_carry
cat <<'CMD'
device tool: run(kind left out, timeout_s=560, carry=[".gpu_carry"], command=
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu_carry/*.whl && export PYTHONPATH=/tmp/site:$PWD/src PIXCLASS_DATA=$PWD/.gpu_carry PYTHONUNBUFFERED=1 && nvidia-smi -L && python3 benchmarks/gpu.py --results $OUT 2>&1 | tee $OUT/gpu_log.txt
)
then copy gpu.json, gpu.md and gpu_trace.json.gz from the reply's files_at into benchmarks/results/.
CMD
