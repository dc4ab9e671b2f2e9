"""text: generated from ch02_text_data.ipynb. DO NOT EDIT.

Edit the notebook cells that start with `#| export text` and run `make export`.
"""
__all__ = ['regex_tokenize', 'build_vocab', 'UnknownTokenError', 'SimpleTokenizerV1', 'SimpleTokenizerV2', 'GPTDatasetV1', 'create_dataloader_v1']


# ---- ch02_text_data.ipynb, cell 14 ----
import re

# Special markers first (kept whole), then single punctuation marks, the double dash, whitespace.
_SPLIT_PATTERN = re.compile(r'(<\|[^|\s]+\|>|[,.:;?_!"()\']|--|\s)')


def regex_tokenize(text):
    """Split `text` into word and punctuation tokens, dropping whitespace.

    Punctuation marks ``, . : ; ? _ ! " ( ) '`` and the double dash ``--`` become tokens of
    their own; special markers written like ``<|endoftext|>`` are kept whole.

    >>> regex_tokenize("Hello, world--again!")
    ['Hello', ',', 'world', '--', 'again', '!']
    """
    if not isinstance(text, str):
        raise TypeError(f"regex_tokenize expects a str, got {type(text).__name__}")
    return [piece for piece in _SPLIT_PATTERN.split(text) if piece.strip()]


# ---- ch02_text_data.ipynb, cell 19 ----
def build_vocab(tokens, special_tokens=()):
    """Return a ``{token: id}`` dictionary for the distinct `tokens`.

    Ordinary tokens are numbered in sorted order from 0; `special_tokens` (such as
    ``"<|endoftext|>"`` and ``"<|unk|>"``) follow them, in the order given. A special token
    that also occurs in `tokens` (a corpus joined with " <|endoftext|> ") is numbered once,
    at the end, so the vocabulary has no gaps and every ID decodes.
    """
    if isinstance(tokens, str):
        raise TypeError("build_vocab expects a list of tokens, not a str; call regex_tokenize(text) first")
    special = list(dict.fromkeys(special_tokens))
    ordinary = sorted(set(tokens) - set(special))
    return {token: i for i, token in enumerate(ordinary + special)}


# ---- ch02_text_data.ipynb, cell 85 ----
# The book's decoding rules: no space before these marks; V1 keeps the space before `:` and `;`,
# V2 removes it too (`_` keeps its space in both).
_SPACE_BEFORE_PUNCT = re.compile(r'\s+([,.?!"()\'])')
_SPACE_BEFORE_PUNCT_V2 = re.compile(r'\s+([,.:;?!"()\'])')


class UnknownTokenError(ValueError, KeyError):
    """A word the vocabulary lacks. A ValueError whose message names the fix, and a KeyError,
    as the book's dictionary lookup raised, so `except KeyError` written for the book works."""
    __str__ = Exception.__str__  # KeyError's would print the message in quotes


class SimpleTokenizerV1:
    """A word-level tokenizer over a fixed vocabulary (a ``{token: id}`` dict).

    `encode` splits text with `regex_tokenize` and looks every token up; an unknown token is
    an error (`SimpleTokenizerV2` maps unknown tokens to ``<|unk|>`` instead). `decode` joins
    tokens with spaces and removes the space before punctuation.
    """

    _space_before = _SPACE_BEFORE_PUNCT

    def __init__(self, vocab):
        if not vocab:
            raise ValueError("the vocabulary is empty; build one with build_vocab(regex_tokenize(text))")
        self.str_to_int = dict(vocab)
        self.int_to_str = {i: s for s, i in self.str_to_int.items()}

    def encode(self, text):
        """Return the list of token IDs of `text`."""
        ids = []
        for token in regex_tokenize(text):
            if token not in self.str_to_int:
                raise UnknownTokenError(
                    f"{token!r} is not in this tokenizer's vocabulary of {len(self.str_to_int)} tokens. "
                    "SimpleTokenizerV1 can only encode words it has seen; use SimpleTokenizerV2 "
                    "with a vocabulary that includes '<|unk|>' to encode unknown words.")
            ids.append(self.str_to_int[token])
        return ids

    def decode(self, ids):
        """Return the text for a sequence of token IDs."""
        tokens = []
        for i in ids:
            i = int(i)
            if i not in self.int_to_str:
                raise ValueError(f"token ID {i} is not in this vocabulary (valid IDs: 0 to "
                                 f"{len(self.int_to_str) - 1})")
            tokens.append(self.int_to_str[i])
        return self._space_before.sub(r"\1", " ".join(tokens))


# ---- ch02_text_data.ipynb, cell 87 ----
_SPECIAL_PATTERN = re.compile(r"<\|[^|\s]+\|>")  # a marker such as <|endoftext|>


class SimpleTokenizerV2(SimpleTokenizerV1):
    """Like `SimpleTokenizerV1`, but words outside the vocabulary become ``unk_token``.

    The vocabulary must contain ``unk_token`` (default ``"<|unk|>"``). Special markers in
    the text (written like ``<|endoftext|>``) must be in the vocabulary: they are never
    replaced by ``unk_token``. `decode` also removes the space before ``:`` and ``;``, as the
    book's V2 does.
    """

    _space_before = _SPACE_BEFORE_PUNCT_V2

    def __init__(self, vocab, unk_token="<|unk|>"):
        super().__init__(vocab)
        if unk_token not in self.str_to_int:
            raise ValueError(
                f"the vocabulary has no {unk_token!r} entry; build it with "
                f"build_vocab(tokens, special_tokens=['<|endoftext|>', {unk_token!r}])")
        self.unk_token = unk_token

    def encode(self, text):
        """Return the token IDs of `text`, using the ID of ``unk_token`` for unknown words."""
        unk_id = self.str_to_int[self.unk_token]
        ids = []
        for token in regex_tokenize(text):
            if token in self.str_to_int:
                ids.append(self.str_to_int[token])
            elif _SPECIAL_PATTERN.fullmatch(token):
                raise ValueError(f"special token {token!r} is not in the vocabulary; add it with "
                                 f"build_vocab(tokens, special_tokens=[..., {token!r}])")
            else:
                ids.append(unk_id)
        return ids


# ---- ch02_text_data.ipynb, cell 91 ----
import inspect
import math
import numbers

import torch


def _encode_takes(tokenizer, option):
    """Whether tokenizer.encode accepts the keyword `option`: tiktoken's (and a wrapper's that
    passes it on) takes allowed_special and disallowed_special; SimpleTokenizerV2 takes neither."""
    try:
        return option in inspect.signature(tokenizer.encode).parameters
    except (TypeError, ValueError):  # a builtin without a readable signature
        return False


def _check_tokenizer(tokenizer, method="encode"):
    # a str has an encode method too: "gpt2".encode(text) fails with "unknown encoding: <the text>"
    if isinstance(tokenizer, (str, bytes)) or not callable(getattr(tokenizer, method, None)):
        make = f"tiktoken.get_encoding({tokenizer!r})" if isinstance(tokenizer, str) else "tiktoken.get_encoding('gpt2')"
        raise TypeError(f"tokenizer must be a tokenizer object with {'an' if method == 'encode' else 'a'} {method}() "
                        f"method, not a {type(tokenizer).__name__}: make one, e.g. tokenizer = {make}")


def _encode_all(tokenizer, text):
    _check_tokenizer(tokenizer)
    # a tiktoken-like wrapper whose encode(**kwargs) hides the option still has its special_tokens_set
    if _encode_takes(tokenizer, "allowed_special") or hasattr(tokenizer, "special_tokens_set"):
        return tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    return tokenizer.encode(text)


def _is_count(value, minimum):
    """A whole number (int or NumPy integer; not a bool, though True == 1) of at least `minimum`."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= minimum


def _is_real(value):
    """A finite real number (int, float or NumPy's; not a bool, not NaN, not infinite)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def _check_positive(name, value):
    if not _is_count(value, float("-inf")):  # 4.0 or "4" would fail later, inside range()
        raise TypeError(f"{name} must be an int (or NumPy integer), got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


# ---- ch02_text_data.ipynb, cell 93 ----
from torch.utils.data import Dataset


class GPTDatasetV1(Dataset):
    """Next-token training pairs cut from one text with a sliding window.

    The text is tokenized once (``<|endoftext|>`` allowed). Item ``j`` is a pair
    ``(input_ids, target_ids)`` of `max_length` token IDs each: the window starting at
    ``j * stride``, and the same window shifted one token to the right.
    """

    def __init__(self, txt, tokenizer, max_length, stride):
        _check_positive("max_length", max_length)
        _check_positive("stride", stride)
        token_ids = torch.tensor(_encode_all(tokenizer, txt), dtype=torch.long)
        n = len(token_ids)
        if n < max_length + 1:
            raise ValueError(
                f"the text has {n} tokens, but one window with max_length={max_length} needs "
                f"{max_length + 1} (the input plus a target shifted by one token); use a longer "
                f"text or a smaller max_length")
        self.tokenizer = tokenizer  # as in the book's package: loader.dataset.tokenizer
        self.max_length, self.stride = max_length, stride
        self.token_ids = token_ids
        starts = range(0, n - max_length, stride)
        self.input_ids = [token_ids[i:i + max_length] for i in starts]
        self.target_ids = [token_ids[i + 1:i + max_length + 1] for i in starts]

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, idx):
        return self.input_ids[idx], self.target_ids[idx]


# ---- ch02_text_data.ipynb, cell 95 ----
from torch.utils.data import DataLoader


def create_dataloader_v1(txt, batch_size=4, max_length=256, stride=128, shuffle=True,
                         drop_last=True, num_workers=0, tokenizer=None):
    """A `DataLoader` of ``(inputs, targets)`` batches, each of shape ``[batch_size, max_length]``.

    `tokenizer` defaults to GPT-2's BPE (`helpers.support.data.gpt2_tokenizer`). With
    ``drop_last=True`` a final, smaller batch is skipped.
    """
    _check_positive("batch_size", batch_size)
    if tokenizer is None:
        from helpers.support.data import gpt2_tokenizer
        tokenizer = gpt2_tokenizer()
    dataset = GPTDatasetV1(txt, tokenizer, max_length, stride)
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"the text gives only {len(dataset)} windows (max_length={max_length}, stride={stride}), "
            f"fewer than batch_size={batch_size}, so with drop_last=True there would be no batch at all; "
            f"use a smaller batch_size or stride, or drop_last=False")
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=num_workers)
