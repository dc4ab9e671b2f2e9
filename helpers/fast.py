"""fast: generated from ch04_gpt_model.ipynb. DO NOT EDIT.

Edit the notebook cells that start with `#| export fast` and run `make export`.
"""
__all__ = ['FusedLayerNorm', 'FusedFeedForward', 'FusedQKVAttention', 'StaticKVCache', 'FastTransformerBlock', 'FastGPTModel', 'GPTModelFast', 'TransformerBlockFast', 'FeedForwardFast', 'LinearCrossEntropy', 'linear_cross_entropy', 'pad_prompts', 'generate_fast', 'compile_model']


# ---- ch04_gpt_model.ipynb, cell 101 ----
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from helpers.generation import _check_eos_id, _check_greedy_args, eval_mode, sample_next_token
from helpers.model import FeedForward, GPTModel, LayerNorm, TransformerBlock, _check_gpt_config, _check_token_ids, _is_count


class FusedLayerNorm(LayerNorm):
    """`LayerNorm` (same `scale`/`shift` parameters, biased variance) in PyTorch's one-kernel
    implementation, which avoids four temporary tensors per call. Also loads `nn.LayerNorm`'s
    `weight`/`bias` (the names in the book package's fast model)."""

    def __init__(self, emb_dim, eps=1e-5):
        super().__init__(emb_dim, eps)
        self.register_load_state_dict_pre_hook(_load_weight_bias)

    def forward(self, x):
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


def _load_weight_bias(module, state_dict, prefix, *_):
    """Load-time hook: nn.LayerNorm's `weight`/`bias` -> `scale`/`shift`."""
    for theirs, ours in (("weight", "scale"), ("bias", "shift")):
        if prefix + theirs in state_dict and prefix + ours not in state_dict:
            state_dict[prefix + ours] = state_dict.pop(prefix + theirs)


class FusedFeedForward(FeedForward):
    """`FeedForward` with PyTorch's tanh-approximated GELU kernel (the same formula as `GELU`)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.layers[1] = nn.GELU(approximate="tanh")


# ---- ch04_gpt_model.ipynb, cell 105 ----
from helpers.attention import _BOOK_QKV, _rename_book_proj


class FusedQKVAttention(nn.Module):
    """Causal multi-head attention with the query, key and value projections in one `nn.Linear`
    (`qkv`). Loads and saves the state dict of chapter 3's `MultiHeadAttention` (`W_query`,
    `W_key`, `W_value`, `out_proj`, `mask`); also loads the book package's fused layout
    (`qkv`, `proj`). With LoRA around `qkv` it saves that fused (one adapter cannot be split).

    forward(x, kv_cache=None, layer=0, attn_mask=None): x is (batch, tokens, d_in). With a
    cache, x holds only new tokens. `attn_mask` (True = may attend), broadcastable to
    (batch, heads, new tokens, all tokens); None means causal attention: each new token sees
    everything cached and the new tokens up to itself.
    """

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        if not _is_count(num_heads, 1) or d_out % num_heads != 0:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        if not 0 <= dropout <= 1:  # also refuses NaN
            raise ValueError(f"dropout must be a probability in [0, 1], got {dropout!r}")
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.context_length = context_length
        self.dropout = dropout
        # Drawn as three layers, in MultiHeadAttention's order, then stacked: the same seed gives
        # the same weights as chapter 3's layer (one 3 x d_out layer would draw its biases last).
        parts = [nn.Linear(d_in, d_out, bias=qkv_bias) for _ in range(3)]
        self.qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias, device="meta")
        self.qkv.weight = nn.Parameter(torch.cat([p.weight for p in parts]).detach())
        if qkv_bias:
            self.qkv.bias = nn.Parameter(torch.cat([p.bias for p in parts]).detach())
        self.out_proj = nn.Linear(d_out, d_out)
        self.register_load_state_dict_pre_hook(_stack_book_qkv)
        self.register_state_dict_post_hook(_split_into_book_qkv)

    def forward(self, x, kv_cache=None, layer=0, attn_mask=None):
        b, n, _ = x.shape
        # (batch, tokens, 3, heads, head_dim) -> three (batch, heads, tokens, head_dim) views
        queries, keys, values = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if kv_cache is not None:
            keys, values = kv_cache.update(layer, keys, values)
        if attn_mask is None and 1 < n < keys.shape[2]:
            # Several new tokens after cached ones: is_causal would align its mask to the top-left
            # corner (new token i sees keys 0..i); they are the last rows, so align bottom-right.
            attn_mask = torch.ones(n, keys.shape[2], dtype=torch.bool, device=x.device).tril(keys.shape[2] - n)
        context = F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0,
            is_causal=attn_mask is None and n > 1)
        return self.out_proj(context.transpose(1, 2).reshape(b, n, self.d_out))


def _stack_book_qkv(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    """Load-time hook: the book's three projections -> one stacked `qkv`; its mask is not needed.
    The book package's fast layer has `qkv` stacked already and calls `out_proj` `proj`."""
    for kind in ("weight", "bias"):
        parts = [prefix + f"{name}.{kind}" for name in _BOOK_QKV]
        if all(p in state_dict for p in parts) and prefix + f"qkv.{kind}" not in state_dict:
            state_dict[prefix + f"qkv.{kind}"] = torch.cat([state_dict.pop(p) for p in parts])
    _rename_book_proj(state_dict, prefix)
    state_dict.pop(prefix + "mask", None)


def _split_into_book_qkv(module, state_dict, prefix, local_metadata):
    """Save-time hook: `qkv` -> the book's W_query/W_key/W_value and its causal `mask` buffer,
    in the book's key order (this layer's keys are the last ones in the dict at this point).
    A wrapped `qkv` (LoRA's `qkv.linear`, `qkv.lora`) has one adapter for all three, which
    chapter 3's three projections cannot hold: it is saved as it is, fused, without a mask."""
    if not isinstance(module.qkv, nn.Linear):
        return
    own = {key[len(prefix):]: state_dict.pop(key) for key in [k for k in state_dict if k.startswith(prefix)]}
    n = module.context_length
    state_dict[prefix + "mask"] = torch.triu(torch.ones(n, n, device=own["qkv.weight"].device), diagonal=1)
    for i, name in enumerate(_BOOK_QKV):
        for kind in ("weight", "bias"):
            if f"qkv.{kind}" in own:
                state_dict[prefix + f"{name}.{kind}"] = own[f"qkv.{kind}"].chunk(3)[i]
    for key, value in own.items():
        if not key.startswith("qkv."):
            state_dict[prefix + key] = value


# ---- ch04_gpt_model.ipynb, cell 109 ----
class StaticKVCache:
    """Preallocated keys and values: per layer a (batch, heads, max_len, head_dim) tensor,
    filled in place. `pos` counts the positions every layer holds; the model advances it once
    all layers have written a step (`advance`)."""

    def __init__(self, n_layers: int, max_len: int):
        if not (_is_count(n_layers, 1) and _is_count(max_len, 1)):
            raise ValueError(f"n_layers and max_len must be whole numbers >= 1, got {n_layers!r}, {max_len!r}")
        self.n_layers, self.max_len = n_layers, max_len
        self.keys = self.values = None
        self.pos = 0

    def __len__(self) -> int:
        return self.pos

    def update(self, layer: int, keys, values):
        """Write this step's keys/values (batch, heads, new, head_dim) after the cached ones;
        return views of all of them."""
        b, h, n, d = keys.shape
        end = self.pos + n
        if end > self.max_len:
            raise ValueError(f"{end} positions exceed the cache's max_len of {self.max_len}")
        if values.shape != keys.shape or values.dtype != keys.dtype:
            raise ValueError(f"keys {tuple(keys.shape)} {keys.dtype} and values {tuple(values.shape)} "
                             f"{values.dtype} must have the same shape and dtype")
        shape = (self.n_layers, b, h, self.max_len, d)
        if self.keys is None or self.keys.shape != shape or (self.keys.dtype, self.keys.device) != (keys.dtype, keys.device):
            # A new buffer would silently drop what is cached: the earlier steps, or this step's lower layers.
            if self.pos:
                raise ValueError(f"the cache holds {self.pos} positions for {self._layout(self.keys)}, not "
                                 f"{self._layout(keys)}; clear() it (model.reset_kv_cache() for the model's own) and "
                                 f"feed the whole text again, or reorder() its rows for a new batch order. Dtype "
                                 f"and device stay as they are for a whole generation (autocast on or off throughout)")
            if layer > 0 and self.keys is not None:
                raise ValueError(f"layer {layer} gives {self._layout(keys)}, the layers before it "
                                 f"{self._layout(self.keys)}: one StaticKVCache holds all layers, so they must agree "
                                 f"(cast the whole model, not some of its blocks)")
            self.keys = torch.empty(shape, dtype=keys.dtype, device=keys.device)
            self.values = torch.empty(shape, dtype=values.dtype, device=values.device)
        self.keys[layer, :, :, self.pos:end] = keys
        self.values[layer, :, :, self.pos:end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    @staticmethod
    def _layout(t) -> str:
        return f"a batch of {t.shape[-4]} ({t.shape[-3]} heads of {t.shape[-1]}, {t.dtype}, {t.device})"

    def advance(self, n: int) -> None:
        self.pos += n

    def reorder(self, index) -> None:
        """Keep, drop or duplicate batch rows (beam search): new row i is old row index[i]."""
        if self.keys is None:
            return
        index = torch.as_tensor(index, device=self.keys.device)
        for name in ("keys", "values"):
            buffer = getattr(self, name)
            # Only the cached positions: copying all max_len of them cost more than the model's
            # step itself in a beam search on the CPU. Same batch size: the buffer is reused.
            held = buffer[:, :, :, :self.pos].index_select(1, index)
            if held.shape[1] != buffer.shape[1]:
                buffer = buffer.new_empty(buffer.shape[:1] + held.shape[1:2] + buffer.shape[2:])
            buffer[:, :, :, :self.pos] = held
            setattr(self, name, buffer)

    def clear(self) -> None:
        """Forget the cached positions (the memory is kept for the next prompt)."""
        self.pos = 0


# ---- ch04_gpt_model.ipynb, cell 111 ----
class FastTransformerBlock(TransformerBlock):
    """`TransformerBlock` with fused QKV attention and fused LayerNorm/GELU; same state dict."""

    def __init__(self, cfg):
        # Not TransformerBlock.__init__: its parts would use up random numbers before the fast
        # ones are drawn. The same parts in the same order: the same seed gives the same weights.
        nn.Module.__init__(self)
        self.att = FusedQKVAttention(
            d_in=cfg["emb_dim"], d_out=cfg["emb_dim"], context_length=cfg["context_length"],
            num_heads=cfg["n_heads"], dropout=cfg["drop_rate"], qkv_bias=cfg["qkv_bias"])
        self.ff = FusedFeedForward(cfg)
        self.norm1, self.norm2 = FusedLayerNorm(cfg["emb_dim"]), FusedLayerNorm(cfg["emb_dim"])
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x, kv_cache=None, layer=0, attn_mask=None):
        x = x + self.drop_shortcut(self.att(self.norm1(x), kv_cache, layer, attn_mask))
        return x + self.drop_shortcut(self.ff(self.norm2(x)))


# ---- ch04_gpt_model.ipynb, cell 112 ----
class FastGPTModel(GPTModel):
    """`GPTModel`'s network built for speed; loads and saves `GPTModel`'s state dicts, and
    also loads those of the book package's `GPTModelFast`. (With LoRA around the attention's
    fused `qkv`, that layer is saved fused: see `FusedQKVAttention`.)

    cfg: `GPTModel`'s keys, plus optional "tie_weights" (share `out_head.weight` with
    `tok_emb.weight`) and "grad_checkpointing" (recompute block activations in backward).

    forward(in_idx, use_cache=False, cache=None, *, kv_cache=None, attention_mask=None,
    position_ids=None) -> logits (batch, tokens, vocab_size); `loss(in_idx, targets)`, also
    `forward(in_idx, targets=targets)`, -> the training loss without materialising the logits. With a `StaticKVCache`
    (`new_kv_cache()`) or a `KVCache`, in_idx holds only tokens the cache has not seen; the
    cache arguments are `GPTModel`'s. `attention_mask` (batch, cached + new tokens), 1 for real
    tokens and 0 for padding, and `position_ids` (batch, new tokens) serve left-padded batches.
    """

    def __init__(self, cfg):
        # GPTModel's layers in GPTModel's order (so the same seed gives the same weights), with
        # the fast blocks and norm; GPTModel.__init__ would draw its own blocks first.
        nn.Module.__init__(self)
        self.cfg = _check_gpt_config(cfg)
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[FastTransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = FusedLayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)
        if cfg.get("tie_weights", False):
            # nn.Embedding draws N(0, 1) weights; as an output head they give logits with a spread
            # of about 28 and a saturated softmax, whose tiny (denormal) floats make a CPU crawl
            # in the backward pass. GPT-2 initialises the shared matrix with std 0.02.
            nn.init.normal_(self.tok_emb.weight, std=0.02)
            self.out_head.weight = self.tok_emb.weight
            self.register_load_state_dict_pre_hook(_refuse_untied)

    @classmethod
    def from_model(cls, model, **options):
        """A FastGPTModel with `model`'s config (plus `options`) and weights, on its device."""
        fast = cls({**model.cfg, **options}).to(next(model.parameters()).device)
        fast.load_state_dict(model.state_dict())
        return fast

    def new_kv_cache(self) -> StaticKVCache:
        return StaticKVCache(len(self.trf_blocks), self.cfg["context_length"])

    def forward(self, in_idx, use_cache=False, cache=None, *, kv_cache=None, attention_mask=None, position_ids=None,
                targets=None):
        if targets is not None:  # the loss through forward, for wrappers that call only forward (DDP, compile)
            return self.loss(in_idx, targets)
        return self.out_head(self.hidden_states(in_idx, use_cache, cache, kv_cache=kv_cache,
                                                attention_mask=attention_mask, position_ids=position_ids))

    def loss(self, in_idx, targets, chunk_tokens=4096):
        """Mean cross-entropy of the next-token logits against `targets` (-100: ignored) without
        holding all the logits: `linear_cross_entropy` on the final hidden states. Same value and
        gradients as F.cross_entropy(self(in_idx).flatten(0, 1), targets.flatten())."""
        return linear_cross_entropy(self.hidden_states(in_idx), self.out_head.weight, targets, chunk_tokens)

    def hidden_states(self, in_idx, use_cache=False, cache=None, *, kv_cache=None, attention_mask=None,
                      position_ids=None):
        """Everything `forward` computes except the output head: (batch, tokens, emb_dim)."""
        kv_cache = self._pick_cache(use_cache, cache, kv_cache)
        past = len(kv_cache) if kv_cache is not None else 0
        if not torch.compiler.is_compiling():  # the checks would split a compiled graph
            _check_token_ids(in_idx, past, self.cfg)
        seq_len = in_idx.shape[1]
        if position_ids is None:
            position_ids = torch.arange(past, past + seq_len, device=in_idx.device)
        x = self.drop_emb(self.tok_emb(in_idx) + self.pos_emb(position_ids))
        attn_mask = self._attention_mask(attention_mask, past, seq_len, in_idx.device)
        checkpointing = self.cfg.get("grad_checkpointing", False) and self.training and torch.is_grad_enabled()
        for layer, block in enumerate(self.trf_blocks):
            if checkpointing:
                x = checkpoint(block, x, kv_cache, layer, attn_mask, use_reentrant=False)
            else:
                x = block(x, kv_cache, layer, attn_mask)
        if isinstance(kv_cache, StaticKVCache):  # a KVCache counts its own length
            kv_cache.advance(seq_len)
        return self.final_norm(x)

    @staticmethod
    def _attention_mask(attention_mask, past, n, device):
        """None when plain causal attention is right (SDPA's fastest path), else a boolean
        (batch or 1, 1, n, past + n) mask: causal, without padding keys, always itself."""
        if attention_mask is None and (past == 0 or n == 1):
            return None
        query_pos = torch.arange(past, past + n, device=device)[:, None]
        key_pos = torch.arange(past + n, device=device)[None, :]
        allowed = key_pos <= query_pos
        if attention_mask is not None:
            if attention_mask.shape[-1] != past + n:
                raise ValueError(f"attention_mask covers {attention_mask.shape[-1]} tokens; "
                                 f"expected {past + n} (cached + new)")
            allowed = (allowed & attention_mask[:, None, None, :].bool()) | (key_pos == query_pos)
        return allowed if allowed.ndim == 4 else allowed[None, None]


def _refuse_untied(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    """Load-time hook of a tied model: two different matrices cannot both fit one tensor."""
    emb, head = state_dict.get(prefix + "tok_emb.weight"), state_dict.get(prefix + "out_head.weight")
    if emb is not None and head is not None and not torch.equal(emb, head):
        error_msgs.append("this model ties out_head.weight to tok_emb.weight, but the state dict has two "
                          "different matrices; build it with tie_weights=False, or set "
                          "state_dict['out_head.weight'] = state_dict['tok_emb.weight'] to tie them on purpose")


# ---- ch04_gpt_model.ipynb, cell 116 ----
# The book package's names for the fast model (llms_from_scratch.ch04), for code written against it.
GPTModelFast = FastGPTModel
TransformerBlockFast = FastTransformerBlock
FeedForwardFast = FusedFeedForward


# ---- ch04_gpt_model.ipynb, cell 123 ----
class LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of hidden @ weight.T against targets, chunk by chunk; the gradients are
    computed in the forward pass, so no chunk's logits outlive it. Use `linear_cross_entropy`."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_tokens, ignore_index):
        keep = targets != ignore_index
        count = keep.sum().clamp(min=1)
        exact = torch.promote_types(weight.dtype, torch.float32)  # float32, or float64 for a float64 model
        loss = torch.zeros((), dtype=exact, device=hidden.device)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=exact, device=weight.device)
        for start in range(0, hidden.shape[0], chunk_tokens):
            rows = slice(start, start + chunk_tokens)
            h, t, k = hidden[rows], targets[rows].clamp(min=0), keep[rows]  # ignored rows: any valid index
            logits = (h @ weight.t()).to(exact)  # under autocast: a bf16/fp16 matmul, then float32
            logsumexp = logits.logsumexp(dim=-1)
            loss += ((logsumexp - logits.gather(1, t[:, None]).squeeze(1)) * k).sum()
            grad = logits.sub_(logsumexp[:, None]).exp_()  # the softmax, in the logits' memory
            grad[torch.arange(len(t), device=t.device), t] -= 1
            grad *= k[:, None]
            grad = grad.to(h.dtype)
            grad_hidden[rows] = grad @ weight.to(grad.dtype)
            grad_weight += (grad.t() @ h).to(exact)
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype), count)
        return loss / count

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight, count = ctx.saved_tensors
        scale = grad_loss / count
        return grad_hidden * scale.to(grad_hidden.dtype), grad_weight * scale.to(grad_weight.dtype), None, None, None


def _check_targets(targets, vocab_size, ignore_index):
    # the loop clamps targets to >= 0 (ignored rows need some valid index), so a -1 would quietly
    # be trained as token 0; F.cross_entropy refuses it ("Target -1 is out of bounds")
    valid = ((targets >= 0) & (targets < vocab_size)) | (targets == ignore_index)
    message = (f"targets must be token IDs in [0, {vocab_size}) or ignore_index={ignore_index} (skipped); "
               f"mark positions to skip with {ignore_index}")
    if targets.device.type != "cpu":  # reading the result back would make the CPU wait for the GPU
        torch._assert_async(valid.all(), message)
    elif not bool(valid.all()):
        raise ValueError(f"{message}; got {targets[~valid][0].item()}")


def linear_cross_entropy(hidden, weight, targets, chunk_tokens=4096, ignore_index=-100):
    """F.cross_entropy(hidden @ weight.T, targets) for hidden (..., emb_dim) and targets (...),
    with at most `chunk_tokens` rows of logits in memory at a time."""
    if not _is_count(chunk_tokens, 1):  # also refuses NaN and 2.5
        raise ValueError(f"chunk_tokens must be a whole number >= 1, got {chunk_tokens!r}")
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} must match "
                         f"in every dimension but the last")
    if not torch.compiler.is_compiling():  # the check would split a compiled graph
        _check_targets(targets, weight.shape[0], ignore_index)
    return LinearCrossEntropy.apply(hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1),
                                    chunk_tokens, ignore_index)


# ---- ch04_gpt_model.ipynb, cell 127 ----
def pad_prompts(prompts, pad_id=0, device=None):
    """Left-pad token-ID lists into (batch, longest) IDs and an attention mask (1 = real token)."""
    prompts = [p.tolist() if hasattr(p, "tolist") else p for p in prompts]  # rows of a tensor or array too
    if any(not isinstance(p, (list, tuple)) for p in prompts):  # e.g. one prompt's IDs, [5, 7, 9]
        raise ValueError("prompts must be a list of token-ID lists, one per prompt; for one prompt pass [ids]")
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("pass at least one prompt, each with at least one token")
    longest = max(len(p) for p in prompts)
    idx = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for row, p in enumerate(prompts):
        idx[row, longest - len(p):] = torch.as_tensor(p, dtype=torch.long)
        mask[row, longest - len(p):] = 1
    return idx.to(device), mask.to(device)


def _check_prompt_mask(attention_mask, idx):
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != idx.shape:
        got = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask).__name__
        raise ValueError(f"attention_mask must have idx's shape {tuple(idx.shape)}, got {got}: pass the mask "
                         f"pad_prompts returns with the IDs")
    m = attention_mask.to(torch.long)
    # each row continues from its last token, so that must be real: padding goes on the left
    if not (bool(((m == 0) | (m == 1)).all()) and bool((m[:, 1:] >= m[:, :-1]).all()) and bool(m[:, -1].all())):
        raise ValueError("attention_mask rows must be 0s (padding) and then 1s (real tokens), ending in a 1: "
                         "pad on the left, as pad_prompts does; a row padded on the right would continue a pad")


@torch.no_grad()
def generate_fast(model, idx, max_new_tokens, attention_mask=None, temperature=0.0, top_k=None,
                  top_p=None, eos_id=None, use_cache=True, generator=None):
    """Extend a batch of prompts `idx` (batch, tokens) by `max_new_tokens` tokens.

    `attention_mask` (batch, tokens; 1 = real, 0 = padding) marks left padding from
    `pad_prompts` (FastGPTModel only); None means every row is all real tokens. With `use_cache`
    (a model that has `new_kv_cache`: FastGPTModel, or GPTModel) each step feeds only the newest
    token. The model runs in eval mode (dropout off); its mode is restored afterwards. Returns
    (batch, tokens + generated); fewer tokens are generated only when every row has hit `eos_id`.
    """
    context = _check_greedy_args(model, idx, max_new_tokens, None)  # None: the model's
    if attention_mask is not None:
        _check_prompt_mask(attention_mask, idx)
    padded = attention_mask is not None and not bool(attention_mask.all())
    mask = attention_mask.to(idx.device, torch.long) if padded else None
    if padded and not isinstance(getattr(model, "_orig_mod", model), FastGPTModel):  # compiled: the model inside
        raise ValueError("padded prompts need a FastGPTModel (FastGPTModel.from_model(model)); "
                         "or generate each prompt on its own")
    cache = model.new_kv_cache() if use_cache and hasattr(model, "new_kv_cache") else None
    with eval_mode(model):
        finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
        for step in range(max_new_tokens):
            offset = max(0, idx.shape[1] - context)  # where the window the model can read starts
            if cache is None or offset > 0:  # no cache, or a sliding window: read the whole window
                if cache is not None:
                    cache.clear()
                start = offset
            else:
                start = len(cache)
            window_mask = positions = None
            if mask is not None:
                window_mask = mask[:, offset:]
                positions = (window_mask.cumsum(-1) - 1).clamp(min=0)[:, start - offset:]
            padding = {} if mask is None else {"attention_mask": window_mask, "position_ids": positions}
            logits = model(idx[:, start:], kv_cache=cache, **padding)[:, -1, :]
            if step == 0:  # the vocabulary size is known from the first logits on
                eos_id = _check_eos_id(eos_id, logits.shape[-1])
            next_ids = sample_next_token(logits, temperature, top_k, top_p, generator)
            if eos_id is not None:
                next_ids = torch.where(finished[:, None], torch.full_like(next_ids, eos_id), next_ids)
                finished |= next_ids[:, 0] == eos_id
            idx = torch.cat([idx, next_ids], dim=1)
            if mask is not None:
                mask = torch.cat([mask, torch.ones_like(next_ids)], dim=1)
            if eos_id is not None and bool(finished.all()):
                break
    return idx


def compile_model(model, **compile_kwargs):
    """`torch.compile(model)`: the first calls are slow (compilation), later ones faster on a
    GPU. The compiled wrapper's state dict keys start with `_orig_mod.`; save `model` itself."""
    return torch.compile(model, **compile_kwargs)
