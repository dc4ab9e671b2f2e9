#!/usr/bin/env bash
# The course in full mode on one GPU: the figures of the README's GPU column (issue 20).
#
#   make data && bash benchmarks/gpu_course.sh [OUTDIR] [NOTEBOOK ...]     # default: all seven
#   INPLACE=1 bash benchmarks/gpu_course.sh runs/gpu_inplace ch06_classification.ipynb
#
# Runs tools/run_course.py --mode full --device cuda: executed copies, report.md/.html/.json and
# figures in OUTDIR (default runs/gpu_course). INPLACE=1 re-executes the committed notebooks
# themselves, so that their saved outputs become this GPU run's.
# The machine needs no network: the course data comes from data/ (`make data`), and where
# papermill & co. are missing but a folder .whl/ of wheels is there (see benchmarks/README.md),
# those are installed into /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu_course}
shift || true
. benchmarks/keep_results.sh
keep_earlier_results "$out"
py=${PYTHON:-python3}
if ! $py -c "import papermill, ipykernel, ipywidgets" 2>/dev/null && [ -d .whl ]; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "gpu_course: could not install the wheels in .whl/"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
[ -f data/the-verdict.txt ] || $py -m helpers.support seed ../shared/data || exit 1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
start=$(date +%s)
$py tools/run_course.py --mode full --device "${DEVICE:-cuda}" --out "$out" ${INPLACE:+--inplace} "$@"
status=$?
echo "gpu_course: $(( $(date +%s) - start )) s in all, exit $status; report in $out/report.md"
exit $status
