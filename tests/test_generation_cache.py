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
    plain = generate_text_simple(model, prompt, max_new_tokens=60, context_size=context_size)
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
    assert torch.equal(generate_text_simple(model, idx, 8, CFG["context_length"]), expected)
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
