"""attention: generated from ch03_attention.ipynb. DO NOT EDIT.

Edit the notebook cells that start with `#| export attention` and run `make export`.
"""
__all__ = ['MultiHeadAttention', 'MultiHeadAttentionSDPA', 'KVCache']


# ---- ch03_attention.ipynb, cell 42 ----
import torch
import torch.nn as nn
import torch.nn.functional as F


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention, written out step by step.

    x (batch, tokens, d_in) -> (batch, tokens, d_out). The submodule names (W_query, W_key,
    W_value, out_proj) and the `mask` buffer are the ones weight-loading code relies on.
    """

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        if d_out % num_heads != 0:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.context_length = context_length
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        # 1 above the diagonal = "a future token": registered so .to(device) moves it along.
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def _split_heads(self, x, b, num_tokens):
        # (b, tokens, d_out) -> (b, heads, tokens, head_dim)
        return x.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)

    def _project(self, x, kv_cache, layer):
        """Queries, keys and values per head, with cached keys/values of earlier tokens prepended."""
        b, num_tokens, _ = x.shape
        queries = self._split_heads(self.W_query(x), b, num_tokens)
        keys = self._split_heads(self.W_key(x), b, num_tokens)
        values = self._split_heads(self.W_value(x), b, num_tokens)
        if kv_cache is not None:
            keys, values = kv_cache.update(layer, keys, values)
        if keys.shape[2] > self.context_length:
            raise ValueError(f"{keys.shape[2]} tokens exceed the context length of {self.context_length}; "
                             f"crop the input to its last {self.context_length} tokens")
        return queries, keys, values

    def _merge_heads(self, context):
        b, _, num_tokens, _ = context.shape
        return self.out_proj(context.transpose(1, 2).contiguous().view(b, num_tokens, self.d_out))

    def forward(self, x, kv_cache=None, layer=0):
        queries, keys, values = self._project(x, kv_cache, layer)
        num_new, num_all = queries.shape[2], keys.shape[2]
        past = num_all - num_new  # tokens already in the cache come before the new ones
        attn_scores = queries @ keys.transpose(2, 3)
        mask = self.mask.bool()[past:num_all, :num_all]
        attn_scores.masked_fill_(mask, -torch.inf)
        attn_weights = torch.softmax(attn_scores / self.head_dim**0.5, dim=-1)
        attn_weights = self.dropout(attn_weights)
        return self._merge_heads(attn_weights @ values)


# ---- ch03_attention.ipynb, cell 48 ----
class MultiHeadAttentionSDPA(MultiHeadAttention):
    """The same layer (same parameters and buffer, so state dicts are interchangeable) computed
    by PyTorch's fused `scaled_dot_product_attention`: faster and lighter on memory."""

    def forward(self, x, kv_cache=None, layer=0):
        queries, keys, values = self._project(x, kv_cache, layer)
        num_new, num_all = queries.shape[2], keys.shape[2]
        past = num_all - num_new
        dropout_p = self.dropout.p if self.training else 0.0
        if past == 0:
            context = F.scaled_dot_product_attention(queries, keys, values, dropout_p=dropout_p, is_causal=True)
        else:  # new tokens see every cached token and the new ones up to themselves
            allowed = ~self.mask.bool()[past:num_all, :num_all]
            context = F.scaled_dot_product_attention(queries, keys, values, attn_mask=allowed, dropout_p=dropout_p)
        return self._merge_heads(context)


# ---- ch03_attention.ipynb, cell 54 ----
class KVCache:
    """Keys and values of every token processed so far, one slot per transformer block.

    During generation each new token's query must attend to the keys and values of all earlier
    tokens. Those never change, so each attention layer appends its new ones here instead of
    recomputing the whole prefix at every step.
    """

    def __init__(self, n_layers: int = 1):
        self.keys = [None] * n_layers
        self.values = [None] * n_layers

    def __len__(self) -> int:
        """How many positions are cached (layer 0 is filled first, so it is up to date)."""
        return 0 if self.keys[0] is None else self.keys[0].shape[-2]

    def update(self, layer: int, keys: torch.Tensor, values: torch.Tensor):
        """Append this step's keys/values (b, heads, new, head_dim); return all of them."""
        if self.keys[layer] is not None:
            keys = torch.cat([self.keys[layer], keys], dim=-2)
            values = torch.cat([self.values[layer], values], dim=-2)
        self.keys[layer], self.values[layer] = keys, values
        return keys, values

    def reorder(self, index: torch.Tensor) -> None:
        """Keep/duplicate batch rows (beam search): row i becomes old row index[i]."""
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            if k is not None:
                self.keys[i], self.values[i] = k.index_select(0, index), v.index_select(0, index)

    def clear(self) -> None:
        self.keys = [None] * len(self.keys)
        self.values = [None] * len(self.values)
