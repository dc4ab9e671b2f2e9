"""How close is `helpers.model.estimate_training_memory` to the memory a training step really takes?

Each case runs in a fresh process: build GPTModel(cfg) and AdamW, run three float32 training
steps (zero_grad, forward, cross-entropy, backward, step: chapter 5's loop), and report the peak.

* CUDA: torch.cuda.max_memory_allocated(), i.e. the tensors alone, the quantity the estimate
  models (CUDA's context and the allocator's cache come on top of it).
* CPU: the process's peak resident memory (ru_maxrss) minus its size just before the model
  was built. This includes the allocator's slack and the freed-but-kept pages, so it reads
  somewhat above the estimate.

    python benchmarks/bench_memory.py                  # small shapes, about a minute on a CPU
    python benchmarks/bench_memory.py --device cuda --sizes 124M 355M --batch 8 --tokens 1024

The estimate is what chapter 7 uses to choose its batch size on a GPU; results are in
benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys
import torch
from helpers.model import GPTModel, estimate_training_memory
cfg, batch, tokens, device = json.loads(sys.argv[1])
torch.manual_seed(0)
cuda = device.startswith("cuda")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
model = GPTModel(cfg).to(device).train()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
idx = torch.randint(0, cfg["vocab_size"], (batch, tokens), device=device)
for _ in range(3):
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
    loss.backward()
    optimizer.step()
if cuda:
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
print(json.dumps({"measured": peak, "estimated": estimate_training_memory(cfg, batch, tokens, device)["total"]}))
"""


def main(argv=None):
    from helpers.model import GPT_CONFIG_124M, GPT_CONFIGS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", nargs="*", default=[], choices=sorted(GPT_CONFIGS),
                   help="GPT-2 sizes to measure (default: three small shapes that fit any machine)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--drop-rate", type=float, default=0.0)
    a = p.parse_args(argv)
    if a.batch < 1 or a.tokens < 1 or not 0 <= a.drop_rate < 1:
        p.error("--batch and --tokens must be at least 1, --drop-rate in [0, 1)")
    cases = {size: {**GPT_CONFIGS[size], "drop_rate": a.drop_rate} for size in a.sizes} or {
        f"{layers} layers x {dim}": {**GPT_CONFIG_124M, "n_layers": layers, "emb_dim": dim, "n_heads": 4,
                                     "drop_rate": a.drop_rate}
        for layers, dim in ((2, 256), (4, 512), (6, 768))}
    print(f"| shape | batch x tokens | device | estimated MiB | measured MiB | measured / estimated |")
    print(f"|---|---|---|---|---|---|")
    for name, cfg in cases.items():
        out = subprocess.run([sys.executable, "-c", CHILD, json.dumps([cfg, a.batch, a.tokens, a.device])],
                             cwd=ROOT, capture_output=True, text=True)
        if out.returncode:
            print(f"| {name} | {a.batch} x {a.tokens} | {a.device} | failed: {out.stderr.strip().splitlines()[-1]} | | |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {name} | {a.batch} x {a.tokens} | {a.device} | {r['estimated'] / 2**20:,.0f} | "
              f"{r['measured'] / 2**20:,.0f} | {r['measured'] / r['estimated']:.2f} |")


if __name__ == "__main__":
    main()
