#!/usr/bin/env python3
"""Chapter 7's finetuning step for two GPT-2 shapes (124M and 355M by default) on the chapter's
real batches, timed alternately in one process: the ratio behind chapter 7's estimate of how
long finetuning the 355M shape would take on a CPU.

    .venv/bin/python benchmarks/bench_ch07_sizes.py                       # 124M vs 355M (~8 min on 2 idle cores)
    .venv/bin/python benchmarks/bench_ch07_sizes.py --batches 2 --rounds 1 --no-record   # a quicker look

What is timed is what chapter 7's full mode does per step: a freshly initialised GPTModel of
each shape (context 256 and no dropout, like the stand-in that chapter loads on a CPU; the
weights' values do not change the cost), AdamW with the chapter's settings, and the first
`--batches` training batches of the chapter's loader (batch size 8, shuffled with seed 123,
padded to the longest example of each batch). Each round times every shape on the same batches,
starting with a different shape each round so that a change in the machine's load hits all of
them alike; the first step of each model (memory allocation) is left out. Reported per shape:
the median training step (forward, loss, backward, AdamW) and the median forward pass without
gradients (what the chapter's evaluations every 5 steps cost), and each median's ratio to the
first shape's.

When the course's saved run of chapter 7 (runs/interactive/ch07_instruction.metrics.json, full
mode) finetuned the first shape, the estimate for the others is that run's finetuning time
times the step ratio. Nothing is asserted: read the ratios with the load average beside them.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_speed import append_results, cpu_name  # noqa: E402
from helpers.instruction import (InstructionDataset, custom_collate_fn, load_instruction_data,  # noqa: E402
                                 split_instruction_data)
from helpers.model import GPT_CONFIGS, GPTModel  # noqa: E402
from helpers.support.data import gpt2_tokenizer  # noqa: E402
from helpers.training import calc_loss_batch  # noqa: E402

SAVED_RUN = ROOT / "runs" / "interactive" / "ch07_instruction.metrics.json"


def chapter_batches(n, batch_size, context, seed, data_dir=None):
    """The first `n` training batches of chapter 7's loader (7.3), as (inputs, targets) pairs."""
    train_data, _, _ = split_instruction_data(load_instruction_data(data_dir), seed=seed)
    torch.manual_seed(seed)
    dataset = InstructionDataset(train_data, gpt2_tokenizer())
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                        collate_fn=partial(custom_collate_fn, allowed_max_length=context))
    batches = []
    for inputs, targets in loader:
        batches.append((inputs, targets))
        if len(batches) == n:
            return batches
    raise SystemExit(f"--batches {n}: the chapter's loader has only {len(batches)} batches of {batch_size}")


def saved_finetuning_minutes(path, size):
    """Finetuning minutes of the saved full-mode chapter 7 run, when it finetuned `size`."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if saved.get("mode") == "full" and saved.get("gpt2_model_size") == size and saved.get("training_s"):
        return saved["training_s"] / 60
    return None


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["124M", "355M"], choices=list(GPT_CONFIGS),
                   help="GPT-2 shapes, the first one the reference (default: 124M 355M)")
    p.add_argument("--batches", type=int, default=6, help="training batches timed per round (default 6)")
    p.add_argument("--rounds", type=int, default=3, help="rounds over all shapes (default 3)")
    p.add_argument("--batch-size", type=int, default=8, help="chapter 7: 8")
    p.add_argument("--context", type=int, default=256, help="context length (the CPU stand-in's: 256)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--data-dir", default=os.environ.get("COURSE_DATA_DIR"), help="course data cache")
    p.add_argument("--n-layers", type=int, help="override every shape's depth (quick checks)")
    p.add_argument("--emb-dim", type=int, help="override every shape's width (quick checks)")
    p.add_argument("--n-heads", type=int, help="override every shape's heads (quick checks)")
    p.add_argument("--saved-run", default=str(SAVED_RUN), help="chapter 7's metrics file for the estimate")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    p.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    p.add_argument("--note", default="", help="free text for the results entry (e.g. 'machine idle')")
    args = p.parse_args(argv)
    for name in ("batches", "rounds", "batch_size", "context"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if len(set(args.sizes)) != len(args.sizes):
        p.error("--sizes: each shape once")
    if args.threads:
        torch.set_num_threads(args.threads)

    overrides = {k: v for k, v in [("n_layers", args.n_layers), ("emb_dim", args.emb_dim), ("n_heads", args.n_heads)]
                 if v is not None}
    batches = chapter_batches(args.batches, args.batch_size, args.context, args.seed, args.data_dir)
    models = {}
    for size in args.sizes:
        torch.manual_seed(args.seed)
        model = GPTModel({**GPT_CONFIGS[size], "context_length": args.context, "drop_rate": 0.0, **overrides})
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1)
        models[size] = (model, optimizer)

    def train_step(size, inputs, targets):
        model, optimizer = models[size]
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = calc_loss_batch(inputs, targets, model, "cpu")
        loss.backward()
        optimizer.step()
        return loss.item()

    def forward(size, inputs, targets):
        model, _ = models[size]
        model.eval()
        with torch.no_grad():
            return calc_loss_batch(inputs, targets, model, "cpu").item()

    for size in args.sizes:  # warm-up: the first step allocates the gradients and AdamW's state
        train_step(size, *batches[0])
        forward(size, *batches[0])
    steps = {size: [] for size in args.sizes}
    forwards = {size: [] for size in args.sizes}
    losses = {size: [] for size in args.sizes}
    loads = []
    for r in range(args.rounds):
        order = args.sizes[r % len(args.sizes):] + args.sizes[:r % len(args.sizes)]
        for size in order:
            loads.append(os.getloadavg()[0])
            for inputs, targets in batches:
                t0 = time.perf_counter()
                losses[size].append(train_step(size, inputs, targets))
                steps[size].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                forward(size, inputs, targets)
                forwards[size].append(time.perf_counter() - t0)
            print(f"round {r + 1}, {size}: median step {statistics.median(steps[size]):.2f} s so far", flush=True)

    reference = args.sizes[0]
    step_median = {s: statistics.median(v) for s, v in steps.items()}
    forward_median = {s: statistics.median(v) for s, v in forwards.items()}
    tokens = [int(x.numel()) for x, _ in batches]
    shape_note = "".join(f", {k} {v}" for k, v in overrides.items())
    lines = [f"### {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}: chapter 7 finetuning step, "
             f"{' vs '.join(args.sizes)}",
             "",
             f"- machine: {cpu_name()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
             f"{platform.system()} {platform.release()}, torch {torch.__version__}",
             f"- load average (1 min) before each shape's round: {', '.join(f'{x:.2f}' for x in loads)}"
             + (f"; {args.note}" if args.note else ""),
             f"- command: `{shlex.join(['benchmarks/bench_ch07_sizes.py'] + (argv if argv is not None else sys.argv[1:]))}`",
             f"- {args.batches} of chapter 7's training batches (batch {args.batch_size}, "
             f"{min(tokens) // args.batch_size}-{max(tokens) // args.batch_size} tokens per row), "
             f"context {args.context}{shape_note}, {args.rounds} round(s); AdamW lr 5e-5, weight decay 0.1",
             "",
             "| shape | parameters | step s (median) | step / " + reference + " | forward s (median) | forward / "
             + reference + " |",
             "|---|---|---|---|---|---|"]
    for size in args.sizes:
        n_params = sum(p.numel() for p in models[size][0].parameters())
        lines.append(f"| {size} | {n_params:,} | {step_median[size]:.3f} | "
                     f"{step_median[size] / step_median[reference]:.2f}x | {forward_median[size]:.3f} | "
                     f"{forward_median[size] / forward_median[reference]:.2f}x |")
    minutes = saved_finetuning_minutes(args.saved_run, reference) if not overrides else None
    estimate = {}
    if minutes is not None:
        lines.append("")
        for size in args.sizes[1:]:
            estimate[size] = minutes * step_median[size] / step_median[reference]
            lines.append(f"- chapter 7's saved full run finetuned {reference} in {minutes:.1f} min; "
                         f"{size} at this step ratio: about {estimate[size]:.0f} min")
    lines.append("")
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        append_results(args.results, "\n" + text)
    return {"step_s": steps, "forward_s": forwards, "losses": losses, "step_median": step_median,
            "forward_median": forward_median, "estimate_min": estimate, "loads": loads}


if __name__ == "__main__":
    main()
