#!/usr/bin/env bash
# The GPU measurements of issues 11 and 20 in one short run, for a machine with one NVIDIA GPU and
# PyTorch, transformers and tiktoken installed (no network needed):
#   1. eager training, like for like: 124M shape, context 1024, batch 16, bf16 autocast for every
#      implementation (book model, GPTModel, GPTModel with one-kernel LayerNorm/GELU, FastGPTModel
#      tied/untied, transformers' GPT-2), profiles of one GPTModel and one transformers run (what
#      holds GPTModel back), and greedy generation at batch 1 and 8 (64-token prompt, 128 new tokens);
#   2. compiled training near the limit: FastGPTModel and transformers' GPT-2 under torch.compile,
#      the largest batch that fits, plus the padded-vocabulary lever (fast-pad), and a profile of one
#      compiled FastGPTModel run (top kernels);
#   3. python -m helpers.pretrain at scale: a few hundred steps of the fast model (bf16, compile,
#      fused AdamW, tied) on all course texts joined and repeated; tokens/s and MFU in summary.json.
#   4. the T4 path and the memory estimate: a short pretrain run with COURSE_NO_BF16=1 (--amp bf16
#      must run as fp16 with a GradScaler), and bench_memory.py: estimate_training_memory against
#      torch.cuda.max_memory_allocated for the 124M and 355M shapes (what ch07's batch choice uses).
#
#   make data && bash benchmarks/gpu_check.sh [OUTDIR]      # data/: the course cache
#
# Results land in OUTDIR (default runs/gpu_check): RESULTS.md (bench_speed's entries, to be copied
# into benchmarks/RESULTS.md), the logs, and the pretrain summary. About 5-6 minutes on an H100/H200,
# most of it torch.compile. Each step has its own time limit, so one stuck step leaves the rest.
# STEPS="1 2" and then STEPS="3 4" (each with its own OUTDIR) split it into two calls of a lent machine,
# so that a machine lost mid-call (as on 2026-12-05, when nothing came back) costs half the figures.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu_check}
. benchmarks/keep_results.sh
keep_earlier_results "$out"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} COURSE_DATA_DIR=${COURSE_DATA_DIR:-$PWD/data} TQDM_DISABLE=1
py=${PYTHON:-python3}
# DEVICE, EAGER_ARGS, COMPILED_ARGS, PRETRAIN_ARGS, CORPUS_REPEAT and TIMEOUT_SCALE override the defaults (a dry
# run on a CPU: see tests/test_benchmarks.py)
device=${DEVICE:-cuda}
eager_args=${EAGER_ARGS:---context 1024 --batch 16 --amp bf16 --amp-all --steps 2 --train-rounds 3 \
--train book default default-fused fast fast-untied fast-ce hf --gen-batches 1 8 --prompt-tokens 64 --new-tokens 128 \
--gen-rounds 2 --profile default hf}
compiled_args=${COMPILED_ARGS:---context 1024 --batch auto --max-batch 64 --amp bf16 --amp-all --compile --compile-hf \
--steps 4 --train-rounds 3 --train fast fast-pad fast-ce hf --gen --profile fast}
pretrain_args=${PRETRAIN_ARGS:---batch-size 16 --context-length 1024 --amp bf16 --compile --tie-weights --max-steps 200 \
--eval-every 100 --warmup-steps 20 --cosine 4e-5 --clip-grad 1.0}
memory_args=${MEMORY_ARGS:---sizes 124M 355M --batch 8 --tokens 1024}
steps=${STEPS:-1 2 3 4}
for s in $steps; do
    case $s in 1|2|3|4) ;; *) echo "STEPS=$steps: give step numbers from 1 to 4, e.g. STEPS=\"1 2\"" >&2; exit 2;; esac
done
want() { case " $steps " in *" $1 "*) return 0;; esac; return 1; }
status=0
# each step's limit in seconds, times TIMEOUT_SCALE (a whole number; the CPU dry run shares 2 cores with other tests)
scale=${TIMEOUT_SCALE:-1}
case $scale in ''|*[!0-9]*|0) echo "TIMEOUT_SCALE=$scale: give a whole number of 1 or more" >&2; exit 2;; esac
limit() { echo $(( $1 * scale )); }

if [ "$device" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/gpu.txt"
    $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" \
        | tee -a "$out/gpu.txt" || exit 1
fi

if want 1; then
echo "== 1. bench_speed, eager: every implementation with the same bf16 autocast; generation"
timeout $(limit 150) $py benchmarks/bench_speed.py --device "$device" $eager_args --results "$out/RESULTS.md" \
    --note "benchmarks/gpu_check.sh, eager" 2>&1 | tee "$out/bench_eager.log" || status=1
fi

if want 2; then
echo "== 2. bench_speed, compiled: largest batch, padded vocabulary, profile"
timeout $(limit 200) $py benchmarks/bench_speed.py --device "$device" $compiled_args --results "$out/RESULTS.md" \
    --note "benchmarks/gpu_check.sh, compiled" 2>&1 | tee "$out/bench_compiled.log" || status=1
fi

want 3 || want 4 || { echo "gpu_check: exit $status; results in $out"; exit $status; }
corpus="$out/corpus"
mkdir -p "$corpus"
# every course text joined, repeated: a few MB of varied text instead of one 20 kB story
$py - "$COURSE_DATA_DIR" "$corpus/course_texts.txt" "${CORPUS_REPEAT:-8}" <<'PY'
import json, sys
from pathlib import Path
data = Path(sys.argv[1])
parts = [(data / "the-verdict.txt").read_text(encoding="utf-8")]
parts += [f"{e['instruction']}\n{e['input']}\n{e['output']}" for e in json.loads((data / "instruction-data.json").read_text())]
parts += [line.split("\t", 1)[-1] for line in (data / "sms_spam_collection" / "SMSSpamCollection").read_text(encoding="utf-8").splitlines()]
text = "\n\n".join(parts)
repeat = int(sys.argv[3])
Path(sys.argv[2]).write_text("\n\n".join([text] * repeat), encoding="utf-8")
print(f"corpus: {repeat * len(text):,} characters")
PY

if want 3; then
echo "== 3. helpers.pretrain at scale on $device"
timeout $(limit ${PRETRAIN_TIMEOUT:-150}) $py -m helpers.pretrain --data "$corpus" --out "$out/pretrain" --device "$device" $pretrain_args \
    --overwrite 2>&1 | tee "$out/pretrain.log" || status=1
# MFU of the run, from its summary and the same FLOP count and matmul peak as bench_speed
$py - "$out/pretrain/summary.json" "$device" $pretrain_args <<'PY' 2>&1 | tee -a "$out/pretrain.log" || status=1
import json, sys
import torch
sys.path.insert(0, "benchmarks")
from bench_speed import matmul_peak_flops, train_flops_per_token
path = sys.argv[1]
s = json.load(open(path))
cfg = s.get("config") or torch.load(s["checkpoint"], map_location="cpu", weights_only=True, mmap=True)["cfg"]
device = torch.device(sys.argv[2])
dtype = torch.bfloat16 if "--amp bf16" in " ".join(sys.argv[3:]) else torch.float32
peak = matmul_peak_flops(device, dtype)
flops = train_flops_per_token(cfg)
s["mfu"] = s["tok_s"] * flops / peak if "tok_s" in s else None
s["mfu_basis"] = f"{flops / 1e9:.3f} GFLOP/token, measured {str(dtype).removeprefix('torch.')} matmul peak {peak / 1e12:.1f} TFLOP/s"
from helpers.support.files import write_atomically  # the run's summary: replaced, never half-written
write_atomically(path, lambda f: json.dump(s, f, indent=1), mode="w")
print(json.dumps({k: s.get(k) for k in ("steps", "tok_s", "mfu", "mfu_basis", "peak_memory_mib", "final_train_loss", "final_val_loss")}))
PY
cat "$out/pretrain/summary.json"; echo
rm -f "$out/pretrain/"*.pt  # 1.5 GB: the summary and the log are what we keep
fi

if want 4; then
echo "== 4. the older-GPU (T4) path forced, and the training-memory estimate against the measured peak"
COURSE_NO_BF16=1 timeout $(limit 120) $py -m helpers.pretrain --data "$corpus" --out "$out/pretrain_fp16" --device "$device" \
    $pretrain_args --max-steps 20 --warmup-steps 0 --amp bf16 --overwrite 2>&1 | tail -n 5 | tee "$out/pretrain_fp16.log" || status=1
grep -q '"autocast": "float16"' "$out/pretrain_fp16/summary.json" || { echo "T4 path: not float16"; status=1; }
rm -f "$out/pretrain_fp16/"*.pt
timeout $(limit 150) $py benchmarks/bench_memory.py --device "$device" $memory_args 2>&1 | tee "$out/memory.md" || status=1
grep -q failed "$out/memory.md" && status=1
fi

echo "gpu_check: exit $status; results in $out"
exit $status
