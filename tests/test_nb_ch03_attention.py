"""Smoke run of ch03_attention.ipynb: its recorded numbers against hand computations in numpy."""
import numpy as np

# The toy embeddings of "Your journey starts with one step" (3 dimensions per token).
INPUTS = np.array([[0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64],
                   [0.22, 0.58, 0.33], [0.77, 0.25, 0.10], [0.05, 0.80, 0.55]])


def softmax(s):
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_ch03_smoke_run(smoke_run):
    m = smoke_run("ch03_attention")
    assert m["mode"] == "smoke"

    # 3.3: scores are plain dot products; weights their row-wise softmax; contexts the weighted sums
    n = len(INPUTS)
    scores = [[sum(a * b for a, b in zip(INPUTS[i], INPUTS[j])) for j in range(n)] for i in range(n)]
    weights = softmax(np.array(scores))
    contexts = weights @ INPUTS
    np.testing.assert_allclose(m["simple_attn_weights"], weights, atol=1e-6)
    np.testing.assert_allclose(m["simple_context_vectors"], contexts, atol=1e-6)
    np.testing.assert_allclose(m["simple_journey_weights"], weights[1], atol=1e-6)
    np.testing.assert_allclose(m["simple_journey_context"], contexts[1], atol=1e-6)
    np.testing.assert_allclose(m["simple_journey_context"], [0.4419, 0.6515, 0.5683], atol=1e-4)

    # 3.4: the recorded random projections, scaled dot-product attention for "journey"
    Wq, Wk, Wv = (np.array(m[k]) for k in ("W_query", "W_key", "W_value"))
    assert Wq.shape == Wk.shape == Wv.shape == (3, 2)
    q, k, v = INPUTS @ Wq, INPUTS @ Wk, INPUTS @ Wv
    w2 = softmax(q[1] @ k.T / np.sqrt(2))
    np.testing.assert_allclose(m["trainable_journey_context"], w2 @ v, atol=1e-5)

    # softmax saturation: the same scores times 1, 8, 32
    base = np.array(m["softmax_saturation_scores"])
    np.testing.assert_allclose(base, [0.1, -0.2, 0.3, -0.2, 0.5], atol=1e-7)
    for factor, probs in m["softmax_saturation"].items():
        np.testing.assert_allclose(probs, softmax(base * float(factor)), atol=1e-6)
    assert max(m["softmax_saturation"]["32"]) > 0.99 > max(m["softmax_saturation"]["1"])

    # 3.5: causal weights = the scaled weights restricted to j <= i, each row renormalised
    full = softmax(q @ k.T / np.sqrt(2))
    causal = np.tril(full)
    causal /= causal.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(m["causal_attn_weights"], causal, atol=1e-6)
    assert m["causal_mask_vs_renorm_max_abs_diff"] <= 1e-6

    # shapes: batch of two 6-token sequences; 2 heads
    assert m["causal_attention_output_shape"] == [2, 6, 2]
    assert m["mha_output_shape"] == [2, 6, 4]

    # implementations agree: v1/v2 after the weight transfer, naive/SDPA, KV cache/full sequence
    for key in ("v1_v2_max_abs_diff", "naive_vs_sdpa_max_abs_diff", "big_naive_vs_sdpa_max_abs_diff",
                "kv_cache_step_max_abs_diff", "kv_cache_chunk_max_abs_diff"):
        assert 0 <= m[key] <= 1e-5, key
    # "Under the hood": the exported layers give the book-sized layer's output, from the same seed
    # (the same weights drawn in the same order: exactly) and from copied weights
    assert m["exported_seeded_max_abs_diff"] == 0.0
    assert m["exported_vs_book_max_abs_diff"] == 0.0
    for key in ("exported_naive_vs_sdpa_max_abs_diff", "pytorch_mha_max_abs_diff"):
        assert 0 <= m[key] <= 1e-5, key

    # the timing ran on the smoke-sized input (values themselves are not asserted: no timed tests)
    assert m["timing_input_shape"] == [2, 256, 768]
    assert m["naive_ms"] > 0 and m["sdpa_ms"] > 0
