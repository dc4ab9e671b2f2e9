"""helpers.attention: causal multi-head attention (naive and SDPA) and the KV cache.

References are independent of our code: torch.nn.MultiheadAttention with copied weights, the
other implementation with the same state dict, and the same layer run on the full sequence.
"""
import pytest
import torch
import torch.nn as nn

from helpers.attention import KVCache, MultiHeadAttention, MultiHeadAttentionSDPA

VARIANTS = [MultiHeadAttention, MultiHeadAttentionSDPA]
IDS = ["naive", "sdpa"]
D_IN, D_OUT, CONTEXT, HEADS = 16, 16, 12, 4


def make(cls, qkv_bias=False, dropout=0.0, d_in=D_IN, seed=0):
    torch.manual_seed(seed)
    layer = cls(d_in, D_OUT, CONTEXT, dropout, HEADS, qkv_bias=qkv_bias)
    return layer.eval()


def rand_input(batch=2, tokens=CONTEXT, d_in=D_IN, seed=1):
    return torch.randn(batch, tokens, d_in, generator=torch.Generator().manual_seed(seed))


# ---- causality -----------------------------------------------------------------------------

@pytest.mark.parametrize("cls", VARIANTS, ids=IDS)
def test_future_tokens_do_not_change_earlier_outputs(cls):
    layer = make(cls)
    x = rand_input()
    changed = x.clone()
    t = 7
    changed[:, t] += 3.0 * torch.randn(D_IN)
    with torch.no_grad():
        out, out_changed = layer(x), layer(changed)
    torch.testing.assert_close(out_changed[:, :t], out[:, :t], rtol=0, atol=1e-6)
    # ...while the changed position and the ones after it do see the change
    assert (out_changed[:, t:] - out[:, t:]).abs().amax(dim=-1).min() > 1e-4


# ---- naive vs SDPA vs torch.nn.MultiheadAttention ------------------------------------------

@pytest.mark.parametrize("qkv_bias", [False, True])
def test_naive_and_sdpa_agree(qkv_bias):
    naive = make(MultiHeadAttention, qkv_bias=qkv_bias)
    sdpa = MultiHeadAttentionSDPA(D_IN, D_OUT, CONTEXT, 0.0, HEADS, qkv_bias=qkv_bias).eval()
    sdpa.load_state_dict(naive.state_dict())
    x = rand_input()
    with torch.no_grad():
        diff = (naive(x) - sdpa(x)).abs().max().item()
    assert diff <= 1e-5


@pytest.mark.parametrize("cls", VARIANTS, ids=IDS)
@pytest.mark.parametrize("qkv_bias", [False, True])
def test_matches_torch_multihead_attention(cls, qkv_bias):
    ours = make(cls, qkv_bias=qkv_bias)
    ref = nn.MultiheadAttention(D_OUT, HEADS, dropout=0.0, bias=True, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.W_query.weight, ours.W_key.weight, ours.W_value.weight]))
        if qkv_bias:
            ref.in_proj_bias.copy_(torch.cat([ours.W_query.bias, ours.W_key.bias, ours.W_value.bias]))
        else:
            ref.in_proj_bias.zero_()
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    x = rand_input(tokens=9)
    future = torch.triu(torch.ones(9, 9, dtype=torch.bool), diagonal=1)  # True = not allowed
    with torch.no_grad():
        expected, _ = ref(x, x, x, attn_mask=future, need_weights=False)
        got = ours(x)
    assert got.shape == expected.shape == (2, 9, D_OUT)
    assert (got - expected).abs().max().item() <= 1e-5


def test_single_head_matches_hand_computation():
    """One head, no projections of our own: softmax(q k^T / sqrt(d) + causal mask) v, by loops."""
    torch.manual_seed(3)
    layer = MultiHeadAttention(4, 4, 5, 0.0, num_heads=1).eval()
    x = torch.randn(1, 5, 4)
    with torch.no_grad():
        q, k, v = layer.W_query(x)[0], layer.W_key(x)[0], layer.W_value(x)[0]
        rows = []
        for i in range(5):
            s = torch.tensor([float(q[i] @ k[j]) / 2.0 for j in range(i + 1)])  # sqrt(4) = 2
            w = torch.exp(s - s.max())
            w = w / w.sum()
            rows.append(sum(w[j] * v[j] for j in range(i + 1)))
        expected = layer.out_proj(torch.stack(rows))
        torch.testing.assert_close(layer(x)[0], expected, rtol=0, atol=1e-5)


# ---- dropout -------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", VARIANTS, ids=IDS)
def test_dropout_only_in_training(cls):
    layer = make(cls, dropout=0.5)
    no_dropout = make(cls, dropout=0.0)
    x = rand_input()
    with torch.no_grad():
        a, b = layer(x), layer(x)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, no_dropout(x), rtol=0, atol=1e-6)
        layer.train()
        c, d = layer(x), layer(x)
    assert not torch.allclose(c, d), "two training-mode calls with dropout=0.5 should differ"
    assert not torch.allclose(c, a)


# ---- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("cls", VARIANTS, ids=IDS)
def test_too_long_input_is_refused(cls):
    layer = make(cls)
    with pytest.raises(ValueError, match=r"13 tokens .*exceed the context length of 12.*crop"):
        layer(rand_input(tokens=CONTEXT + 1))
    assert layer(rand_input(tokens=CONTEXT)).shape == (2, CONTEXT, D_OUT)  # the limit itself is fine


@pytest.mark.parametrize("cls", VARIANTS, ids=IDS)
def test_d_out_must_divide_into_heads(cls):
    with pytest.raises(ValueError, match="divisible by num_heads"):
        cls(D_IN, 10, CONTEXT, 0.0, num_heads=4)


@pytest.mark.parametrize("cls", VARIANTS, ids=IDS)
def test_wrong_input_rank_is_refused(cls):
    with pytest.raises(ValueError, match=r"\(batch, tokens, d_in\).*got \(12, 16\); add the batch axis: x.unsqueeze\(0\)"):
        make(cls)(torch.randn(CONTEXT, D_IN))
    with pytest.raises(ValueError, match=r"got \(12,\)$"):  # one axis: no hint
        make(cls)(torch.randn(CONTEXT))


@pytest.mark.parametrize("cls", VARIANTS, ids=IDS)
def test_input_of_another_width_is_refused_by_name(cls):
    """PyTorch's own error speaks of "mat1 and mat2 shapes"; this names d_in."""
    with pytest.raises(ValueError, match=f"x has {D_IN + 1} values per token, but this layer was built with d_in={D_IN}"):
        make(cls)(rand_input(d_in=D_IN + 1))
    assert make(cls, d_in=D_IN + 1)(rand_input(d_in=D_IN + 1)).shape == (2, CONTEXT, D_OUT)


# ---- KV cache ------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", VARIANTS, ids=IDS)
@pytest.mark.parametrize("chunks", [[1] * CONTEXT, [5, 3, 1, 3], [CONTEXT]], ids=["tokens", "chunks", "whole"])
def test_kv_cache_reproduces_full_sequence(cls, chunks):
    layer = make(cls, qkv_bias=True)
    x = rand_input()
    cache = KVCache(n_layers=1)
    outs, start = [], 0
    with torch.no_grad():
        full = layer(x)
        for size in chunks:
            outs.append(layer(x[:, start:start + size], kv_cache=cache))
            start += size
            assert len(cache) == start
    torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=0, atol=1e-5)


def test_kv_cache_layers_are_separate():
    """Two layers share one cache object through different slots, as in a GPT model."""
    first, second = make(MultiHeadAttention, seed=0), make(MultiHeadAttentionSDPA, seed=1)
    x = rand_input(tokens=6)
    with torch.no_grad():
        full = second(first(x))
        cache = KVCache(n_layers=2)
        steps = [second(first(x[:, i:i + 1], cache, layer=0), cache, layer=1) for i in range(6)]
    assert cache.seq_len(0) == cache.seq_len(1) == 6
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)


def test_a_cache_without_a_slot_for_the_layer_is_refused_by_name():
    """A KVCache(n_layers=1) passed to the second layer: a bare "list index out of range" before."""
    layer, cache = make(MultiHeadAttention), KVCache(n_layers=1)
    with torch.no_grad(), pytest.raises(IndexError, match=r"layer 1 has no slot in this KVCache of 1 layer\(s\).*n_layers"):
        layer(rand_input(tokens=2), kv_cache=cache, layer=1)
    with pytest.raises(IndexError, match="layer -1 has no slot"):  # not quietly the last slot
        cache.seq_len(-1)
    assert cache.seq_len(0) == 0  # nothing was cached by the refused call
    with torch.no_grad():
        layer(rand_input(tokens=2), kv_cache=cache, layer=0)
    assert cache.seq_len(0) == 2


def test_kv_cache_past_context_is_refused_and_cache_kept():
    layer = make(MultiHeadAttention)
    cache = KVCache()
    x = rand_input(tokens=CONTEXT)
    with torch.no_grad():
        layer(x[:, :10], kv_cache=cache)
        with pytest.raises(ValueError, match=r"13 tokens \(10 cached \+ 3 new\)"):
            layer(rand_input(tokens=3), kv_cache=cache)
    assert len(cache) == 10, "a refused call must leave the cache as it was"


def test_kv_cache_reorder_and_clear():
    layer = make(MultiHeadAttention)
    x = rand_input(batch=3, tokens=8)
    cache = KVCache()
    with torch.no_grad():
        layer(x[:, :5], kv_cache=cache)
        keys_before = cache.keys[0].clone()
        index = torch.tensor([2, 0, 0])
        cache.reorder(index)
        assert torch.equal(cache.keys[0], keys_before[index])
        # continuing from the reordered cache = running the reordered batch from scratch
        out = layer(x[index, 5:], kv_cache=cache)
        torch.testing.assert_close(out, layer(x[index])[:, 5:], rtol=0, atol=1e-5)
    cache.clear()
    assert len(cache) == 0 and cache.keys == [None] and cache.values == [None]
    with pytest.raises(ValueError, match="n_layers"):
        KVCache(0)


# ---- state dicts ---------------------------------------------------------------------------

@pytest.mark.parametrize("src_cls,dst_cls", [(MultiHeadAttention, MultiHeadAttentionSDPA),
                                             (MultiHeadAttentionSDPA, MultiHeadAttention)],
                         ids=["naive->sdpa", "sdpa->naive"])
def test_state_dicts_are_interchangeable(src_cls, dst_cls, tmp_path):
    src = make(src_cls, qkv_bias=True, seed=5)
    torch.save(src.state_dict(), tmp_path / "att.pt")
    dst = dst_cls(D_IN, D_OUT, CONTEXT, 0.0, HEADS, qkv_bias=True).eval()
    result = dst.load_state_dict(torch.load(tmp_path / "att.pt", weights_only=True), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert "mask" in src.state_dict(), "the mask buffer is persistent (the book's state dicts hold it)"
    x = rand_input()
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=1e-5)


# ---- no context length (the book's PyTorchMultiHeadAttention) -------------------------------

@pytest.mark.parametrize("cls", VARIANTS, ids=IDS)
@pytest.mark.parametrize("chunks", [[1] * 20, [7, 6, 7]], ids=["tokens", "chunks"])
def test_without_context_length_the_mask_built_per_call_matches_the_stored_one(cls, chunks):
    """context_length=None: any length, and the cached case needs the offset mask built on the fly."""
    torch.manual_seed(0)
    free = cls(D_IN, D_OUT, None, 0.0, HEADS, qkv_bias=True).eval()
    stored = cls(D_IN, D_OUT, 20, 0.0, HEADS, qkv_bias=True).eval()
    stored.load_state_dict(free.state_dict(), strict=False)
    x = rand_input(tokens=20)
    cache, outs, start = KVCache(), [], 0
    with torch.no_grad():
        full = stored(x)
        torch.testing.assert_close(free(x), full, rtol=0, atol=1e-5)
        for size in chunks:
            outs.append(free(x[:, start:start + size], kv_cache=cache))
            start += size
    torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=0, atol=1e-5)


def test_kv_cache_answers_the_book_packages_calls():
    """KVCache(n_layers) with get / update(layer, (keys, values)) / get_all / reset, as the
    book's kv_cache.gpt2 model drives it, alongside our appending update."""
    cache = KVCache(n_layers=2)
    assert cache.get(0) is None and cache.get_all() == [None, None]
    k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    assert cache.update(1, (k, v)) == (k, v)           # the book's form replaces the slot
    assert cache.get(1)[0] is k and cache.seq_len(1) == 3
    cache.update(1, (k[:, :, :1], v[:, :, :1]))
    assert cache.seq_len(1) == 1
    keys, _ = cache.update(1, k, v)                     # ours appends
    assert keys.shape[2] == 4
    cache.update(1, None)
    assert cache.get(1) is None
    cache.update(0, k, v)
    cache.reset()
    assert cache.get_all() == [None, None] and len(cache) == 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_heads=2.0), "num_heads must be a whole number"), (dict(num_heads=0), "num_heads must be a whole"),
    (dict(num_heads=3), "divisible by num_heads"),
    (dict(context_length=0), "context_length must be a whole number"),
    (dict(context_length=-4), "context_length must be a whole number"),
    (dict(dropout=float("nan")), "dropout must be a probability"), (dict(dropout=1.5), "dropout must be a probability"),
])
def test_attention_refuses_sizes_that_make_no_sense(kwargs, message):
    args = dict(d_in=8, d_out=8, context_length=6, dropout=0.0, num_heads=2) | kwargs
    for cls in (MultiHeadAttention, MultiHeadAttentionSDPA):
        with pytest.raises(ValueError, match=message):
            cls(**args)
    with pytest.raises(ValueError, match="n_layers must be a whole number"):
        KVCache(2.0)
