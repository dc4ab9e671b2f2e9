"""helpers.model (exported from ch04_gpt_model.ipynb) against transformers' GPT-2, closed-form
parameter counts, and torch's own LayerNorm and GELU."""
import re

import pytest
import torch

from helpers.model import (GELU, GPT_CONFIG_124M, GPT_CONFIGS, GPTModel, LayerNorm, count_parameters,
                           estimate_training_memory, largest_batch_that_fits)
from hf_reference import copy_hf_into_gpt, random_hf_gpt2

SMALL = {**GPT_CONFIG_124M, "vocab_size": 211, "context_length": 24, "emb_dim": 48, "n_heads": 4, "n_layers": 2}
CONFIGS = {
    "small": SMALL,
    "small-qkv-bias": {**SMALL, "qkv_bias": True},
    "deeper-more-heads": {**SMALL, "emb_dim": 64, "n_heads": 8, "n_layers": 3, "qkv_bias": True},
}


@pytest.mark.parametrize("attention", ["sdpa", "naive"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_match_transformers_gpt2(name, attention):
    cfg = {**CONFIGS[name], "attention": attention}
    hf = random_hf_gpt2(cfg, seed=1)
    ours = copy_hf_into_gpt(hf, cfg)
    idx = torch.randint(0, cfg["vocab_size"], (3, cfg["context_length"]), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = hf(idx).logits
        assert (ours(idx) - expected).abs().max().item() <= 1e-4
        assert (ours(idx[:, :5]) - hf(idx[:, :5]).logits).abs().max().item() <= 1e-4


def closed_form_parameters(cfg, tied=False):
    V, C, d, L = cfg["vocab_size"], cfg["context_length"], cfg["emb_dim"], cfg["n_layers"]
    qkv = 3 * d * d + (3 * d if cfg["qkv_bias"] else 0)
    attention = qkv + d * d + d                      # + output projection with bias
    mlp = d * 4 * d + 4 * d + 4 * d * d + d          # two linear layers with biases
    norms = 2 * 2 * d                                # two LayerNorms (scale, shift)
    total = V * d + C * d + L * (attention + mlp + norms) + 2 * d + d * V
    return total - d * V if tied else total


@pytest.mark.parametrize("cfg", [SMALL, CONFIGS["small-qkv-bias"], *GPT_CONFIGS.values()],
                         ids=["small", "small-bias", *GPT_CONFIGS])
def test_parameter_counts_equal_closed_form(cfg):
    with torch.device("meta"):  # shapes only, no memory: the 1558M model costs nothing here
        model = GPTModel(cfg)
    assert count_parameters(model) == closed_form_parameters(cfg)
    assert count_parameters(model, tied=True) == closed_form_parameters(cfg, tied=True)


def test_gpt2_small_counts_are_the_published_ones():
    # 124,439,808 is GPT-2 small with the query/key/value biases of OpenAI's release;
    # without them (GPT_CONFIG_124M) 3 * 768 * 12 = 27,648 fewer.
    assert closed_form_parameters({**GPT_CONFIG_124M, "qkv_bias": True}, tied=True) == 124_439_808
    assert closed_form_parameters(GPT_CONFIG_124M, tied=True) == 124_439_808 - 27_648
    with torch.device("meta"):  # and the model itself, not only the formula
        model = GPTModel({**GPT_CONFIG_124M, "qkv_bias": True})
    assert count_parameters(model, tied=True) == 124_439_808


def test_layer_norm_matches_torch():
    torch.manual_seed(0)
    ln = LayerNorm(16)
    with torch.no_grad():
        ln.scale.copy_(torch.randn(16))
        ln.shift.copy_(torch.randn(16))
    x = torch.randn(4, 7, 16) * 5 + 3
    expected = torch.nn.functional.layer_norm(x, (16,), ln.scale, ln.shift, eps=1e-5)
    assert (ln(x) - expected).abs().max().item() <= 1e-5


def test_gelu_matches_torch_tanh_approximation():
    x = torch.linspace(-8, 8, 1001)
    assert (GELU()(x) - torch.nn.functional.gelu(x, approximate="tanh")).abs().max().item() <= 1e-6


def test_emb_dim_not_divisible_by_heads():
    with pytest.raises(ValueError, match=r"cfg\['emb_dim'\] \(50\) must be divisible by cfg\['n_heads'\] \(4\)"):
        GPTModel({**SMALL, "emb_dim": 50, "n_heads": 4})


@pytest.mark.parametrize("cls", ["GPTModel", "FastGPTModel"])
@pytest.mark.parametrize("key, value", [
    ("n_layers", 0), ("n_layers", -2), ("context_length", 0), ("context_length", -1), ("emb_dim", 0),
    ("emb_dim", -48), ("n_heads", 0), ("vocab_size", 0), ("n_layers", 2.5), ("n_layers", True),
])
def test_config_sizes_that_make_no_sense_are_refused(cls, key, value):
    import helpers
    with pytest.raises(ValueError, match=rf"cfg\['{key}'\] must be a positive integer"):
        getattr(helpers, cls)({**SMALL, key: value})


@pytest.mark.parametrize("drop_rate", [-0.1, 1.0, 1.5, float("nan")])
def test_drop_rate_outside_zero_one_is_refused(drop_rate):
    with pytest.raises(ValueError, match=r"cfg\['drop_rate'\] must be in \[0, 1\)"):
        GPTModel({**SMALL, "drop_rate": drop_rate})


@pytest.mark.parametrize("cls", ["GPTModel", "FastGPTModel"])
@pytest.mark.parametrize("key, value, accepted", [
    ("attention", "flash", "'sdpa' or 'naive'"), ("attention", None, "'sdpa' or 'naive'"),
    ("qkv_bias", "False", "True or False"), ("qkv_bias", None, "True or False"), ("qkv_bias", 1, "True or False"),
    ("drop_rate", "0.1", r"in \[0, 1\)"), ("drop_rate", None, r"in \[0, 1\)"), ("drop_rate", True, r"in \[0, 1\)"),
])
def test_config_values_of_the_wrong_kind_are_refused_by_key(cls, key, value, accepted):
    """Before: "flash" gave a bare KeyError 'flash' (FastGPTModel ignored it), the string "False"
    (truthy) silently built qkv biases, and drop_rate "0.1" or None a TypeError naming no key."""
    import helpers
    with pytest.raises(ValueError, match=rf"^cfg\['{key}'\] must be {accepted}.*, got {re.escape(repr(value))}$"):
        getattr(helpers, cls)({**SMALL, key: value})


def test_numpy_bools_and_floats_are_accepted_in_the_config():
    np = pytest.importorskip("numpy")
    model = GPTModel({**SMALL, "qkv_bias": np.bool_(True), "drop_rate": np.float64(0.1), "attention": "naive"})
    assert model.trf_blocks[0].att.W_query.bias is not None


def test_missing_config_key():
    cfg = dict(SMALL)
    del cfg["qkv_bias"]
    with pytest.raises(KeyError, match="qkv_bias"):
        GPTModel(cfg)


@pytest.mark.parametrize("cls", ["GPTModel", "FastGPTModel"])
def test_a_config_key_no_model_reads_is_named_with_the_one_meant(cls):
    """{**cfg, "n_layer": 3} used to build the 1-layer model without a word."""
    import warnings
    import helpers
    with pytest.warns(UserWarning, match=r"keys no model reads, so they change nothing: 'dropout' \(did you mean "
                                         r"'drop_rate'\?\), 'n_layer' \(did you mean 'n_layers'\?\), 'zzz'$"):
        model = getattr(helpers, cls)({**SMALL, "n_layer": 3, "dropout": 0.5, "zzz": 1})
    assert len(model.trf_blocks) == SMALL["n_layers"]  # still built, as the book's is
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the keys either model reads warn in neither
        getattr(helpers, cls)({**SMALL, "attention": "naive", "tie_weights": False, "grad_checkpointing": False})


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return GPTModel(SMALL).eval()


@pytest.mark.parametrize("bad, message", [
    (torch.tensor([[1, 2, 211]]), "token IDs must be integers in \\[0, 211\\)"),
    (torch.tensor([[-1, 2]]), "token IDs must be integers"),
    (torch.tensor([[0.0, 1.0]]), "token IDs must be integers"),
    (torch.zeros((1, 0), dtype=torch.long), "empty input"),
    (torch.zeros((1, 25), dtype=torch.long), "exceed the context length of 24"),
    (torch.tensor([1, 2, 3]), r"\(batch, tokens\) tensor of token IDs; got \(3,\): for one text use idx.unsqueeze\(0\)"),
    (torch.zeros((1, 3, 48)), r"\(batch, tokens\) tensor of token IDs; got \(1, 3, 48\).*not embeddings"),
    ([[1, 2, 3]], r"\(batch, tokens\) tensor of token IDs; got list"),
])
def test_bad_input_is_a_clear_error(small_model, bad, message):
    with pytest.raises(ValueError, match=message):
        small_model(bad)


def test_dropout_inactive_in_eval():
    model = GPTModel({**SMALL, "drop_rate": 0.5}).eval()
    without = GPTModel({**SMALL, "drop_rate": 0.0}).eval()
    without.load_state_dict(model.state_dict())  # no rescaling either: the logits of a model without dropout
    idx = torch.randint(0, 211, (2, 10))
    with torch.no_grad():
        assert torch.equal(model(idx), without(idx))


def _kept_by_autograd(cfg, batch, tokens):
    """Bytes of the non-parameter tensors autograd stores in one training forward pass + loss,
    each storage counted once: the measurement the activation estimate must match."""
    torch.manual_seed(0)
    model = GPTModel(cfg).train()
    params = {p.data_ptr() for p in model.parameters()}
    storages = {}

    def keep(t):
        if t.untyped_storage().data_ptr() not in params:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    x = torch.randint(0, cfg["vocab_size"], (batch, tokens))
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten())
    return sum(storages.values())


@pytest.mark.parametrize("changes", [
    {"drop_rate": 0.0}, {"drop_rate": 0.1}, {"drop_rate": 0.0, "attention": "naive"},
    {"drop_rate": 0.2, "attention": "naive", "emb_dim": 96, "n_heads": 6, "n_layers": 1},
    {"drop_rate": 0.0, "vocab_size": 3000, "n_layers": 4, "qkv_bias": True}])
def test_activation_estimate_matches_what_autograd_keeps(changes):
    cfg = {**GPT_CONFIG_124M, "vocab_size": 1000, "context_length": 128, "emb_dim": 64, "n_heads": 4,
           "n_layers": 2, **changes}
    for batch, tokens in ((1, 16), (3, 100)):
        measured = _kept_by_autograd(cfg, batch, tokens)
        estimated = estimate_training_memory(cfg, batch, tokens, device="cpu")["activations"]
        assert estimated == pytest.approx(measured, rel=0.02), (batch, tokens)


def test_training_memory_parts_and_the_batch_that_fits():
    cfg = {**GPT_CONFIGS["355M"], "drop_rate": 0.0}
    parts = estimate_training_memory(cfg, 8, 512)
    n = count_parameters(GPTModel({**cfg, "n_layers": 1})) + 23 * sum(
        p.numel() for p in GPTModel({**cfg, "n_layers": 1}).trf_blocks[0].parameters())
    assert parts["weights"] == 4 * n and parts["AdamW state"] == 8 * n == 2 * parts["gradients"]
    assert parts["total"] == sum(v for k, v in parts.items() if k != "total")
    assert estimate_training_memory(cfg, 16, 512)["activations"] == 2 * parts["activations"]
    # the chosen batch fits its budget and one more would not
    for free in (8e9, 15e9, 40e9):
        b = largest_batch_that_fits(cfg, 512, free, max_batch=64)
        assert b == 0 or estimate_training_memory(cfg, b, 512)["total"] <= 0.9 * free
        assert b == 64 or estimate_training_memory(cfg, b + 1, 512)["total"] > 0.9 * free
    assert largest_batch_that_fits(cfg, 512, 4e9) == 0  # not even the weights and AdamW fit
    assert largest_batch_that_fits(cfg, 512, 1e12, max_batch=8) == 8
    for bad in ({"free_bytes": 0}, {"free_bytes": float("nan")}, {"free_bytes": float("inf")},
                {"free_bytes": 1e9, "headroom": 1.0},
                {"free_bytes": 1e9, "max_batch": 0}):
        with pytest.raises(ValueError, match="0 < free_bytes < inf"):
            largest_batch_that_fits(cfg, 512, **{"max_batch": 64, **bad})


def test_memory_estimates_refuse_sizes_that_make_no_sense():
    from helpers.model import estimate_training_memory, largest_batch_that_fits
    for batch, tokens in ((0, 8), (2, 0), (2, -8), (2.5, 8)):  # num_tokens=0 divided by zero
        with pytest.raises(ValueError, match="must be a whole number >= 1"):
            estimate_training_memory(SMALL, batch, tokens, "cpu")
    with pytest.raises(ValueError, match="must be a whole number >= 1"):
        largest_batch_that_fits(SMALL, 0, 2**30, device="cpu")
    for max_batch in (float("nan"), 2.5, 0):  # NaN claimed that nothing fits
        with pytest.raises(ValueError, match="max_batch"):
            largest_batch_that_fits(SMALL, 8, 2**30, max_batch=max_batch, device="cpu")
    assert largest_batch_that_fits(SMALL, 8, 2**30, max_batch=5, device="cpu") == 5
