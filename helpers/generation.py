"""generation: generated from ch04_gpt_model.ipynb, ch05_pretraining.ipynb. DO NOT EDIT.

Edit the notebook cells that start with `#| export generation` and run `make export`.
"""
__all__ = ['next_token_logits', 'eval_mode', 'generate_text_simple', 'generate_text_simple_stream', 'trim_input_tensor', 'text_to_token_ids', 'token_ids_to_text', 'sample_next_token', 'generate', 'beam_search']


# ---- ch04_gpt_model.ipynb, cell 79 ----
import torch

from helpers.model import _is_count


def next_token_logits(model, idx, context_size, kv_cache=None):
    """Logits (batch, vocab_size) for the token that follows `idx` (batch, tokens).

    Without a cache the model reads the last `context_size` tokens. With a `KVCache` it reads
    only the tokens the cache has not seen yet. Once `idx` is longer than the context, the window
    slides and every token's position changes, so the cached keys/values no longer apply: the
    cache is refilled from the cropped window at each step, which gives exactly the uncached result.
    """
    if not _is_count(context_size, 1):  # 0 would read the whole text, -3 drop its first 3 tokens
        raise ValueError(f"context_size must be a whole number >= 1, got {context_size!r}")
    if kv_cache is None:
        return model(idx[:, -context_size:])[:, -1, :]
    if idx.shape[1] > context_size or len(kv_cache) >= idx.shape[1]:
        kv_cache.clear()
        return model(idx[:, -context_size:], kv_cache=kv_cache)[:, -1, :]
    return model(idx[:, len(kv_cache):], kv_cache=kv_cache)[:, -1, :]


# ---- ch04_gpt_model.ipynb, cell 80 ----
from contextlib import contextmanager

from helpers.model import _is_count


@contextmanager
def eval_mode(model):
    """Run the `with` block with `model` in eval mode (dropout off), then give every submodule
    back the mode it had (also when the block raises, or a generator using it is closed early)."""
    modes = [(module, module.training) for module in model.modules()]  # some may be kept in eval
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def _as_number(value):
    """A one-element tensor as a Python number: the book's generate takes torch.tensor(5) as a
    count and torch.tensor(1.4) as a temperature (range() and slicing read integer tensors)."""
    return value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value


def _check_eos_id(eos_id, vocab_size, name="eos_id"):
    """`eos_id` as a Python int (a one-element tensor too, as the book's `==` takes one), once it
    is a token the model can produce: any other ID would never end a row, and nothing would say so."""
    eos_id = _as_number(eos_id)
    if eos_id is not None and not (_is_count(eos_id, 0) and eos_id < vocab_size):
        raise ValueError(f"{name} must be a token ID in [0, {vocab_size}) (the model's vocabulary) or None, "
                         f"got {eos_id!r}")
    return eos_id


def _model_context_length(model):
    """The most tokens `model` takes: its cfg's context_length, else its position embedding's
    size; None for a model that says neither (one of the reader's own may take any length)."""
    cfg = getattr(model, "cfg", None)
    if isinstance(cfg, dict) and "context_length" in cfg:
        return cfg["context_length"]
    pos_emb = getattr(model, "pos_emb", None)
    return pos_emb.num_embeddings if isinstance(pos_emb, torch.nn.Embedding) else None


def _check_greedy_args(model, idx, max_new_tokens, context_size, eos_id=None):
    """The context size to use (None: the model's), once the arguments make sense. A count may
    be a one-element integer tensor, as in the book; range(max_new_tokens) reads it."""
    if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or idx.shape[1] == 0:
        shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"idx must be (batch, tokens) with at least one token; got shape {shape}")
    max_new_tokens = _as_number(max_new_tokens)
    if not _is_count(max_new_tokens, 0):
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    context_size, context_length = _as_number(context_size), _model_context_length(model)
    if context_size is None:
        if context_length is None:
            raise ValueError("this model has no cfg or position embedding to read its context length from: "
                             "pass context_size")
        context_size = context_length
    if not _is_count(context_size, 1):
        raise ValueError(f"context_size must be a positive integer (the model's context length), got {context_size!r}")
    # The last step reads the most tokens. The book takes a context_size above the model's while
    # no input gets that long, so only a run that would get there is refused: before any step,
    # not after many, with a message that blames context_size rather than the input. A run
    # with an end token may stop before, as the book's would: that one is left to the model.
    longest = min(context_size, idx.shape[1] + max_new_tokens - 1)
    if max_new_tokens and eos_id is None and context_length is not None and longest > context_length:
        raise ValueError(f"context_size={context_size} exceeds the model's context length of {context_length}: "
                         f"this run would feed it {longest} tokens; pass context_size={context_length} or less")
    return context_size


def generate_text_simple(model, idx, max_new_tokens, context_size=None, use_cache=True):
    """Greedy decoding: append the most likely next token `max_new_tokens` times.

    idx: (batch, tokens) token IDs of the prompt. Returns (batch, tokens + max_new_tokens).
    `context_size` (default: the model's) is how many of the last tokens the model reads.
    `use_cache` feeds only the newest token each step (a KV cache); the output is the same.
    The model runs in eval mode (dropout off); its mode is restored afterwards.
    """
    context_size = _check_greedy_args(model, idx, max_new_tokens, context_size)
    kv_cache = model.new_kv_cache() if use_cache and hasattr(model, "new_kv_cache") else None
    with eval_mode(model):
        for _ in range(max_new_tokens):
            with torch.no_grad():
                logits = next_token_logits(model, idx, context_size, kv_cache)
            idx_next = torch.argmax(logits, dim=-1, keepdim=True)
            idx = torch.cat((idx, idx_next), dim=1)
    return idx


# ---- ch04_gpt_model.ipynb, cell 86 ----
def generate_text_simple_stream(model, token_ids, max_new_tokens, eos_token_id=None, context_size=None):
    """`generate_text_simple` as a generator: yields each new token, (batch, 1), as it is chosen.

    Stops after `max_new_tokens`, or once every row's next token is `eos_token_id` (not yielded).
    """
    context_size = _check_greedy_args(model, token_ids, max_new_tokens, context_size, eos_token_id)
    kv_cache = model.new_kv_cache() if hasattr(model, "new_kv_cache") else None
    with eval_mode(model):  # a generator: the mode comes back when it ends or is closed
        for step in range(max_new_tokens):
            with torch.no_grad():  # per step: a generator must not leave no_grad on in the caller
                logits = next_token_logits(model, token_ids, context_size, kv_cache)
            next_token = torch.argmax(logits, dim=-1, keepdim=True)
            if step == 0:  # as generate's eos_id: an ID the model cannot produce would never stop it
                eos_token_id = _check_eos_id(eos_token_id, logits.shape[-1], "eos_token_id")
            if eos_token_id is not None and bool((next_token == eos_token_id).all()):
                break
            yield next_token
            token_ids = torch.cat([token_ids, next_token], dim=1)


def trim_input_tensor(input_ids_tensor, context_len, max_new_tokens):
    """The last `context_len - max_new_tokens` tokens of a (batch, tokens) prompt (all of it
    when shorter), so that the prompt and the new tokens fit the context together. Either count
    may be a one-element integer tensor, as in the book's."""
    context_len, max_new_tokens = _as_number(context_len), _as_number(max_new_tokens)
    if not (_is_count(max_new_tokens, 0) and _is_count(context_len, 1) and max_new_tokens < context_len):
        raise ValueError(f"max_new_tokens ({max_new_tokens}) must be >= 0 and below context_len "
                         f"({context_len}), so that at least one prompt token fits")
    return input_ids_tensor[:, -(context_len - max_new_tokens):]


# ---- ch05_pretraining.ipynb, cell 8 ----
from helpers.text import _check_tokenizer, _encode_all


def text_to_token_ids(text, tokenizer):
    """Encode `text` into a (1, tokens) tensor, the batch of one that the model expects."""
    encoded = _encode_all(tokenizer, text)  # tiktoken allowing "<|endoftext|>", or chapter 2's tokenizers
    return torch.tensor(encoded).unsqueeze(0)


def token_ids_to_text(token_ids, tokenizer):
    """Decode a (1, tokens) or (tokens,) tensor of IDs, or a list of them, back to text."""
    token_ids = torch.as_tensor(token_ids)  # a plain list of IDs works too
    flat = token_ids.squeeze(0) if token_ids.ndim == 2 else token_ids  # a (tokens,) one must not become 0-d
    if flat.ndim != 1:
        raise ValueError(f"token_ids must be (1, tokens) or (tokens,), got shape {tuple(token_ids.shape)}; "
                         "decode a batch row by row")
    if flat.is_floating_point():
        raise ValueError("token_ids are floats; token IDs are whole numbers (argmax or sampling gives them)")
    if flat.numel() and flat.min() < 0:  # no model's argmax gives one: a marker, e.g. -100 (ignore_index)
        raise ValueError(f"token ID {int(flat.min())} is negative, so no token: token IDs start at 0; drop "
                         f"padding or ignore markers (e.g. -100, cross_entropy's ignore_index) before decoding")
    _check_tokenizer(tokenizer, "decode")
    n_vocab = getattr(tokenizer, "n_vocab", None)  # tiktoken's; a padded vocabulary can produce IDs beyond it
    if flat.numel() and n_vocab is not None and flat.max() >= n_vocab:
        raise ValueError(f"token ID {int(flat.max())} is outside the tokenizer's vocabulary (0 to {n_vocab - 1}); "
                         f"crop the model's scores to it first, e.g. logits[..., :{n_vocab}]")
    return tokenizer.decode(flat.tolist())


# ---- ch05_pretraining.ipynb, cell 163 ----
from helpers.model import _is_count
from helpers.text import _is_real


def sample_next_token(logits, temperature=0.0, top_k=None, top_p=None, generator=None):
    """Choose the next token from (batch, vocab) logits; returns (batch, 1) token IDs.

    temperature 0 picks the most likely token (greedy). Otherwise logits are divided by the
    temperature (below 1: sharper, above 1: flatter) and a token is drawn from the softmax,
    restricted to the `top_k` most likely tokens and/or to the nucleus: the smallest set of
    most likely tokens whose probabilities add up to at least `top_p`.
    """
    temperature, top_k, top_p = _as_number(temperature), _as_number(top_k), _as_number(top_p)
    if not (_is_real(temperature) and temperature >= 0):  # None, "0.7", NaN and True too
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and not _is_count(top_k, 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    if top_p is not None and not (_is_real(top_p) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")
    if temperature == 0:
        return torch.argmax(logits, dim=-1, keepdim=True)
    logits = logits.float()
    if top_k is not None and top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_largest, -torch.inf)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p is not None and top_p < 1:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)  # outside the nucleus
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, num_samples=1, generator=generator)


# ---- ch05_pretraining.ipynb, cell 165 ----
def generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None, *,
             top_p=None, use_cache=True, generator=None):
    """Extend `idx` (batch, tokens) by up to `max_new_tokens` tokens (the book's signature).

    Decoding as in `sample_next_token`: greedy when temperature is 0, else sampling with
    temperature, top-k and (keyword-only) top-p, from PyTorch's global random generator or
    `generator`. With `eos_id`, a row that produces it is finished: while other rows go on, it
    keeps that end token and is padded with `eos_id`. Once every row has finished, generation
    stops and that last step is not appended (a single prompt ends without its end token, as in
    the book). With `use_cache`, and a model that has `new_kv_cache()`, each step feeds only the
    newest token; the tokens are the same as without it. A model in training mode runs without
    the cache: its dropout would draw different random numbers for the shorter input, and
    sampled tokens would no longer be the book's for the same seed. `context_size=None`: the
    model's `cfg['context_length']`.
    """
    context_size = _check_greedy_args(model, idx, max_new_tokens, context_size, eos_id)
    use_cache = use_cache and hasattr(model, "new_kv_cache") and not getattr(model, "training", False)
    kv_cache = model.new_kv_cache() if use_cache else None
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    for step in range(max_new_tokens):
        with torch.no_grad():
            logits = next_token_logits(model, idx, context_size, kv_cache)
        if step == 0:  # the vocabulary size is known from the first logits on
            eos_id = _check_eos_id(eos_id, logits.shape[-1])
        idx_next = sample_next_token(logits, temperature, top_k, top_p, generator)
        if eos_id is not None:
            idx_next = idx_next.masked_fill(finished[:, None], eos_id)  # finished rows: padding
            finished |= idx_next.squeeze(1) == eos_id
            if finished.all():
                break
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


# ---- ch05_pretraining.ipynb, cell 169 ----
def _free_memory_bytes(device):
    """Memory a new allocation can still get on `device`, or None where that cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:  # Linux: what the kernel can hand out without swapping
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def _check_beam_search_args(model, idx, max_new_tokens, context_size, num_beams):
    """Refuse bad arguments, and a beam count whose per-step tensors would not fit: each beam has
    logits over the vocabulary (three float32 copies: logits, log-probabilities, scores) and,
    with a cache, keys and values for every layer and position. Returns the context size."""
    context_size = _check_greedy_args(model, idx, max_new_tokens, context_size)
    if idx.shape[0] != 1:
        raise ValueError(f"beam_search takes one prompt, shape (1, tokens); got {tuple(idx.shape)}")
    if not _is_count(num_beams, 1):
        raise ValueError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    emb, device = getattr(model, "tok_emb", None), idx.device
    if not isinstance(emb, torch.nn.Embedding):
        return context_size  # not a GPTModel-like model: its sizes are unknown
    vocab, dim = emb.weight.shape
    per_beam = 4 * (3 * vocab + 2 * len(getattr(model, "trf_blocks", ())) * dim * context_size)
    free = _free_memory_bytes(device)
    if free is not None and num_beams * per_beam > free:
        raise ValueError(f"num_beams={num_beams} needs about {num_beams * per_beam / 2**30:,.1f} GiB per step, "
                         f"more than the {free / 2**30:,.1f} GiB free on {device}; use fewer beams "
                         f"(at most {max(1, free // per_beam):,} here)")
    return context_size


# ---- ch05_pretraining.ipynb, cell 171 ----
def beam_search(model, idx, max_new_tokens, context_size, num_beams=3, eos_id=None, length_penalty=1.0):
    """The most likely continuation of `idx` (1, tokens) found by beam search; deterministic.

    Keeps the `num_beams` best partial continuations (score: sum of log-probabilities). A beam
    that produces `eos_id` is finished (without the end token). The search stops once `num_beams`
    beams have finished (Hugging Face's `early_stopping=True`), or else after `max_new_tokens`,
    when the surviving beams join the finished ones; the best by score / length**length_penalty
    wins, so that longer continuations are not penalised just for having more (negative)
    log-probabilities. The model runs in eval mode; its mode is
    restored afterwards."""
    context_size = _check_beam_search_args(model, idx, max_new_tokens, context_size, num_beams)
    if not _is_real(length_penalty):  # NaN, None, "1" and True too
        raise ValueError(f"length_penalty must be a finite number (1.0: score per token), got {length_penalty!r}")
    with eval_mode(model):  # dropout would make the search random
        prompt_len, kv_cache = idx.shape[1], (model.new_kv_cache() if hasattr(model, "new_kv_cache") else None)
        beams, scores, finished = idx, torch.zeros(1, device=idx.device), []  # finished: (score, sequence)
        for _ in range(max_new_tokens):
            with torch.no_grad():
                logits = next_token_logits(model, beams, context_size, kv_cache)
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            vocab = log_probs.shape[-1]
            eos_id = _check_eos_id(eos_id, vocab)  # a plain int after the first step
            candidates = (scores[:, None] + log_probs).view(-1)
            top_scores, top_pos = candidates.topk(min(2 * num_beams, candidates.numel()))
            keep_rows, keep_tokens, keep_scores = [], [], []
            for score, pos in zip(top_scores.tolist(), top_pos.tolist()):
                row, token = divmod(pos, vocab)
                if token == eos_id:
                    finished.append((score / max(beams.shape[1] - prompt_len, 1) ** length_penalty, beams[row:row + 1]))
                else:
                    keep_rows.append(row), keep_tokens.append(token), keep_scores.append(score)
                if len(keep_rows) == num_beams:
                    break
            if not keep_rows or len(finished) >= num_beams:  # enough finished beams: stop early
                break
            rows = torch.tensor(keep_rows, device=idx.device)
            if kv_cache is not None:
                kv_cache.reorder(rows)
            beams = torch.cat([beams[rows], torch.tensor(keep_tokens, device=idx.device)[:, None]], dim=1)
            scores = torch.tensor(keep_scores, device=idx.device)
        else:
            length = max(beams.shape[1] - prompt_len, 1)
            finished += [(s / length ** length_penalty, beams[i:i + 1]) for i, s in enumerate(scores.tolist())]
    return max(finished, key=lambda f: f[0])[1]
