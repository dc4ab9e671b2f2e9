"""helpers.fast: the fast GPT model against GPTModel (same weights) and against transformers'
GPT-2; its state dict against the book's; its static-cache and batched generation against plain
uncached greedy decoding of one prompt at a time."""
import pytest
import torch
import torch.nn.functional as F

from hf_reference import copy_hf_into_gpt, random_hf_gpt2
from helpers.fast import FastGPTModel, StaticKVCache, generate_fast, linear_cross_entropy, pad_prompts
from helpers.generation import generate_text_simple
from helpers.model import GPTModel

CFG = {"vocab_size": 211, "context_length": 24, "emb_dim": 32, "n_heads": 4, "n_layers": 3,
       "drop_rate": 0.0, "qkv_bias": True}


def _perturbed_book_model(cfg, seed=0):
    """A GPTModel with non-trivial LayerNorm and bias values (their defaults, 1 and 0, would hide
    a mix-up of scale and shift, or of the three projections' biases)."""
    torch.manual_seed(seed)
    model = GPTModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_same_logits_as_gptmodel(qkv_bias):
    cfg = {**CFG, "qkv_bias": qkv_bias}
    book = _perturbed_book_model(cfg)
    fast = FastGPTModel(cfg).eval()
    fast.load_state_dict(book.state_dict())
    ids = torch.randint(0, cfg["vocab_size"], (3, cfg["context_length"]))
    with torch.no_grad():
        assert (fast(ids) - book(ids)).abs().max() <= 1e-5


def test_same_logits_as_gptmodel_124m_width():
    """The issue's tolerance at GPT-2's real width (fewer layers and a small vocabulary for speed)."""
    cfg = {**CFG, "emb_dim": 768, "n_heads": 12, "n_layers": 2, "context_length": 64, "qkv_bias": False}
    book = _perturbed_book_model(cfg, seed=3)
    fast = FastGPTModel.from_model(book).eval()
    ids = torch.randint(0, cfg["vocab_size"], (2, 64))
    with torch.no_grad():
        assert (fast(ids) - book(ids)).abs().max() <= 1e-5


def test_tied_weights_same_logits_as_gptmodel_with_head_equal_to_embedding():
    book = _perturbed_book_model(CFG)
    with torch.no_grad():
        book.out_head.weight.copy_(book.tok_emb.weight)
    fast = FastGPTModel({**CFG, "tie_weights": True}).eval()
    fast.load_state_dict(book.state_dict())
    assert fast.out_head.weight is fast.tok_emb.weight
    n_book = sum(p.numel() for p in book.parameters())
    assert sum(p.numel() for p in fast.parameters()) == n_book - CFG["vocab_size"] * CFG["emb_dim"]
    ids = torch.randint(0, CFG["vocab_size"], (2, 10))
    with torch.no_grad():
        assert (fast(ids) - book(ids)).abs().max() <= 1e-5


def test_tied_model_refuses_untied_state_dict():
    book = _perturbed_book_model(CFG)
    fast = FastGPTModel({**CFG, "tie_weights": True})
    with pytest.raises(RuntimeError, match="ties out_head.weight"):
        fast.load_state_dict(book.state_dict())


def test_tied_init_gives_the_shared_matrix_gpt2s_scale():
    """The shared matrix starts at GPT-2's std 0.02, not nn.Embedding's 1."""
    fast = FastGPTModel({**CFG, "emb_dim": 64, "tie_weights": True})
    assert 0.015 < fast.tok_emb.weight.std().item() < 0.025


def test_book_state_dict_round_trip_both_ways():
    book = _perturbed_book_model(CFG)
    fast = FastGPTModel(CFG)
    fast.load_state_dict(book.state_dict())  # strict: every key consumed, none missing
    saved = fast.state_dict()
    assert list(saved) == list(book.state_dict())
    for key, value in book.state_dict().items():
        assert torch.equal(saved[key], value), key
    fresh = GPTModel(CFG)
    fresh.load_state_dict(saved)  # strict
    for (k1, v1), (k2, v2) in zip(fresh.state_dict().items(), book.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    # and the stacked matrix really is the three projections on top of each other
    att = book.trf_blocks[1].att
    expected = torch.cat([att.W_query.weight, att.W_key.weight, att.W_value.weight])
    assert torch.equal(fast.trf_blocks[1].att.qkv.weight, expected)


def test_a_state_dict_with_both_layouts_is_refused_by_strict_loading():
    """The hooks translate only into keys that are not there yet, so a dict holding both the
    three projections and `qkv` (or `weight` beside `scale`) leaves keys over for strict loading
    to report, instead of one layout silently replacing the other."""
    book = _perturbed_book_model(CFG)
    state = book.state_dict()
    state["trf_blocks.0.att.qkv.weight"] = torch.zeros(3 * CFG["emb_dim"], CFG["emb_dim"])
    with pytest.raises(RuntimeError, match="Unexpected key"):
        FastGPTModel(CFG).load_state_dict(state)
    state = book.state_dict()
    state["final_norm.weight"] = torch.zeros(CFG["emb_dim"])
    with pytest.raises(RuntimeError, match="Unexpected key"):
        FastGPTModel(CFG).load_state_dict(state)


def test_state_dict_round_trip_through_a_file(tmp_path):
    book = _perturbed_book_model(CFG)
    fast = FastGPTModel.from_model(book)
    torch.save(fast.state_dict(), tmp_path / "m.pt")
    back = GPTModel(CFG)
    back.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    ids = torch.randint(0, CFG["vocab_size"], (1, 12))
    with torch.no_grad():
        assert torch.equal(back.eval()(ids), book(ids))


def test_lora_wrapped_fast_model_saves_every_parameter_and_loads_back(tmp_path, nonzero_lora_b):
    """With LoRA around every linear layer (the fused `qkv` included) the state dict still
    saves, holds every parameter, and a fresh LoRA-wrapped model loads it (strict) and gives
    the same logits."""
    from helpers.classification import replace_linear_with_lora

    def lora_model(seed):
        torch.manual_seed(seed)
        model = replace_linear_with_lora(FastGPTModel.from_model(_perturbed_book_model(CFG, seed)), 4, 8)
        return nonzero_lora_b(model, seed).eval()

    model = lora_model(0)
    torch.save(model.state_dict(), tmp_path / "lora.pt")
    saved = torch.load(tmp_path / "lora.pt", weights_only=True)
    assert sum(v.numel() for v in saved.values()) == sum(p.numel() for p in model.parameters())
    assert "trf_blocks.0.att.qkv.lora.B" in saved
    back = lora_model(1)
    back.load_state_dict(saved)
    ids = torch.randint(0, CFG["vocab_size"], (2, 10))
    with torch.no_grad():
        assert torch.equal(back(ids), model(ids))


def test_same_logits_as_transformers_gpt2():
    cfg = {**CFG, "qkv_bias": True}
    hf = random_hf_gpt2(cfg, seed=4)
    fast = FastGPTModel.from_model(copy_hf_into_gpt(hf, cfg)).eval()
    ids = torch.randint(0, cfg["vocab_size"], (2, cfg["context_length"]))
    with torch.no_grad():
        assert (fast(ids) - hf(ids).logits).abs().max() <= 1e-4


def test_static_cache_generation_equals_uncached_greedy():
    book = _perturbed_book_model(CFG)
    fast = FastGPTModel.from_model(book).eval()
    prompt = torch.randint(0, CFG["vocab_size"], (2, 5))
    # 30 new tokens overrun the 24-token context: the window slides and the cache is refilled
    expected = generate_text_simple(book, prompt, 30, CFG["context_length"], use_cache=False)
    assert torch.equal(generate_fast(fast, prompt, 30), expected)
    assert torch.equal(generate_fast(fast, prompt, 30, use_cache=False), expected)
    # the static cache also serves chapter 4's generate_text_simple(use_cache=True)
    assert torch.equal(generate_text_simple(fast, prompt, 30, CFG["context_length"], use_cache=True), expected)


def test_static_cache_is_written_in_place_and_checks_its_size():
    fast = FastGPTModel(CFG).eval()
    cache = fast.new_kv_cache()
    assert isinstance(cache, StaticKVCache)
    with torch.no_grad():
        fast(torch.randint(0, CFG["vocab_size"], (2, 7)), kv_cache=cache)
        keys = cache.keys
        fast(torch.randint(0, CFG["vocab_size"], (2, 1)), kv_cache=cache)
        assert cache.keys is keys and len(cache) == 8  # no reallocation
        assert keys.shape == (CFG["n_layers"], 2, CFG["n_heads"], CFG["context_length"], CFG["emb_dim"] // CFG["n_heads"])
        with pytest.raises(ValueError, match="exceed the context length"):
            fast(torch.randint(0, CFG["vocab_size"], (2, CFG["context_length"])), kv_cache=cache)


def test_cached_logits_match_full_forward_with_several_new_tokens():
    """Feeding a text in chunks through the cache (chunk > 1 needs the offset causal mask)."""
    fast = FastGPTModel.from_model(_perturbed_book_model(CFG)).eval()
    ids = torch.randint(0, CFG["vocab_size"], (2, 15))
    cache = fast.new_kv_cache()
    with torch.no_grad():
        full = fast(ids)
        parts = [fast(ids[:, a:b], kv_cache=cache) for a, b in [(0, 4), (4, 9), (9, 10), (10, 15)]]
    assert (torch.cat(parts, dim=1) - full).abs().max() <= 1e-5


@pytest.mark.parametrize("cache_kind", ["KVCache", "StaticKVCache"])
def test_fused_attention_alone_sees_the_cache_with_several_new_tokens(cache_kind):
    """The layer used on its own (no model building the mask): new tokens after cached ones see
    every cached key and the new ones up to themselves, as chapter 3's layer computes it."""
    from helpers.attention import KVCache, MultiHeadAttention
    from helpers.fast import FusedQKVAttention
    torch.manual_seed(0)
    book = MultiHeadAttention(32, 32, context_length=16, dropout=0.0, num_heads=4, qkv_bias=True).eval()
    fused = FusedQKVAttention(32, 32, context_length=16, dropout=0.0, num_heads=4, qkv_bias=True).eval()
    fused.load_state_dict(book.state_dict())
    x = torch.randn(2, 11, 32)
    cache = KVCache(1) if cache_kind == "KVCache" else StaticKVCache(1, 16)
    with torch.no_grad():
        expected = book(x)
        parts = []
        for a, b in [(0, 3), (3, 7), (7, 8), (8, 11)]:
            parts.append(fused(x[:, a:b], kv_cache=cache))
            if cache_kind == "StaticKVCache":
                cache.advance(b - a)  # the model's job when the layer runs inside it
    assert (torch.cat(parts, dim=1) - expected).abs().max() <= 1e-5


def test_batched_generation_equals_each_prompt_alone():
    book = _perturbed_book_model(CFG)
    fast = FastGPTModel.from_model(book).eval()
    torch.manual_seed(5)
    prompts = [torch.randint(0, CFG["vocab_size"], (n,)).tolist() for n in (3, 8, 1, 5)]
    idx, mask = pad_prompts(prompts, pad_id=7)
    assert mask.tolist()[2] == [0] * 7 + [1]
    for use_cache in (True, False):
        out = generate_fast(fast, idx, 25, attention_mask=mask, use_cache=use_cache)  # slides past 24
        for row, p in enumerate(prompts):
            alone = generate_text_simple(book, torch.tensor([p]), 25, CFG["context_length"])
            assert out[row, -25:].tolist() == alone[0, -25:].tolist(), (use_cache, row)


def test_sampling_with_top_k_and_eos():
    fast = FastGPTModel.from_model(_perturbed_book_model(CFG)).eval()
    prompt = torch.randint(0, CFG["vocab_size"], (3, 4))
    gen = torch.Generator().manual_seed(0)
    out = generate_fast(fast, prompt, 10, temperature=1.0, top_k=1, generator=gen)
    assert torch.equal(out, generate_fast(fast, prompt, 10))  # top_k=1 is greedy
    first = out[0, 4].item()
    stopped = generate_fast(fast, prompt[:1], 10, eos_id=first)
    assert stopped.shape == (1, 5) and stopped[0, -1].item() == first
    assert torch.equal(generate_fast(fast, prompt[:1], 10, eos_id=torch.tensor(first)), stopped)
    for bad in (CFG["vocab_size"], -1, 1.5, "0"):  # never produced: it would never stop a row
        with pytest.raises(ValueError, match=rf"eos_id must be a token ID in \[0, {CFG['vocab_size']}\)"):
            generate_fast(fast, prompt, 3, eos_id=bad)


def test_gradient_checkpointing_gives_the_same_gradients(monkeypatch):
    import helpers.fast
    cfg = {**CFG, "drop_rate": 0.1}  # with dropout: the recomputation must replay the same masks
    book = _perturbed_book_model(cfg)
    ids = torch.randint(0, cfg["vocab_size"], (2, 16))
    calls = []

    def counted_checkpoint(*args, **kwargs):  # the same recomputation, counted
        calls.append(1)
        return torch.utils.checkpoint.checkpoint(*args, **kwargs)

    monkeypatch.setattr(helpers.fast, "checkpoint", counted_checkpoint)
    grads, used = [], []
    for checkpointing in (False, True):
        model = FastGPTModel({**cfg, "grad_checkpointing": checkpointing})
        model.load_state_dict(book.state_dict())
        model.train()
        torch.manual_seed(11)
        calls.clear()
        loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        used.append(len(calls))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert used == [0, cfg["n_layers"]]  # off: never; on: once per block
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


def test_fast_gradients_match_gptmodel_without_dropout():
    book = _perturbed_book_model(CFG).train()
    fast = FastGPTModel.from_model(book).train()
    ids = torch.randint(0, CFG["vocab_size"], (2, 16))
    for m in (book, fast):
        F.cross_entropy(m(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten()).backward()
    covered = set()
    for name, p in fast.named_parameters():  # every gradient; the fused qkv against the three it stacks
        sources = ([name.replace(".qkv.", f".{w}.") for w in ("W_query", "W_key", "W_value")]
                   if ".att.qkv." in name else [name])
        ref = torch.cat([book.get_parameter(s).grad for s in sources])
        assert torch.allclose(p.grad, ref, atol=1e-5), name
        covered.update(sources)
    assert covered == {n for n, _ in book.named_parameters()}


def test_same_seed_gives_gptmodels_weights_and_tokens():
    """Parameters are created in GPTModel's order (FastGPTModel used to draw its head first)."""
    for cfg in (CFG, {**CFG, "qkv_bias": True}):
        torch.manual_seed(123)
        book = GPTModel(cfg)
        torch.manual_seed(123)
        fast = FastGPTModel(cfg)
        ours, theirs = fast.state_dict(), book.state_dict()
        assert list(ours) == list(theirs)
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_book_cache_calls_on_the_fast_model():
    from helpers.attention import KVCache
    torch.manual_seed(0)
    fast = FastGPTModel(CFG).eval()
    ids = torch.randint(0, CFG["vocab_size"], (2, 9))
    with torch.no_grad():
        full = fast(ids)
        fast.reset_kv_cache()
        got = torch.cat([fast(ids[:, :6], use_cache=True), fast(ids[:, 6:], use_cache=True)], dim=1)
        assert (got - full).abs().max() <= 1e-5 and fast.current_pos == 9
        cache = KVCache(CFG["n_layers"])
        got = torch.cat([fast(ids[:, :4], cache=cache), fast(ids[:, 4:], cache=cache)], dim=1)
        assert (got - full).abs().max() <= 1e-5 and len(cache) == 9


def test_generate_fast_takes_a_count_as_a_one_element_tensor():
    """As the book's generate does (range() reads an integer tensor); a float one is refused."""
    torch.manual_seed(0)
    fast, prompt = FastGPTModel(CFG).eval(), torch.tensor([[5, 6, 7]])
    assert torch.equal(generate_fast(fast, prompt, torch.tensor([4])), generate_fast(fast, prompt, 4))
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_fast(fast, prompt, torch.tensor(4.0))


@pytest.mark.parametrize("max_new_tokens", [-1, 1.5])
def test_generate_fast_refuses_a_negative_count(max_new_tokens):
    """A negative max_new_tokens used to return the prompt silently."""
    fast = FastGPTModel(CFG).eval()
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 0"):
        generate_fast(fast, torch.zeros((1, 3), dtype=torch.long), max_new_tokens)


def test_input_errors():
    fast = FastGPTModel(CFG)
    with pytest.raises(ValueError, match="in \\[0, 211\\)"):
        fast(torch.tensor([[1, 211]]))
    with pytest.raises(ValueError, match="exceed the context length"):
        fast(torch.zeros(1, CFG["context_length"] + 1, dtype=torch.long))
    with pytest.raises(KeyError, match="lacks"):
        FastGPTModel({"vocab_size": 10})
    with pytest.raises(ValueError, match="at least one"):
        pad_prompts([[1, 2], []])


def test_compiled_model_gives_the_same_logits_and_gradients():
    from helpers.fast import compile_model
    torch._dynamo.reset()
    book = _perturbed_book_model(CFG)
    fast = FastGPTModel.from_model(book).train()  # drop_rate 0: training mode is deterministic
    compiled = compile_model(fast)
    ids = torch.randint(0, CFG["vocab_size"], (2, CFG["context_length"]))
    eager_logits = book(ids)
    eager_logits.square().mean().backward()
    logits = compiled(ids)
    logits.square().mean().backward()
    assert (logits - eager_logits).abs().max() <= 1e-5
    grads = dict(book.named_parameters())
    for name, p in fast.named_parameters():
        if "qkv" not in name:  # the fused projection's gradient is the book's three, stacked
            assert torch.allclose(p.grad, grads[name].grad, atol=1e-5), name
    # the compiled wrapper's state dict is prefixed; the model itself saves the book's keys
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())
    assert fast.state_dict().keys() == book.state_dict().keys()


def _loss_and_grads(model, loss_of):
    model.zero_grad(set_to_none=True)
    loss = loss_of()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("tie, chunk", [(False, 1), (False, 7), (True, 5), (True, 10_000)])
def test_chunked_loss_has_the_value_and_gradients_of_the_plain_one(tie, chunk):
    torch.manual_seed(0)
    cfg = {"vocab_size": 97, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
           "drop_rate": 0.0, "qkv_bias": True, "tie_weights": tie}
    model = FastGPTModel(cfg).double()
    ids = torch.randint(0, 97, (3, 12))
    targets = torch.randint(0, 97, (3, 12))
    targets[1, 3:] = -100  # chapter 7's ignored positions
    plain, plain_grads = _loss_and_grads(model, lambda: F.cross_entropy(model(ids).flatten(0, 1), targets.flatten()))
    chunked, grads = _loss_and_grads(model, lambda: model.loss(ids, targets, chunk_tokens=chunk))
    torch.testing.assert_close(chunked, plain.double(), rtol=1e-12, atol=1e-12)
    for name, g in plain_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-9, atol=1e-12, msg=name)


def test_chunked_loss_under_autocast_and_with_a_loss_scale():
    torch.manual_seed(0)
    hidden = torch.randn(40, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(0, 50, (40,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear_cross_entropy(hidden, weight, targets, chunk_tokens=9)
        reference = F.cross_entropy((hidden @ weight.t()).float(), targets)
    assert ours.dtype == torch.float32 and abs(ours.item() - reference.item()) < 1e-3
    ours.backward()
    unscaled = weight.grad.clone()
    weight.grad = hidden.grad = None
    # a GradScaler multiplies the loss by a power of two before backward: the gradients scale
    # with it exactly, and stay close to float32's
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (1024 * linear_cross_entropy(hidden, weight, targets, chunk_tokens=9)).backward()
    assert torch.equal(weight.grad / 1024, unscaled)
    weight.grad = None
    linear_cross_entropy(hidden, weight, targets, chunk_tokens=9).backward()
    assert (weight.grad - unscaled).abs().max() < 0.02 * weight.grad.abs().max()


def test_chunked_loss_edge_cases():
    hidden, weight = torch.randn(2, 3, 8, requires_grad=True), torch.randn(11, 8, requires_grad=True)
    everything_ignored = torch.full((2, 3), -100)
    loss = linear_cross_entropy(hidden, weight, everything_ignored)
    loss.backward()
    assert loss.item() == 0 and not hidden.grad.any() and not weight.grad.any()
    with pytest.raises(ValueError, match="chunk_tokens must be a whole number >= 1"):
        linear_cross_entropy(hidden, weight, everything_ignored, chunk_tokens=0)
    with pytest.raises(ValueError, match="must match"):
        linear_cross_entropy(hidden, weight, torch.zeros(3, 2, dtype=torch.long))


def test_chunked_loss_refuses_targets_that_are_neither_token_ids_nor_ignored():
    """-1 was clamped to 0 and trained as token 0; F.cross_entropy refuses it."""
    hidden, weight = torch.randn(2, 3, 8), torch.randn(11, 8)
    for bad in (-1, 11):
        targets = torch.tensor([[1, 2, -100], [3, bad, 4]])
        with pytest.raises(ValueError, match=rf"targets must be token IDs in \[0, 11\) or ignore_index=-100 .*got {bad}$"):
            linear_cross_entropy(hidden, weight, targets)
        with pytest.raises((IndexError, RuntimeError)):  # the plain loss refuses them too
            F.cross_entropy((hidden @ weight.T).flatten(0, 1), targets.flatten())
    targets = torch.tensor([[1, 2, -1], [3, 5, 4]])  # -1 is fine when it is the ignore_index
    expected = F.cross_entropy((hidden @ weight.T).flatten(0, 1), targets.flatten(), ignore_index=-1)
    assert torch.allclose(linear_cross_entropy(hidden, weight, targets, ignore_index=-1), expected, atol=1e-6)
    model = FastGPTModel(CFG)
    ids = torch.randint(0, CFG["vocab_size"], (1, 5))
    with pytest.raises(ValueError, match="targets must be token IDs"):
        model.loss(ids, torch.full((1, 5), -1))


def test_pad_prompts_and_generate_fast_name_a_mask_or_prompts_they_cannot_use():
    with pytest.raises(ValueError, match=r"a list of token-ID lists, one per prompt; for one prompt pass \[ids\]"):
        pad_prompts([5, 7, 9])  # was TypeError: object of type 'int' has no len()
    idx, mask = pad_prompts(torch.tensor([[1, 2], [3, 4]]))  # the rows of a tensor are prompts
    assert idx.tolist() == [[1, 2], [3, 4]] and mask.all()
    fast = FastGPTModel(CFG).eval()
    idx, mask = pad_prompts([[1, 2, 3], [4]])
    with pytest.raises(ValueError, match=r"attention_mask must have idx's shape \(2, 3\), got \(2, 2\)"):
        generate_fast(fast, idx, 2, attention_mask=mask[:, 1:])
    right_padded = torch.tensor([[1, 1, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match="pad on the left, as pad_prompts does"):
        generate_fast(fast, torch.tensor([[1, 2, 3], [4, 0, 0]]), 2, attention_mask=right_padded)
    assert generate_fast(fast, idx, 2, attention_mask=mask).shape == (2, 5)


# ---- the fast model with chapter 5's beam search, GPTModel with generate_fast, counting ----

def test_beam_search_on_the_fast_model_equals_gptmodel():
    """beam_search reorders the cache's rows each step: the static cache must follow."""
    from helpers.generation import beam_search
    book = _perturbed_book_model(CFG)
    fast = FastGPTModel.from_model(book).eval()
    prompt = torch.randint(0, CFG["vocab_size"], (1, 5), generator=torch.Generator().manual_seed(2))
    for steps in (6, 25):  # 25: beyond the 24-token context, the window slides
        expected = beam_search(book, prompt, steps, CFG["context_length"], num_beams=3)
        assert torch.equal(beam_search(fast, prompt, steps, CFG["context_length"], num_beams=3), expected), steps


def test_static_cache_reorders_rows_and_refuses_a_silent_batch_change():
    fast = FastGPTModel(CFG).eval()
    ids = torch.randint(0, CFG["vocab_size"], (2, 6))
    cache = fast.new_kv_cache()
    with torch.no_grad():
        fast(ids, kv_cache=cache)
        keys = cache.keys[..., :6, :].clone()  # the buffer past the cached positions is uninitialised (may hold NaN)
        cache.reorder(torch.tensor([1, 1, 0]))
        held = cache.keys[..., :6, :]
        assert torch.equal(held[:, 0], keys[:, 1]) and torch.equal(held[:, 1], keys[:, 1])
        assert torch.equal(held[:, 2], keys[:, 0])
        fast(torch.randint(0, CFG["vocab_size"], (3, 1)), kv_cache=cache)  # the new batch of 3 fits
        assert len(cache) == 7
        # the same batch size again: the rows change in the same buffer (beam search reorders at every step)
        buffer, keys, values = cache.keys, cache.keys[..., :7, :].clone(), cache.values[..., :7, :].clone()
        cache.reorder([2, 0, 0])
        assert cache.keys is buffer and cache.keys.shape[-2] == CFG["context_length"]
        assert torch.equal(cache.keys[..., :7, :], keys[:, [2, 0, 0]])
        assert torch.equal(cache.values[..., :7, :], values[:, [2, 0, 0]])
        with pytest.raises(ValueError, match=r"holds 7 positions for a batch of 3 \(.*\), not a batch of 2 .*; clear"):
            fast(ids[:, :1], kv_cache=cache)
        cache.clear()  # emptied, it takes any batch size
        fast(ids[:1], kv_cache=cache)
        assert len(cache) == 6 and cache.keys.shape[1] == 1


def test_static_cache_refuses_a_silent_reallocation_of_what_it_holds():
    """A change of dtype (autocast switched on between calls) or of head layout would need a new
    buffer; with positions cached, that would lose them, so the cache refuses instead."""
    cache = StaticKVCache(n_layers=2, max_len=8)
    keys = torch.randn(1, 4, 3, 8)
    cache.update(0, keys, keys)
    cache.update(1, keys, keys)
    cache.advance(3)
    held = cache.keys[..., :3, :].clone()  # only the cached positions: the rest is uninitialised
    for other, what in ((keys.to(torch.bfloat16), "torch.bfloat16"), (torch.randn(1, 2, 1, 16), "2 heads of 16")):
        with pytest.raises(ValueError, match=r"holds 3 positions for a batch of 1 \(4 heads of 8, torch.float32, cpu\), "
                                             r"not a batch of 1 \(.*" + what):
            cache.update(0, other, other)
        assert len(cache) == 3 and torch.equal(cache.keys[..., :3, :], held)  # nothing lost
    cache.clear()  # emptied, it takes the new layout
    k2, v2 = cache.update(0, keys.to(torch.bfloat16)[:, :, :1], keys.to(torch.bfloat16)[:, :, :1])
    assert cache.keys.dtype == torch.bfloat16 and k2.shape == (1, 4, 1, 8)
    # in the same step, a layer whose keys differ from the layers before it (some blocks cast)
    with pytest.raises(ValueError, match=r"layer 1 gives a batch of 1 \(4 heads of 8, torch.float32, cpu\), the layers "
                                         r"before it a batch of 1 \(4 heads of 8, torch.bfloat16"):
        cache.update(1, keys[:, :, :1], keys[:, :, :1])
    assert torch.equal(cache.keys[0, :, :, :1], k2)  # layer 0's step is still there
    with pytest.raises(ValueError, match="must have the same shape and dtype"):
        cache.update(1, keys[:, :, :1].bfloat16(), keys[:, :, :1])


def test_generate_fast_on_gptmodel_and_in_training_mode():
    book = _perturbed_book_model({**CFG, "drop_rate": 0.5})
    prompt = torch.randint(0, CFG["vocab_size"], (2, 5), generator=torch.Generator().manual_seed(4))
    expected = generate_text_simple(book.eval(), prompt, 30, CFG["context_length"], use_cache=False)
    book.train()  # dropout on: generate_fast must turn it off, and back on afterwards
    for use_cache in (True, False):
        assert torch.equal(generate_fast(book, prompt, 30, use_cache=use_cache), expected), use_cache
        assert book.training
    idx, mask = pad_prompts([[1, 2, 3], [4]])
    with pytest.raises(ValueError, match="padded prompts need a FastGPTModel"):
        generate_fast(book, idx, 3, attention_mask=mask)


def test_count_parameters_of_a_model_whose_head_is_its_embedding():
    from helpers.model import count_parameters
    book = GPTModel(CFG)
    tied = FastGPTModel({**CFG, "tie_weights": True})
    untied = FastGPTModel(CFG)
    head = CFG["vocab_size"] * CFG["emb_dim"]
    assert count_parameters(untied) == count_parameters(book)
    assert count_parameters(tied) == count_parameters(book) - head  # the shared matrix counted once
    assert count_parameters(tied, tied=True) == count_parameters(book, tied=True) == count_parameters(tied)


def test_fast_parts_refuse_values_that_make_no_sense():
    from helpers.fast import FusedQKVAttention
    with pytest.raises(ValueError, match="dropout must be a probability"):
        FusedQKVAttention(8, 8, context_length=6, dropout=float("nan"), num_heads=2)
    with pytest.raises(ValueError, match="num_heads"):  # 2.0 failed later, inside view()
        FusedQKVAttention(8, 8, context_length=6, dropout=0.0, num_heads=2.0)
    with pytest.raises(ValueError, match="whole numbers >= 1"):
        StaticKVCache(1, 2.5)
    hidden, weight, targets = torch.randn(6, 8), torch.randn(11, 8), torch.randint(0, 11, (6,))
    for chunk in (float("nan"), 2.5, 0):  # NaN and 2.5 failed inside the autograd function
        with pytest.raises(ValueError, match="chunk_tokens must be a whole number"):
            linear_cross_entropy(hidden, weight, targets, chunk)
