"""model: generated from ch04_gpt_model.ipynb. DO NOT EDIT.

Edit the notebook cells that start with `#| export model` and run `make export`.
"""
__all__ = ['GPT_CONFIG_124M', 'GPT_CONFIGS', 'LayerNorm', 'GELU', 'FeedForward', 'count_parameters', 'TransformerBlock', 'GPTModel', 'estimate_training_memory', 'largest_batch_that_fits']


# ---- ch04_gpt_model.ipynb, cell 11 ----
import torch
import torch.nn as nn

from helpers.attention import KVCache, MultiHeadAttention, MultiHeadAttentionSDPA

GPT_CONFIG_124M = {
    "vocab_size": 50257,     # GPT-2's BPE vocabulary
    "context_length": 1024,  # longest input the position embeddings cover
    "emb_dim": 768,          # width of every token vector
    "n_heads": 12,           # attention heads per layer
    "n_layers": 12,          # transformer blocks
    "drop_rate": 0.1,        # dropout probability
    "qkv_bias": False,       # bias in the query/key/value projections (OpenAI's weights have one)
}

# The four published GPT-2 sizes differ only in width, depth and number of heads.
GPT_CONFIGS = {
    "124M": GPT_CONFIG_124M,
    "355M": {**GPT_CONFIG_124M, "emb_dim": 1024, "n_layers": 24, "n_heads": 16},
    "774M": {**GPT_CONFIG_124M, "emb_dim": 1280, "n_layers": 36, "n_heads": 20},
    "1558M": {**GPT_CONFIG_124M, "emb_dim": 1600, "n_layers": 48, "n_heads": 25},
}


# ---- ch04_gpt_model.ipynb, cell 16 ----
class LayerNorm(nn.Module):
    """Normalise each token vector to mean 0 and variance 1, then scale and shift (learned)."""

    def __init__(self, emb_dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)  # biased, as GPT-2 (and TensorFlow) did
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift


# ---- ch04_gpt_model.ipynb, cell 22 ----
class GELU(nn.Module):
    """GELU in the tanh approximation GPT-2 was trained with."""

    def forward(self, x):
        return 0.5 * x * (1 + torch.tanh((2.0 / torch.pi) ** 0.5 * (x + 0.044715 * x.pow(3))))


# ---- ch04_gpt_model.ipynb, cell 26 ----
class FeedForward(nn.Module):
    """Per-token MLP: widen 4x, GELU, project back."""

    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]),
            GELU(),
            nn.Linear(4 * cfg["emb_dim"], cfg["emb_dim"]),
        )

    def forward(self, x):
        return self.layers(x)


# ---- ch04_gpt_model.ipynb, cell 41 ----
def count_parameters(model: nn.Module, tied: bool = False) -> int:
    """Number of parameters; `tied=True` counts the output head as sharing the token embedding
    (as OpenAI's GPT-2 does), so it is left out. A model whose head really is its embedding
    matrix (`FastGPTModel` with tie_weights) has it once in `parameters()` already."""
    total = sum(p.numel() for p in model.parameters())
    if tied and model.out_head.weight is not model.tok_emb.weight:
        total -= model.out_head.weight.numel()
    return total


# ---- ch04_gpt_model.ipynb, cell 67 ----
class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attention(norm(x)), then x + feed_forward(norm(x)).

    cfg["attention"] picks the attention code: "sdpa" (default, PyTorch's fused kernel) or
    "naive" (the step-by-step version of chapter 3). Both have the same parameters.
    """

    def __init__(self, cfg):
        super().__init__()
        attention = {"sdpa": MultiHeadAttentionSDPA, "naive": MultiHeadAttention}[cfg.get("attention", "sdpa")]
        self.att = attention(
            d_in=cfg["emb_dim"], d_out=cfg["emb_dim"], context_length=cfg["context_length"],
            num_heads=cfg["n_heads"], dropout=cfg["drop_rate"], qkv_bias=cfg["qkv_bias"])
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg["emb_dim"])
        self.norm2 = LayerNorm(cfg["emb_dim"])
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x, kv_cache=None, layer=0):
        cache_args = () if kv_cache is None else (kv_cache, layer)  # so any att with forward(x) fits
        x = x + self.drop_shortcut(self.att(self.norm1(x), *cache_args))
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        return x


# ---- ch04_gpt_model.ipynb, cell 71 ----
import difflib
import warnings

import numpy as np

from helpers.text import _is_count, _is_real


_GPT_CONFIG_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias")
_OPTIONAL_KEYS = ("attention", "tie_weights", "grad_checkpointing")  # read by GPTModel or FastGPTModel


def _check_gpt_config(cfg):
    """A copy of `cfg` once every value makes sense, else an error that names the key."""
    missing = set(_GPT_CONFIG_KEYS) - set(cfg)
    if missing:
        raise KeyError(f"GPTModel config lacks {sorted(missing)}")
    unknown = sorted(set(cfg) - set(_GPT_CONFIG_KEYS + _OPTIONAL_KEYS), key=str)
    if unknown:  # a misspelt key, e.g. {**cfg, "n_layer": 24}, would build the model it meant to change
        close = {key: difflib.get_close_matches(str(key), _GPT_CONFIG_KEYS + _OPTIONAL_KEYS, 1) for key in unknown}
        names = [f"{key!r}" + (f" (did you mean {close[key][0]!r}?)" if close[key] else "") for key in unknown]
        warnings.warn(f"the model config has keys no model reads, so they change nothing: {', '.join(names)}",
                      stacklevel=3)
    for key in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
        if not _is_count(cfg[key], 1):
            raise ValueError(f"cfg[{key!r}] must be a positive integer, got {cfg[key]!r}")
    if cfg["emb_dim"] % cfg["n_heads"]:
        raise ValueError(f"cfg['emb_dim'] ({cfg['emb_dim']}) must be divisible by cfg['n_heads'] "
                         f"({cfg['n_heads']}): each head gets emb_dim // n_heads dimensions")
    if not (_is_real(cfg["drop_rate"]) and 0 <= cfg["drop_rate"] < 1):  # None, "0.1" and NaN too
        raise ValueError(f"cfg['drop_rate'] must be in [0, 1) (a number such as 0.1), got {cfg['drop_rate']!r}")
    if not isinstance(cfg["qkv_bias"], (bool, np.bool_)):  # the string "False" is true: it built biases
        raise ValueError(f"cfg['qkv_bias'] must be True or False (a bool), got {cfg['qkv_bias']!r}")
    if cfg.get("attention", "sdpa") not in ("sdpa", "naive"):  # TransformerBlock's choices
        raise ValueError(f"cfg['attention'] must be 'sdpa' or 'naive' (or left out: 'sdpa'), got {cfg['attention']!r}")
    return dict(cfg)


def _check_token_ids(in_idx, past, cfg):
    """A clear error for input the model cannot take, instead of an index error deep inside."""
    if not isinstance(in_idx, torch.Tensor) or in_idx.ndim != 2:
        shape = tuple(in_idx.shape) if isinstance(in_idx, torch.Tensor) else type(in_idx).__name__
        raise ValueError(f"in_idx must be a (batch, tokens) tensor of token IDs; got {shape}: "
                         f"for one text use idx.unsqueeze(0); pass token IDs, not embeddings")
    if in_idx.shape[1] == 0:
        raise ValueError("empty input: pass at least one token ID")
    if past + in_idx.shape[1] > cfg["context_length"]:
        raise ValueError(f"{past + in_idx.shape[1]} tokens exceed the context length of {cfg['context_length']}; "
                         f"crop the input, e.g. idx[:, -{cfg['context_length']}:] (and clear the cache)")
    if in_idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"token IDs must be integers in [0, {cfg['vocab_size']}); got dtype {in_idx.dtype}")
    in_range = (in_idx.min() >= 0) & (in_idx.max() < cfg["vocab_size"])
    if in_idx.device.type == "cpu":
        if not in_range:
            raise ValueError(f"token IDs must be integers in [0, {cfg['vocab_size']}); "
                             f"got range [{in_idx.min()}, {in_idx.max()}]")
    else:  # reading the result back would make the CPU wait for the GPU at every step
        torch._assert_async(in_range, f"token IDs must be integers in [0, {cfg['vocab_size']})")


# ---- ch04_gpt_model.ipynb, cell 72 ----
class GPTModel(nn.Module):
    """GPT-2: token + position embeddings, a stack of transformer blocks, a final norm, and a
    linear head giving one logit per vocabulary entry at every position.

    forward(in_idx (batch, tokens) of token IDs) -> logits (batch, tokens, vocab_size).
    With a KV cache, only tokens not seen before are passed in; their positions continue
    after the cached ones. The cache: `kv_cache=` (a `KVCache`, e.g. `new_kv_cache()`), the
    book package's `cache=` (the same), or `use_cache=True` alone: the model's own cache,
    kept across calls until `reset_kv_cache()`.
    """
    _own_cache = None  # the cache of use_cache=True calls

    def __init__(self, cfg):
        super().__init__()
        self.cfg = _check_gpt_config(cfg)
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

    def new_kv_cache(self) -> KVCache:
        return KVCache(len(self.trf_blocks))

    def reset_kv_cache(self):
        """Forget what earlier use_cache=True calls cached (before a new prompt)."""
        self._own_cache = None

    @property
    def current_pos(self):
        """Positions held by the use_cache=True cache: where the next token's position starts."""
        return 0 if self._own_cache is None else len(self._own_cache)

    def _pick_cache(self, use_cache, cache, kv_cache):
        if cache is not None and kv_cache is not None:
            raise ValueError("pass the cache once: kv_cache= or cache=, not both")
        kv_cache = cache if kv_cache is None else kv_cache
        if kv_cache is None and use_cache:
            if self._own_cache is None:
                self._own_cache = self.new_kv_cache()
            kv_cache = self._own_cache
        return kv_cache

    def forward(self, in_idx, use_cache=False, cache=None, *, kv_cache=None):
        kv_cache = self._pick_cache(use_cache, cache, kv_cache)
        past = len(kv_cache) if kv_cache is not None else 0
        _check_token_ids(in_idx, past, self.cfg)
        tok_embeds = self.tok_emb(in_idx)
        pos_embeds = self.pos_emb(torch.arange(past, past + in_idx.shape[1], device=in_idx.device))
        x = self.drop_emb(tok_embeds + pos_embeds)
        for layer, block in enumerate(self.trf_blocks):  # a block with forward(x) fits when no cache is used
            x = block(x) if kv_cache is None else block(x, kv_cache, layer)
        x = self.final_norm(x)
        return self.out_head(x)


# ---- ch04_gpt_model.ipynb, cell 93 ----
def estimate_training_memory(cfg, batch_size, num_tokens, device="cuda"):
    """Bytes one float32 training step with AdamW needs, part by part ("total" is their sum).

    Parameters: 16 bytes each (weight, gradient, AdamW's two averages). Activations: what the
    forward pass keeps for the backward pass, counted for this chapter's GPTModel (its "Under
    the hood" checks it): per token and layer 32 x emb_dim float32 numbers and each head's softmax
    normaliser, plus dropout's masks when drop_rate > 0, plus the heads x tokens x tokens
    attention weights where they are kept (cfg["attention"] == "naive", or dropout on a
    device other than CUDA, where PyTorch's fused attention falls back to its plain version);
    per token once: the vocabulary-sized log-probabilities of the loss, whose gradients add two
    more such tensors in the backward pass. CUDA's own context and allocator slack come on top.
    """
    for name, value in (("batch_size", batch_size), ("num_tokens", num_tokens)):
        if not _is_count(value, 1):
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    with torch.device("meta"):  # shapes only: no memory, even for 1558M
        n_params = count_parameters(GPTModel(cfg))
    d, h, n_layers, vocab = cfg["emb_dim"], cfg["n_heads"], cfg["n_layers"], cfg["vocab_size"]
    dropout = cfg["drop_rate"] > 0
    per_layer = 128 * d + 4 * h + (8 * d + 8 if dropout else 0)
    if cfg.get("attention", "sdpa") == "naive" or (dropout and torch.device(device).type != "cuda"):
        per_layer += (12 if dropout else 4) * h * num_tokens
    per_token = n_layers * per_layer + (20 if dropout else 16) * d + 4 * vocab
    parts = {"weights": 4 * n_params, "gradients": 4 * n_params, "AdamW state": 8 * n_params,
             "activations": batch_size * num_tokens * per_token,
             "loss gradients": batch_size * num_tokens * 8 * vocab}
    parts["total"] = sum(parts.values())
    return parts


def largest_batch_that_fits(cfg, num_tokens, free_bytes, max_batch=64, device="cuda", headroom=0.1):
    """The largest batch size up to `max_batch` whose estimated training step fits in
    `free_bytes` less `headroom` (a fraction kept for the allocator and CUDA's context), or 0
    if not even one sequence fits."""
    if not 0 < free_bytes < float("inf") or not 0 <= headroom < 1 or not _is_count(max_batch, 1):
        raise ValueError(f"need 0 < free_bytes < inf, 0 <= headroom < 1 and a whole max_batch >= 1; got "
                         f"{free_bytes!r}, {headroom!r}, {max_batch!r}")
    one = estimate_training_memory(cfg, 1, num_tokens, device)
    per_sequence = one["activations"] + one["loss gradients"]  # the parts that grow with the batch
    room = free_bytes * (1 - headroom) - (one["total"] - per_sequence)
    return max(0, min(max_batch, int(room // per_sequence)))
