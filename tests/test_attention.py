"""helpers.attention (exported from ch03_attention.ipynb), checked against torch.nn.MultiheadAttention
and against itself under changes that must not matter (future tokens, eval-mode dropout, caching)."""
import pytest
import torch

from helpers.attention import KVCache, MultiHeadAttention, MultiHeadAttentionSDPA

VARIANTS = [MultiHeadAttention, MultiHeadAttentionSDPA]


def make(cls, d=32, heads=4, ctx=16, dropout=0.0, qkv_bias=False, seed=0):
    torch.manual_seed(seed)
    return cls(d, d, context_length=ctx, dropout=dropout, num_heads=heads, qkv_bias=qkv_bias).eval()


@pytest.mark.parametrize("cls", VARIANTS)
def test_changing_a_future_token_leaves_earlier_outputs_unchanged(cls):
    mha = make(cls)
    x = torch.randn(2, 10, 32)
    y = x.clone()
    y[:, 6] += torch.randn(2, 32)  # change position 6 only
    with torch.no_grad():
        a, b = mha(x), mha(y)
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-6)
    assert not torch.allclose(a[:, 6:], b[:, 6:], atol=1e-3)


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_naive_and_sdpa_agree(qkv_bias):
    naive = make(MultiHeadAttention, d=64, heads=8, ctx=32, qkv_bias=qkv_bias)
    fused = make(MultiHeadAttentionSDPA, d=64, heads=8, ctx=32, qkv_bias=qkv_bias, seed=1)
    fused.load_state_dict(naive.state_dict())
    x = torch.randn(3, 32, 64)
    with torch.no_grad():
        assert (naive(x) - fused(x)).abs().max().item() <= 1e-5
        assert (naive(x[:, :7]) - fused(x[:, :7])).abs().max().item() <= 1e-5


@pytest.mark.parametrize("cls", VARIANTS)
@pytest.mark.parametrize("qkv_bias", [False, True])
def test_matches_torch_multihead_attention(cls, qkv_bias):
    d, heads, T = 48, 6, 12
    ours = make(cls, d=d, heads=heads, ctx=T, qkv_bias=qkv_bias)
    ref = torch.nn.MultiheadAttention(d, heads, dropout=0.0, bias=True, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.W_query.weight, ours.W_key.weight, ours.W_value.weight]))
        if qkv_bias:
            ref.in_proj_bias.copy_(torch.cat([ours.W_query.bias, ours.W_key.bias, ours.W_value.bias]))
        else:
            ref.in_proj_bias.zero_()
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
        x = torch.randn(2, T, d)
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # True = not allowed
        expected, _ = ref(x, x, x, attn_mask=causal, need_weights=False)
        assert (ours(x) - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("cls", VARIANTS)
def test_dropout_only_in_training(cls):
    mha = make(cls, dropout=0.5)
    x = torch.randn(2, 16, 32)
    with torch.no_grad():
        assert torch.equal(mha(x), mha(x))
        mha.train()
        torch.manual_seed(1)
        first = mha(x)
        torch.manual_seed(2)
        assert not torch.allclose(first, mha(x))


@pytest.mark.parametrize("cls", VARIANTS)
def test_input_longer_than_context_is_a_clear_error(cls):
    mha = make(cls, ctx=8)
    with pytest.raises(ValueError, match="context length of 8"):
        mha(torch.randn(1, 9, 32))


def test_d_out_must_divide_into_heads():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        MultiHeadAttention(16, 30, context_length=8, dropout=0.0, num_heads=4)


@pytest.mark.parametrize("cls", VARIANTS)
@pytest.mark.parametrize("chunks", [[1] * 10, [3, 4, 3], [6, 1, 1, 2]])
def test_kv_cache_equals_full_sequence(cls, chunks):
    mha = make(cls)
    x = torch.randn(2, sum(chunks), 32)
    cache = KVCache(n_layers=1)
    pieces, start = [], 0
    with torch.no_grad():
        full = mha(x)
        for n in chunks:
            pieces.append(mha(x[:, start:start + n], kv_cache=cache))
            start += n
    assert len(cache) == x.shape[1]
    assert (torch.cat(pieces, dim=1) - full).abs().max().item() <= 1e-5


def test_kv_cache_overflow_is_a_clear_error():
    mha = make(MultiHeadAttention, ctx=4)
    cache = KVCache(1)
    mha(torch.randn(1, 4, 32), kv_cache=cache)
    with pytest.raises(ValueError, match="context length"):
        mha(torch.randn(1, 1, 32), kv_cache=cache)


def test_kv_cache_reorder_and_clear():
    cache = KVCache(n_layers=2)
    keys = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 2, 5, 4)
    cache.update(0, keys, keys + 10)
    cache.reorder(torch.tensor([2, 2, 0]))
    assert cache.keys[0][:, 0, 0, 0].tolist() == [2.0, 2.0, 0.0]
    assert cache.values[0][:, 0, 0, 0].tolist() == [12.0, 12.0, 10.0]
    assert cache.keys[1] is None and len(cache) == 5
    cache.clear()
    assert len(cache) == 0


def test_state_dicts_are_interchangeable():
    naive, fused = make(MultiHeadAttention), make(MultiHeadAttentionSDPA, seed=3)
    fused.load_state_dict(naive.state_dict(), strict=True)
    naive.load_state_dict(fused.state_dict(), strict=True)
    assert "mask" in naive.state_dict()  # the book's layout keeps the mask in the state dict
