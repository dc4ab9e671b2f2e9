#!/usr/bin/env bash
# The GPU measurements of issue 11 in one short run, for a machine with one NVIDIA GPU and
# PyTorch, transformers and tiktoken installed (no network needed):
#   1. training speed and MFU: 124M shape, context 1024, bf16 autocast + torch.compile + SDPA
#      (the fast path), the largest batch that fits, against the book model, GPTModel and
#      transformers' GPT-2; greedy generation at batch 1 and 8;
#   2. python -m helpers.pretrain on CUDA (bf16, compile, fused AdamW, tied weights) for a few
#      steps on The Verdict, resumed once, so the script's GPU path has run end to end.
#
#   make data && bash benchmarks/gpu_check.sh [OUTDIR]      # data/: the course cache (tokenizer, The Verdict)
#
# Results land in OUTDIR (default runs/gpu_check): RESULTS.md (bench_speed's entry, to be copied
# into benchmarks/RESULTS.md), the logs, and the pretrain summary. About 5 minutes on an H100/H200,
# most of it torch.compile. Each step has its own time limit, so one stuck step leaves the rest.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD COURSE_DATA_DIR=${COURSE_DATA_DIR:-$PWD/data} TQDM_DISABLE=1
py=${PYTHON:-python3}
# DEVICE, BENCH_ARGS and PRETRAIN_ARGS override the defaults (a dry run on a CPU: see tests/test_benchmarks.py)
device=${DEVICE:-cuda}
bench_args=${BENCH_ARGS:---context 1024 --batch auto --amp bf16 --compile --steps 4 --gen-batches 1 8}
pretrain_args=${PRETRAIN_ARGS:---batch-size 8 --context-length 256 --amp bf16 --compile --tie-weights}
status=0

if [ "$device" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/gpu.txt"
    $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" \
        | tee -a "$out/gpu.txt" || exit 1
fi

echo "== 1. bench_speed: training MFU and generation"
timeout 480 $py benchmarks/bench_speed.py --device "$device" $bench_args --results "$out/RESULTS.md" \
    --note "benchmarks/gpu_check.sh" 2>&1 | tee "$out/bench_speed.log" || status=1

echo "== 2. helpers.pretrain on CUDA"
args=(--data "$COURSE_DATA_DIR/the-verdict.txt" --out "$out/pretrain" --device "$device" $pretrain_args
      --warmup-steps 2 --cosine 4e-5 --clip-grad 1.0)
{ timeout 300 $py -m helpers.pretrain "${args[@]}" --max-steps 6 --stop-after 3 --overwrite &&
  timeout 300 $py -m helpers.pretrain "${args[@]}" --max-steps 6 --resume "$out/pretrain/checkpoint.pt" &&
  cat "$out/pretrain/summary.json"; } 2>&1 | tee "$out/pretrain.log" || status=1
rm -f "$out/pretrain/checkpoint.pt"  # 1.5 GB: the summary and the log are what we keep

echo "gpu_check: exit $status; results in $out"
exit $status
