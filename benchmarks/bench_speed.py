#!/usr/bin/env python3
"""Training and generation speed, and peak memory, of the course's models side by side with
`transformers`' GPT-2, in one process.

    .venv/bin/python benchmarks/bench_speed.py                 # CPU: 124M shape, context 256, batch 2, 2 threads
    .venv/bin/python benchmarks/bench_speed.py --device cuda --context 1024 --batch auto --amp bf16 --compile
    .venv/bin/python benchmarks/bench_speed.py --n-layers 2 --train-rounds 2 --gen-rounds 1 --no-record   # a quick check

Training (tokens/s of forward + loss + backward + AdamW step, dropout 0.1 as in chapter 5):
  book      GPTModel with chapter 3's step-by-step attention (cfg["attention"] = "naive")
  default   GPTModel (SDPA attention), what the notebooks train
  default-fused  the same model with its LayerNorm and GELU modules computed by PyTorch's fused
            F.layer_norm and F.gelu(approximate="tanh") (same parameters, same function up to
            float rounding): measures what chapter 4's step-by-step LayerNorm and GELU cost
  fast      helpers.fast.FastGPTModel, tied weights, fused AdamW (plus --compile / --amp if given)
  fast-untied   the same without weight tying (same parameters as GPTModel)
  fast-pad  "fast" with the vocabulary padded to a multiple of 128 (50,304 rows): a stand-in to
            measure what padding the output head buys (its logits keep the padded columns)
  fast-ce   "fast" trained through FastGPTModel's chunked loss (forward(ids, targets=...), as
            `helpers.pretrain --chunked-loss` does): the full logits never exist
            (helpers.fast.linear_cross_entropy); --compile compiles it whole
  hf        transformers.GPT2LMHeadModel of the same shape (tied, as GPT-2 is)
Generation (greedy, --new-tokens tokens after a --prompt-tokens prompt, batch 1 and 8):
  uncached  GPTModel, generate_text_simple without a cache (the whole text every step)
  kvcache   GPTModel with chapter 3's KVCache (torch.cat per step)
  static    FastGPTModel (tied) with the preallocated StaticKVCache, generate_fast
  hf        GPT2LMHeadModel.generate (greedy, its own cache)

MFU (model FLOPs utilisation) = achieved model FLOP/s / peak FLOP/s, where
  model FLOPs per training token = 6 x (weights of all matrix multiplications: 12 x n_layers x
  emb_dim^2 in the blocks + vocab_size x emb_dim in the output head) + 12 x n_layers x context x
  emb_dim (attention scores and their weighted sum, counted in full, though causal attention
  could skip half) -- the estimate of Chowdhery et al. 2022 (PaLM, appendix B), also used by
  nanoGPT; 2 FLOPs per multiply-add, x3 for forward + backward. Embedding lookups, layer norms,
  biases and softmax are left out, so the count is the model's, not the hardware's work
  (recomputation under gradient checkpointing is not counted either).
  peak = the measured throughput of a large square matmul on the same device in the dtype the
  implementation computes in (bf16/fp16 under --amp, float32 otherwise), not the data sheet's.
tests/test_bench_flops.py checks the FLOP count against PyTorch's own FlopCounterMode.

Every implementation gets one warm-up run; then the timed runs go round-robin, each round
starting one further along (A, B, C, then B, C, A, ...), so that a change in machine load hits
all of them alike and none always follows the same one, and the medians are compared.
Peak memory is measured in a separate, untimed pass: on CUDA the allocator's peak; on the CPU
the growth of the process's resident memory during the run, sampled every 2 ms after returning
freed memory to the OS (so: approximate). Results are printed and appended to
benchmarks/RESULTS.md with the machine, versions, load and command (--no-record: print only).
Nothing is asserted: speed is never checked by tests.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from helpers.fast import FastGPTModel, compile_model, generate_fast  # noqa: E402
from helpers.generation import generate_text_simple  # noqa: E402
from helpers.model import GPT_CONFIGS, GPTModel  # noqa: E402
from helpers.pretrain import POSITIVE_INT  # noqa: E402  (argparse types: a bad count is one line)
from helpers.support.runtime import get_device  # noqa: E402

TRAIN_IMPLS = ["book", "default", "fast", "fast-untied", "hf", "fast-pad", "fast-ce", "default-fused"]
GEN_IMPLS = ["uncached", "kvcache", "static", "hf"]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_flops_per_token(cfg: dict) -> int:
    """Model FLOPs of one training token (forward + backward), as described at the top."""
    L, d, T, V = cfg["n_layers"], cfg["emb_dim"], cfg["context_length"], cfg["vocab_size"]
    matmul_weights = 12 * L * d * d + V * d  # q, k, v, out (4 d^2) + feed-forward (8 d^2) per block; head
    return 6 * matmul_weights + 12 * L * T * d


def matmul_peak_flops(device, dtype, n: int | None = None, rounds: int = 5) -> float:
    """Measured FLOP/s of an n x n matmul (median of `rounds`): the peak MFU is relative to.
    Default n: 8192 on a GPU; on a CPU the largest of 256 ... 2048 whose product should take
    under half a second (a CPU without bf16 instructions emulates bf16, about 150 times slower)."""
    if n is None and device.type == "cuda":
        n = 8192
    elif n is None:
        a = torch.randn(256, 256, device=device).to(dtype)
        a @ a
        t0 = time.perf_counter()
        a @ a
        small = time.perf_counter() - t0
        n = 256
        while n < 2048 and small * (2 * n / 256) ** 3 <= 0.5:
            n *= 2
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    reps = 20 if device.type == "cuda" else 2
    a @ b  # warm-up
    times = []
    for _ in range(rounds):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        times.append((time.perf_counter() - t0) / reps)
    return 2 * n ** 3 / statistics.median(times)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def append_results(path, entry: str) -> None:
    """Append one entry to the results file (benchmarks/RESULTS.md), creating it if missing."""
    path = Path(path)
    if not path.exists():
        path.write_text("# Benchmark results\n\nAppended by the scripts in `benchmarks/`; newest last.\n\n")
    with path.open("a", encoding="utf-8") as f:
        f.write(entry)
    print(f"appended to {path}")


def hf_gpt2(cfg, device):
    from transformers import GPT2Config, GPT2LMHeadModel
    config = GPT2Config(vocab_size=cfg["vocab_size"], n_positions=cfg["context_length"], n_embd=cfg["emb_dim"],
                        n_layer=cfg["n_layers"], n_head=cfg["n_heads"], activation_function="gelu_new",
                        resid_pdrop=cfg["drop_rate"], embd_pdrop=cfg["drop_rate"], attn_pdrop=cfg["drop_rate"],
                        layer_norm_epsilon=1e-5, tie_word_embeddings=True)
    return GPT2LMHeadModel(config).to(device)


def fuse_norms_and_gelu(model):
    """Give a GPTModel the one-kernel LayerNorm and GELU of chapter 4's fast model, keeping its
    parameters: each LayerNorm becomes a `FusedLayerNorm` (a subclass with the same `scale` and
    `shift`), and each FeedForward gets `FusedFeedForward`'s `nn.GELU(approximate="tanh")`."""
    from helpers.fast import FusedLayerNorm
    from helpers.model import FeedForward, LayerNorm
    for module in model.modules():
        if type(module) is LayerNorm:
            module.__class__ = FusedLayerNorm  # only forward differs; no state to add
        elif isinstance(module, FeedForward):
            module.layers[1] = torch.nn.GELU(approximate="tanh")
    return model


def build(name, cfg, device, args):
    """(model, forward: ids -> logits, optimizer) for one training implementation."""
    fused_ok = device.type in ("cuda", "cpu")
    if name == "book":
        model = GPTModel({**cfg, "attention": "naive"}).to(device)
    elif name == "default":
        model = GPTModel(cfg).to(device)
    elif name == "default-fused":
        model = fuse_norms_and_gelu(GPTModel(cfg)).to(device)
    elif name in ("fast", "fast-untied", "fast-ce"):
        model = FastGPTModel({**cfg, "tie_weights": name != "fast-untied"}).to(device)
    elif name == "fast-pad":
        model = FastGPTModel({**cfg, "vocab_size": -(-cfg["vocab_size"] // 128) * 128, "tie_weights": True}).to(device)
    else:
        model = hf_gpt2(cfg, device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1,
                                  fused=name.startswith("fast") and fused_ok)
    call = model
    if name.startswith("fast") and args.compile:
        call = compile_model(model, mode=args.compile_mode) if args.compile_mode else compile_model(model)
    elif name == "hf" and args.compile_hf:
        call = torch.compile(model, mode=args.compile_mode)
    if name == "hf":
        return model, (lambda ids: call(input_ids=ids).logits), optimizer
    if name == "fast-ce":  # what `python -m helpers.pretrain --chunked-loss` runs: the loss through forward

        def loss_of(ids, targets):
            return call(ids, targets=targets)
        loss_of.computes_loss = True  # train_step: this forward returns the loss itself
        return model, loss_of, optimizer
    return model, call, optimizer


def gets_amp(name, args) -> bool:
    """Whether implementation `name` trains under --amp's autocast: by default only the fast
    path (one of its options; the others are the baselines), every one with --amp-all."""
    return name.startswith("fast") or getattr(args, "amp_all", False)


def train_step(forward, optimizer, ids, targets, device, amp):
    autocast = torch.autocast(device.type, dtype=amp) if amp is not None else torch.autocast(device.type, enabled=False)
    with autocast:
        if getattr(forward, "computes_loss", False):
            loss = forward(ids, targets)
        else:
            loss = F.cross_entropy(forward(ids).flatten(0, 1).float(), targets.flatten())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


class PeakMemory:
    """Peak memory of one run: CUDA allocator peak, or resident-set growth sampled on the CPU."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        try:  # glibc keeps freed memory; hand it back so that the next growth is visible
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        self.base = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    @staticmethod
    def _rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.mib = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        else:
            self.running = False
            self.thread.join()
            self.peak = max(self.peak, self._rss())
            self.mib = (self.peak - self.base) / 2**20


def peak_memory(runs: dict, device, args) -> dict:
    """{name: MiB} from one more, untimed run of each (NaN with --no-memory)."""
    memory = {}
    for name, fn in runs.items():
        if args.no_memory:
            memory[name] = float("nan")
            continue
        with PeakMemory(device) as m:
            fn()
        memory[name] = m.mib
    return memory


def round_robin(runs: dict, rounds: int, device, warmups: dict | None = None) -> dict:
    """{name: [seconds per round]}: each run warms up once (with `warmups[name]` if given, a
    cheaper call of the same code), then `rounds` interleaved rounds."""
    for name, fn in runs.items():
        (warmups or {}).get(name, fn)()
    sync(device)
    times = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        # each round starts one further along, so that no implementation always runs right
        # after the same other one (a predecessor leaves the caches and the allocator in its state)
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = runs[name]
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def largest_batch(cfg, device, args) -> int:
    """The largest power of two <= --max-batch at which one training step of every selected
    implementation fits in the GPU's memory (each probed alone, its memory freed after)."""
    amp = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    eager = argparse.Namespace(**{**vars(args), "compile": False})  # compiling per probe takes minutes
    batch = args.max_batch
    for name in args.train:
        while batch >= 1:
            ids = torch.randint(0, cfg["vocab_size"], (batch, args.context + 1), device=device)
            model = forward = optimizer = None
            try:
                model, forward, optimizer = build(name, cfg, device, eager)
                train_step(forward, optimizer, ids[:, :-1], ids[:, 1:], device,
                           amp if gets_amp(name, args) else None)
                sync(device)
                break
            except torch.cuda.OutOfMemoryError:
                batch //= 2
            finally:
                del model, forward, optimizer, ids
                torch.cuda.empty_cache()
        if batch < 1:
            raise SystemExit(f"{name}: not even batch 1 fits at context {args.context}")
        print(f"--batch auto: {name} fits batch {batch}", flush=True)
    return batch


def bench_training(cfg, device, args):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg["vocab_size"], (args.batch, args.context + 1), generator=g).to(device)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    amp = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    runs = {}
    for name in args.train:
        torch.manual_seed(0)
        model, forward, optimizer = build(name, cfg, device, args)
        step_amp = amp if gets_amp(name, args) else None
        runs[name] = (lambda f=forward, o=optimizer, a=step_amp:
                      [train_step(f, o, inputs, targets, device, a) for _ in range(args.steps)])
    times = round_robin(runs, args.train_rounds, device)
    memory = peak_memory(runs, device, args)
    for name in args.profile:
        profile_step(name, runs[name], device, args)
    tokens = args.batch * args.context * args.steps
    flops = train_flops_per_token({**cfg, "context_length": args.context})
    peaks = {dtype: matmul_peak_flops(device, dtype) for dtype in {torch.float32, amp or torch.float32}}
    results = {}
    for name, t in times.items():
        tok_s = tokens / statistics.median(t)
        dtype = amp if (amp is not None and gets_amp(name, args)) else torch.float32
        results[name] = {"tok_s": tok_s, "times": t, "peak_mib": memory[name], "tflops": tok_s * flops / 1e12,
                         "mfu": tok_s * flops / peaks[dtype], "dtype": str(dtype).removeprefix("torch.")}
    return results, peaks, flops


def profile_step(name, run, device, args):
    """The most expensive kernels of one timed run of `name` (torch.profiler), as a table."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        run()
        sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    args.profile_table += (f"\nProfile of one run of `{name}` ({args.steps} step(s)), top kernels by self "
                          f"{'GPU' if device.type == 'cuda' else 'CPU'} time:\n\n```\n"
                          + prof.key_averages().table(sort_by=key, row_limit=args.profile_rows, max_name_column_width=70)
                          + "```\n")


def bench_generation(cfg, device, args, batch):
    cfg = {**cfg, "drop_rate": 0.0}
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, cfg["vocab_size"], (batch, args.prompt_tokens), generator=g).to(device)
    n = args.new_tokens
    torch.manual_seed(0)
    warm = {}
    book = GPTModel(cfg).to(device).eval()
    fast = FastGPTModel({**cfg, "tie_weights": True}).to(device).eval()
    runs = {}
    if "uncached" in args.gen:
        runs["uncached"] = lambda: generate_text_simple(book, prompt, n, cfg["context_length"], use_cache=False)
        warm["uncached"] = lambda: generate_text_simple(book, prompt, 2, cfg["context_length"], use_cache=False)
    if "kvcache" in args.gen:
        runs["kvcache"] = lambda: generate_text_simple(book, prompt, n, cfg["context_length"], use_cache=True)
    if "static" in args.gen:
        runs["static"] = lambda: generate_fast(fast, prompt, n)
    if "hf" in args.gen:
        hf = hf_gpt2(cfg, device).eval()
        hf.generation_config.eos_token_id = None
        hf.generation_config.pad_token_id = 0
        mask = torch.ones_like(prompt)

        def run_hf():
            with torch.no_grad():
                return hf.generate(input_ids=prompt, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                   do_sample=False)
        runs["hf"] = run_hf
    times = round_robin(runs, args.gen_rounds, device, warm)
    memory = peak_memory(runs, device, args)
    return {name: {"tok_s": batch * n / statistics.median(t), "times": t, "peak_mib": memory[name]}
            for name, t in times.items()}


def table(title, results, ratios):
    mfu = all("mfu" in r for r in results.values())
    lines = [f"**{title}**", "", "| implementation | tokens/s (median) | runs (s) | peak memory (MiB) |"
             + (" model TFLOP/s | MFU |" if mfu else ""), "|---|---|---|---|" + ("---|---|" if mfu else "")]
    for name, r in results.items():
        runs = ", ".join(f"{t:.2f}" for t in r["times"])
        lines.append(f"| {name} | {r['tok_s']:.1f} | {runs} | {r['peak_mib']:.0f} |"
                     + (f" {r['tflops']:.3f} | {100 * r['mfu']:.1f} % ({r['dtype']}) |" if mfu else ""))
    lines.append("")
    for a, b in ratios:
        if a in results and b in results:
            lines.append(f"- {a} / {b}: **{results[a]['tok_s'] / results[b]['tok_s']:.2f}x**")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="124M", choices=list(GPT_CONFIGS))
    p.add_argument("--n-layers", type=POSITIVE_INT, help="override the number of blocks (quick checks)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=POSITIVE_INT, default=2, help="torch.set_num_threads on the CPU (default 2)")
    p.add_argument("--context", type=POSITIVE_INT, default=256, help="training sequence length")
    p.add_argument("--batch", default="2",
                   help="training batch size, or 'auto' (CUDA): the largest power of two <= --max-batch "
                        "at which every selected implementation fits")
    p.add_argument("--max-batch", type=POSITIVE_INT, default=64, help="upper bound for --batch auto")
    p.add_argument("--steps", type=POSITIVE_INT, default=1, help="training steps per timed run")
    p.add_argument("--train-rounds", type=POSITIVE_INT, default=5)
    p.add_argument("--train", nargs="*", default=TRAIN_IMPLS, choices=TRAIN_IMPLS)
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="autocast for the fast path")
    p.add_argument("--compile", action="store_true", help="torch.compile the fast path")
    p.add_argument("--compile-hf", action="store_true", help="torch.compile transformers' GPT-2 too")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune")
    p.add_argument("--amp-all", action="store_true",
                   help="give every implementation --amp's autocast (default: only the fast path)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls and convolutions (CUDA)")
    p.add_argument("--profile", nargs="*", default=[], choices=TRAIN_IMPLS,
                   help="profile one run of each of these implementations")
    p.add_argument("--profile-rows", type=POSITIVE_INT, default=15)
    p.add_argument("--gen", nargs="*", default=GEN_IMPLS, choices=GEN_IMPLS)
    p.add_argument("--gen-batches", type=POSITIVE_INT, nargs="*", default=[1, 8])
    p.add_argument("--prompt-tokens", type=POSITIVE_INT, default=16)
    p.add_argument("--new-tokens", type=POSITIVE_INT, default=64)
    p.add_argument("--gen-rounds", type=POSITIVE_INT, default=3)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass (saves one run of each)")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    p.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    p.add_argument("--note", default="", help="free text for the results entry (e.g. 'machine idle')")
    args = p.parse_args(argv)

    try:
        device = get_device(args.device)
    except (RuntimeError, ValueError) as e:
        p.error(f"--device {args.device}: {e}")
    missing = [name for name in args.profile if name not in args.train]
    if missing:
        p.error(f"--profile {' '.join(missing)}: add it to --train")
    args.profile_table = ""
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    cfg = {**GPT_CONFIGS[args.size], "context_length": max(args.context, args.prompt_tokens + args.new_tokens)}
    if args.n_layers:
        cfg["n_layers"] = args.n_layers
    if args.batch == "auto":
        if device.type != "cuda":
            p.error("--batch auto probes GPU memory: use it with --device cuda, or give a number")
        args.batch = largest_batch(cfg, device, args) if args.train else 1
    elif not args.batch.isdigit() or int(args.batch) < 1:
        p.error(f"--batch must be a positive number or 'auto', not {args.batch!r}")
    else:
        args.batch = int(args.batch)
    import transformers
    load = os.getloadavg()
    header = [
        f"### {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}: {args.size} shape"
        + (f", {cfg['n_layers']} layers" if args.n_layers else ""),
        "",
        f"- machine: {cpu_name()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else f", {torch.get_num_threads()} threads"),
        f"- versions: python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}",
        f"- load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}" + (f"; {args.note}" if args.note else ""),
        f"- command: `{' '.join(['benchmarks/bench_speed.py'] + (argv if argv is not None else sys.argv[1:]))}`",
        "",
    ]
    print("\n".join(header))
    sections = []
    if args.train:
        res, peaks, flops = bench_training(cfg, device, args)
        title = (f"Training: tokens/s, context {args.context}, batch {args.batch}, {args.steps} step(s) per run, "
                 f"{args.train_rounds} rounds" + (f", fast path amp={args.amp}" if args.amp != "none" else "")
                 + (" (all implementations)" if args.amp_all and args.amp != "none" else "")
                 + (", fast path compiled" if args.compile else "")
                 + (", hf compiled" if args.compile_hf else "")
                 + (f", compile mode {args.compile_mode}" if args.compile_mode else "")
                 + (", TF32 allowed" if args.tf32 else ""))
        sections.append(table(title, res, [("fast", "book"), ("fast", "hf"), ("fast", "default"),
                                           ("default", "book"), ("default", "hf"), ("fast-untied", "default"),
                                           ("fast-pad", "fast"), ("fast-ce", "fast"),
                                           ("default-fused", "default"), ("default-fused", "hf")]))
        sections[-1] += ("- MFU: model FLOPs (6 x matmul weights + 12 x layers x context x width per token, "
                         f"{flops / 1e9:.3f} GFLOP) "
                         "/ measured matmul peak: "
                         + ", ".join(f"{str(k).removeprefix('torch.')} {v / 1e12:.2f} TFLOP/s" for k, v in peaks.items())
                         + "\n")
        if args.profile_table:
            sections[-1] += "\n" + args.profile_table
        print(sections[-1], flush=True)
    for batch in args.gen_batches if args.gen else []:
        res = bench_generation(GPT_CONFIGS[args.size] | {k: cfg[k] for k in ("n_layers", "context_length")},
                               device, args, batch)
        title = (f"Greedy generation: batch {batch}, {args.prompt_tokens}-token prompt, {args.new_tokens} new tokens, "
                 f"{args.gen_rounds} rounds")
        sections.append(table(title, res, [("static", "hf"), ("static", "uncached"), ("static", "kvcache"),
                                           ("kvcache", "uncached")]))
        print(sections[-1], flush=True)
    if not args.no_record:
        append_results(args.results, "\n".join(header) + "\n" + "\n".join(sections) + "\n")


if __name__ == "__main__":
    main()
