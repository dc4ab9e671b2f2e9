"""Chapter 6 (helpers.classification): data preparation, SpamDataset, the classification head,
loss/accuracy, the finetuning loop, classify_review, LoRA and safe unzipping.

Every expectation is computed independently here (plain-Python parsing of the data file, the
tokenizer called directly, closed-form parameter counts, hand-made logits)."""
import inspect
import math
import os
import re
import stat
import time
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import helpers
from helpers import classification as clf
from helpers.model import GPT_CONFIG_124M, GPTModel

TINY = {**GPT_CONFIG_124M, "context_length": 32, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
        "drop_rate": 0.0, "qkv_bias": True}


def _raw_rows(data_dir):
    """(label, text) per line of the collection, parsed without pandas: split at the first tab."""
    text = (data_dir / "sms_spam_collection" / "SMSSpamCollection").read_text(encoding="utf-8")
    return [tuple(line.split("\t", 1)) for line in text.split("\n") if line]


@pytest.fixture(scope="module")
def sms_df(data_dir):
    from helpers.support.data import fetch
    return clf.read_sms_spam(fetch("sms_spam_collection/SMSSpamCollection", data_dir))


@pytest.fixture(scope="module")
def splits(data_dir, tmp_path_factory):
    return clf.prepare_spam_data(data_dir, out_dir=tmp_path_factory.mktemp("splits"), seed=123)


def _write_csv(path, texts, labels=None):
    labels = [i % 2 for i in range(len(texts))] if labels is None else labels
    pd.DataFrame({"Label": labels, "Text": texts}).to_csv(path, index=False)
    return path


# ---- 6.2 data ----------------------------------------------------------------------------------

def test_read_keeps_every_line_unmangled(data_dir, sms_df):
    raw = _raw_rows(data_dir)
    assert len(sms_df) == len(raw)
    assert list(zip(sms_df["Label"], sms_df["Text"])) == raw


def test_balanced_counts(data_dir, sms_df):
    raw = _raw_rows(data_dir)
    n_spam = sum(label == "spam" for label, _ in raw)
    assert n_spam == 747
    balanced = clf.create_balanced_dataset(sms_df, seed=123)
    counts = balanced["Label"].value_counts().to_dict()
    assert counts == {"ham": n_spam, "spam": n_spam}
    # every row really comes from the file with its own label, and no row twice
    assert balanced.index.is_unique
    assert all(raw[i] == (label, text) for i, label, text in zip(balanced.index, balanced["Label"], balanced["Text"]))


def test_split_sizes_disjoint_and_complete(sms_df):
    balanced = clf.create_balanced_dataset(sms_df, seed=123).rename_axis("row").reset_index()
    train, val, test = clf.random_split(balanced, 0.7, 0.1, seed=123)
    n = len(balanced)
    assert (len(train), len(val), len(test)) == (math.floor(0.7 * n), math.floor(0.1 * n),
                                                 n - math.floor(0.7 * n) - math.floor(0.1 * n))
    assert (len(train), len(val), len(test)) == (1045, 149, 300)  # the book's sizes
    rows = [set(part["row"]) for part in (train, val, test)]
    assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])
    assert rows[0] | rows[1] | rows[2] == set(balanced["row"])


def test_split_files_repeatable_for_a_seed(data_dir, splits, tmp_path):
    again = clf.prepare_spam_data(data_dir, out_dir=tmp_path / "again", seed=123)
    other = clf.prepare_spam_data(data_dir, out_dir=tmp_path / "other", seed=7)
    for name in ("train", "validation", "test"):
        assert splits[name].read_bytes() == again[name].read_bytes()
    assert splits["train"].read_bytes() != other["train"].read_bytes()
    frames = {name: pd.read_csv(path) for name, path in splits.items()}
    assert [len(f) for f in frames.values()] == [1045, 149, 300]
    assert set(pd.concat(frames.values())["Label"]) == {0, 1}
    assert (pd.concat(frames.values())["Label"] == 1).sum() == 747


# ---- 6.3 SpamDataset ---------------------------------------------------------------------------

def test_padding_to_longest_and_truncation(tokenizer, tmp_path):
    texts = ["Hi", "Call 0800 now to win a prize!!!", "ok see you at the station at seven then"]
    path = _write_csv(tmp_path / "m.csv", texts)
    encoded = [tokenizer.encode(t) for t in texts]
    longest = max(len(e) for e in encoded)

    ds = clf.SpamDataset(path, tokenizer)
    assert ds.max_length == longest
    for i, ids in enumerate(encoded):
        x, y = ds[i]
        assert x.tolist() == ids + [50256] * (longest - len(ids))
        assert y.item() == i % 2

    ds = clf.SpamDataset(path, tokenizer, max_length=4, pad_token_id=0, return_lengths=True)
    for i, ids in enumerate(encoded):
        x, y, n = ds[i]
        assert x.tolist() == (ids[:4] + [0] * (4 - len(ids)))
        assert n.item() == min(len(ids), 4)


def test_lengths_match_independent_count(tokenizer, splits):
    ds = clf.SpamDataset(splits["train"], tokenizer, return_lengths=True)
    texts = pd.read_csv(splits["train"], keep_default_na=False, dtype={"Text": str})["Text"]
    expected = [len(tokenizer.encode(t)) for t in texts]
    assert ds.lengths == expected
    for i in range(0, len(ds), 97):
        x, _, n = ds[i]
        # the last real token is the last non-pad ID, and everything after it is padding
        non_pad = [j for j, t in enumerate(x.tolist()) if t != 50256]
        assert n.item() - 1 == non_pad[-1]
        assert set(x[n:].tolist()) <= {50256}


def test_last_token_logits_picks_each_rows_last_real_position():
    logits = torch.arange(3 * 5 * 2, dtype=torch.float).reshape(3, 5, 2)
    lengths = torch.tensor([5, 1, 3])
    picked = clf.last_token_logits(logits, lengths)
    assert torch.equal(picked, torch.stack([logits[0, 4], logits[1, 0], logits[2, 2]]))
    assert torch.equal(clf.last_token_logits(logits), logits[:, -1])


def test_context_length_cuts_and_refuses(tokenizer, tmp_path):
    long_text = "spam " * 100
    path = _write_csv(tmp_path / "long.csv", [long_text, "hello"])
    ds = clf.SpamDataset(path, tokenizer, context_length=16)
    assert ds.max_length == 16 and ds[0][0].tolist() == tokenizer.encode(long_text)[:16]
    with pytest.raises(ValueError, match="context length"):
        clf.SpamDataset(path, tokenizer, max_length=17, context_length=16)
    for bad in (0, -5, 16.5):  # -5 once cut 5 tokens off every message
        with pytest.raises(ValueError, match="context_length"):
            clf.SpamDataset(path, tokenizer, context_length=bad)


def test_empty_message_is_refused_with_its_row(tokenizer, tmp_path):
    path = _write_csv(tmp_path / "empty.csv", ["fine", "", "also fine"])
    with pytest.raises(ValueError, match="row 1"):
        clf.SpamDataset(path, tokenizer)


def test_special_token_text_is_not_padding(tokenizer, tmp_path):
    path = _write_csv(tmp_path / "eot.csv", ["see <|endoftext|> you", "x"])
    ds = clf.SpamDataset(path, tokenizer, return_lengths=True)
    x, _, n = ds[0]
    assert 50256 not in x[:n].tolist()


# ---- 6.5 head ----------------------------------------------------------------------------------

@pytest.mark.parametrize("qkv_bias", [True, False])
def test_head_freezing_and_closed_form_count(qkv_bias):
    torch.manual_seed(0)
    model = clf.add_classification_head(GPTModel({**TINY, "qkv_bias": qkv_bias}))
    last = f"trf_blocks.{TINY['n_layers'] - 1}."
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters()
                         if n.startswith(last) or n.startswith("final_norm.") or n.startswith("out_head.")}
    d = TINY["emb_dim"]
    # block: 4 d x d attention projections (+ d bias each on out_proj, and on q, k, v if qkv_bias),
    # feed-forward d*4d + 4d and 4d*d + d, two LayerNorms 2d each; final norm 2d; head 2d + 2
    block = 4 * d * d + d + (3 * d if qkv_bias else 0) + 4 * d * d + 4 * d + 4 * d * d + d + 4 * d
    assert block == 12 * d * d + (13 if qkv_bias else 10) * d
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == block + 2 * d + 2 * d + 2
    out = model(torch.randint(0, TINY["vocab_size"], (3, 7)))
    assert out.shape == (3, 7, 2)


def test_head_refuses_more_trainable_blocks_than_the_model_has():
    model = GPTModel(TINY)
    head_before = model.out_head
    n = TINY["n_layers"]
    clf.add_classification_head(GPTModel(TINY), trainable_blocks=n)  # all of them: fine
    with pytest.raises(ValueError, match=f"trainable_blocks={n + 1} exceeds the model's {n}"):
        clf.add_classification_head(model, trainable_blocks=n + 1)
    # refused before anything changed
    assert model.out_head is head_before and all(p.requires_grad for p in model.parameters())


# ---- 6.6 accuracy and loss ---------------------------------------------------------------------

class _FixedLogits(nn.Module):
    """Returns given logits for the i-th batch it is called on."""

    def __init__(self, batches):
        super().__init__()
        self.batches, self.calls = batches, 0

    def forward(self, x):
        out = self.batches[self.calls]
        self.calls += 1
        return out


def test_accuracy_on_hand_made_logits():
    torch.manual_seed(0)
    batches = [torch.randn(4, 3, 2) for _ in range(3)]
    labels = [torch.tensor([0, 1, 1, 0]), torch.tensor([1, 1, 0, 0]), torch.tensor([0, 0, 0, 1])]
    loader = [(torch.zeros(4, 3, dtype=torch.long), y) for y in labels]
    right = [sum(int(b[i, -1, 1] > b[i, -1, 0]) == int(y[i]) for i in range(4)) for b, y in zip(batches, labels)]
    assert clf.calc_accuracy_loader(loader, _FixedLogits(batches), "cpu") == sum(right) / 12
    assert clf.calc_accuracy_loader(loader, _FixedLogits(batches), "cpu", num_batches=2) == sum(right[:2]) / 8


def test_accuracy_and_loss_use_lengths_when_given():
    logits = torch.tensor([[[5.0, 0.0], [0.0, 5.0]],    # last real token (pos 0) says 0, last pos says 1
                           [[0.0, 5.0], [5.0, 0.0]]])   # full length: last says 0
    labels, lengths = torch.tensor([0, 0]), torch.tensor([1, 2])
    x = torch.zeros(2, 2, dtype=torch.long)
    assert clf.calc_accuracy_loader([(x, labels)], _FixedLogits([logits]), "cpu") == 0.5
    assert clf.calc_accuracy_loader([(x, labels, lengths)], _FixedLogits([logits]), "cpu") == 1.0
    loss = clf.calc_loss_batch(x, labels, _FixedLogits([logits]), "cpu", lengths)
    expected = -torch.log_softmax(torch.tensor([[5.0, 0.0], [5.0, 0.0]]), dim=-1)[:, 0].mean()
    assert torch.isclose(loss, expected)


def test_empty_loader_is_an_error():
    with pytest.raises(ValueError, match="no batch"):
        clf.calc_accuracy_loader([], _FixedLogits([]), "cpu")
    with pytest.raises(ValueError, match="no batch"):
        clf.calc_loss_loader([], _FixedLogits([]), "cpu")
    # num_batches=0 would divide by zero, a negative one would break islice
    loader = [(torch.zeros(1, 2, dtype=torch.long), torch.tensor([0]))]
    for bad in (0, -1, 1.5, True):
        for fn in (clf.calc_accuracy_loader, clf.calc_loss_loader):
            with pytest.raises(ValueError, match="num_batches"):
                fn(loader, _FixedLogits([torch.zeros(1, 2, 2)]), "cpu", num_batches=bad)


# ---- 6.7 finetuning ----------------------------------------------------------------------------

def _toy_loaders(n, seq=8, seed=0):
    """Random token sequences; class 1 iff token 7 occurs somewhere in the message."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(10, 200, (n, seq), generator=g)
    y = torch.arange(n) % 2
    pos = torch.randint(0, seq, (n,), generator=g)
    x[y == 1, pos[y == 1]] = 7
    return x, y


def test_smoke_finetune_beats_chance():
    torch.manual_seed(0)
    model = clf.add_classification_head(GPTModel({**TINY, "vocab_size": 200}))
    x, y = _toy_loaders(128)
    xv, yv = _toy_loaders(64, seed=1)
    train_loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    val_loader = DataLoader(TensorDataset(xv, yv), batch_size=16)
    before = clf.calc_accuracy_loader(val_loader, model, "cpu")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    train_losses, val_losses, train_accs, val_accs, seen = clf.train_classifier_simple(
        model, train_loader, val_loader, optimizer, "cpu", num_epochs=12, eval_freq=10, eval_iter=2,
        progress=False)
    steps = 12 * len(train_loader)
    assert len(train_losses) == len(val_losses) == (steps - 1) // 10 + 1
    assert len(train_accs) == len(val_accs) == 12
    assert seen == 12 * 128
    after = clf.calc_accuracy_loader(val_loader, model, "cpu")
    assert after >= 0.85 > before + 0.2, (before, after)


# ---- 6.8 classify_review ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_classifier():
    torch.manual_seed(1)
    return clf.add_classification_head(GPTModel(TINY)).eval()


def test_classify_review_and_probability_agree(tiny_classifier, tokenizer):
    for text in ["Win a free prize now", "see you later", "x"]:
        ids = tokenizer.encode(text)
        padded = torch.tensor([ids + [50256] * (20 - len(ids))])
        with torch.no_grad():
            logits = tiny_classifier(padded)[0, -1]
        p = clf.spam_probability(text, tiny_classifier, tokenizer, "cpu", max_length=20)
        assert p == pytest.approx(torch.softmax(logits, -1)[1].item(), abs=1e-6)
        label = clf.classify_review(text, tiny_classifier, tokenizer, "cpu", max_length=20)
        assert label == ("spam" if logits[1] > logits[0] else "not spam")


def test_last_real_token_ignores_padding(tiny_classifier, tokenizer):
    # causal attention: the last real token's logits cannot depend on padding after it
    text = "Congratulations, you have won"
    unpadded = clf.spam_probability(text, tiny_classifier, tokenizer, "cpu")
    padded = clf.spam_probability(text, tiny_classifier, tokenizer, "cpu", max_length=30, last_real_token=True)
    assert padded == pytest.approx(unpadded, abs=1e-5)


def test_classify_review_bad_inputs(tiny_classifier, tokenizer):
    with pytest.raises(ValueError, match="empty"):
        clf.classify_review("", tiny_classifier, tokenizer, "cpu", max_length=20)
    with pytest.raises(ValueError, match="context length"):
        clf.classify_review("hi", tiny_classifier, tokenizer, "cpu", max_length=TINY["context_length"] + 1)
    too_long = "free money " * 200  # far beyond the 32-token context: cut, not a crash
    assert clf.classify_review(too_long, tiny_classifier, tokenizer, "cpu") in {"spam", "not spam"}
    assert clf.classify_review(too_long, tiny_classifier, tokenizer, "cpu", max_length=32) in {"spam", "not spam"}


# ---- 6.10 LoRA ---------------------------------------------------------------------------------

def test_lora_layer_starts_as_the_wrapped_linear():
    torch.manual_seed(0)
    linear = nn.Linear(10, 6)
    wrapped = clf.LinearWithLoRA(linear, rank=3, alpha=8)
    x = torch.randn(4, 5, 10)
    assert torch.equal(wrapped(x), linear(x))
    assert wrapped.lora.A.shape == (10, 3) and wrapped.lora.B.shape == (3, 6)
    assert wrapped.lora.A.abs().sum() > 0  # random, or B would never get a gradient


def test_lora_a_is_drawn_like_nn_linear_with_the_rank_as_fan_in():
    # kaiming_uniform_(a=sqrt(5)) on an (in_dim, rank) tensor: uniform in +-1/sqrt(rank), as the
    # docstring says (an nn.Linear(in_dim, ...) would have +-1/sqrt(in_dim))
    torch.manual_seed(0)
    A = clf.LoRALayer(1000, 4, rank=16, alpha=1).A
    assert A.abs().max() <= 1 / 16**0.5 and A.abs().max() > 0.9 / 16**0.5
    assert clf.LoRALayer(8, 4, np.int64(2), 1.0).A.shape == (8, 2)  # a NumPy rank counts as a whole number
    assert clf.LoRALayer(8, 4, 2, np.float32(0.5)).alpha == 0.5  # and a NumPy alpha as a number


@pytest.mark.parametrize("rank, alpha, message", [
    (0, 16, "rank"), (-2, 16, "rank"), (4.0, 16, "rank"), (True, 16, "rank"),
    (4, 0, "alpha"), (4, float("nan"), "alpha"), (4, float("inf"), "alpha"),
    (4, "16", "alpha"), (4, None, "alpha"), (4, True, "alpha"),  # a string or None was a raw TypeError, True passed
])
def test_lora_refuses_a_rank_or_alpha_that_makes_no_sense(rank, alpha, message):
    with pytest.raises(ValueError, match=message):
        clf.LoRALayer(8, 4, rank, alpha)
    with pytest.raises(ValueError, match=message):
        clf.replace_linear_with_lora(torch.nn.Sequential(torch.nn.Linear(8, 4)), rank, alpha)


def test_last_token_logits_refuses_lengths_outside_the_rows():
    logits = torch.randn(2, 5, 3)
    assert torch.equal(clf.last_token_logits(logits, torch.tensor([1, 5])), logits[[0, 1], [0, 4]])
    for lengths in ([0, 3], [2, 6]):  # 0 would silently read the last position
        with pytest.raises(ValueError, match="lengths must be in"):
            clf.last_token_logits(logits, torch.tensor(lengths))


def test_lora_merge_equals_unmerged():
    torch.manual_seed(0)
    wrapped = clf.LinearWithLoRA(nn.Linear(10, 6), rank=3, alpha=2.5)
    with torch.no_grad():
        wrapped.lora.B.normal_()
    x = torch.randn(7, 10)
    merged = clf.merge_lora(wrapped)
    assert isinstance(merged, nn.Linear)
    manual = x @ (wrapped.linear.weight.T + 2.5 * wrapped.lora.A @ wrapped.lora.B) + wrapped.linear.bias
    assert torch.allclose(merged(x), wrapped(x), atol=1e-5)
    assert torch.allclose(manual, wrapped(x), atol=1e-5)


def test_replace_linear_with_lora_count_and_freezing():
    torch.manual_seed(0)
    model = GPTModel(TINY)
    model.out_head = nn.Linear(TINY["emb_dim"], 2)
    shapes = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    for p in model.parameters():
        p.requires_grad = False
    x = torch.randint(0, TINY["vocab_size"], (2, 9))
    with torch.no_grad():
        before = model(x)
    rank = 4
    clf.replace_linear_with_lora(model, rank=rank, alpha=16)
    clf.replace_linear_with_lora(model, rank=rank, alpha=16)  # a second call wraps nothing twice
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sum(rank * (i + o) for i, o in shapes)
    d, L = TINY["emb_dim"], TINY["n_layers"]
    assert trainable == L * 18 * rank * d + rank * (d + 2)
    assert all(n.endswith((".lora.A", ".lora.B")) for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        assert torch.equal(model(x), before)


# ---- safe unzipping ----------------------------------------------------------------------------

def _zip_with(path, name, data=b"x", symlink=False):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        info = zipfile.ZipInfo(name)
        if symlink:
            info.create_system = 3  # Unix, so the mode bits below count
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, data)
    return path


def _all_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize("name,symlink", [("../evil.txt", False), ("a/../../evil.txt", False),
                                          ("ABS", False), ("C:/evil.txt", False),
                                          ("link", True)])
def test_unsafe_zip_members_are_refused_and_nothing_written(tmp_path, name, symlink):
    if name == "ABS":  # an absolute path inside tmp_path, so the check below would see it written
        name = (tmp_path / "evil-abs.txt").as_posix()
    archive = _zip_with(tmp_path / "bad.zip", name, b"/etc/passwd" if symlink else b"gotcha", symlink)
    work = tmp_path / "work"
    work.mkdir()
    before = _all_files(tmp_path)
    with pytest.raises(ValueError, match="unsafe") as err:
        clf.safe_extract_zip(archive, work / "target")
    assert repr(name) in str(err.value)
    assert _all_files(tmp_path) == before


def test_safe_zip_extracts_ordinary_members(tmp_path):
    archive = tmp_path / "good.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("dir/a.txt", b"A")
        zf.writestr("b.txt", b"B")
    written = clf.safe_extract_zip(archive, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == ["b.txt", "dir/a.txt"]
    assert (tmp_path / "out" / "dir" / "a.txt").read_bytes() == b"A"
    only = clf.safe_extract_zip(archive, tmp_path / "one", members=["b.txt"])
    assert [p.name for p in only] == ["b.txt"] and _all_files(tmp_path / "one") == ["b.txt"]


# ---- API ---------------------------------------------------------------------------------------

# Every public name of the book's package module `llms_from_scratch.ch06` (release 1.0.19, read
# from the wheel) with its parameters in order and their defaults (inspect.Parameter.empty: none).
_E = inspect.Parameter.empty
BOOK_CH06 = {
    "download_and_unzip_spam_data": [("url", _E), ("zip_path", _E), ("extracted_path", _E), ("data_file_path", _E)],
    "create_balanced_dataset": [("df", _E)],
    "random_split": [("df", _E), ("train_frac", _E), ("validation_frac", _E)],
    "SpamDataset": [("csv_file", _E), ("tokenizer", _E), ("max_length", None), ("pad_token_id", 50256)],
    "calc_accuracy_loader": [("data_loader", _E), ("model", _E), ("device", _E), ("num_batches", None)],
    "calc_loss_batch": [("input_batch", _E), ("target_batch", _E), ("model", _E), ("device", _E)],
    "calc_loss_loader": [("data_loader", _E), ("model", _E), ("device", _E), ("num_batches", None)],
    "evaluate_model": [("model", _E), ("train_loader", _E), ("val_loader", _E), ("device", _E), ("eval_iter", _E)],
    "train_classifier_simple": [("model", _E), ("train_loader", _E), ("val_loader", _E), ("optimizer", _E),
                                ("device", _E), ("num_epochs", _E), ("eval_freq", _E), ("eval_iter", _E)],
    "plot_values": [("epochs_seen", _E), ("examples_seen", _E), ("train_values", _E), ("val_values", _E),
                    ("label", "loss")],
    "classify_review": [("text", _E), ("model", _E), ("tokenizer", _E), ("device", _E), ("max_length", None),
                        ("pad_token_id", 50256)],
}


@pytest.mark.parametrize("name", sorted(BOOK_CH06))
def test_book_ch06_name_exists_with_a_compatible_signature(name):
    """A call written against the book's function (positional or by keyword) works on ours:
    the book's parameters come first, in order, with the same defaults; ours add only
    parameters with defaults."""
    ours = list(inspect.signature(getattr(clf, name)).parameters.values())
    book = BOOK_CH06[name]
    assert [(p.name, p.default) for p in ours[:len(book)]] == book
    assert all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in ours[:len(book)])
    assert all(p.default is not p.empty for p in ours[len(book):]), "an extra parameter without a default"
    assert getattr(helpers, name) is getattr(clf, name) or name in {"calc_loss_batch", "calc_loss_loader",
                                                                     "evaluate_model"}


def test_package_level_names_keep_chapter5_losses():
    import helpers.training as training
    assert helpers.calc_loss_batch is training.calc_loss_batch
    assert helpers.calc_loss_loader is training.calc_loss_loader
    assert helpers.evaluate_model is training.evaluate_model
    assert clf.calc_loss_batch is not training.calc_loss_batch
    assert helpers.calc_accuracy_loader is clf.calc_accuracy_loader
    assert helpers.SpamDataset is clf.SpamDataset



# ---- the book's download_and_unzip_spam_data ---------------------------------------------------

UCI_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"


def _book_paths(root):
    extracted = root / "sms_spam_collection"
    return root / "sms_spam_collection.zip", extracted, extracted / "SMSSpamCollection.tsv"


def test_download_and_unzip_from_a_seeded_cache_offline(data_dir, tmp_path, capsys):
    # the test cache is seeded with the verified file only (no archive), as an offline machine's
    source = data_dir / "sms_spam_collection" / "SMSSpamCollection"
    zip_path, extracted, data_file = _book_paths(tmp_path)
    clf.download_and_unzip_spam_data(UCI_URL, zip_path, extracted, data_file, data_dir=data_dir)
    assert data_file.read_bytes() == source.read_bytes()
    assert capsys.readouterr().out == f"File copied from the course cache and saved as {data_file}\n"  # not "downloaded"
    # the book's behaviour: a second call does nothing but say so
    data_file.write_text("edited by the reader")
    clf.download_and_unzip_spam_data(UCI_URL, zip_path, extracted, data_file, data_dir=data_dir)
    assert data_file.read_text() == "edited by the reader"
    assert "already exists" in capsys.readouterr().out


def _collection_zip(path, data, extra=()):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("SMSSpamCollection", data)
        zf.writestr("readme", b"about the collection")
        for name in extra:
            zf.writestr(name, b"x")
    return path


def _cache_with_archive(data_dir, root):
    """(cache folder, collection bytes): a cache that downloaded the archive, not just the file."""
    cache = root / "cache"
    (cache / "sms_spam_collection").mkdir(parents=True)
    data = (data_dir / "sms_spam_collection" / "SMSSpamCollection").read_bytes()
    (cache / "sms_spam_collection" / "SMSSpamCollection").write_bytes(data)
    _collection_zip(cache / "sms_spam_collection" / "sms_spam_collection.zip", data)
    return cache, data


def test_download_and_unzip_hands_over_the_cached_archive(data_dir, tmp_path):
    # a cache that downloaded the archive: the book's zip_path and extracted members appear too
    cache, data = _cache_with_archive(data_dir, tmp_path)
    zip_path, extracted, data_file = _book_paths(tmp_path / "work")
    clf.download_and_unzip_spam_data(UCI_URL, zip_path, extracted, data_file, data_dir=cache)
    assert zipfile.ZipFile(zip_path).namelist() == ["SMSSpamCollection", "readme"]
    assert data_file.read_bytes() == data and (extracted / "readme").exists()
    assert not (extracted / "SMSSpamCollection").exists()  # renamed to the .tsv name, as in the book


def test_download_and_unzip_says_downloaded_when_it_was(data_dir, tmp_path, monkeypatch, capsys):
    # an empty cache: fetch downloads the archive (here a stand-in for the network), as the book does
    import helpers.support.data as course_data
    data = (data_dir / "sms_spam_collection" / "SMSSpamCollection").read_bytes()
    calls = []

    def fake_download(urls, dest, **options):
        calls.append(urls)
        dest.parent.mkdir(parents=True, exist_ok=True)
        return _collection_zip(dest, data)

    monkeypatch.setattr(course_data, "download_file", fake_download)
    zip_path, extracted, data_file = _book_paths(tmp_path / "work")
    clf.download_and_unzip_spam_data(UCI_URL, zip_path, extracted, data_file, data_dir=tmp_path / "empty-cache")
    assert len(calls) == 1 and data_file.read_bytes() == data
    assert capsys.readouterr().out.endswith(f"File downloaded and saved as {data_file}\n")


def test_an_interrupted_extraction_leaves_no_truncated_file_and_is_redone(data_dir, tmp_path, monkeypatch):
    """A member is written to a temporary file and renamed: stopped mid-copy, nothing appears
    under its name; a damaged file left by an older version is extracted again, not blamed on
    the download."""
    import shutil
    cache, data = _cache_with_archive(data_dir, tmp_path)
    zip_path, extracted, data_file = _book_paths(tmp_path / "work")
    real_copy = shutil.copyfileobj

    def stopped(src, dst, *args):  # only the zip members' copy: the archive's hand-over goes through
        if not isinstance(src, zipfile.ZipExtFile):
            return real_copy(src, dst, *args)
        dst.write(src.read(100))
        raise KeyboardInterrupt
    monkeypatch.setattr(shutil, "copyfileobj", stopped)
    with pytest.raises(KeyboardInterrupt):
        clf.download_and_unzip_spam_data(UCI_URL, zip_path, extracted, data_file, data_dir=cache)
    assert not (extracted / "SMSSpamCollection").exists() and not data_file.exists()
    assert not [p for p in extracted.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(shutil, "copyfileobj", real_copy)
    (extracted / "SMSSpamCollection").write_bytes(data[:100])  # what zf.extract could leave behind
    clf.download_and_unzip_spam_data(UCI_URL, zip_path, extracted, data_file, data_dir=cache)
    assert data_file.read_bytes() == data


def test_download_and_unzip_other_url_checks_members_and_content(data_dir, tmp_path, monkeypatch):
    data = (data_dir / "sms_spam_collection" / "SMSSpamCollection").read_bytes()
    served = {}

    def fake_download(url, dest, **options):  # what download_file would leave at dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        return _collection_zip(dest, *served[url])

    monkeypatch.setattr(clf, "download_file", fake_download)
    served["https://mirror.example/ok.zip"] = (data,)
    served["https://mirror.example/slip.zip"] = (data, ["../evil.txt"])
    served["https://mirror.example/other.zip"] = (b"ham\tnot the collection\n",)

    zip_path, extracted, data_file = _book_paths(tmp_path / "ok")
    clf.download_and_unzip_spam_data("https://mirror.example/ok.zip", zip_path, extracted, data_file, data_dir=data_dir)
    assert data_file.read_bytes() == data

    zip_path, extracted, data_file = _book_paths(tmp_path / "slip")
    with pytest.raises(ValueError, match="unsafe"):
        clf.download_and_unzip_spam_data("https://mirror.example/slip.zip", zip_path, extracted, data_file)
    assert not extracted.exists() and not (tmp_path / "evil.txt").exists() and not data_file.exists()

    zip_path, extracted, data_file = _book_paths(tmp_path / "other")
    with pytest.raises(helpers.DownloadError, match="SHA-256"):
        clf.download_and_unzip_spam_data("https://mirror.example/other.zip", zip_path, extracted, data_file)
    assert not data_file.exists()


# ---- evaluate_model and plot_values (book names) -----------------------------------------------

def test_evaluate_model_averages_eval_iter_batches_and_restores_training_mode():
    pairs = [(0.0, 2.0), (1.0, 0.0), (0.0, 3.0), (9.0, 9.0)]
    model = _FixedLogits([torch.tensor([[list(z)]]) for z in pairs])  # one message per batch
    message = (torch.zeros(1, 1, dtype=torch.long), torch.tensor([1]))  # labelled spam
    model.train()
    train_loss, val_loss = clf.evaluate_model(model, [message] * 4, [message], "cpu", eval_iter=2)
    assert model.training
    ce = [math.log(1 + math.exp(z0 - z1)) for z0, z1 in pairs]  # -log softmax(z)[1], by hand
    assert train_loss == pytest.approx((ce[0] + ce[1]) / 2)  # the first eval_iter batches
    assert val_loss == pytest.approx(ce[2])  # the validation loader has one batch only



def test_evaluate_model_refuses_an_empty_loader_and_stays_in_training_mode():
    model = _FixedLogits([torch.tensor([[[0.0, 1.0]]])])
    message = (torch.zeros(1, 1, dtype=torch.long), torch.tensor([1]))
    for train_loader, val_loader in (([], [message]), ([message], [])):  # the book's returns nan
        model.train()
        with pytest.raises(ValueError, match="^data_loader yields no batch"):
            clf.evaluate_model(model, train_loader, val_loader, "cpu", eval_iter=1)
        assert model.training  # the book's would leave it in eval mode: no dropout from then on


def test_an_empty_loader_gets_chapter_5s_message_in_every_function():
    from helpers import training
    model = _FixedLogits([torch.tensor([[[0.0, 1.0]]])])
    with pytest.raises(ValueError) as ch05:
        training.calc_loss_loader([], model, "cpu")
    for fn in (clf.calc_loss_loader, clf.calc_accuracy_loader):
        with pytest.raises(ValueError) as ch06:
            fn([], model, "cpu")
        assert str(ch06.value) == str(ch05.value)


@pytest.mark.parametrize("empty", ["train_loader", "val_loader"])
def test_train_classifier_simple_refuses_an_empty_loader_by_name_before_any_step(empty):
    x, y = _toy_loaders(16)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    torch.manual_seed(0)
    model = clf.add_classification_head(GPTModel({**TINY, "vocab_size": 200}))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train, val = ([], loader) if empty == "train_loader" else (loader, [])
    with pytest.raises(ValueError, match=f"^{empty} yields no batch"):
        clf.train_classifier_simple(model, train, val, torch.optim.SGD(model.parameters(), lr=0.1), "cpu",
                                    num_epochs=1, eval_freq=1, eval_iter=1, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # no step taken
    # zero epochs need no batch: the book's empty result, as before
    assert clf.train_classifier_simple(model, train, val, torch.optim.SGD(model.parameters(), lr=0.1), "cpu",
                                       num_epochs=0, eval_freq=1, eval_iter=1, progress=False) == ([], [], [], [], 0)


def test_plot_values_shows_the_figure_as_the_book_does_or_returns_it(monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(plt.gcf()))
    assert clf.plot_values([0, 1], [0, 80], [0.9, 0.5], [1.0, 0.7], label="accuracy") is None
    assert len(shown) == 1 and shown[0].axes[0].get_ylabel() == "accuracy"  # the book's call: shown once
    fig = clf.plot_values([0, 1, 2], [0, 80, 160], [0.9, 0.5, 0.2], [1.0, 0.7, 0.6], label="loss", show=False)
    assert len(shown) == 1  # returned, not shown
    bottom, top = fig.axes
    assert [list(line.get_ydata()) for line in bottom.lines] == [[0.9, 0.5, 0.2], [1.0, 0.7, 0.6]]
    assert [line.get_label() for line in bottom.lines] == ["training loss", "validation loss"]
    assert list(top.lines[0].get_xdata()) == [0, 80, 160] and top.lines[0].get_alpha() == 0
    assert bottom.get_xlabel() == "epochs" and top.get_xlabel() == "examples seen"
    plt.close("all")


# ---- arguments that make no sense are refused (issue 19) ---------------------------------------

@pytest.mark.parametrize("bad", [0, -1, -50, 2.5, True])
def test_spam_dataset_refuses_a_max_length_that_is_not_positive(tokenizer, tmp_path, bad):
    path = _write_csv(tmp_path / "m.csv", ["Hi there", "Call now"])
    with pytest.raises(ValueError, match="max_length"):
        clf.SpamDataset(path, tokenizer, max_length=bad)


@pytest.mark.parametrize("bad", [0, -1])
def test_classify_review_refuses_a_max_length_that_is_not_positive(tiny_classifier, tokenizer, bad):
    # with -1 the message used to be cut to all but its last token, silently
    for call in (clf.classify_review, clf.spam_probability):
        with pytest.raises(ValueError, match="max_length"):
            call("Win a free prize now", tiny_classifier, tokenizer, "cpu", max_length=bad)


@pytest.mark.parametrize("train_frac,validation_frac", [(0.9, 0.2), (1.5, 0.0), (-0.1, 0.1), (0.7, -0.1),
                                                        (float("nan"), 0.1), ("0.7", 0.1), (None, 0.1),
                                                        (True, 0.0), (0.7, float("inf"))])
def test_random_split_refuses_fractions_that_do_not_fit(sms_df, train_frac, validation_frac):
    with pytest.raises(ValueError, match="frac"):
        clf.random_split(sms_df, train_frac, validation_frac)


def test_random_split_accepts_the_edges(sms_df):
    assert len(clf.random_split(sms_df, np.float64(0.5), np.float32(0.25))[0]) == len(sms_df) // 2
    train, val, test = clf.random_split(sms_df, 0.5, 0.5)
    assert len(train) + len(val) == len(sms_df) - len(test) and len(test) <= 1
    train, val, test = clf.random_split(sms_df, 0, 0)
    assert (len(train), len(val), len(test)) == (0, 0, len(sms_df))


def test_create_balanced_dataset_refuses_data_it_cannot_balance(sms_df):
    with pytest.raises(ValueError, match="no rows labelled 'spam'"):
        clf.create_balanced_dataset(sms_df[sms_df["Label"] == "ham"])
    mapped = sms_df.assign(Label=sms_df["Label"].map(clf.SMS_LABELS))  # labels already 0/1
    with pytest.raises(ValueError, match="before mapping"):
        clf.create_balanced_dataset(mapped)
    with pytest.raises(ValueError, match=r"no Label column \(columns: 0, 1\).*read_sms_spam"):
        clf.create_balanced_dataset(pd.DataFrame(sms_df.to_numpy()))  # read without names
    with pytest.raises(ValueError, match=r"Label values: none\)"):
        clf.create_balanced_dataset(sms_df.head(0))
    few_ham = pd.concat([sms_df[sms_df["Label"] == "ham"].head(3), sms_df[sms_df["Label"] == "spam"]])
    with pytest.raises(ValueError, match="fewer 'ham' rows"):
        clf.create_balanced_dataset(few_ham)


@pytest.mark.parametrize("bad", [{"num_epochs": -1}, {"eval_freq": 0}, {"eval_iter": 0}])
def test_train_classifier_simple_refuses_counts_that_make_no_sense(bad):
    model = clf.add_classification_head(GPTModel({**TINY, "vocab_size": 200}))
    x, y = _toy_loaders(16)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    args = {"num_epochs": 1, "eval_freq": 1, "eval_iter": 1, **bad}
    with pytest.raises(ValueError, match=next(iter(bad))):
        clf.train_classifier_simple(model, loader, loader, torch.optim.SGD(model.parameters(), lr=0.1), "cpu",
                                    progress=False, **args)


def test_train_classifier_simple_takes_eval_iter_none_as_every_batch():
    """As in the book, eval_iter goes to the loaders' num_batches, where None means all of them."""
    x, y = _toy_loaders(16)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)  # two batches
    results = {}
    for eval_iter in (None, 2):
        torch.manual_seed(0)
        model = clf.add_classification_head(GPTModel({**TINY, "vocab_size": 200}))
        results[eval_iter] = clf.train_classifier_simple(
            model, loader, loader, torch.optim.SGD(model.parameters(), lr=0.1), "cpu", num_epochs=1,
            eval_freq=1, eval_iter=eval_iter, progress=False)
    assert results[None] == results[2]


# ---- the stand-in cache (helpers.weights.load_pretrained_gpt2, exported from ch06) -----------

STANDIN = {**GPT_CONFIG_124M, "context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 1}


def test_half_written_standin_is_rebuilt_not_failed_on(data_dir, tmp_path, capsys):
    from helpers.weights import load_pretrained_gpt2

    models = tmp_path / "models"
    first, weights = load_pretrained_gpt2(models_dir=models, download=False, standin_cfg=STANDIN,
                                          standin_epochs=1, data_dir=data_dir)
    assert weights == "standin"
    out = capsys.readouterr().out
    assert "Weights: standin" in out and "context 16 tokens (OpenAI's GPT-2: 1,024)" in out
    assert "minutes to build" in out
    (folder,) = [p for p in models.iterdir()]
    assert folder.name.startswith("standin-") and sorted(p.name for p in folder.iterdir()) == ["config.json",
                                                                                               "model.safetensors"]
    weights_file = folder / "model.safetensors"
    whole = weights_file.read_bytes()
    weights_file.write_bytes(whole[:len(whole) // 2])  # a build or copy cut short
    again, weights = load_pretrained_gpt2(models_dir=models, download=False, standin_cfg=STANDIN,
                                          standin_epochs=1, data_dir=data_dir)
    out = capsys.readouterr().out
    assert weights == "standin" and "cannot be loaded" in out and "building it again" in out
    assert weights_file.read_bytes() == whole  # the same seeded recipe, rebuilt whole
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    assert [p.name for p in models.iterdir()] == [folder.name]  # no temporary or old folder left behind
    # a sound copy is loaded, not rebuilt
    load_pretrained_gpt2(models_dir=models, download=False, standin_cfg=STANDIN, standin_epochs=1, data_dir=data_dir)
    assert "Pretraining" not in capsys.readouterr().out


def test_building_the_standin_leaves_the_callers_random_state_as_loading_does(data_dir, tmp_path, capsys):
    # ch07 computes a loss on a shuffled loader after load_pretrained_gpt2: its value must not
    # depend on whether this run built the stand-in or found it in the cache
    from helpers.weights import load_pretrained_gpt2

    def next_draws():
        torch.manual_seed(123)
        load_pretrained_gpt2(models_dir=tmp_path / "models", download=False, standin_cfg=STANDIN,
                             standin_epochs=1, data_dir=data_dir)
        return torch.rand(5)
    built = next_draws()
    assert "Pretraining a stand-in" in capsys.readouterr().out  # the first call built it ...
    loaded = next_draws()
    assert "Pretraining a stand-in" not in capsys.readouterr().out  # ... the second loaded it
    assert torch.equal(built, loaded)


def test_the_standin_is_chapter_5s_run_and_prints_its_final_losses(data_dir, capsys, monkeypatch):
    """The build's own progress bar (a hook called before each update) leaves the weights those of
    a plain train_model_simple run of chapter 5's recipe, and the losses it prints are the result's
    (the loop's own bar used to end on the losses after the first step)."""
    import re

    from helpers.support.data import fetch, gpt2_tokenizer
    from helpers.text import create_dataloader_v1
    from helpers.training import calc_loss_loader, train_model_simple
    from helpers.weights import _pretrain_standin

    import tqdm.auto

    bars = []

    class Bar:  # records what the build's bar is told (the tests' TQDM_DISABLE hides real bars)
        def __init__(self, total, desc, unit):
            self.total, self.desc, self.n, self.postfix = total, desc, 0, None
            bars.append(self)

        def update(self, n):
            self.n += n

        def set_postfix(self, **values):
            self.postfix = values

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    with torch.random.fork_rng():  # the tests after this one draw as if it had not run
        built = _pretrain_standin(STANDIN, data_dir, "cpu", num_epochs=1)
    printed = capsys.readouterr().out
    # chapter 5's recipe, written out again
    tokenizer = gpt2_tokenizer(data_dir)
    text = fetch("the-verdict.txt", data_dir).read_text(encoding="utf-8")
    split, ctx = int(0.9 * len(text)), STANDIN["context_length"]
    torch.manual_seed(123)
    train = create_dataloader_v1(text[:split], batch_size=2, max_length=ctx, stride=ctx, shuffle=True,
                                 drop_last=True, tokenizer=tokenizer)
    val = create_dataloader_v1(text[split:], batch_size=2, max_length=ctx, stride=ctx, shuffle=False,
                               drop_last=False, tokenizer=tokenizer)
    with torch.random.fork_rng():
        torch.manual_seed(123)
        model = GPTModel(STANDIN)
        optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
        train_model_simple(model, train, val, optimizer, "cpu", num_epochs=1, eval_freq=10**9, eval_iter=1,
                           start_context="Every effort moves you", tokenizer=tokenizer, progress=False)
        capsys.readouterr()
        for a, b in zip(built.state_dict().values(), model.state_dict().values()):
            assert torch.equal(a, b)
        model.eval()
        # the same random state as the build's final evaluation: the same shuffle of the training batches
        with torch.no_grad():
            train_loss, val_loss = calc_loss_loader(train, model, "cpu"), calc_loss_loader(val, model, "cpu")
    found = re.search(r"Its loss at the end of pretraining: ([\d.]+) on the text it trained on, ([\d.]+) on the story's "
                      r"held-out last 10%", printed)
    assert found, printed
    assert (found[1], found[2]) == (f"{train_loss:.3f}", f"{val_loss:.3f}")
    (bar,) = [b for b in bars if b.desc == "pretraining the stand-in"]  # the loop's own bar is off
    assert bar.n == bar.total == len(train) and float(bar.postfix["loss"]) > 0  # to the last step's loss


def test_a_standin_that_cannot_be_loaded_is_kept_until_its_rebuild_is_in_place(data_dir, tmp_path, capsys,
                                                                                monkeypatch):
    """Loading fails (damage, or a passing error): the copy stays until the new one is built, so
    a failed or interrupted rebuild loses nothing; bad arguments are refused before any of it."""
    import helpers.weights as weights
    models = tmp_path / "models"
    weights.load_pretrained_gpt2(models_dir=models, download=False, standin_cfg=STANDIN, standin_epochs=1,
                                 data_dir=data_dir)
    (folder,) = list(models.iterdir())
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    capsys.readouterr()
    for bad in ({"drop_rate": 1.5}, {"drop_rate": float("nan")}, {"drop_rate": -0.1},
                {"standin_epochs": 0}, {"standin_epochs": 2.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            weights.load_pretrained_gpt2(models_dir=models, download=False, standin_cfg=STANDIN,
                                         **{"standin_epochs": 1, "data_dir": data_dir, **bad})
    assert "Pretraining" not in capsys.readouterr().out

    def unloadable(folder, drop_rate):
        raise OSError("Too many open files")

    def stopped(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(weights, "gpt_from_hf_folder", unloadable)
    monkeypatch.setattr(weights, "_pretrain_standin", stopped)
    with pytest.raises(KeyboardInterrupt):
        weights.load_pretrained_gpt2(models_dir=models, download=False, standin_cfg=STANDIN, standin_epochs=1,
                                     data_dir=data_dir)
    assert "building it again" in capsys.readouterr().out
    assert [p.name for p in models.iterdir()] == [folder.name]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before

    # too little memory: the copy may be sound, and a rebuild would need the memory too
    for oom in (MemoryError(), RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes")):
        def out_of_memory(folder, drop_rate):
            raise oom
        monkeypatch.setattr(weights, "gpt_from_hf_folder", out_of_memory)
        with pytest.raises(type(oom)):
            weights.load_pretrained_gpt2(models_dir=models, download=False, standin_cfg=STANDIN, standin_epochs=1,
                                         data_dir=data_dir)
        out = capsys.readouterr().out
        assert "building it again" not in out and "Pretraining" not in out
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    monkeypatch.setattr(weights, "gpt_from_hf_folder", unloadable)

    def unsaved(gpt, out_dir):  # stopped after the new copy was half written
        (Path(out_dir) / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt
    monkeypatch.setattr(weights, "_pretrain_standin", lambda *a: GPTModel(STANDIN))
    monkeypatch.setattr(weights, "save_gpt_as_hf", unsaved)
    with pytest.raises(KeyboardInterrupt):
        weights.load_pretrained_gpt2(models_dir=models, download=False, standin_cfg=STANDIN, standin_epochs=1,
                                     data_dir=data_dir)
    assert [p.name for p in models.iterdir()] == [folder.name]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before

    # the new copy is built, the old one moved aside, and then putting the new one in place fails:
    # the old one goes back; moved aside, it had a fresh time, so no other build took it for a
    # killed build's leftover (those an hour old are deleted)
    monkeypatch.setattr(weights, "save_gpt_as_hf", lambda gpt, out_dir: (Path(out_dir) / "new").write_text("x"))
    real_replace, ages = weights.os.replace, []
    os.utime(folder, (time.time() - 7200, time.time() - 7200))

    def failing(src, dst):
        if ".building-" in str(src):
            (old,) = models.glob(f".{folder.name}.old-*")
            ages.append(time.time() - old.stat().st_mtime)
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)
    monkeypatch.setattr(weights.os, "replace", failing)
    with pytest.raises(OSError, match="No space left"):
        weights.load_pretrained_gpt2(models_dir=models, download=False, standin_cfg=STANDIN, standin_epochs=1,
                                     data_dir=data_dir)
    assert len(ages) == 1 and ages[0] < 600
    assert [p.name for p in models.iterdir()] == [folder.name]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_folders_a_killed_build_left_are_removed_once_an_hour_old(data_dir, tmp_path, capsys):
    """A SIGKILL during the seconds of a save leaves `.building-*` or `.old-*` folders (each a model's
    size); the next call deletes those of its own stand-in that are stale, and no others."""
    import helpers.weights as weights
    models = tmp_path / "models"
    weights.load_pretrained_gpt2(models_dir=models, download=False, standin_cfg=STANDIN, standin_epochs=1,
                                 data_dir=data_dir)
    (folder,) = list(models.iterdir())
    two_hours_ago = time.time() - 7200
    for name in (f".{folder.name}.building-a1", f".{folder.name}.old-b2",  # stale: removed
                 f".{folder.name}.building-c3",  # young: maybe a build running now in another process
                 ".standin-2x16x2-ctx16-ep1.building-d4", "notes"):  # another stand-in's, a user's
        (models / name).mkdir()
        (models / name / "model.safetensors").write_bytes(b"half")
        if name != f".{folder.name}.building-c3":
            os.utime(models / name, (two_hours_ago, two_hours_ago))
    capsys.readouterr()
    weights.load_pretrained_gpt2(models_dir=models, download=False, standin_cfg=STANDIN, standin_epochs=1,
                                 data_dir=data_dir)
    out = capsys.readouterr().out
    assert "Removed 2 folder(s) left by an interrupted stand-in build" in out and "Pretraining" not in out
    assert sorted(p.name for p in models.iterdir()) == sorted([folder.name, f".{folder.name}.building-c3",
                                                              ".standin-2x16x2-ctx16-ep1.building-d4", "notes"])
    weights.load_pretrained_gpt2(models_dir=models, download=False, standin_cfg=STANDIN, standin_epochs=1,
                                 data_dir=data_dir)
    assert "Removed" not in capsys.readouterr().out
    # one that cannot be deleted (no permission, say) is named, not counted as removed
    stuck = models / f".{folder.name}.old-e5"
    stuck.mkdir()
    os.utime(stuck, (two_hours_ago, two_hours_ago))
    with mock.patch.object(weights.shutil, "rmtree"):
        weights.load_pretrained_gpt2(models_dir=models, download=False, standin_cfg=STANDIN, standin_epochs=1,
                                     data_dir=data_dir)
    out = capsys.readouterr().out
    assert "Removed" not in out and "Could not remove 1 folder(s)" in out and str(stuck) in out


def test_a_standin_of_another_config_gets_its_own_cache(data_dir, tmp_path, capsys):
    """Biases, vocabulary and dropout change the pretrained weights: a cached stand-in built without
    them must not be handed out for a config with them (the name held only shape and epochs)."""
    from helpers.weights import load_pretrained_gpt2

    models = tmp_path / "models"
    plain, _ = load_pretrained_gpt2(models_dir=models, download=False, standin_cfg=STANDIN, standin_epochs=1,
                                    data_dir=data_dir)
    biased, _ = load_pretrained_gpt2(models_dir=models, download=False, standin_cfg={**STANDIN, "qkv_bias": True},
                                     standin_epochs=1, data_dir=data_dir)
    assert capsys.readouterr().out.count("Pretraining a stand-in") == 2
    names = sorted(p.name for p in models.iterdir())
    assert names == ["standin-1x16x2-ctx16-ep1", "standin-1x16x2-ctx16-ep1-qkvbias"]  # the first keeps its name
    assert biased.trf_blocks[0].att.W_query.bias.abs().max() > 0  # trained with biases
    assert plain.trf_blocks[0].att.W_query.bias.abs().max() == 0  # saved as GPT-2's zero biases
    load_pretrained_gpt2(models_dir=models, download=False, standin_cfg={**STANDIN, "drop_rate": 0.0},
                         standin_epochs=1, data_dir=data_dir)
    assert "standin-1x16x2-ctx16-ep1-drop0" in {p.name for p in models.iterdir()}


def test_an_unreadable_openai_checkpoint_falls_back_to_the_standin_naming_its_folder(data_dir, tmp_path, capsys,
                                                                                     monkeypatch):
    """With TensorFlow installed, a damaged copy of OpenAI's files in models_dir (or a TensorFlow
    that cannot read them) must not stop the chapter: the stand-in is used, the message names
    the folder to delete. A failed download says why, even in one line; a full disk or too little
    memory stops the call (no other route fixes those, and deleting the folder would lose the
    resumable partial file)."""
    import importlib.machinery
    import importlib.util

    import helpers.weights as weights
    from helpers.support.download import DownloadError, LocalWriteError

    def offline(model_size):
        raise OSError("Name or service not known")

    failure = ValueError("Checksum does not match: stored 1595240702 vs. calculated on the restored bytes 3923")

    def tensorflow_route(model_size, models_dir, **options):
        raise failure
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(weights, "download_gpt2_safetensors", offline)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: (importlib.machinery.ModuleSpec(name, None) if name == "tensorflow"
                                               else real_find_spec(name, *a, **k)))
    monkeypatch.setattr(weights, "download_and_load_gpt2", tensorflow_route)
    models = tmp_path / "models"
    load = lambda: weights.load_pretrained_gpt2(models_dir=models, download=True, standin_cfg=STANDIN,  # noqa: E731
                                                standin_epochs=1, data_dir=data_dir)
    model, source = load()
    assert source == "standin" and model.cfg["emb_dim"] == STANDIN["emb_dim"]
    out = capsys.readouterr().out
    assert (f"OpenAI's GPT-2 124M checkpoint in {models / '124M'} could not be read with TensorFlow (ValueError: "
            f"Checksum does not match") in out and "delete that folder to download them again" in out
    failure = DownloadError("no route to host")  # one line, where the real error has the URL on a second
    assert load()[1] == "standin"
    assert "OpenAI download of GPT-2 124M failed: no route to host" in capsys.readouterr().out
    oom = RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you "
                       "tried to allocate 1073741824 bytes")  # what torch raises on a CPU, not MemoryError
    for failure in (LocalWriteError(28, "No space left on device"), MemoryError(), oom):
        with pytest.raises(type(failure)):
            load()

    def hf_out_of_memory(model_size):
        raise oom
    monkeypatch.setattr(weights, "download_gpt2_safetensors", hf_out_of_memory)  # the Hugging Face route too
    with pytest.raises(RuntimeError, match="can't allocate memory"):
        load()


def test_a_dataset_asks_for_the_tokenizers_signature_once(tokenizer, tmp_path, monkeypatch):
    calls = []
    real = inspect.signature
    monkeypatch.setattr(inspect, "signature", lambda f, **kw: calls.append(f) or real(f, **kw))
    path = _write_csv(tmp_path / "many.csv", [f"message {i}" for i in range(50)])
    ds = clf.SpamDataset(path, tokenizer)
    asked = [f for f in calls if getattr(f, "__name__", "") == "encode"]
    assert len(ds) == 50 and len(asked) == 1


def test_error_lines_are_cut_between_words():
    from helpers.weights import _short

    err = ConnectionError("HTTPSConnectionPool(host='openaipublic.blob.core.windows.net', port=443): "
                          "Max retries exceeded with url: /gpt-2/models/124M/checkpoint")
    line = _short(err, limit=100)
    assert line.endswith(" ...") and len(line) <= 104
    kept = line[:-4]
    assert str(err).startswith(kept.split(": ", 1)[1]) and f"{type(err).__name__}: {err}"[len(kept)] == " "
    assert _short(ValueError("short"), 100) == "ValueError: short"
    assert _short("HTTP 404\nmore lines", 100) == "HTTP 404"  # a reason already taken from an error's text


def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path):
    from helpers.support.data import MAX_UNZIPPED_BYTES, MAX_ZIP_MEMBERS

    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", bytes(2_000_000))  # about 2 kB compressed
    assert archive.stat().st_size < 20_000
    with pytest.raises(ValueError, match=r"2,000,000 bytes unpacked, more than max_bytes=1,000,000; nothing was extracted"):
        clf.safe_extract_zip(archive, tmp_path / "out", max_bytes=1_000_000)
    assert not (tmp_path / "out").exists()
    assert len(clf.safe_extract_zip(archive, tmp_path / "ok", max_bytes=2_000_000)) == 1  # the bound is inclusive
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(5):
            zf.writestr(f"f{i}.txt", b"x")
    with pytest.raises(ValueError, match="5 members, more than max_files=4"):
        clf.safe_extract_zip(many, tmp_path / "many", max_files=4)
    assert not (tmp_path / "many").exists()
    defaults = inspect.signature(clf.safe_extract_zip).parameters
    assert (defaults["max_files"].default, defaults["max_bytes"].default) == (MAX_ZIP_MEMBERS, MAX_UNZIPPED_BYTES)
    for bad in ({"max_bytes": 0}, {"max_files": -1}, {"max_bytes": float("nan")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            clf.safe_extract_zip(many, tmp_path / "bad", **bad)


# ---- bad input found in review (session 30) ----------------------------------------------------

def test_spam_dataset_refuses_a_csv_without_its_columns(tokenizer, tmp_path):
    path = tmp_path / "no_label.csv"
    pd.DataFrame({"Text": ["hello", "there"], "Class": [0, 1]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="no_label.csv has no Label column"):
        clf.SpamDataset(path, tokenizer)


@pytest.mark.parametrize("labels, row, shown", [(["ham", "spam"], 0, "'ham'"), ([0, 1.5], 1, "'1.5'"),
                                                ([1, ""], 1, "''"), ([-1, 0], 0, "'-1'")])
def test_spam_dataset_refuses_labels_that_are_not_class_numbers(tokenizer, tmp_path, labels, row, shown):
    path = _write_csv(tmp_path / "labels.csv", ["hello", "there"], labels)
    with pytest.raises(ValueError, match=rf"row {row} .*label {shown}.*SMS_LABELS"):
        clf.SpamDataset(path, tokenizer)


def test_spam_dataset_refuses_a_header_only_csv_by_name(tokenizer, tmp_path):
    # the book's gives an empty dataset with max_length 0, which the validation set's
    # SpamDataset(max_length=train_dataset.max_length) then refuses with a hint that misleads
    path = tmp_path / "header.csv"
    path.write_text("Label,Text\n")
    with pytest.raises(ValueError, match="header.csv has a header but no messages"):
        clf.SpamDataset(path, tokenizer)


def test_lora_layer_keeps_its_rank_and_alpha():
    layer = clf.LinearWithLoRA(nn.Linear(6, 4), rank=3, alpha=2.0)
    assert (layer.lora.rank, layer.lora.alpha) == (3, 2.0)


def test_a_standin_config_without_a_key_is_refused_before_any_download(data_dir, tmp_path, monkeypatch):
    from helpers import weights

    calls = []  # recorded, not raised: load_pretrained_gpt2 would catch an error as a failed download
    monkeypatch.setattr(weights, "download_gpt2_safetensors", lambda *a, **k: calls.append("hf"))
    monkeypatch.setattr(weights, "download_and_load_gpt2", lambda *a, **k: calls.append("openai"))
    cfg = {k: v for k, v in STANDIN.items() if k != "qkv_bias"}
    with pytest.raises(ValueError, match=r"standin_cfg: .*qkv_bias"):
        weights.load_pretrained_gpt2(models_dir=tmp_path, standin_cfg=cfg, data_dir=data_dir)
    with pytest.raises(ValueError, match=r"standin_cfg: .*n_heads"):
        weights.load_pretrained_gpt2(models_dir=tmp_path, standin_cfg={**STANDIN, "n_heads": 3}, data_dir=data_dir)
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_a_standin_context_longer_than_the_held_out_text_is_refused_with_the_limit(data_dir, tmp_path, tokenizer):
    from helpers.support.data import fetch
    from helpers.weights import load_pretrained_gpt2

    text = fetch("the-verdict.txt", data_dir).read_text(encoding="utf-8")
    held_out = len(tokenizer.encode(text[int(0.9 * len(text)):]))  # the validation split of chapter 5's recipe
    with pytest.raises(ValueError, match=rf"context_length'\]={held_out} .*use {held_out - 1} or less"):
        load_pretrained_gpt2(models_dir=tmp_path / "models", download=False, standin_epochs=1, data_dir=data_dir,
                             standin_cfg={**STANDIN, "context_length": held_out})
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []


def test_the_cached_standin_folder_gets_the_umasks_permissions_not_mkdtemps(data_dir, tmp_path, capsys):
    import os

    from helpers.weights import load_pretrained_gpt2

    old = os.umask(0o022)
    try:
        load_pretrained_gpt2(models_dir=tmp_path, download=False, standin_cfg=STANDIN, standin_epochs=1,
                             data_dir=data_dir)
    finally:
        os.umask(old)
    (folder,) = tmp_path.iterdir()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755  # mkdtemp alone leaves 0o700


def test_download_and_unzip_into_the_cache_folder_keeps_the_caches_copy(data_dir, tmp_path):
    # a reader whose course cache is the current folder runs the book's cell as it stands
    cache = tmp_path / "cache"
    (cache / "sms_spam_collection").mkdir(parents=True)
    data = (data_dir / "sms_spam_collection" / "SMSSpamCollection").read_bytes()
    (cache / "sms_spam_collection" / "SMSSpamCollection").write_bytes(data)
    zip_path, extracted, data_file = _book_paths(cache)
    clf.download_and_unzip_spam_data(UCI_URL, zip_path, extracted, data_file, data_dir=cache)
    assert data_file.read_bytes() == data
    assert (cache / "sms_spam_collection" / "SMSSpamCollection").read_bytes() == data  # still there for fetch


def test_spam_dataset_names_a_file_object_in_its_errors(tokenizer):
    import io
    with pytest.raises(ValueError, match="the CSV: row 1 .*empty message"):
        clf.SpamDataset(io.StringIO("Label,Text\n0,fine\n1,\n"), tokenizer)
    with pytest.raises(ValueError, match="the CSV: row 0 .*label 'spam'"):
        clf.SpamDataset(io.StringIO("Label,Text\nspam,fine\n"), tokenizer)


@pytest.mark.parametrize("eval_iter", [0, -1, 1.5, True, torch.tensor(2)])
def test_evaluate_model_names_eval_iter_not_calc_loss_loaders_num_batches(eval_iter):
    loader = DataLoader(TensorDataset(torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, dtype=torch.long)),
                        batch_size=2)
    model = GPTModel({**GPT_CONFIG_124M, "context_length": 8, "emb_dim": 8, "n_heads": 2, "n_layers": 1})
    with pytest.raises(ValueError, match=r"^eval_iter=.* must be a whole number >= 1") as ours:
        clf.evaluate_model(model, loader, loader, "cpu", eval_iter)
    # chapter 6's evaluate_model and loop and chapter 5's evaluate_model say it in the same words
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(ValueError) as in_loop:
        clf.train_classifier_simple(model, loader, loader, optimizer, "cpu", 1, 1, eval_iter, progress=False)
    with pytest.raises(ValueError) as chapter_5:
        helpers.training.evaluate_model(model, loader, loader, "cpu", eval_iter)
    assert str(in_loop.value) == str(chapter_5.value) == str(ours.value)


@pytest.mark.parametrize("num_classes", [None, 3])
def test_classify_review_refuses_a_model_without_a_two_class_head(tokenizer, num_classes):
    """A language model (50,257 scores per token) or a 3-class head: the book's classify_review
    reads the top token ID or class as "spam" when it is 1 and "not spam" otherwise, without a
    word; ours names the missing head, or the head of another size. Nothing is classified on the way."""
    torch.manual_seed(0)
    model = GPTModel(TINY)
    if num_classes:
        clf.add_classification_head(model, num_classes=num_classes)
    expected = (re.escape(f"the model gives {TINY['vocab_size']:,} scores per token") + r".*add_classification_head\(model\)"
                if num_classes is None else r"the model's head has 3 classes, but this reads the 2 of SMS_LABELS")
    for answer in (clf.classify_review, clf.spam_probability):
        with pytest.raises(ValueError, match=expected):
            answer("You won a prize", model, tokenizer, "cpu", max_length=8)
    clf.add_classification_head(model)  # the same model with two classes is answered
    assert clf.classify_review("You won a prize", model, tokenizer, "cpu", max_length=8) in {"spam", "not spam"}
    assert 0.0 <= clf.spam_probability("You won a prize", model, tokenizer, "cpu") <= 1.0


# ---- bad input found by a probe (session 39) ---------------------------------------------------

@pytest.mark.parametrize("pad", [-1, 1.5, None, float("nan")])
def test_a_pad_token_id_that_is_not_a_token_id_is_refused(tokenizer, tmp_path, tiny_classifier, pad):
    path = _write_csv(tmp_path / "m.csv", ["hello", "hello there friend"])
    with pytest.raises(ValueError, match=r"pad_token_id=.* must be a token ID"):
        clf.SpamDataset(path, tokenizer, pad_token_id=pad)
    with pytest.raises(ValueError, match=r"pad_token_id=.* must be a token ID"):
        clf.classify_review("hi", tiny_classifier, tokenizer, "cpu", max_length=8, pad_token_id=pad)
    assert len(clf.SpamDataset(path, tokenizer, pad_token_id=0)[0][0]) == 3  # 0 is a token ID


def test_merging_a_merged_layer_says_so():
    merged = clf.merge_lora(clf.LinearWithLoRA(nn.Linear(6, 4), rank=2, alpha=1))
    assert type(merged) is nn.Linear
    with pytest.raises(TypeError, match="takes a LinearWithLoRA .*got a Linear, merged already"):
        clf.merge_lora(merged)
    with pytest.raises(TypeError, match="got a ReLU$"):
        clf.merge_lora(nn.ReLU())


@pytest.mark.parametrize("label", [2, -1])
def test_a_label_the_head_has_no_class_for_is_named_before_cross_entropy(tiny_classifier, label):
    inputs = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=rf"label {label} is not a class of the model's head, which has 2 \(0 to 1\)"):
        clf.calc_loss_batch(inputs, torch.tensor([0, label]), tiny_classifier, "cpu")
    loader = DataLoader(TensorDataset(inputs, torch.tensor([1, label])), batch_size=2)
    with pytest.raises(ValueError, match="num_classes="):
        clf.calc_loss_loader(loader, tiny_classifier, "cpu")
    # in range, the loss is cross_entropy's
    expected = nn.functional.cross_entropy(tiny_classifier(inputs)[:, -1, :], torch.tensor([0, 1]))
    assert clf.calc_loss_batch(inputs, torch.tensor([0, 1]), tiny_classifier, "cpu").item() == pytest.approx(expected.item())


def test_classify_review_tells_a_head_of_other_classes_from_no_head(tokenizer):
    torch.manual_seed(0)
    three = clf.add_classification_head(GPTModel(TINY), num_classes=3)
    with pytest.raises(ValueError, match=r"head has 3 classes, but this reads the 2 of SMS_LABELS"):
        clf.spam_probability("You won a prize", three, tokenizer, "cpu")
    with pytest.raises(ValueError, match="give it a classification head first"):
        clf.classify_review("You won a prize", GPTModel(TINY), tokenizer, "cpu")


# ---- a model without its head, an optimizer made too early, a model of the reader's own ------

def test_loss_and_accuracy_refuse_a_model_without_a_classification_head():
    """Labels 0 and 1 are token IDs to a language-model head: the loss and accuracy would be numbers."""
    model = GPTModel({**TINY, "vocab_size": 200})
    x, y = _toy_loaders(16)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    for call in (lambda: clf.calc_accuracy_loader(loader, model, "cpu"),
                 lambda: clf.calc_loss_loader(loader, model, "cpu"),
                 lambda: clf.calc_loss_batch(x[:2], y[:2], model, "cpu")):
        with pytest.raises(ValueError, match="200 scores per token, one per vocabulary entry.*add_classification_head"):
            call()
    clf.add_classification_head(model)
    assert 0 <= clf.calc_accuracy_loader(loader, model, "cpu") <= 1  # with the head: a number


def test_train_classifier_simple_refuses_an_optimizer_made_before_the_head():
    torch.manual_seed(0)
    model = GPTModel({**TINY, "vocab_size": 200})
    early = torch.optim.AdamW(model.parameters(), lr=1e-3)  # holds the blocks, not the head added next
    clf.add_classification_head(model)
    x, y = _toy_loaders(16)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    head_before = model.out_head.weight.detach().clone()
    with pytest.raises(ValueError, match="none of the model's out_head.*create the optimizer again"):
        clf.train_classifier_simple(model, loader, loader, early, "cpu", num_epochs=1, eval_freq=1, eval_iter=1,
                                    progress=False)
    other = clf.add_classification_head(GPTModel({**TINY, "vocab_size": 200}))
    with pytest.raises(ValueError, match="holds none of the model's trainable parameters"):
        clf.train_classifier_simple(model, loader, loader, torch.optim.AdamW(other.parameters()), "cpu",
                                    num_epochs=1, eval_freq=1, eval_iter=1, progress=False)
    assert torch.equal(model.out_head.weight, head_before)  # refused before a step
    # made after the head: trains, and the head moves
    clf.train_classifier_simple(model, loader, loader, torch.optim.AdamW(model.parameters(), lr=1e-2), "cpu",
                                num_epochs=1, eval_freq=1, eval_iter=1, progress=False)
    assert not torch.equal(model.out_head.weight, head_before)


class _OwnClassifier(nn.Module):
    """A reader's own model: no cfg, no tok_emb, no pos_emb; it takes any length."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50257, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, ids):
        return self.head(self.emb(ids))


def test_classify_review_takes_a_model_without_cfg_or_embeddings_named_as_gpt2s(tokenizer):
    torch.manual_seed(0)
    model = _OwnClassifier()
    text = "Win a free prize now " * 100  # 600 tokens: no context to cut it to
    ids = tokenizer.encode(text)
    with torch.no_grad():
        expected = torch.softmax(model(torch.tensor([ids]))[0, -1], -1)[1].item()
    assert clf.spam_probability(text, model, tokenizer, "cpu") == pytest.approx(expected, abs=1e-6)
    assert clf.classify_review(text, model, tokenizer, "cpu", max_length=700) in {"spam", "not spam"}
