"""helpers.text (exported from ch02_text_data.ipynb): tokenizers, vocabulary, sliding-window data.

Expected values come from independent computations: plain slicing and counting over
tiktoken's IDs, whitespace-insensitive comparisons with the source text, and the IDs that
OpenAI's GPT-2 encoding is documented to give (../shared/data/README.md).
"""
import re

import pytest
import torch

from helpers.text import (GPTDatasetV1, SimpleTokenizerV1, SimpleTokenizerV2, UnknownTokenError, build_vocab,
                          create_dataloader_v1, regex_tokenize)

README_TEXT = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
README_IDS = [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114,
              286, 617, 34680, 27271, 13]


def no_space(s):
    return re.sub(r"\s+", "", s)


def count_windows(n_tokens, max_length, stride):
    """Independent count: window starts i = 0, stride, 2*stride, ... whose target still fits."""
    count, i = 0, 0
    while i + max_length + 1 <= n_tokens:
        count += 1
        i += stride
    return count


@pytest.fixture(scope="module")
def verdict_ids(tokenizer, verdict_text):
    return tokenizer.encode(verdict_text)


@pytest.fixture(scope="module")
def verdict_vocab(verdict_text):
    return build_vocab(regex_tokenize(verdict_text), special_tokens=["<|endoftext|>", "<|unk|>"])


# ---- regex tokenizer and vocabulary ---------------------------------------------------------

def test_regex_tokenize_splits_punctuation_and_drops_whitespace():
    assert regex_tokenize("Hello, world. Is this-- a test?") == \
        ["Hello", ",", "world", ".", "Is", "this", "--", "a", "test", "?"]
    assert regex_tokenize('  "It\'s (maybe)!"\n\t_x_; y: z ') == \
        ['"', "It", "'", "s", "(", "maybe", ")", "!", '"', "_", "x", "_", ";", "y", ":", "z"]
    assert regex_tokenize("") == [] and regex_tokenize(" \n ") == []


def test_regex_tokenize_keeps_special_markers_whole():
    assert regex_tokenize("end.<|endoftext|>Next") == ["end", ".", "<|endoftext|>", "Next"]
    assert regex_tokenize("a <|unk|> b") == ["a", "<|unk|>", "b"]


def test_regex_tokenize_rejects_non_text():
    with pytest.raises(TypeError, match="str"):
        regex_tokenize(["a", "b"])


def test_regex_tokenize_on_the_verdict_loses_only_whitespace(verdict_text):
    tokens = regex_tokenize(verdict_text)
    assert "".join(tokens) == no_space(verdict_text)
    assert all(t == t.strip() and t for t in tokens)
    assert tokens[:4] == ["I", "HAD", "always", "thought"]


def test_build_vocab_sorted_then_special_tokens():
    vocab = build_vocab(["b", "a", "c", "a"], special_tokens=["<|endoftext|>", "<|unk|>"])
    assert vocab == {"a": 0, "b": 1, "c": 2, "<|endoftext|>": 3, "<|unk|>": 4}


def test_build_vocab_of_the_verdict(verdict_text):
    tokens = regex_tokenize(verdict_text)
    vocab = build_vocab(tokens)
    assert len(vocab) == len(set(tokens))
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert list(vocab) == sorted(vocab)


def test_build_vocab_errors():
    with pytest.raises(TypeError, match="regex_tokenize"):
        build_vocab("a plain string")


def test_build_vocab_numbers_a_special_token_in_the_text_once_at_the_end(verdict_text):
    # Section 2.4's use: documents joined with " <|endoftext|> ", which regex_tokenize keeps whole.
    joined = " <|endoftext|> ".join([verdict_text[:500], verdict_text[500:1000]])
    tokens = regex_tokenize(joined)
    assert "<|endoftext|>" in tokens
    specials = ["<|endoftext|>", "<|unk|>", "<|endoftext|>"]
    vocab = build_vocab(tokens, special_tokens=specials)
    plain = build_vocab([t for t in tokens if t != "<|endoftext|>"], special_tokens=specials[:2])
    assert vocab == plain
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert list(vocab)[-2:] == ["<|endoftext|>", "<|unk|>"]
    tokenizer = SimpleTokenizerV2(vocab)
    assert tokenizer.decode(tokenizer.encode(joined)).count("<|endoftext|>") == 1


# ---- SimpleTokenizerV1 / V2 ------------------------------------------------------------------

def test_v1_round_trip_on_the_verdict(verdict_text):
    vocab = build_vocab(regex_tokenize(verdict_text))
    tok = SimpleTokenizerV1(vocab)
    ids = tok.encode(verdict_text)
    assert len(ids) == len(regex_tokenize(verdict_text))
    decoded = tok.decode(ids)
    assert no_space(decoded) == no_space(verdict_text)  # decoding changes only whitespace
    assert tok.encode(decoded) == ids


def test_v1_decode_attaches_punctuation():
    tok = SimpleTokenizerV1(build_vocab(regex_tokenize('Yes, "really" (truly). a b')))
    assert tok.decode(tok.encode('Yes, "really" (truly).')) == 'Yes," really"( truly).'
    assert tok.decode(tok.encode("a , b .")) == "a, b."
    # the book's rule: `:`, `;` and `_` keep the space in front of them
    tok = SimpleTokenizerV1(build_vocab(regex_tokenize("a: b; c_ d! e?")))
    assert tok.decode(tok.encode("a: b; c_ d! e?")) == "a : b ; c _ d! e?"
    assert tok.decode(torch.tensor(tok.encode("a b"))) == "a b"  # tensors of IDs work too


def test_v2_decode_also_attaches_colon_and_semicolon_as_the_books_v2(verdict_text, verdict_vocab):
    tok = SimpleTokenizerV2(build_vocab(regex_tokenize("a: b; c_ d! e?"), special_tokens=["<|unk|>"]))
    assert tok.decode(tok.encode("a: b; c_ d! e?")) == "a: b; c _ d! e?"
    # the book's V2 decode, written out as the book prints it, over the whole story
    v2 = SimpleTokenizerV2(verdict_vocab)
    ids = v2.encode(verdict_text)
    books = re.sub(r'\s+([,.:;?!"()\'])', r'\1', " ".join(v2.int_to_str[i] for i in ids))
    assert v2.decode(ids) == books
    assert ";" in verdict_text and ":" in verdict_text  # so the story tests the rule


def test_v1_unknown_word_names_it_and_points_to_v2(verdict_text):
    tok = SimpleTokenizerV1(build_vocab(regex_tokenize(verdict_text)))
    with pytest.raises(ValueError) as info:
        tok.encode("Hello, do you like tea?")
    assert "'Hello'" in str(info.value) and "SimpleTokenizerV2" in str(info.value)
    assert str(info.value).startswith("'Hello' is not")  # not KeyError's quoted repr of the message
    assert isinstance(info.value, UnknownTokenError)
    # the book's V1 raised KeyError from its dictionary lookup: code that catches that still works
    with pytest.raises(KeyError):
        tok.encode("Hello")


def test_v1_bad_ids_and_empty_vocab():
    tok = SimpleTokenizerV1({"a": 0, "b": 1})
    with pytest.raises(ValueError, match="token ID 7"):
        tok.decode([0, 7])
    with pytest.raises(ValueError, match="empty"):
        SimpleTokenizerV1({})


def test_v2_replaces_unknown_words_and_keeps_endoftext(verdict_text, verdict_vocab):
    v1 = SimpleTokenizerV1(verdict_vocab)
    v2 = SimpleTokenizerV2(verdict_vocab)
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of the palace."
    ids = v2.encode(text)
    tokens = regex_tokenize(text)
    assert len(ids) == len(tokens)
    for token, i in zip(tokens, ids):
        expected = verdict_vocab.get(token, verdict_vocab["<|unk|>"])
        assert i == expected, token
    assert ids.count(verdict_vocab["<|unk|>"]) == 2  # "Hello" and "palace"
    assert verdict_vocab["<|endoftext|>"] in ids
    assert v2.decode(ids) == "<|unk|>, do you like tea? <|endoftext|> In the sunlit terraces of the <|unk|>."
    assert v2.encode(verdict_text) == v1.encode(verdict_text)  # no unknown words: same as V1


def test_v2_needs_unk_in_vocab(verdict_text):
    with pytest.raises(ValueError, match=re.escape("<|unk|>")):
        SimpleTokenizerV2(build_vocab(regex_tokenize(verdict_text)))
    tok = SimpleTokenizerV2({"a": 0, "[UNK]": 1}, unk_token="[UNK]")
    assert tok.encode("a zebra") == [0, 1]


def test_v2_special_token_missing_from_vocab_is_an_error(verdict_text):
    tok = SimpleTokenizerV2(build_vocab(regex_tokenize(verdict_text), special_tokens=["<|unk|>"]))
    with pytest.raises(ValueError, match=re.escape("'<|endoftext|>' is not in the vocabulary")):
        tok.encode("the end <|endoftext|> a start")


# ---- tiktoken's GPT-2 BPE, as the chapter uses it ------------------------------------------------

def test_bpe_readme_example_and_round_trip(tokenizer, verdict_text, verdict_ids):
    assert tokenizer.encode(README_TEXT, allowed_special={"<|endoftext|>"}) == README_IDS
    assert tokenizer.decode(README_IDS) == README_TEXT
    assert tokenizer.decode(verdict_ids) == verdict_text
    assert tokenizer.n_vocab == 50257 and tokenizer.eot_token == 50256


def test_bpe_splits_unknown_words_into_known_pieces(tokenizer):
    ids = tokenizer.encode("someunknownPlace")
    assert len(ids) > 1 and "".join(tokenizer.decode([i]) for i in ids) == "someunknownPlace"


def test_bpe_special_token_must_be_allowed(tokenizer):
    with pytest.raises(ValueError):
        tokenizer.encode("the end <|endoftext|>")
    as_text = tokenizer.encode("the end <|endoftext|>", disallowed_special=())
    assert 50256 not in as_text and tokenizer.decode(as_text) == "the end <|endoftext|>"


# ---- GPTDatasetV1 ---------------------------------------------------------------------------

@pytest.mark.parametrize("max_length,stride", [(4, 1), (4, 4), (8, 3), (256, 128), (256, 256), (1024, 1)])
def test_number_of_windows_matches_an_independent_count(tokenizer, verdict_text, verdict_ids,
                                                        max_length, stride):
    ds = GPTDatasetV1(verdict_text, tokenizer, max_length, stride)
    assert len(ds) == count_windows(len(verdict_ids), max_length, stride)


def test_windows_are_slices_and_targets_shift_by_one(tokenizer, verdict_text, verdict_ids):
    max_length, stride = 6, 5
    ds = GPTDatasetV1(verdict_text, tokenizer, max_length, stride)
    for j in [0, 1, 2, len(ds) // 2, len(ds) - 1]:
        x, y = ds[j]
        start = j * stride
        assert x.tolist() == verdict_ids[start:start + max_length]
        assert y.tolist() == verdict_ids[start + 1:start + max_length + 1]
        assert x.dtype == y.dtype == torch.long and x.shape == y.shape == (max_length,)
        assert torch.equal(x[1:], y[:-1])
        # views into the one tensor of IDs, not copies (what "Under the hood" of ch02 promises)
        base = ds.token_ids.untyped_storage().data_ptr()
        assert x.untyped_storage().data_ptr() == y.untyped_storage().data_ptr() == base


def test_overlap_between_consecutive_windows(tokenizer, verdict_text):
    max_length, stride = 8, 3
    ds = GPTDatasetV1(verdict_text, tokenizer, max_length, stride)
    for j in range(5):
        assert torch.equal(ds[j][0][stride:], ds[j + 1][0][:max_length - stride])
    no_overlap = GPTDatasetV1(verdict_text, tokenizer, 4, 4)
    assert len(no_overlap) > 1 and no_overlap[1][0][0] == no_overlap[0][1][-1]  # tiles the text


def test_exactly_one_window_at_the_boundary(tokenizer):
    ids = list(range(1000, 1011))  # 11 arbitrary GPT-2 token IDs
    text = tokenizer.decode(ids)
    assert tokenizer.encode(text) == ids  # (these IDs decode and re-encode to themselves)
    assert len(GPTDatasetV1(text, tokenizer, max_length=10, stride=1)) == 1
    with pytest.raises(ValueError) as info:
        GPTDatasetV1(text, tokenizer, max_length=11, stride=1)
    assert "has 11 tokens" in str(info.value) and "needs 12" in str(info.value)


def test_dataset_allows_endoftext_and_simple_tokenizers(tokenizer, verdict_vocab):
    ds = GPTDatasetV1("a b <|endoftext|> c d e", tokenizer, max_length=3, stride=1)
    assert 50256 in torch.cat([x for x, _ in ds]).tolist()
    tok = SimpleTokenizerV2(verdict_vocab)
    ds2 = GPTDatasetV1("I HAD always thought Jack Gisburn rather", tok, max_length=3, stride=2)
    assert ds2[0][0].tolist() == tok.encode("I HAD always")
    assert len(ds2) == count_windows(7, 3, 2)


def test_dataset_allows_endoftext_through_a_tokenizer_wrapper(tokenizer):
    class Wrapped:  # a thin wrapper around tiktoken, as a tinkerer might write one
        def encode(self, text, allowed_special=frozenset()):
            return tokenizer.encode(text, allowed_special=allowed_special)

    ds = GPTDatasetV1("a b <|endoftext|> c d e", Wrapped(), max_length=3, stride=1)
    ids = tokenizer.encode("a b <|endoftext|> c d e", allowed_special={"<|endoftext|>"})
    assert 50256 in ids
    assert [x.tolist() for x, _ in ds] == [ids[i:i + 3] for i in range(len(ids) - 3)]


def test_dataset_allows_endoftext_through_a_kwargs_wrapper_with_special_tokens_set(tokenizer):
    class Passthrough:  # encode(**kwargs) hides the option from the signature; special_tokens_set shows it
        special_tokens_set = tokenizer.special_tokens_set

        def encode(self, text, **kwargs):
            return tokenizer.encode(text, **kwargs)

    ds = GPTDatasetV1("a b <|endoftext|> c d e", Passthrough(), max_length=3, stride=1)
    assert 50256 in torch.cat([x for x, _ in ds]).tolist()


def test_text_too_short_for_one_window(tokenizer):
    with pytest.raises(ValueError) as info:
        GPTDatasetV1("Hello world", tokenizer, max_length=4, stride=1)
    msg = str(info.value)
    assert "2 tokens" in msg and "max_length=4" in msg and "needs 5" in msg


@pytest.mark.parametrize("max_length,stride", [(0, 1), (-3, 1), (4, 0), (4, -1)])
def test_non_positive_sizes_are_value_errors(tokenizer, verdict_text, max_length, stride):
    name = "max_length" if max_length <= 0 else "stride"
    with pytest.raises(ValueError, match=name):
        GPTDatasetV1(verdict_text, tokenizer, max_length, stride)


@pytest.mark.parametrize("max_length,stride", [(4.0, 1), ("4", 1), (4, 1.5), (True, 1)])
def test_non_integer_sizes_are_type_errors(tokenizer, max_length, stride):
    with pytest.raises(TypeError, match="must be an int"):  # ours, not a TypeError from range()
        GPTDatasetV1("some text here, long enough for a window", tokenizer, max_length, stride)


def test_numpy_integer_sizes_work_like_ints(tokenizer, verdict_text):
    np = pytest.importorskip("numpy")
    ours = GPTDatasetV1(verdict_text, tokenizer, np.int64(4), np.int32(3))
    plain = GPTDatasetV1(verdict_text, tokenizer, 4, 3)
    assert len(ours) == len(plain) and all(torch.equal(a, b) for a, b in zip(ours[5], plain[5]))
    with pytest.raises(ValueError, match="stride"):
        GPTDatasetV1(verdict_text, tokenizer, np.int64(4), np.int64(0))


# ---- create_dataloader_v1 -------------------------------------------------------------------

def test_loader_batches_and_shapes(tokenizer, verdict_text, verdict_ids):
    loader = create_dataloader_v1(verdict_text, batch_size=8, max_length=4, stride=4, shuffle=False,
                                  tokenizer=tokenizer)
    n_windows = count_windows(len(verdict_ids), 4, 4)
    assert len(loader) == n_windows // 8
    batches = list(loader)
    assert len(batches) == n_windows // 8
    for x, y in batches:
        assert x.shape == y.shape == (8, 4)
        assert torch.equal(x[:, 1:], y[:, :-1])
    x0, y0 = batches[0]
    assert x0.flatten().tolist() == verdict_ids[:32]
    assert y0[:, -1].tolist() == [verdict_ids[4 * r + 4] for r in range(8)]


def test_loader_keeps_last_partial_batch_when_asked(tokenizer, verdict_text, verdict_ids):
    n_windows = count_windows(len(verdict_ids), 256, 128)
    loader = create_dataloader_v1(verdict_text, batch_size=4, max_length=256, stride=128,
                                  shuffle=False, drop_last=False, tokenizer=tokenizer)
    sizes = [x.shape[0] for x, _ in loader]
    assert sum(sizes) == n_windows and len(sizes) == -(-n_windows // 4)


def test_loader_defaults_to_gpt2_and_shuffles_reproducibly(tokenizer, verdict_text):
    torch.manual_seed(0)
    a = [x for x, _ in create_dataloader_v1(verdict_text)]  # book defaults, GPT-2 tokenizer
    torch.manual_seed(0)
    b = [x for x, _ in create_dataloader_v1(verdict_text, tokenizer=tokenizer)]
    assert len(a) == len(b) == count_windows(len(tokenizer.encode(verdict_text)), 256, 128) // 4
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert a[0].shape == (4, 256)
    unshuffled = next(iter(create_dataloader_v1(verdict_text, shuffle=False, tokenizer=tokenizer)))[0]
    assert not all(torch.equal(p, q) for p, q in zip(a[:1], [unshuffled]))


def test_loader_errors(tokenizer, verdict_text):
    with pytest.raises(ValueError, match="batch_size"):
        create_dataloader_v1(verdict_text, batch_size=0, tokenizer=tokenizer)
    with pytest.raises(ValueError) as info:  # 39 windows at 256/128, fewer than 64
        create_dataloader_v1(verdict_text, batch_size=64, tokenizer=tokenizer)
    assert "windows" in str(info.value) and "batch_size=64" in str(info.value)
    with pytest.raises(ValueError, match="tokens"):
        create_dataloader_v1("too short", tokenizer=tokenizer)
    with pytest.raises(ValueError, match="stride"):
        create_dataloader_v1(verdict_text, stride=0, tokenizer=tokenizer)


# ---- text_to_token_ids / token_ids_to_text (ch05) with any tokenizer: a probe (session 40) -----

@pytest.mark.parametrize("version", [SimpleTokenizerV1, SimpleTokenizerV2])
def test_text_to_token_ids_takes_chapter_2_s_tokenizers(version):
    """The book's version passes tiktoken's allowed_special to every tokenizer: a TypeError for these."""
    from helpers.generation import text_to_token_ids, token_ids_to_text

    tokenizer = version(build_vocab(regex_tokenize("the cat sat on the mat."), special_tokens=["<|endoftext|>", "<|unk|>"]))
    ids = text_to_token_ids("the cat sat", tokenizer)
    assert ids.tolist() == [tokenizer.encode("the cat sat")]
    assert token_ids_to_text(ids, tokenizer) == "the cat sat"


def test_text_to_token_ids_still_allows_endoftext_with_tiktoken(tokenizer):
    from helpers.generation import text_to_token_ids

    assert text_to_token_ids(README_TEXT, tokenizer).tolist() == [README_IDS]


@pytest.mark.parametrize("tokenizer_arg, got", [(None, "not a NoneType: make one, e.g. tokenizer = tiktoken.get_encoding('gpt2')"),
                                                ("gpt2", "not a str: make one, e.g. tokenizer = tiktoken.get_encoding('gpt2')"),
                                                ("r50k_base", "tokenizer = tiktoken.get_encoding('r50k_base')")])
def test_a_tokenizer_that_is_no_tokenizer_is_named_with_the_fix(tokenizer_arg, got):
    """None: AttributeError before; "gpt2": str.encode read the text as a codec name (LookupError)."""
    from helpers.generation import text_to_token_ids, token_ids_to_text

    with pytest.raises(TypeError, match=re.escape(f"tokenizer must be a tokenizer object with an encode() method, {got}")
                       if got.startswith("not") else re.escape(got)):
        text_to_token_ids("Hello", tokenizer_arg)
    with pytest.raises(TypeError, match=re.escape("with a decode() method")):
        token_ids_to_text(torch.tensor([[15496]]), tokenizer_arg)
    if tokenizer_arg is not None:  # None is create_dataloader_v1's default: GPT-2's tokenizer
        with pytest.raises(TypeError, match=re.escape("with an encode() method")):
            create_dataloader_v1("Hello there", batch_size=1, max_length=1, stride=1, tokenizer=tokenizer_arg)


@pytest.mark.parametrize("ids, expected", [([[50300]], "token ID 50300 is outside the tokenizer's vocabulary (0 to 50256)"),
                                           ([[5, -1]], "token ID -1 is negative, so no token"),
                                           ([[5, -100]], "token ID -100 is negative, so no token: token IDs start at 0; drop"),
                                           (torch.tensor([[1.0]]), "token_ids are floats")])
def test_token_ids_to_text_names_an_id_the_tokenizer_cannot_decode(tokenizer, ids, expected):
    """tiktoken's own errors: KeyError 'Invalid token for decoding', OverflowError, TypeError."""
    from helpers.generation import token_ids_to_text

    with pytest.raises(ValueError, match=re.escape(expected)):
        token_ids_to_text(ids if torch.is_tensor(ids) else torch.tensor(ids), tokenizer)
    assert token_ids_to_text(torch.tensor([README_IDS]), tokenizer) == README_TEXT
