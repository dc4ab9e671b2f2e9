"""The FLOP count behind benchmarks/bench_speed.py's MFU, checked against PyTorch's own count
(torch.utils.flop_counter.FlopCounterMode) of one forward + backward pass."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from helpers.fast import FastGPTModel
from helpers.model import GPTModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from bench_speed import matmul_peak_flops, train_flops_per_token  # noqa: E402

CFG = dict(vocab_size=500, context_length=48, emb_dim=64, n_heads=4, n_layers=3, drop_rate=0.0, qkv_bias=True)


def counted_flops(model, batch=2):
    ids = torch.randint(0, CFG["vocab_size"], (batch, CFG["context_length"]))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
    return counter.get_total_flops(), counter.get_flop_counts()["Global"]


def test_formula_matches_pytorch_count_for_explicit_attention():
    # Chapter 3's attention computes scores and context with plain matmuls, which the counter sees.
    total, _ = counted_flops(GPTModel({**CFG, "attention": "naive"}))
    assert total == train_flops_per_token(CFG) * 2 * CFG["context_length"]


@pytest.mark.parametrize("make", [lambda: GPTModel(CFG), lambda: FastGPTModel({**CFG, "tie_weights": True})])
def test_formula_matches_pytorch_count_outside_fused_attention(make):
    # On the CPU the counter does not see inside fused SDPA; everything else must agree exactly.
    total, by_op = counted_flops(make())
    tokens = 2 * CFG["context_length"]
    attention = 12 * CFG["n_layers"] * CFG["context_length"] * CFG["emb_dim"] * tokens
    sdpa = sum(v for k, v in by_op.items() if "scaled_dot_product" in str(k))
    assert total - sdpa == train_flops_per_token(CFG) * tokens - attention


def test_matmul_peak_is_a_plausible_rate():
    peak = matmul_peak_flops(torch.device("cpu"), torch.float32, n=256, rounds=2)
    assert 1e8 < peak < 1e14  # FLOP/s: from a slow core to far beyond any CPU
