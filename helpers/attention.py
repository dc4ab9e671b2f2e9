"""attention: generated from ch03_attention.ipynb. DO NOT EDIT.

Edit the notebook cells that start with `#| export attention` and run `make export`.
"""
__all__ = ['SelfAttention_v1', 'SelfAttention_v2', 'CausalAttention', 'MultiHeadAttentionWrapper', 'MultiHeadAttention', 'MultiHeadAttentionSDPA', 'PyTorchMultiHeadAttention', 'KVCache']


# ---- ch03_attention.ipynb, cell 35 ----
import torch
import torch.nn as nn


class SelfAttention_v1(nn.Module):
    """Scaled dot-product self-attention with raw weight matrices (teaching version)."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.W_query = nn.Parameter(torch.rand(d_in, d_out))
        self.W_key = nn.Parameter(torch.rand(d_in, d_out))
        self.W_value = nn.Parameter(torch.rand(d_in, d_out))

    def forward(self, x):
        queries, keys, values = x @ self.W_query, x @ self.W_key, x @ self.W_value
        scores = queries @ keys.T
        weights = torch.softmax(scores / keys.shape[-1] ** 0.5, dim=-1)
        return weights @ values


# ---- ch03_attention.ipynb, cell 39 ----
class SelfAttention_v2(nn.Module):
    """Scaled dot-product self-attention with nn.Linear projections (teaching version)."""

    def __init__(self, d_in, d_out, qkv_bias=False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x):
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)
        scores = queries @ keys.T
        weights = torch.softmax(scores / keys.shape[-1] ** 0.5, dim=-1)
        return weights @ values


# ---- ch03_attention.ipynb, cell 56 ----
class CausalAttention(nn.Module):
    """Single-head causal self-attention with dropout, for batches (teaching version)."""

    def __init__(self, d_in, d_out, context_length, dropout, qkv_bias=False):
        super().__init__()
        self.d_out = d_out
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x):
        b, num_tokens, d_in = x.shape
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)
        scores = queries @ keys.transpose(1, 2)                      # (b, tokens, tokens)
        scores = scores.masked_fill(self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)
        weights = self.dropout(torch.softmax(scores / keys.shape[-1] ** 0.5, dim=-1))
        return weights @ values


# ---- ch03_attention.ipynb, cell 63 ----
class MultiHeadAttentionWrapper(nn.Module):
    """Several independent causal attention heads, outputs concatenated (teaching version)."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.heads = nn.ModuleList(
            [CausalAttention(d_in, d_out, context_length, dropout, qkv_bias) for _ in range(num_heads)])

    def forward(self, x):
        return torch.cat([head(x) for head in self.heads], dim=-1)


# ---- ch03_attention.ipynb, cell 96 ----
import torch
import torch.nn as nn

from helpers.text import _is_count  # a whole number: 2.0 heads or a NaN size are refused


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention, written out step by step.

    Maps x of shape (batch, tokens, d_in) to (batch, tokens, d_out). The query, key and value
    projections are split into `num_heads` heads of size d_out // num_heads; each head attends
    only to its own and earlier positions; the heads' context vectors are concatenated and
    mixed by `out_proj`.

    Args:
        d_in: size of each input vector.
        d_out: size of each output vector; must be divisible by `num_heads`.
        context_length: the longest sequence accepted (the size of the causal mask); None: no
            limit, the mask is built for each call instead of stored.
        dropout: probability of dropping an attention weight in training mode.
        num_heads: number of attention heads.
        qkv_bias: whether the query/key/value projections have a bias (GPT-2's do).

    forward(x, kv_cache=None, layer=0): with a `KVCache`, x holds only the tokens not seen
    before; their keys and values are appended to slot `layer` of the cache, and each new
    query attends to every cached token and to the new ones up to itself.

    The names W_query, W_key, W_value, out_proj and the persistent `mask` buffer are those of
    the book's code, so its state dicts load unchanged.
    """

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        if not _is_count(num_heads, 1):
            raise ValueError(f"num_heads must be a whole number >= 1, got {num_heads!r}")
        if d_out % num_heads != 0:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads}): "
                             f"each head gets d_out // num_heads dimensions")
        if context_length is not None and not _is_count(context_length, 1):
            raise ValueError(f"context_length must be a whole number >= 1 (or None: no limit), got {context_length!r}")
        if not 0 <= dropout <= 1:  # also refuses NaN, which nn.Dropout lets through
            raise ValueError(f"dropout must be a probability in [0, 1], got {dropout!r}")
        self.d_in, self.d_out = d_in, d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.context_length = context_length
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        # 1 above the diagonal marks a future position. A buffer rather than a parameter: it is
        # never trained, but it follows .to(device) and is saved in the state dict.
        if context_length is not None:
            self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def _future(self, past, num_all, device):
        """True where a query (rows: positions past .. num_all - 1) must not see a key (columns)."""
        if self.context_length is None:
            return torch.ones(num_all - past, num_all, dtype=torch.bool, device=device).triu(past + 1)
        return self.mask[past:num_all, :num_all].bool()

    def _split_heads(self, t):
        """(batch, tokens, d_out) -> (batch, heads, tokens, head_dim)."""
        b, num_tokens, _ = t.shape
        return t.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)

    def _merge_heads(self, context):
        """(batch, heads, tokens, head_dim) -> (batch, tokens, d_out), then the output projection."""
        b, _, num_tokens, _ = context.shape
        return self.out_proj(context.transpose(1, 2).contiguous().view(b, num_tokens, self.d_out))

    def _project(self, x, kv_cache, layer):
        """Queries of the new tokens; keys and values of all tokens so far; how many were cached."""
        if x.ndim != 3 or x.shape[1] == 0:
            raise ValueError(f"x must have shape (batch, tokens, d_in) with at least one token; "
                             f"got {tuple(x.shape)}" + ("; add the batch axis: x.unsqueeze(0)" if x.ndim == 2 else ""))
        if x.shape[2] != self.d_in:  # else a matmul error about "mat1 and mat2" shapes
            raise ValueError(f"x has {x.shape[2]} values per token, but this layer was built with d_in={self.d_in}")
        past = 0 if kv_cache is None else kv_cache.seq_len(layer)
        total = past + x.shape[1]
        if self.context_length is not None and total > self.context_length:  # checked before the cache is touched, so it stays valid
            raise ValueError(f"{total} tokens ({past} cached + {x.shape[1]} new) exceed the context "
                             f"length of {self.context_length}; crop the input to its last "
                             f"{self.context_length} tokens (and clear the cache)")
        queries = self._split_heads(self.W_query(x))
        keys = self._split_heads(self.W_key(x))
        values = self._split_heads(self.W_value(x))
        if kv_cache is not None:
            keys, values = kv_cache.update(layer, keys, values)
        return queries, keys, values, past

    def forward(self, x, kv_cache=None, layer=0):
        queries, keys, values, past = self._project(x, kv_cache, layer)
        num_all = keys.shape[2]
        attn_scores = queries @ keys.transpose(2, 3)  # (batch, heads, new tokens, all tokens)
        # Row i is the query at position past + i: it may see keys 0 .. past + i.
        future = self._future(past, num_all, x.device)
        attn_scores = attn_scores.masked_fill(future, -torch.inf)
        attn_weights = torch.softmax(attn_scores / self.head_dim**0.5, dim=-1)
        attn_weights = self.dropout(attn_weights)
        return self._merge_heads(attn_weights @ values)


# ---- ch03_attention.ipynb, cell 102 ----
import torch.nn.functional as F


class MultiHeadAttentionSDPA(MultiHeadAttention):
    """MultiHeadAttention computed by PyTorch's fused `scaled_dot_product_attention`.

    Same constructor, parameters, `mask` buffer and state dict as `MultiHeadAttention` (the two
    load each other's weights); same outputs up to float rounding; faster and lighter on
    memory for long sequences.
    """

    def forward(self, x, kv_cache=None, layer=0):
        queries, keys, values, past = self._project(x, kv_cache, layer)
        num_all = keys.shape[2]
        dropout_p = self.dropout.p if self.training else 0.0
        if past == 0:  # no cache: the plain causal case, which the fused kernels handle best
            context = F.scaled_dot_product_attention(queries, keys, values, dropout_p=dropout_p, is_causal=True)
        else:
            # is_causal=True would align the mask to the top-left corner, wrong when the queries
            # are the last rows; pass the matching slice of our mask (True = may attend) instead.
            allowed = ~self._future(past, num_all, x.device)
            context = F.scaled_dot_product_attention(queries, keys, values, attn_mask=allowed,
                                                     dropout_p=dropout_p)
        return self._merge_heads(context)


# ---- ch03_attention.ipynb, cell 106 ----
class PyTorchMultiHeadAttention(MultiHeadAttentionSDPA):
    """`MultiHeadAttentionSDPA` under the book's name and signature: no `context_length`, so any
    sequence length; `context_length` may still be given (keyword) to get the stored mask and
    the length check. Same parameters and state dict keys as `MultiHeadAttention` (no `mask`
    entry without a context length); also loads the book package's state dicts (`qkv`, `proj`: a
    load-time hook splits `qkv` and renames `proj` to `out_proj`). What it saves loads into the
    book's `MultiHeadAttention` (with `strict=False` when there is no `mask`), not into the book's
    `PyTorchMultiHeadAttention`, which expects the fused `qkv`."""

    def __init__(self, d_in, d_out, num_heads, dropout=0.0, qkv_bias=False, context_length=None):
        on_cuda = torch.empty(0).device.type == "cuda"  # where nn.Linear draws (the default device)
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if on_cuda else []):
            super().__init__(d_in, d_out, context_length, dropout, num_heads, qkv_bias)  # drawn again below
        self.register_load_state_dict_pre_hook(_split_fused_qkv)
        # Drawn as the book draws them, one `qkv` layer (all weights, then all biases) and then
        # `proj`, so that the same seed gives the book's weights with qkv_bias=True too.
        fused = {f"qkv.{k}": v for k, v in nn.Linear(d_in, 3 * d_out, bias=qkv_bias).state_dict().items()}
        fused |= {f"proj.{k}": v for k, v in nn.Linear(d_out, d_out).state_dict().items()}
        self.load_state_dict(fused, strict=False)  # strict=False: no `mask` among them


_BOOK_QKV = ("W_query", "W_key", "W_value")


def _rename_book_proj(state_dict, prefix):
    """The book package's fused layers call the output projection `proj` (under LoRA also
    `proj.linear...`, `proj.lora...`); ours is `out_proj`. A key whose target is already there
    is left for strict loading to report."""
    for key in [k for k in state_dict if k.startswith(prefix + "proj.")]:
        ours = prefix + "out_" + key[len(prefix):]
        if ours not in state_dict:
            state_dict[ours] = state_dict.pop(key)


def _split_fused_qkv(module, state_dict, prefix, *_):
    """Load-time hook: the book package's layout -> ours. Its `qkv` stacks the query, key and
    value rows (in that order) in one matrix; its `proj` is our `out_proj`. With LoRA around
    `qkv`, the one adapter splits exactly: its A is shared, its B splits by columns. A key whose
    target is already there is left for strict loading to report."""
    fused_keys = [k for k in state_dict if k.startswith(prefix + "qkv.")]
    for key in fused_keys:
        rest = key[len(prefix + "qkv."):]  # "weight", "bias", or LoRA's "linear.weight", "lora.A", ...
        targets = [prefix + f"{name}.{rest}" for name in _BOOK_QKV]
        if any(t in state_dict for t in targets):
            continue
        fused = state_dict.pop(key)
        if rest.endswith("lora.A"):
            parts = [fused] * 3
        else:
            parts = fused.chunk(3, dim=1 if rest.endswith("lora.B") else 0)
        state_dict.update(zip(targets, parts))
    _rename_book_proj(state_dict, prefix)
    if fused_keys and hasattr(module, "mask") and prefix + "mask" not in state_dict:
        state_dict[prefix + "mask"] = module.mask  # the book's layer has none: keep ours


# ---- ch03_attention.ipynb, cell 110 ----
import torch


class KVCache:
    """Keys and values of every token processed so far, one slot per attention layer.

    During generation each new query must attend to the keys and values of all earlier tokens.
    Those do not change, so each layer appends the new ones here instead of recomputing the
    whole prefix at every step. Tensors are stored as (batch, heads, tokens, head_dim).

    It also answers the calls of the book package's `KVCache(n_layers)`: `get(layer)` and
    `get_all()` give (keys, values) pairs (None for an empty slot), `update(layer, (keys,
    values))` with one pair replaces a slot, `reset()` is `clear()`.
    """

    def __init__(self, n_layers: int = 1):
        if not _is_count(n_layers, 1):
            raise ValueError(f"n_layers must be a whole number >= 1, got {n_layers!r}")
        self.keys = [None] * n_layers
        self.values = [None] * n_layers

    def _check_layer(self, layer):
        # a cache made for fewer layers than the model has: else a bare "list index out of range"
        if not 0 <= layer < len(self.keys):
            raise IndexError(f"layer {layer} has no slot in this KVCache of {len(self.keys)} layer(s): make it "
                             f"with one per attention layer, KVCache(n_layers=cfg['n_layers'])")

    def seq_len(self, layer: int = 0) -> int:
        """How many positions slot `layer` holds."""
        self._check_layer(layer)
        return 0 if self.keys[layer] is None else self.keys[layer].shape[-2]

    def __len__(self) -> int:
        """How many positions are cached (layer 0 is updated first, so it is never behind)."""
        return self.seq_len(0)

    def __bool__(self) -> bool:
        # A cache is there even while empty: the book's cached GPT-2 tests `if cache:` before
        # filling it, which len() alone would make False for ever.
        return True

    def update(self, layer: int, keys, values=None):
        """Append this step's keys/values (batch, heads, new, head_dim); return all of them."""
        self._check_layer(layer)
        if values is None:  # the book's update(layer, (keys, values) or None): replace the slot
            self.keys[layer], self.values[layer] = (None, None) if keys is None else keys
            return keys
        if self.keys[layer] is not None:
            keys = torch.cat([self.keys[layer], keys], dim=-2)
            values = torch.cat([self.values[layer], values], dim=-2)
        self.keys[layer], self.values[layer] = keys, values
        return keys, values

    def reorder(self, index) -> None:
        """Keep, drop or duplicate batch rows (beam search): new row i is old row index[i]."""
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            if k is not None:
                idx = torch.as_tensor(index, device=k.device)
                self.keys[i], self.values[i] = k.index_select(0, idx), v.index_select(0, idx)

    def get(self, layer: int):
        return None if self.keys[layer] is None else (self.keys[layer], self.values[layer])

    def get_all(self):
        return [self.get(layer) for layer in range(len(self.keys))]

    def reset(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget everything (e.g. before a new prompt)."""
        self.keys = [None] * len(self.keys)
        self.values = [None] * len(self.values)
