"""Chapter 6 (helpers.classification): data preparation, SpamDataset, the classification head,
loss/accuracy, the finetuning loop, classify_review, LoRA and safe unzipping.

Every expectation is computed independently here (plain-Python parsing of the data file, the
tokenizer called directly, closed-form parameter counts, hand-made logits)."""
import inspect
import math
import stat
import zipfile

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

def test_book_api_names_and_argument_order():
    def params(f):
        return list(inspect.signature(f).parameters)[: {clf.SpamDataset: 4}.get(f, 99)]

    assert params(clf.create_balanced_dataset)[:1] == ["df"]
    assert params(clf.random_split)[:3] == ["df", "train_frac", "validation_frac"]
    assert params(clf.SpamDataset) == ["csv_file", "tokenizer", "max_length", "pad_token_id"]
    sig = inspect.signature(clf.SpamDataset)
    assert sig.parameters["max_length"].default is None and sig.parameters["pad_token_id"].default == 50256
    assert params(clf.calc_accuracy_loader) == ["data_loader", "model", "device", "num_batches"]
    assert params(clf.calc_loss_batch)[:4] == ["input_batch", "target_batch", "model", "device"]
    assert params(clf.train_classifier_simple)[:8] == ["model", "train_loader", "val_loader", "optimizer",
                                                       "device", "num_epochs", "eval_freq", "eval_iter"]
    assert params(clf.classify_review)[:6] == ["text", "model", "tokenizer", "device", "max_length", "pad_token_id"]


def test_package_level_names_keep_chapter5_losses():
    import helpers.training as training
    assert helpers.calc_loss_batch is training.calc_loss_batch
    assert helpers.calc_loss_loader is training.calc_loss_loader
    assert helpers.evaluate_model is training.evaluate_model
    assert clf.calc_loss_batch is not training.calc_loss_batch
    assert helpers.calc_accuracy_loader is clf.calc_accuracy_loader
    assert helpers.SpamDataset is clf.SpamDataset
