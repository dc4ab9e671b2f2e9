"""Greedy generation (helpers.generation, ch04): the KV cache changes speed, never the tokens;
checked against plain uncached decoding and against transformers' GPT-2 with the same weights."""
import pytest
import torch

from helpers.generation import generate_text_simple, next_token_logits
from helpers.model import GPT_CONFIG_124M, GPTModel
from hf_reference import copy_hf_into_gpt, random_hf_gpt2

CFG = {**GPT_CONFIG_124M, "vocab_size": 300, "context_length": 16, "emb_dim": 32, "n_heads": 4,
       "n_layers": 2, "drop_rate": 0.0}


def model_for(attention, seed=0):
    torch.manual_seed(seed)
    return GPTModel({**CFG, "attention": attention}).eval()


@pytest.mark.parametrize("attention", ["sdpa", "naive"])
@pytest.mark.parametrize("context_size", [16, 10])
def test_cached_equals_uncached_across_the_context_boundary(attention, context_size):
    model = model_for(attention)
    prompt = torch.randint(0, CFG["vocab_size"], (3, 5), generator=torch.Generator().manual_seed(1))
    plain = generate_text_simple(model, prompt, max_new_tokens=60, context_size=context_size, use_cache=False)
    cached = generate_text_simple(model, prompt, max_new_tokens=60, context_size=context_size, use_cache=True)
    assert plain.shape == (3, 65)
    assert torch.equal(plain, cached)
    assert len(set(plain[0, 5:].tolist())) > 1  # not a degenerate constant output


def test_greedy_crops_to_context_size():
    model = model_for("sdpa")
    idx = torch.randint(0, CFG["vocab_size"], (1, 20))  # already longer than the context
    expected = idx.clone()
    with torch.no_grad():
        for _ in range(8):
            logits = model(expected[:, -CFG["context_length"]:])[:, -1, :]
            expected = torch.cat([expected, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generate_text_simple(model, idx, 8, CFG["context_length"], use_cache=False), expected)
    assert torch.equal(generate_text_simple(model, idx, 8, CFG["context_length"], use_cache=True), expected)


def test_greedy_tokens_equal_transformers_greedy():
    hf = random_hf_gpt2(CFG, seed=3)
    ours = copy_hf_into_gpt(hf, CFG)
    prompt = torch.randint(0, CFG["vocab_size"], (2, 4), generator=torch.Generator().manual_seed(4))
    expected = prompt
    with torch.no_grad():
        for _ in range(12):  # stays within the 16-token context
            nxt = hf(expected).logits[:, -1, :].argmax(-1, keepdim=True)
            expected = torch.cat([expected, nxt], dim=1)
    assert torch.equal(generate_text_simple(ours, prompt, 12, 16, use_cache=True), expected)


def test_next_token_logits_with_cache_matches_full_forward():
    model = model_for("sdpa")
    idx = torch.randint(0, CFG["vocab_size"], (2, 9))
    cache = model.new_kv_cache()
    with torch.no_grad():
        next_token_logits(model, idx[:, :6], 16, cache)
        got = next_token_logits(model, idx, 16, cache)  # feeds only the 3 new tokens
        assert len(cache) == 9
        assert (got - model(idx)[:, -1, :]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("bad", [torch.zeros((1, 0), dtype=torch.long), torch.zeros(5, dtype=torch.long)])
def test_empty_or_unbatched_prompt_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="idx must be"):
        generate_text_simple(model_for("sdpa"), bad, 3, 16)


@pytest.mark.parametrize("max_new_tokens", [-1, -5, 2.0, True])
def test_max_new_tokens_must_be_a_count(max_new_tokens):
    """A negative count used to return the prompt silently."""
    from helpers.generation import generate_text_simple_stream
    model, prompt = model_for("sdpa"), torch.zeros((1, 3), dtype=torch.long)
    with pytest.raises(ValueError, match=r"max_new_tokens must be an integer >= 0"):
        generate_text_simple(model, prompt, max_new_tokens, 16)
    with pytest.raises(ValueError, match=r"max_new_tokens must be an integer >= 0"):
        next(generate_text_simple_stream(model, prompt, max_new_tokens))


def test_zero_new_tokens_returns_the_prompt():
    prompt = torch.tensor([[3, 1, 4]])
    assert torch.equal(generate_text_simple(model_for("sdpa"), prompt, 0, 16), prompt)


@pytest.mark.parametrize("context_size", [0, -3, 2.5])
def test_context_size_must_be_positive(context_size):
    """context_size 0 used to feed the whole text (idx[:, -0:]), a negative one a cropped prefix."""
    with pytest.raises(ValueError, match=r"context_size must be a positive integer"):
        generate_text_simple(model_for("sdpa"), torch.zeros((1, 3), dtype=torch.long), 2, context_size)


def test_context_size_defaults_to_the_models_and_needs_one_without_cfg():
    model = model_for("sdpa")
    idx = torch.randint(0, CFG["vocab_size"], (1, 20))  # longer than the 16-token context
    assert torch.equal(generate_text_simple(model, idx, 3), generate_text_simple(model, idx, 3, 16))
    plain = torch.nn.Sequential(torch.nn.Embedding(CFG["vocab_size"], 8), torch.nn.Linear(8, CFG["vocab_size"]))
    with pytest.raises(ValueError, match="pass context_size"):
        generate_text_simple(plain, idx, 3)
    # a model without new_kv_cache runs uncached: the plain loop's tokens
    expected = idx.clone()
    with torch.no_grad():
        for _ in range(3):
            expected = torch.cat([expected, plain(expected[:, -16:])[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generate_text_simple(plain, idx, 3, 16), expected)


def test_generation_runs_in_eval_mode_and_restores_the_mode():
    model = GPTModel({**CFG, "drop_rate": 0.5}).train()
    prompt = torch.randint(0, CFG["vocab_size"], (2, 4), generator=torch.Generator().manual_seed(5))
    first = generate_text_simple(model, prompt, 6)
    assert model.training, "the caller's mode is restored"
    assert torch.equal(first, generate_text_simple(model.eval(), prompt, 6, use_cache=False))


def test_eval_mode_restores_the_mode_after_an_error_and_a_closed_generator():
    from helpers.generation import eval_mode, generate_text_simple_stream
    model = GPTModel({**CFG, "drop_rate": 0.5}).train()
    with pytest.raises(RuntimeError, match="inside"):
        with eval_mode(model) as inside:
            assert inside is model and not model.training and not model.drop_emb.training
            raise RuntimeError("inside")
    assert model.training and model.drop_emb.training
    with eval_mode(model.eval()):
        pass
    assert not model.training  # an eval-mode model stays in eval mode
    model.train()
    model.drop_emb.eval()  # a part the caller keeps in eval mode stays so
    generate_text_simple(model, torch.zeros((1, 2), dtype=torch.long), 2)
    assert model.training and model.trf_blocks[0].training and not model.drop_emb.training
    model.train()
    prompt = torch.randint(0, CFG["vocab_size"], (1, 4), generator=torch.Generator().manual_seed(8))
    stream = generate_text_simple_stream(model, prompt, 10)
    next(stream)
    assert not model.training  # paused inside the generator: dropout off
    stream.close()  # the reader stops early
    assert model.training


def test_stream_yields_the_loops_tokens_and_stops_at_eos():
    from helpers.generation import generate_text_simple_stream
    model = model_for("sdpa")
    prompt = torch.randint(0, CFG["vocab_size"], (1, 5), generator=torch.Generator().manual_seed(6))
    full = generate_text_simple(model, prompt, 20, use_cache=False)  # crosses the 16-token context
    steps = list(generate_text_simple_stream(model, prompt, 20))
    assert all(s.shape == (1, 1) for s in steps)
    assert torch.equal(torch.cat(steps, dim=1), full[:, 5:])
    eos = int(full[0, 9])  # the 5th new token
    first_eos = full[0, 5:].tolist().index(eos)
    assert len(list(generate_text_simple_stream(model, prompt, 20, eos_token_id=eos))) == first_eos
    # while the stream is paused between tokens the caller's code runs: grad mode must be its own
    # (the book's stream holds no_grad across its yields, so a caller training meanwhile gets no gradients)
    stream = generate_text_simple_stream(model.train(), prompt, 20)
    next(stream)
    assert torch.is_grad_enabled(), "the generator left no_grad switched on while paused"
    assert not model.training  # eval mode is the generator's until it ends ...
    stream.close()
    assert model.training  # ... and the caller's again once it is closed


def test_trim_input_tensor():
    from helpers.generation import trim_input_tensor
    ids = torch.arange(10)[None]
    assert torch.equal(trim_input_tensor(ids, 8, 3), ids[:, -5:])   # 5 + 3 new tokens fit 8
    assert torch.equal(trim_input_tensor(ids, 32, 3), ids)          # short prompts stay whole
    for bad in (8, 9, -1):
        with pytest.raises(ValueError, match="max_new_tokens"):
            trim_input_tensor(ids, 8, bad)

    # the book's takes the counts as one-element tensors too, with the same result
    book = pytest.importorskip("llms_from_scratch.generate")
    for context_len, max_new_tokens in ((torch.tensor(8), torch.tensor(3)), (torch.tensor([32]), 3), (8, torch.tensor([3]))):
        ours = trim_input_tensor(ids, context_len, max_new_tokens)
        assert torch.equal(ours, book.trim_input_tensor(ids, context_len, max_new_tokens))
    for bad in (torch.tensor(3.0), torch.tensor(8), torch.tensor([1, 2])):
        with pytest.raises(ValueError, match="max_new_tokens"):
            trim_input_tensor(ids, 8, bad)


def test_the_books_cache_calls_give_the_uncached_logits():
    """model(idx, use_cache=True) + reset_kv_cache(), and model(idx, cache=KVCache(n_layers))."""
    from helpers.attention import KVCache
    model = model_for("sdpa")
    idx = torch.randint(0, CFG["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        full = model(idx)
        model.reset_kv_cache()
        parts = [model(idx[:, :5], use_cache=True), model(idx[:, 5:6], use_cache=True),
                 model(idx[:, 6:], use_cache=True)]
        assert model.current_pos == 9
        assert (torch.cat(parts, dim=1) - full).abs().max() <= 1e-5
        model.reset_kv_cache()
        assert model.current_pos == 0
        assert (model(idx[:, :4], use_cache=True) - full[:, :4]).abs().max() <= 1e-5  # starts at position 0 again
        cache = KVCache(n_layers=CFG["n_layers"])
        parts = [model(idx[:, :7], cache=cache), model(idx[:, 7:], cache=cache)]
        assert (torch.cat(parts, dim=1) - full).abs().max() <= 1e-5
        assert all(kv[0].shape[2] == 9 for kv in cache.get_all())
        assert model(idx).shape == full.shape  # a plain call ignores the model's own cache
        with pytest.raises(ValueError, match="not both"):
            model(idx, cache=cache, kv_cache=cache)
