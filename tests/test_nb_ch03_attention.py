"""Smoke run of ch03_attention.ipynb: its recorded numbers against an independent computation."""
import math

WORDS = [[0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64],
         [0.22, 0.58, 0.33], [0.77, 0.25, 0.10], [0.05, 0.80, 0.55]]


def test_ch03_smoke_run(smoke_run):
    metrics = smoke_run("ch03_attention")
    assert metrics["mode"] == "smoke"
    # Simple self-attention for "journey", in plain Python: dot products, softmax, weighted sum.
    query = WORDS[1]
    scores = [sum(a * b for a, b in zip(x, query)) for x in WORDS]
    exps = [math.exp(s) for s in scores]
    weights = [e / sum(exps) for e in exps]
    context = [sum(w * x[d] for w, x in zip(weights, WORDS)) for d in range(3)]
    assert all(abs(a - b) < 1e-5 for a, b in zip(metrics["simple_context_journey"], context))
    assert metrics["mha_output_shape"] == [2, 6, 2]
    assert metrics["max_abs_diff_naive_vs_sdpa"] <= 1e-5
    assert metrics["kv_cache_matches"] is True
    assert metrics["naive_ms"] > 0 and metrics["sdpa_ms"] > 0
