"""Smoke run of ch04_gpt_model.ipynb: recorded counts against the closed form, cache equality."""
from helpers.model import GPT_CONFIG_124M
from test_model import closed_form_parameters


def test_ch04_smoke_run(smoke_run):
    metrics = smoke_run("ch04_gpt_model")
    assert metrics["mode"] == "smoke"
    assert metrics["params_untied"] == closed_form_parameters(GPT_CONFIG_124M)
    assert metrics["params_tied"] == closed_form_parameters(GPT_CONFIG_124M, tied=True)
    assert abs(metrics["size_mib"] - metrics["params_untied"] * 4 / 2**20) < 0.01
    V, d, L, C = 50257, 768, 12, 1024
    non_embedding = metrics["params_untied"] - V * d - C * d
    assert metrics["flops_per_token"] == 2 * non_embedding + 2 * L * C * d
    assert metrics["cached_equals_uncached"] is True
    # "Under the hood": the exported block and model against the book-sized ones of 4.5 and 4.6
    # (same weights by seed, and by a state dict loaded into scrambled weights)
    for key in ("exported_block_diff", "exported_seeded_logit_diff", "exported_loaded_logit_diff"):
        assert 0 <= metrics[key] <= 1e-4, key
    # the activation-memory estimate against what autograd keeps, in three settings
    errors = metrics["activation_estimate_errors"]
    assert set(errors) == {"no dropout", "dropout 0.1", "naive attention"}
    assert all(abs(e) < 0.02 for e in errors.values()), errors
    assert metrics["timing_new_tokens"] == 24
    assert metrics["cached_tok_s"] > 0 and metrics["uncached_tok_s"] > 0
    # appendix: the fast model against GPTModel with the same weights
    assert metrics["fast_logit_diff"] <= 1e-5
    assert metrics["fast_tied_rel_diff"] <= 1e-6
    assert metrics["fast_batched_equals_alone"] is True
    assert metrics["fused_loss_diff"] <= 1e-5  # chunked loss: value and gradients of the plain one
    assert metrics["fast_train_speedup"] > 0
