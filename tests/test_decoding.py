"""Decoding (helpers.generation, ch05): temperature, top-k, top-p, eos and beam search checked
against independent computations of what each rule allows."""
import math

import pytest
import torch

from helpers.generation import beam_search, generate, generate_text_simple, next_token_logits, sample_next_token
from helpers.model import GPT_CONFIG_124M, GPTModel

CFG = {**GPT_CONFIG_124M, "vocab_size": 64, "context_length": 12, "emb_dim": 32, "n_heads": 4,
       "n_layers": 2, "drop_rate": 0.0}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = GPTModel(CFG).eval()
    with torch.no_grad():  # sharper next-token distributions than the default init gives
        m.out_head.weight.mul_(8)
    return m


@pytest.fixture(scope="module")
def prompt():
    return torch.randint(0, CFG["vocab_size"], (1, 4), generator=torch.Generator().manual_seed(1))


def test_temperature_zero_and_tiny_temperature_equal_greedy(model, prompt):
    greedy = generate_text_simple(model, prompt, 15, 12)
    assert torch.equal(generate(model, prompt, 15, 12), greedy)
    torch.manual_seed(5)
    assert torch.equal(generate(model, prompt, 15, 12, temperature=1e-6), greedy)


def test_top_k_never_leaves_the_top_k():
    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3
    allowed = [set(row.argsort(descending=True)[:5].tolist()) for row in logits]
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        picks = sample_next_token(logits, temperature=2.0, top_k=5, generator=g)[:, 0].tolist()
        assert all(p in allowed[i] for i, p in enumerate(picks))


def nucleus(probs, p):
    """Smallest set of most likely tokens whose probabilities sum to at least p (plain Python)."""
    ranked = sorted(range(len(probs)), key=lambda i: -probs[i])
    chosen, mass = [], 0.0
    for i in ranked:
        chosen.append(i)
        mass += probs[i]
        if mass >= p:
            break
    return set(chosen)


@pytest.mark.parametrize("top_p", [0.3, 0.75, 0.95])
def test_top_p_never_leaves_the_nucleus(top_p):
    torch.manual_seed(0)
    logits = torch.randn(3, 40) * 2
    temperature = 0.8
    allowed = [nucleus(torch.softmax(row / temperature, -1).tolist(), top_p) for row in logits]
    g = torch.Generator().manual_seed(2)
    seen = [set() for _ in range(3)]
    for _ in range(400):
        picks = sample_next_token(logits, temperature=temperature, top_p=top_p, generator=g)[:, 0].tolist()
        for i, pick in enumerate(picks):
            assert pick in allowed[i]
            seen[i].add(pick)
    # It does sample, not just take the argmax, wherever the nucleus has several tokens.
    assert all(len(s) > 1 for s, a in zip(seen, allowed) if len(a) > 1)


def test_sampling_frequencies_follow_the_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    g = torch.Generator().manual_seed(3)
    counts = torch.bincount(torch.cat([sample_next_token(logits, 1.0, generator=g)[:, 0] for _ in range(4000)]),
                            minlength=4)
    expected = torch.softmax(logits[0], -1) * 4000
    assert ((counts - expected).abs() < 5 * expected.sqrt() + 5).all()


def test_same_seed_same_samples_and_cache_does_not_change_them(model, prompt):
    torch.manual_seed(7)
    a = generate(model, prompt, 20, 12, temperature=1.3, top_k=20)
    torch.manual_seed(7)
    b = generate(model, prompt, 20, 12, temperature=1.3, top_k=20, use_cache=False)
    torch.manual_seed(8)
    c = generate(model, prompt, 20, 12, temperature=1.3, top_k=20)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_eos_stops_generation(model, prompt):
    greedy = generate(model, prompt, 10, 12)
    eos = greedy[0, prompt.shape[1] + 3].item()  # the 4th generated token
    first = (greedy[0, prompt.shape[1]:] == eos).nonzero()[0].item()
    out = generate(model, prompt, 10, 12, eos_id=eos)
    assert torch.equal(out, greedy[:, :prompt.shape[1] + first])


@pytest.mark.parametrize("bad", [64, 50256, -1, 2.5, True, "3", float("nan"), torch.tensor([1, 2])])
def test_an_eos_id_the_model_cannot_produce_is_refused(model, prompt, bad):
    """The vocabulary has 64 tokens: before, eos_id=64 (or -1, or GPT-2's 50256 with another
    tokenizer) never matched, so generation silently ran to max_new_tokens."""
    for call in (lambda: generate(model, prompt, 5, 12, eos_id=bad),
                 lambda: generate(model, prompt, 5, 12, temperature=1.0, top_k=5, eos_id=bad),
                 lambda: beam_search(model, prompt, 5, 12, num_beams=2, eos_id=bad)):
        with pytest.raises(ValueError, match=r"eos_id must be a token ID in \[0, 64\) \(the model's vocabulary\)"):
            call()


def test_eos_id_may_be_a_one_element_tensor_as_in_the_book(model, prompt):
    greedy = generate(model, prompt, 10, 12)
    eos = greedy[0, prompt.shape[1] + 3].item()
    expected = generate(model, prompt, 10, 12, eos_id=eos)
    assert expected.shape[1] < greedy.shape[1]
    assert torch.equal(generate(model, prompt, 10, 12, eos_id=torch.tensor(eos)), expected)
    assert torch.equal(beam_search(model, prompt, 10, 12, num_beams=2, eos_id=torch.tensor([eos])),
                       beam_search(model, prompt, 10, 12, num_beams=2, eos_id=eos))


def test_beam_search_with_one_beam_is_greedy(model, prompt):
    assert torch.equal(beam_search(model, prompt, 15, 12, num_beams=1), generate(model, prompt, 15, 12))


def sequence_log_prob(model, seq, prompt_len):
    with torch.no_grad():
        logp = torch.log_softmax(model(seq)[0], -1)
    return sum(logp[t - 1, seq[0, t]].item() for t in range(prompt_len, seq.shape[1]))


def best_by_exhaustive_search(model, prompt, steps):
    best = (-math.inf, None)
    for a in range(CFG["vocab_size"]):
        for b in range(CFG["vocab_size"]):
            seq = torch.cat([prompt, torch.tensor([[a, b]])], dim=1)
            best = max(best, (sequence_log_prob(model, seq, prompt.shape[1]), seq), key=lambda x: x[0])
    return best


def test_beam_search_scores_at_least_greedy_and_wide_beam_finds_the_optimum(model, prompt):
    greedy = generate(model, prompt, 2, 12)
    beam = beam_search(model, prompt, 2, 12, num_beams=CFG["vocab_size"])
    best_score, best_seq = best_by_exhaustive_search(model, prompt, 2)
    assert torch.equal(beam, best_seq)  # a beam as wide as the vocabulary is exhaustive for 2 steps
    assert sequence_log_prob(model, beam, 4) >= sequence_log_prob(model, greedy, 4) - 1e-6


def reference_beam_search(model, prompt, steps, context, num_beams):
    """Beam search without a cache or end token: every beam re-run on its last `context` tokens
    at each step, candidates ranked by their summed log-probability (in float64)."""
    beams = [(0.0, prompt[0].tolist())]
    for _ in range(steps):
        candidates = []
        for score, seq in beams:
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([seq[-context:]]))[0, -1].double(), -1)
            candidates += [(score + lp, seq + [tok]) for tok, lp in enumerate(logp.tolist())]
        beams = sorted(candidates, key=lambda c: c[0], reverse=True)[:num_beams]
    return torch.tensor([beams[0][1]])


def test_beam_search_across_the_context_boundary(model, prompt):
    """18 tokens > the context of 12: past the boundary each beam sees only its last 12 tokens."""
    out = beam_search(model, prompt, 14, 12, num_beams=3)
    assert out.shape == (1, 18)
    assert torch.equal(out, reference_beam_search(model, prompt, 14, 12, num_beams=3))


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -1.0}, "temperature"), ({"temperature": float("nan")}, "temperature"),
    ({"temperature": float("inf")}, "temperature"),
    ({"temperature": 1.0, "top_k": 0}, "top_k"),
    ({"temperature": 1.0, "top_p": 0.0}, "top_p"), ({"temperature": 1.0, "top_p": 1.5}, "top_p"),
    # not a number: a raw TypeError before, or (a bool) taken as 1
    ({"temperature": None}, "temperature"), ({"temperature": "0.7"}, "temperature"), ({"temperature": True}, "temperature"),
    ({"temperature": 1.0, "top_p": "0.9"}, "top_p"), ({"temperature": 1.0, "top_p": True}, "top_p"),
    # a tensor is read as its one number: two numbers, a bool, NaN or a float top_k are still refused
    ({"temperature": torch.tensor([1.0, 2.0])}, "temperature"), ({"temperature": torch.tensor(True)}, "temperature"),
    ({"temperature": torch.tensor(float("nan"))}, "temperature"), ({"temperature": 1.0, "top_k": torch.tensor(5.0)}, "top_k"),
])
def test_bad_decoding_arguments(model, prompt, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(model, prompt, 3, 12, **kwargs)


def test_numpy_integers_count_as_integers(model, prompt):
    """Sizes computed with NumPy (np.int64) are accepted, with the same result as Python ints."""
    np = pytest.importorskip("numpy")
    torch.manual_seed(3)
    ours = generate(model, prompt, np.int64(6), np.int64(12), temperature=1.0, top_k=np.int64(5))
    torch.manual_seed(3)
    assert torch.equal(ours, generate(model, prompt, 6, 12, temperature=1.0, top_k=5))
    assert beam_search(model, prompt, np.int32(4), 12, num_beams=np.int64(2)).shape == (1, prompt.shape[1] + 4)


def test_one_element_tensors_count_as_numbers(model, prompt):
    """temperature=torch.tensor(1.3) and the like, which the book's generate takes, give the same
    tokens as the Python numbers they hold."""
    torch.manual_seed(3)
    ours = generate(model, prompt, 6, 12, temperature=torch.tensor(1.3), top_k=torch.tensor([5]),
                    top_p=torch.tensor(0.9, dtype=torch.float64))
    torch.manual_seed(3)
    assert torch.equal(ours, generate(model, prompt, 6, 12, temperature=1.3, top_k=5, top_p=0.9))
    assert torch.equal(generate(model, prompt, 4, 12, temperature=torch.tensor(0.0)), generate(model, prompt, 4, 12))
    # counts too: range() and slicing read an integer tensor, so the book's generate takes them
    greedy = generate(model, prompt, 5, 12)
    assert torch.equal(generate(model, prompt, torch.tensor(5), torch.tensor([12])), greedy)
    assert torch.equal(generate_text_simple(model, prompt, torch.tensor([5]), torch.tensor(12)), greedy)
    assert torch.equal(beam_search(model, prompt, torch.tensor(4), torch.tensor(12), num_beams=2),
                       beam_search(model, prompt, 4, 12, num_beams=2))


def test_generate_feeds_one_new_token_per_step_in_eval_mode_and_the_window_in_training_mode(prompt):
    """The KV cache is used in eval mode (each step sees only the newest token) and left out in
    training mode (dropout must see the whole window, as in the book)."""
    torch.manual_seed(0)
    m = GPTModel({**CFG, "drop_rate": 0.1})
    lengths = []
    m.register_forward_pre_hook(lambda module, args, kwargs: lengths.append((args or [kwargs["in_idx"]])[0].shape[1]),
                                with_kwargs=True)
    generate(m.eval(), prompt, 4, 12)
    assert lengths == [4, 1, 1, 1]
    lengths.clear()
    generate(m.train(), prompt, 4, 12)
    assert lengths == [4, 5, 6, 7]
    lengths.clear()
    generate(lambda idx, **kw: m.eval()(idx), prompt, 2, 12)  # a callable without .training works too
    assert lengths == [4, 5]


def test_empty_prompt(model):
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, torch.zeros((1, 0), dtype=torch.long), 3, 12)
    with pytest.raises(ValueError, match="one prompt"):
        beam_search(model, torch.zeros((2, 3), dtype=torch.long), 3, 12)


# ---- the book's signature, eos in a batch, input checks (issues 18 and 19) ----

def test_generate_takes_the_books_positional_arguments(model, prompt):
    import inspect

    params = inspect.signature(generate).parameters
    # llms_from_scratch.ch05.generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None)
    assert list(params)[:7] == ["model", "idx", "max_new_tokens", "context_size", "temperature", "top_k", "eos_id"]
    assert [params[n].default for n in ("temperature", "top_k", "eos_id")] == [0.0, None, None]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in list(params.values())[7:])
    greedy = generate(model, prompt, 10, 12)
    eos = greedy[0, prompt.shape[1] + 3].item()
    # a book call: the fifth positional argument after top_k is eos_id, so generation stops
    assert torch.equal(generate(model, prompt, 10, 12, 0.0, None, eos), generate(model, prompt, 10, 12, eos_id=eos))
    assert generate(model, prompt, 10, 12, 0.0, None, eos).shape[1] < greedy.shape[1]


def test_eos_in_a_batch_pads_the_finished_row(model):
    """A finished row keeps its end token and is padded with it while the other row goes on."""
    gen = torch.Generator().manual_seed(5)
    for _ in range(200):  # find two prompts and a token that only the first one generates
        prompts = torch.randint(0, CFG["vocab_size"], (2, 4), generator=gen)
        greedy = generate(model, prompts, 8, 12)
        new0, new1 = greedy[0, 4:].tolist(), greedy[1, 4:].tolist()
        choices = [t for t in new0[1:-1] if t not in new1]
        if choices:
            break
    eos = choices[0]
    first = new0.index(eos)
    out = generate(model, prompts, 8, 12, eos_id=eos)
    assert out.shape == greedy.shape  # the second row never finishes: all 8 steps run
    assert torch.equal(out[1], greedy[1])
    assert torch.equal(out[0, :4 + first + 1], greedy[0, :4 + first + 1])  # up to and with its end token
    assert (out[0, 4 + first + 1:] == eos).all()  # then padding
    # when every row has finished, the last step is not appended (the book's single-prompt rule)
    both = generate(model, prompts[:1].repeat(2, 1), 8, 12, eos_id=eos)
    assert torch.equal(both, greedy[:1, :4 + first].repeat(2, 1))


@pytest.mark.parametrize("args, message", [
    ((-1, 12), "max_new_tokens"), ((2.5, 12), "max_new_tokens"), ((3, 0), "context_size"), ((3, -4), "context_size"),
    # a count given as a tensor: a float, two numbers, a bool or a negative one is still refused
    ((torch.tensor(5.0), 12), "max_new_tokens"), ((torch.tensor([2, 3]), 12), "max_new_tokens"),
    ((torch.tensor(True), 12), "max_new_tokens"), ((torch.tensor(-1), 12), "max_new_tokens"),
    ((3, torch.tensor(12.0)), "context_size"), ((3, torch.tensor(0)), "context_size"),
])
def test_negative_or_zero_sizes_are_refused(model, prompt, args, message):
    with pytest.raises(ValueError, match=message):
        generate(model, prompt, *args)
    with pytest.raises(ValueError, match=message):
        beam_search(model, prompt, *args)


def test_zero_new_tokens_returns_the_prompt(model, prompt):
    assert torch.equal(generate(model, prompt, 0, 12), prompt)
    assert torch.equal(beam_search(model, prompt, 0, 12), prompt)


def test_beam_search_refuses_more_beams_than_memory_holds(model, prompt, monkeypatch):
    import helpers.generation as generation

    monkeypatch.setattr(generation, "_free_memory_bytes", lambda device: 100_000)
    with pytest.raises(ValueError, match="num_beams=1000 needs about"):
        beam_search(model, prompt, 3, 12, num_beams=1000)
    beam_search(model, prompt, 3, 12, num_beams=2)  # small enough: runs


def test_a_million_beams_are_refused_before_any_allocation():
    torch.manual_seed(0)
    gpt2_vocab = GPTModel({**CFG, "vocab_size": 50257, "emb_dim": 16, "n_layers": 1}).eval()
    # 10**6 beams x 50,257 logits x 3 float32 copies: about 560 GiB, more than any machine here
    with pytest.raises(ValueError, match="num_beams=1000000"):
        beam_search(gpt2_vocab, torch.tensor([[1, 2, 3]]), 5, 12, num_beams=10**6)
    with pytest.raises(ValueError, match="num_beams"):
        beam_search(gpt2_vocab, torch.tensor([[1, 2, 3]]), 5, 12, num_beams=0)


class PlainModel(torch.nn.Module):
    """Only idx -> logits, like the book's GPTModel: no KV cache, no extra methods."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, idx):
        return self.inner(idx)


def test_generate_and_beam_search_work_on_a_model_without_a_cache(model, prompt):
    plain = PlainModel(model).eval()
    torch.manual_seed(3)
    sampled = generate(plain, prompt, 15, 12, temperature=1.2, top_k=10)
    torch.manual_seed(3)
    assert torch.equal(sampled, generate(model, prompt, 15, 12, temperature=1.2, top_k=10))
    assert torch.equal(beam_search(plain, prompt, 14, 12, num_beams=3), beam_search(model, prompt, 14, 12, num_beams=3))


def test_sampling_the_books_toy_logits_gives_the_books_counts():
    """Section 5.3.1 of the book draws 1,000 words from these logits after torch.manual_seed(123)
    and prints 73 x closer, 582 x forward, 2 x inches, 343 x toward (0 for the other five)."""
    logits = torch.tensor([4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79])
    torch.manual_seed(123)
    drawn = sample_next_token(logits.expand(1000, -1), temperature=1.0).flatten()
    assert torch.bincount(drawn, minlength=9).tolist() == [73, 0, 0, 582, 2, 0, 0, 343, 0]


def test_generate_and_beam_search_check_their_arguments_as_generate_text_simple_does(model, prompt):
    """One check for every decoder (chapter 4's): a list prompt is refused with the shape rule, not
    an AttributeError, and context_size=None reads the model's own context length."""
    for decode in (generate, beam_search):
        with pytest.raises(ValueError, match=r"idx must be \(batch, tokens\).*got shape list"):
            decode(model, prompt[0].tolist(), 3, 12)
        long_prompt = torch.randint(0, CFG["vocab_size"], (1, 15), generator=torch.Generator().manual_seed(2))
        assert torch.equal(decode(model, long_prompt, 4, None), decode(model, long_prompt, 4, CFG["context_length"]))
    plain = torch.nn.Sequential(torch.nn.Embedding(CFG["vocab_size"], 8), torch.nn.Linear(8, CFG["vocab_size"]))
    with pytest.raises(ValueError, match="no cfg or position embedding to read its context length from: pass context_size"):
        generate(plain, prompt, 3, None)


def test_beam_search_turns_dropout_off_and_restores_the_mode(prompt):
    torch.manual_seed(0)
    noisy = GPTModel({**CFG, "drop_rate": 0.5})
    expected = beam_search(noisy.eval(), prompt, 8, 12, num_beams=3)
    noisy.train()
    for _ in range(3):  # with dropout on, these would differ from each other
        assert torch.equal(beam_search(noisy, prompt, 8, 12, num_beams=3), expected)
    assert noisy.training


def test_token_ids_to_text_takes_one_token_and_names_a_batch(tokenizer):
    from helpers.generation import text_to_token_ids, token_ids_to_text
    ids = text_to_token_ids("Hello", tokenizer)
    assert ids.shape == (1, 1)
    assert token_ids_to_text(ids, tokenizer) == token_ids_to_text(ids[0], tokenizer) == "Hello"
    with pytest.raises(ValueError, match=r"got shape \(2, 1\); decode a batch row by row"):
        token_ids_to_text(torch.cat([ids, ids]), tokenizer)


def test_token_ids_to_text_takes_a_plain_list_of_ids(tokenizer):
    """The book's raises AttributeError ('list' object has no attribute 'squeeze') for a list."""
    from helpers.generation import text_to_token_ids, token_ids_to_text
    ids = text_to_token_ids("Every effort moves you", tokenizer)
    expected = tokenizer.decode(ids[0].tolist())
    assert token_ids_to_text(ids[0].tolist(), tokenizer) == token_ids_to_text(ids.tolist(), tokenizer) == expected
    assert token_ids_to_text(tuple(ids[0].tolist()), tokenizer) == expected
    with pytest.raises(ValueError, match=r"got shape \(2, 4\)"):
        token_ids_to_text(ids.tolist() * 2, tokenizer)


def test_values_that_would_silently_misbehave_are_refused(model, prompt):
    from helpers.generation import trim_input_tensor
    with pytest.raises(ValueError, match="temperature must be a finite number"):
        sample_next_token(torch.randn(1, 8), temperature=float("inf"), top_k=3)  # NaN probabilities
    for penalty in (float("nan"), float("inf"), None, "1", True):  # NaN scores: max() kept whichever came first
        with pytest.raises(ValueError, match="length_penalty must be a finite number"):
            beam_search(model, prompt, 3, 12, num_beams=2, length_penalty=penalty)
    assert beam_search(model, prompt, 3, 12, num_beams=2, length_penalty=-0.5).shape == (1, 7)
    for size in (0, -3):  # 0 read the whole text, -3 dropped its first three tokens
        with pytest.raises(ValueError, match="context_size must be a whole number"):
            next_token_logits(model, prompt, size)
    with pytest.raises(ValueError, match="max_new_tokens"):
        trim_input_tensor(prompt, 12, 2.5)
