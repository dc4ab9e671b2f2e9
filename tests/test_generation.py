"""Argument checks of the decoders (helpers.generation, ch04 and ch05) that must fail before the
first step: a context_size the model cannot take, an end token the model cannot produce."""
import pytest
import torch

from helpers.generation import beam_search, generate, generate_text_simple, generate_text_simple_stream
from helpers.model import GPTModel

CFG = {"vocab_size": 50257, "context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
       "drop_rate": 0.0, "qkv_bias": False}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPTModel(CFG).eval()


@pytest.fixture(scope="module")
def prompt():
    return torch.randint(0, CFG["vocab_size"], (1, 3), generator=torch.Generator().manual_seed(1))


DECODERS = {  # each as (model, idx, max_new_tokens, context_size) -> the prompt and its new tokens
    "generate": lambda m, idx, n, size: generate(m, idx, n, size),
    "generate_text_simple": lambda m, idx, n, size: generate_text_simple(m, idx, n, size),
    "generate_text_simple uncached": lambda m, idx, n, size: generate_text_simple(m, idx, n, size, use_cache=False),
    "generate_text_simple_stream": lambda m, idx, n, size: torch.cat(
        [idx, *generate_text_simple_stream(m, idx, n, context_size=size)], dim=1),
    "beam_search": lambda m, idx, n, size: beam_search(m, idx, n, size, num_beams=2),
}


class BookStyleModel(torch.nn.Module):
    """A model as the book's package builds it: a position embedding, but no cfg."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.pos_emb = inner, inner.pos_emb

    def forward(self, idx):
        return self.inner(idx)


@pytest.mark.parametrize("decode", list(DECODERS))
def test_a_context_size_the_model_cannot_take_is_refused_before_any_step(model, prompt, decode):
    """Before: 16 forward passes ran, then "17 tokens exceed the context length of 16; crop the
    input" blamed the input; context_size=1024 was the mistake."""
    steps = []
    hook = model.register_forward_hook(lambda *_: steps.append(1))
    try:
        for m in (model, BookStyleModel(model)):  # the context length from cfg, or from pos_emb
            with pytest.raises(ValueError, match=r"^context_size=1024 exceeds the model's context length of 16: "
                                                 r"this run would feed it 32 tokens; pass context_size=16 or less$"):
                DECODERS[decode](m, prompt, 30, 1024)
    finally:
        hook.remove()
    assert not steps, "refused only after generating"


@pytest.mark.parametrize("decode", list(DECODERS))
def test_a_context_size_above_the_models_that_is_never_reached_works_as_in_the_book(model, prompt, decode):
    """3 + 14 tokens: the last step reads 16, all the model has; the book takes context_size=1024 here."""
    expected = DECODERS[decode](model, prompt, 14, 16)
    assert expected.shape == (1, 17)
    assert torch.equal(DECODERS[decode](model, prompt, 14, 1024), expected)
    long_prompt = torch.randint(0, CFG["vocab_size"], (1, 20))  # more than the context, but nothing to generate
    assert torch.equal(DECODERS[decode](model, long_prompt, 0, 1024), long_prompt)


def test_a_model_that_states_no_context_length_is_not_checked(prompt):
    """A model of the reader's own (no cfg, no pos_emb) may take any length: nothing to refuse."""
    plain = torch.nn.Sequential(torch.nn.Embedding(CFG["vocab_size"], 8), torch.nn.Linear(8, CFG["vocab_size"]))
    assert generate(plain, prompt, 30, 1024).shape == (1, 33)


@pytest.mark.parametrize("bad", [50257, 99999, -1, "<|endoftext|>", 2.5, True, float("nan"), torch.tensor([1, 2])])
def test_the_stream_refuses_an_eos_token_id_the_model_cannot_produce(model, prompt, bad):
    """As generate's eos_id. Before: 99999 or -1 never matched, so the stream silently ran to
    max_new_tokens, and "<|endoftext|>" gave AttributeError: 'bool' object has no attribute 'all'."""
    with pytest.raises(ValueError, match=r"^eos_token_id must be a token ID in \[0, 50257\) \(the model's vocabulary\)"):
        list(generate_text_simple_stream(model, prompt, 3, eos_token_id=bad))


def test_the_stream_takes_an_eos_token_id_as_an_int_or_a_one_element_tensor(model, prompt):
    tokens = torch.cat(list(generate_text_simple_stream(model, prompt, 12)), dim=1)[0].tolist()
    eos = tokens[4]
    for eos_token_id in (eos, torch.tensor(eos), torch.tensor([eos])):
        assert len(list(generate_text_simple_stream(model, prompt, 12, eos_token_id=eos_token_id))) == tokens.index(eos)


def test_a_run_with_an_end_token_is_left_to_stop_before_the_context_runs_out():
    """With eos_id the run may stop before it overflows, as the book's would: not refused up front."""
    torch.manual_seed(0)
    model = GPTModel(CFG)
    idx = torch.tensor([[1, 2, 3]])
    first = generate(model, idx, 1, context_size=16)[0, -1].item()  # the greedy run's first new token
    out = generate(model, idx, 30, context_size=1024, eos_id=first)
    assert out.tolist() == idx.tolist()  # stopped at once, nothing overflowed
    streamed = list(generate_text_simple_stream(model, idx, 30, eos_token_id=first, context_size=1024))
    assert streamed == []
