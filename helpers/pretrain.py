"""Pretrain or resume a GPT model on a text file or a folder of text files.

HAND-WRITTEN command-line script, not exported from a notebook (the notebooks teach the
training loop in ch05; this is the same loop with the options a longer run needs).

    python -m helpers.pretrain --data the-verdict.txt --out runs/pretrain --epochs 10 --batch-size 2 \\
        --context-length 256
    python -m helpers.pretrain --data corpus/ --out runs/big --max-steps 20000 --batch-size 16 --grad-accum 4 \\
        --warmup-steps 500 --cosine 4e-5 --clip-grad 1.0 --amp bf16 --compile --tie-weights
    python -m helpers.pretrain ... --resume runs/big/checkpoint.pt      # continue where it stopped
    torchrun --nproc_per_node=4 -m helpers.pretrain ...                  # DistributedDataParallel

Data: the files are read in sorted order, joined with "<|endoftext|>", tokenized with GPT-2's
BPE, and split by characters like chapter 5 (the first 1 - --val-fraction for training, the
rest for validation); training windows are GPTDatasetV1's (stride --stride, default the
context length, so windows do not overlap).

Batches and DDP: with WORLD_SIZE > 1 (set by torchrun) each process joins a process group
(NCCL on CUDA, gloo on the CPU) and trains a DistributedDataParallel copy. Every epoch draws
one permutation of the windows from --seed and the epoch number (DistributedSampler), and
each optimizer step consumes the next batch-size x world-size x grad-accum windows of it. So
the global batch, not the way it is split, decides what a step sees: 2 processes with batch B
take the same steps as 1 process with batch 2B or with batch B and --grad-accum 2 (up to float
rounding, without dropout). Logged losses are averaged over all processes; only rank 0 logs,
shows the progress bar and writes checkpoints.

Checkpoints are helpers.training.save_checkpoint files: {"model": state dict, "optimizer": ...,
plus step, epoch, config and options}. The state dict is the bare model's (no DDP or compile
wrapper) in GPTModel's layout, so `GPTModel(cfg)` loads it (also FastGPTModel's, whose hooks
translate) and a run on N processes resumes on any number of processes. The optimizer state
belongs to the model class that wrote it, so --model must match when resuming.
Dropout masks are seeded from (--seed, step, rank), so an interrupted and resumed run repeats
the uninterrupted one exactly on the same machine and number of processes.

Ctrl-C (SIGINT) lets the current optimizer step finish, writes the checkpoint and exits; a
second Ctrl-C while that happens is ignored, so the checkpoint is never half-updated. Under
torchrun every process stops after the same step (the processes agree before stopping).

On the CPU (Linux) large tensors are kept on the heap between steps instead of being handed
back to the kernel and faulted in again: about 12 % more tokens/s for the 124M shape on 2 cores,
for a few hundred MiB more peak memory (--system-malloc turns this off).

At the end OUT/summary.json records the run: steps, losses, parameters, median tokens/s per
step (the first step, which warms up, left out) and peak memory (CUDA: the allocator's peak;
CPU: the process's peak resident memory). The training-options table in chapter 5 is made of
these summaries.
"""
from __future__ import annotations

import argparse
import ctypes
import csv
import json
import math
import os
import resource
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Subset

from helpers.fast import FastGPTModel, compile_model
from helpers.model import GPT_CONFIGS, GPTModel
from helpers.support.runtime import get_device
from helpers.text import GPTDatasetV1
from helpers.training import calc_loss_batch, interrupt_after_step, load_checkpoint, save_checkpoint

LOG_COLUMNS = ["step", "epoch", "tokens", "lr", "train_loss", "val_loss", "tok_s", "elapsed_s"]


class DataError(ValueError):
    """The data given cannot be trained on (missing, empty, too short); the message says why."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m helpers.pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data and output")
    g.add_argument("--data", required=True, help="a text file, or a folder searched for *.txt (recursively)")
    g.add_argument("--out", default="runs/pretrain", help="folder for checkpoint.pt and the log")
    g.add_argument("--val-fraction", type=float, default=0.1, help="share of the text kept for validation (0: none)")
    g.add_argument("--stride", type=int, help="window stride in tokens (default: the context length)")
    g.add_argument("--log", help="log file; .csv or .jsonl (default: OUT/log.jsonl)")
    g = p.add_argument_group("model (a GPT-2 size, then overrides)")
    g.add_argument("--model-size", default="124M", choices=list(GPT_CONFIGS))
    g.add_argument("--n-layers", type=int)
    g.add_argument("--emb-dim", type=int)
    g.add_argument("--n-heads", type=int)
    g.add_argument("--context-length", type=int, default=256, help="default 256, as in chapter 5")
    g.add_argument("--drop-rate", type=float, default=0.1)
    g.add_argument("--qkv-bias", action="store_true")
    g.add_argument("--model", choices=["fast", "default"], default="fast",
                   help="fast: helpers.fast.FastGPTModel (default); default: helpers.model.GPTModel")
    g.add_argument("--tie-weights", action="store_true", help="share the output head with the token embedding (fast model)")
    g.add_argument("--grad-checkpointing", action="store_true", help="recompute block activations in backward (fast model)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=2, help="windows per process and micro-batch")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    g.add_argument("--lr", type=float, default=4e-4)
    g.add_argument("--weight-decay", type=float, default=0.1)
    g.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up from 0 to --lr")
    g.add_argument("--cosine", type=float, metavar="MIN_LR", help="cosine decay from --lr to MIN_LR after warm-up")
    g.add_argument("--clip-grad", type=float, metavar="MAX_NORM", help="clip the gradient norm")
    g.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="autocast (fp16 adds a GradScaler)")
    g.add_argument("--fused-adamw", choices=["auto", "on", "off"], default="auto",
                   help="fused AdamW kernel; auto: on for CUDA only (on the CPU it is an option: see chapter 5's table)")
    g.add_argument("--epochs", type=int, help="passes over the training windows (default 1, or as many as --max-steps needs)")
    g.add_argument("--max-steps", type=int, help="optimizer steps in all (with --epochs: whichever ends first); the schedule's length")
    g.add_argument("--stop-after", type=int, metavar="STEPS",
                   help="stop this run after STEPS steps and checkpoint, as if interrupted (for time-limited jobs)")
    g = p.add_argument_group("evaluation, checkpoints, run")
    g.add_argument("--eval-every", type=int, default=0, help="validation loss every N steps (0: at the end only)")
    g.add_argument("--eval-windows", type=int, help="evaluate on the first N validation windows (default: all)")
    g.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: at evaluations and the end)")
    g.add_argument("--resume", help="checkpoint to continue from")
    g.add_argument("--overwrite", action="store_true", help="start afresh even if OUT already holds a checkpoint")
    g.add_argument("--seed", type=int, default=123)
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    g.add_argument("--system-malloc", action="store_true",
                   help="CPU: leave glibc's allocation threshold alone (by default large tensors stay on the heap)")
    return p


def read_texts(path: str | Path) -> str:
    """The text of one file, or of every *.txt under a folder (sorted, joined by <|endoftext|>)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"no .txt files under {path}")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"--data {path} does not exist")
    texts = [f.read_text(encoding="utf-8") for f in files]
    if not any(t.strip() for t in texts):
        raise DataError(f"the text in {path} is empty")
    return "<|endoftext|>".join(t for t in texts if t.strip())


def model_config(args) -> dict:
    cfg = dict(GPT_CONFIGS[args.model_size])
    for key, value in [("n_layers", args.n_layers), ("emb_dim", args.emb_dim), ("n_heads", args.n_heads),
                       ("context_length", args.context_length)]:
        if value is not None:
            cfg[key] = value
    cfg.update(drop_rate=args.drop_rate, qkv_bias=args.qkv_bias)
    if args.model == "fast":
        cfg.update(tie_weights=args.tie_weights, grad_checkpointing=args.grad_checkpointing)
    elif args.tie_weights or args.grad_checkpointing:
        raise ValueError("--tie-weights and --grad-checkpointing need --model fast")
    return cfg


def build_model(cfg: dict, model_class: str, seed: int):
    """GPTModel or FastGPTModel with GPTModel's initial weights for `seed`, so that --model
    changes the speed, not the numbers (a tied head keeps FastGPTModel's std-0.02 embedding)."""
    torch.manual_seed(seed)
    book = GPTModel(cfg)
    if model_class == "default":
        return book
    fast = FastGPTModel(cfg)
    state = book.state_dict()
    if cfg.get("tie_weights"):  # the shared matrix: FastGPTModel's own (GPT-2's) initialisation
        del state["tok_emb.weight"], state["out_head.weight"]
    missing, _ = fast.load_state_dict(state, strict=not cfg.get("tie_weights"))
    assert set(missing) <= {"tok_emb.weight", "out_head.weight"}, missing
    return fast


def learning_rate(step: int, args, total_steps: int) -> float:
    """Linear warm-up over --warmup-steps, then constant, or cosine decay to --cosine at the end."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    if args.cosine is None:
        return args.lr
    # 0 at the first step after warm-up, 1 at the last step, so the last step runs at MIN_LR
    progress = min(1.0, (step - args.warmup_steps) / max(1, total_steps - args.warmup_steps - 1))
    return args.cosine + 0.5 * (args.lr - args.cosine) * (1 + math.cos(math.pi * progress))


class RunLog:
    """Rows appended to a .jsonl (one JSON object per line) or .csv file (LOG_COLUMNS)."""

    def __init__(self, path: Path):
        self.path = path
        self.csv = path.suffix == ".csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.csv and (not path.exists() or path.stat().st_size == 0):
            with path.open("w", newline="") as f:
                csv.writer(f).writerow(LOG_COLUMNS)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            if self.csv:
                csv.writer(f).writerow(["" if row.get(c) is None else row[c] for c in LOG_COLUMNS])
            else:
                f.write(json.dumps(row) + "\n")


def read_log(path: str | Path) -> list[dict]:
    """The rows of a log written by this script (numbers as floats/ints; missing values None)."""
    path = Path(path)
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return [{k: (None if v == "" else (int(v) if k in ("step", "epoch", "tokens") else float(v)))
                     for k, v in row.items()} for row in csv.DictReader(f)]
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def setup_distributed(device_arg: str):
    """(rank, world size, device); joins the process group when torchrun started several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, get_device(device_arg)
    device = get_device(device_arg)
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    elif device.type != "cpu":
        raise ValueError(f"DistributedDataParallel runs on CUDA (NCCL) or the CPU (gloo), not {device.type}")
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def peak_memory_mib(device) -> float:
    """CUDA: the allocator's peak since the start; elsewhere the process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:  # Linux: this process's own high-water mark (ru_maxrss would include a forking parent's)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def keep_large_tensors_on_the_heap() -> bool:
    """CPU training on Linux (glibc): serve allocations of up to 1 GiB from the heap.

    glibc hands out every allocation above a threshold (at most 32 MiB) as fresh pages from
    the kernel and returns them on free, so each training step faults its large tensors (the
    logits, the embedding's gradient, ...) in again, page by page: 7-10 % of a 124M step on a
    2-core CPU (benchmarks/README.md). Kept on the heap, freed memory is reused instead. Returns
    whether the setting took effect (not on other systems or C libraries)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
    # up to 1 GiB from the heap, and up to 2 GiB of freed heap kept for reuse, not handed back
    return bool(mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(M_TRIM_THRESHOLD, 2 << 30))


def mean_over_processes(value: float, device, world: int) -> float:
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)  # SUM: gloo has no AVG
    return t.item() / world


def evaluate(model, val_set, args, device, rank, world, autocast) -> float:
    """Mean loss over the validation windows, each process taking every world-th window."""
    n = len(val_set) if args.eval_windows is None else min(args.eval_windows, len(val_set))
    shard = Subset(val_set, range(rank, n, world))
    total = torch.zeros(2, dtype=torch.float64, device=device)  # loss x windows, windows
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for inputs, targets in DataLoader(shard, batch_size=args.batch_size):
            with autocast():
                loss = calc_loss_batch(inputs, targets, model, device)
            total += torch.tensor([loss.item() * len(inputs), len(inputs)], dtype=torch.float64, device=device)
    model.train(was_training)
    if world > 1:
        dist.all_reduce(total)
    return (total[0] / total[1]).item()


def main(argv=None) -> dict:
    """Run the script with `argv` (default sys.argv[1:]); returns a summary dict."""
    args = build_parser().parse_args(argv)
    for name in ("batch_size", "grad_accum", "epochs", "context_length"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= args.val_fraction < 1:
        raise ValueError("--val-fraction must be in [0, 1)")
    rank, world, device = setup_distributed(args.device)
    if device.type == "cpu" and not args.system_malloc:
        keep_large_tensors_on_the_heap()
    try:
        return _train(args, rank, world, device)
    finally:
        if world > 1:
            dist.destroy_process_group()


def _train(args, rank, world, device) -> dict:
    from tqdm.auto import tqdm

    from helpers.support.data import gpt2_tokenizer

    out = Path(args.out)
    ckpt_path = out / "checkpoint.pt"
    log_path = Path(args.log) if args.log else out / "log.jsonl"
    if not args.resume and ckpt_path.exists():
        if not args.overwrite:  # a forgotten --resume would otherwise replace a long run's checkpoint
            raise ValueError(f"{ckpt_path} exists: pass --resume {ckpt_path} to continue it, or --overwrite "
                             f"to start afresh, or choose another --out")
        if rank == 0 and log_path.exists():
            log_path.unlink()
    state = {}
    if args.resume:
        # The architecture comes from the checkpoint; the flags given now set everything else.
        state = torch.load(args.resume, map_location="cpu", weights_only=True)
        cfg = state["cfg"]
        if state.get("model_class", "fast") != args.model:
            raise ValueError(f"{args.resume} was written with --model {state.get('model_class')}; "
                             f"resume with the same --model (its optimizer state fits that model)")
    else:
        cfg = model_config(args)

    # Data: the same on every process; the sampler decides who sees what.
    text = read_texts(args.data)
    split = int(len(text) * (1 - args.val_fraction))
    tokenizer = gpt2_tokenizer()
    stride = args.stride or cfg["context_length"]
    try:
        train_set = GPTDatasetV1(text[:split], tokenizer, cfg["context_length"], stride)
    except ValueError as e:
        raise DataError(f"training text of {args.data}: {e}") from None
    val_set = None
    if args.val_fraction > 0:
        try:
            val_set = GPTDatasetV1(text[split:], tokenizer, cfg["context_length"], stride)
        except ValueError as e:
            raise DataError(f"validation text (the last {args.val_fraction:.0%} of {args.data}): {e}; "
                            f"use a longer text, a smaller --context-length or --val-fraction 0") from None
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=args.seed, drop_last=True)
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, drop_last=True)
    steps_per_epoch = len(loader) // args.grad_accum
    global_batch = args.batch_size * world * args.grad_accum
    if steps_per_epoch == 0:
        raise DataError(f"the training text gives {len(train_set)} windows of {cfg['context_length']} tokens, fewer than "
                        f"one global batch of {global_batch} (batch size x processes x grad-accum)")
    if args.max_steps is None:
        total_steps = (args.epochs or 1) * steps_per_epoch
    else:
        total_steps = args.max_steps if args.epochs is None else min(args.max_steps, args.epochs * steps_per_epoch)

    # Model and optimizer; the same seed on every process gives the same initial weights.
    model = build_model(cfg, args.model, args.seed).to(device)
    fused = {"on": True, "off": False, "auto": device.type == "cuda"}[args.fused_adamw]
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, fused=fused)
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    step = epoch = step_in_epoch = tokens_seen = 0
    if args.resume:
        extra = load_checkpoint(args.resume, model, optimizer, map_location=device)
        step, epoch, step_in_epoch = extra["step"], extra["epoch"], extra["step_in_epoch"]
        tokens_seen = extra["tokens"]
        if "scaler" in extra and scaler.is_enabled():
            scaler.load_state_dict(extra["scaler"])
        if extra.get("global_batch") != global_batch and rank == 0:
            print(f"note: the checkpoint was written with a global batch of {extra.get('global_batch')}, this run "
                  f"uses {global_batch}: steps are counted in this run's batches, so the position in the "
                  f"current epoch is approximate", file=sys.stderr)
    del state

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()

    train_model = compile_model(model) if args.compile else model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None)

    saved_at = [None]

    def save():
        saved_at[0] = step
        if rank == 0:
            save_checkpoint(ckpt_path, model, optimizer, step=step, epoch=epoch, step_in_epoch=step_in_epoch,
                            tokens=tokens_seen, cfg=cfg, model_class=args.model, world_size=world,
                            global_batch=global_batch, seed=args.seed,
                            **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {}))

    log = RunLog(log_path) if rank == 0 else None
    n_params = sum(p.numel() for p in model.parameters())
    if rank == 0:
        print(f"{args.model} model, {n_params / 1e6:.1f}M parameters, {cfg['n_layers']} layers, context "
              f"{cfg['context_length']}; {len(train_set)} training windows; {world} process(es) on {device}; "
              f"global batch {global_batch} = {args.batch_size} x {world} x {args.grad_accum}; "
              f"{steps_per_epoch} steps per epoch, {total_steps} in all" + (f", resuming at step {step}" if step else ""))
    def train_step(batches, lr):
        """One optimizer step over grad-accum micro-batches; returns the mean loss over processes."""
        for group in optimizer.param_groups:
            group["lr"] = lr
        # Dropout masks depend only on (seed, step, rank): an interrupted run resumes exactly.
        torch.manual_seed(args.seed + 1_000_003 * (step + 1) + rank)
        step_loss = torch.zeros((), device=device)  # summed on the device: one host sync per step, not per micro-batch
        for micro in range(args.grad_accum):
            inputs, targets = next(batches)
            last = micro == args.grad_accum - 1
            with train_model.no_sync() if world > 1 and not last else nullcontext():
                with autocast():
                    loss = calc_loss_batch(inputs, targets, train_model, device) / args.grad_accum
                scaler.scale(loss).backward()
            step_loss += loss.detach().float()
        if args.clip_grad is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return mean_over_processes(step_loss.item(), device, world)

    # Only rank 0 shows a bar; elsewhere tqdm's own default (and TQDM_DISABLE) decides.
    bar = tqdm(total=total_steps, initial=step, desc="pretrain", unit="step", **({"disable": True} if rank else {}))
    start_step, t_start, last_train_loss, last_val = step, time.perf_counter(), None, None
    step_seconds, stopped_by = [], None
    model.train()
    with bar, interrupt_after_step() as interrupt:
        while step < total_steps and stopped_by is None:
            sampler.set_epoch(epoch)
            batches = iter(loader)
            for _ in range(step_in_epoch * args.grad_accum):  # resume: skip the steps done in this epoch
                next(batches)
            while step_in_epoch < steps_per_epoch and step < total_steps:
                if args.stop_after is not None and step - start_step >= args.stop_after:
                    stopped_by = "--stop-after"
                    break
                t0 = time.perf_counter()
                lr = learning_rate(step, args, total_steps)
                last_train_loss = train_step(batches, lr)  # .item() inside: the step has finished here
                step_seconds.append(time.perf_counter() - t0)
                step, step_in_epoch = step + 1, step_in_epoch + 1
                tokens_seen += global_batch * cfg["context_length"]
                evaluate_now = val_set is not None and (step == total_steps or (args.eval_every and step % args.eval_every == 0))
                last_val = evaluate(model, val_set, args, device, rank, world, autocast) if evaluate_now else None
                if rank == 0:
                    log.write({"step": step, "epoch": epoch, "tokens": tokens_seen, "lr": lr,
                               "train_loss": last_train_loss, "val_loss": last_val,
                               "tok_s": global_batch * cfg["context_length"] / step_seconds[-1],
                               "elapsed_s": time.perf_counter() - t_start})
                    bar.set_postfix(loss=f"{last_train_loss:.3f}", lr=f"{lr:.2e}",
                                    **({"val": f"{last_val:.3f}"} if last_val is not None else {}))
                    bar.update(1)
                if evaluate_now or (args.save_every and step % args.save_every == 0):
                    save()
                # every process stops after the same step when any of them was interrupted
                if mean_over_processes(float(interrupt.requested), device, world) > 0:
                    stopped_by = "Ctrl-C"
                    break
            if step_in_epoch >= steps_per_epoch:
                epoch, step_in_epoch = epoch + 1, 0
        if saved_at[0] != step:
            save()  # still inside interrupt_after_step: a second Ctrl-C cannot cut the checkpoint short
    summary = {"step": step, "epoch": epoch, "train_loss": last_train_loss, "val_loss": last_val,
               "stopped_by": stopped_by, "parameters": n_params,
               "tok_s": (global_batch * cfg["context_length"] / statistics.median(step_seconds[1:] or step_seconds)
                         if step_seconds else None),
               "peak_memory_mib": peak_memory_mib(device), "device": str(device), "world_size": world,
               "checkpoint": str(ckpt_path), "log": str(log_path)}
    if rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(f"step {step}: train loss {last_train_loss}" + (f", val loss {last_val:.4f}" if last_val is not None else "")
              + f"; checkpoint {ckpt_path}")
    if stopped_by == "Ctrl-C":
        if rank == 0:
            print(f"interrupted: checkpoint at step {step}; resume with --resume {ckpt_path}", file=sys.stderr)
        raise KeyboardInterrupt
    return summary



def cli(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        main(argv)
    except ValueError as e:  # bad data or options: the message is meant for the user, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the checkpoint is written and the way to resume printed
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(cli())
