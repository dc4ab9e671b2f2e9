"""generation: generated from ch04_gpt_model.ipynb. DO NOT EDIT.

Edit the notebook cells that start with `#| export generation` and run `make export`.
"""
__all__ = ['next_token_logits', 'generate_text_simple']


# ---- ch04_gpt_model.ipynb, cell 36 ----
import torch


def next_token_logits(model, idx, context_size, kv_cache=None):
    """Logits (batch, vocab_size) for the token that follows `idx` (batch, tokens).

    Without a cache the model reads the last `context_size` tokens. With a `KVCache` it reads
    only the tokens the cache has not seen yet. Once `idx` is longer than the context, the window
    slides and every token's position changes, so the cached keys/values no longer apply: the
    cache is refilled from the cropped window at each step, which gives exactly the uncached result.
    """
    if kv_cache is None:
        return model(idx[:, -context_size:])[:, -1, :]
    if idx.shape[1] > context_size or len(kv_cache) >= idx.shape[1]:
        kv_cache.clear()
        return model(idx[:, -context_size:], kv_cache=kv_cache)[:, -1, :]
    return model(idx[:, len(kv_cache):], kv_cache=kv_cache)[:, -1, :]


# ---- ch04_gpt_model.ipynb, cell 37 ----
def generate_text_simple(model, idx, max_new_tokens, context_size, use_cache=False):
    """Greedy decoding: append the most likely next token `max_new_tokens` times.

    idx: (batch, tokens) token IDs of the prompt. Returns (batch, tokens + max_new_tokens).
    `use_cache=True` feeds only the newest token each step (a KV cache); the output is the same.
    """
    if idx.ndim != 2 or idx.shape[1] == 0:
        raise ValueError(f"idx must be (batch, tokens) with at least one token; got shape {tuple(idx.shape)}")
    kv_cache = model.new_kv_cache() if use_cache else None
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = next_token_logits(model, idx, context_size, kv_cache)
        idx_next = torch.argmax(logits, dim=-1, keepdim=True)
        idx = torch.cat((idx, idx_next), dim=1)
    return idx
