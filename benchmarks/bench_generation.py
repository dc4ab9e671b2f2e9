#!/usr/bin/env python3
"""Greedy generation speed of the course's GPTModel: with and without the KV cache, and
against a reference-style baseline (chapter 3's step-by-step attention, no cache, which is how
the book's chapter-4 code generates). Beam search (chapter 5) with GPTModel's and
FastGPTModel's caches. Also one forward pass, naive vs fused (SDPA) attention.

    .venv/bin/python benchmarks/bench_generation.py                  # 124M shape, random weights
    .venv/bin/python benchmarks/bench_generation.py --device cuda --new-tokens 500

Prints the machine and the numbers; asserts nothing (speed is never checked by tests).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from helpers.fast import FastGPTModel  # noqa: E402
from helpers.generation import beam_search, generate_text_simple  # noqa: E402
from helpers.model import GPT_CONFIGS, GPTModel  # noqa: E402
from helpers.pretrain import NON_NEGATIVE_INT, POSITIVE_INT  # noqa: E402  (argparse types: a bad count is one line)
from helpers.support.runtime import get_device  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats=1):
    fn()  # warm-up (kernel selection, allocator)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / repeats


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="124M", choices=list(GPT_CONFIGS))
    p.add_argument("--device", default="auto")
    p.add_argument("--prompt-tokens", type=POSITIVE_INT, default=4)
    p.add_argument("--new-tokens", type=POSITIVE_INT, default=100)
    p.add_argument("--batch", type=POSITIVE_INT, default=1)
    p.add_argument("--forward-tokens", type=POSITIVE_INT, default=1024, help="sequence length of the forward-pass comparison")
    p.add_argument("--beams", type=NON_NEGATIVE_INT, default=3, help="beam search width for the beam comparison (0: skip it)")
    p.add_argument("--beam-tokens", type=POSITIVE_INT, default=30, help="new tokens of the beam search")
    args = p.parse_args(argv)

    try:
        device = get_device(args.device)
    except (RuntimeError, ValueError) as e:
        p.error(f"--device {args.device}: {e}")
    cfg = {**GPT_CONFIGS[args.size], "drop_rate": 0.0}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"device {device}" + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""))
    print(f"model: GPT-2 {args.size} shape, random weights, float32, threads={torch.get_num_threads()}")

    torch.manual_seed(0)
    fused = GPTModel(cfg).to(device).eval()
    naive = GPTModel({**cfg, "attention": "naive"}).to(device).eval()
    naive.load_state_dict(fused.state_dict())
    prompt = torch.randint(0, cfg["vocab_size"], (args.batch, args.prompt_tokens), device=device)
    n, ctx = args.new_tokens, cfg["context_length"]

    runs = {
        "reference-style (naive attention, no cache)": lambda: generate_text_simple(naive, prompt, n, ctx, use_cache=False),
        "course, no cache (SDPA)": lambda: generate_text_simple(fused, prompt, n, ctx, use_cache=False),
        "course, KV cache (SDPA)": lambda: generate_text_simple(fused, prompt, n, ctx, use_cache=True),
    }
    print(f"\ngreedy generation, batch {args.batch}, prompt {args.prompt_tokens} tokens, {n} new tokens:")
    results = {}
    for name, fn in runs.items():
        seconds = timed(fn, device)
        results[name] = args.batch * n / seconds
        print(f"  {name:45s} {results[name]:8.1f} tokens/s  ({seconds:.2f} s)")
    base = results["reference-style (naive attention, no cache)"]
    print(f"  speed-up of the KV cache over the reference style: {results['course, KV cache (SDPA)'] / base:.1f}x")
    same = torch.equal(runs["course, no cache (SDPA)"](), runs["course, KV cache (SDPA)"]())
    print(f"  cached and uncached tokens identical: {same}")

    if args.beams:
        # both models keep a cache that beam search reorders at every step: GPTModel's KVCache
        # (a tensor per layer, as long as the text) and FastGPTModel's StaticKVCache (one
        # buffer of context_length positions, of which only the cached ones are copied)
        fast = FastGPTModel.from_model(fused).eval()
        one = prompt[:1]
        beam_runs = {
            "GPTModel + KVCache": lambda: beam_search(fused, one, args.beam_tokens, ctx, num_beams=args.beams),
            "FastGPTModel + StaticKVCache": lambda: beam_search(fast, one, args.beam_tokens, ctx, num_beams=args.beams),
        }
        print(f"\nbeam search, {args.beams} beams, prompt {args.prompt_tokens} tokens, {args.beam_tokens} new tokens "
              f"(cache of {ctx} positions):")
        for name, fn in beam_runs.items():
            seconds = timed(fn, device)
            print(f"  {name:45s} {args.beam_tokens / seconds:8.1f} steps/s  ({seconds:.2f} s)")
        same = torch.equal(*(fn() for fn in beam_runs.values()))
        print(f"  both find the same continuation: {same}")

    T = min(args.forward_tokens, ctx)
    x = torch.randint(0, cfg["vocab_size"], (1, T), device=device)
    with torch.no_grad():
        t_naive = timed(lambda: naive(x), device, repeats=3)
        t_fused = timed(lambda: fused(x), device, repeats=3)
    print(f"\none forward pass over {T} tokens: naive attention {t_naive * 1e3:.0f} ms, "
          f"SDPA {t_fused * 1e3:.0f} ms ({t_naive / t_fused:.2f}x)")


if __name__ == "__main__":
    main()
