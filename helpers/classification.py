"""classification: generated from ch06_classification.ipynb. DO NOT EDIT.

Edit the notebook cells that start with `#| export classification` and run `make export`.
"""
__all__ = ['LoRALayer', 'LinearWithLoRA', 'replace_linear_with_lora', 'merge_lora', 'safe_extract_zip', 'SMS_SPAM_FILE', 'download_and_unzip_spam_data', 'SMS_LABELS', 'read_sms_spam', 'create_balanced_dataset', 'random_split', 'prepare_spam_data', 'SpamDataset', 'last_token_logits', 'calc_accuracy_loader', 'calc_loss_batch', 'calc_loss_loader', 'evaluate_model', 'train_classifier_simple', 'plot_values', 'classify_review', 'spam_probability', 'add_classification_head']


# ---- ch06_classification.ipynb, cell 95 ----
import math

import torch
import torch.nn as nn
from helpers.text import _is_count, _is_real


class LoRALayer(nn.Module):
    """The low-rank update of LoRA: x -> alpha * (x @ A @ B), A (in_dim, rank), B (rank, out_dim).

    B starts at zero, so the update starts at exactly zero and the wrapped model is unchanged
    until training moves it; A starts random (nn.Linear's kaiming-uniform rule; for A's (in_dim, rank)
    shape that means values up to 1/sqrt(rank)), so B gets gradients.
    """

    def __init__(self, in_dim, out_dim, rank, alpha):
        super().__init__()
        if not _is_count(rank, 1) or not (_is_real(alpha) and alpha):
            raise ValueError(f"need a whole rank >= 1 and a finite, nonzero alpha (the book: 16, 16); got rank={rank!r}, alpha={alpha!r}")
        self.A = nn.Parameter(torch.empty(in_dim, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(rank, out_dim))
        self.alpha, self.rank = alpha, rank

    def forward(self, x):
        return self.alpha * (x @ self.A @ self.B)


class LinearWithLoRA(nn.Module):
    """A Linear layer plus a LoRA update beside it: linear(x) + alpha * (x @ A @ B)."""

    def __init__(self, linear, rank, alpha):
        super().__init__()
        self.linear = linear
        self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha).to(
            linear.weight.device, linear.weight.dtype)

    def forward(self, x):
        return self.linear(x) + self.lora(x)


# ---- ch06_classification.ipynb, cell 97 ----
def replace_linear_with_lora(model, rank, alpha):
    """Wrap every nn.Linear inside `model` (in place) in LinearWithLoRA; returns the model.
    Freeze the original parameters first (as the book does) so only A and B train."""
    for name, module in model.named_children():
        if isinstance(module, nn.Linear):
            setattr(model, name, LinearWithLoRA(module, rank, alpha))
        elif not isinstance(module, LinearWithLoRA):  # already wrapped: leave it
            replace_linear_with_lora(module, rank, alpha)
    return model


def merge_lora(layer):
    """A plain nn.Linear equal to a LinearWithLoRA: weight W + alpha * (A @ B).T (nn.Linear
    stores W as (out, in)), same bias. Merged, LoRA costs nothing extra at inference."""
    if not isinstance(layer, LinearWithLoRA):  # a merged (plain) Linear has no .lora to add
        raise TypeError(f"merge_lora takes a LinearWithLoRA (as replace_linear_with_lora makes); got a "
                        f"{type(layer).__name__}" + (", merged already?" if isinstance(layer, nn.Linear) else ""))
    linear, lora = layer.linear, layer.lora
    merged = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
    merged = merged.to(linear.weight.device, linear.weight.dtype)
    with torch.no_grad():
        merged.weight.copy_(linear.weight + lora.alpha * (lora.A @ lora.B).T)
        if linear.bias is not None:
            merged.bias.copy_(linear.bias)
    return merged


# ---- ch06_classification.ipynb, cell 127 ----
import os
import shutil
import re
import stat
import zipfile
from pathlib import Path

from helpers.support.data import MAX_UNZIPPED_BYTES, MAX_ZIP_MEMBERS
from helpers.support.files import write_atomically


def _refusal(info, target):
    """Why zip member `info` must not be extracted into `target` (None when it is safe)."""
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "it is an absolute path"
    if stat.S_ISLNK(info.external_attr >> 16):  # Unix mode bits live in the high 16 bits
        return "it is a symbolic link"
    # Resolve against the real target (following links already on disk), then compare.
    dest = os.path.realpath(os.path.join(target, name.replace("\\", "/")))
    if os.path.commonpath([dest, target]) != target:
        return "its path leaves the target folder"
    return None


def safe_extract_zip(archive, target_dir, members=None, *, max_files=MAX_ZIP_MEMBERS, max_bytes=MAX_UNZIPPED_BYTES):
    """Extract `members` (default: all) of zip `archive` into `target_dir`; returns the paths.

    Every member is checked before anything is written: an absolute path, a drive letter, a
    path that leaves `target_dir` (`../`) or a symbolic link raises ValueError naming the member,
    and then nothing at all is extracted (not even the target folder is created). So does an
    archive of more than `max_files` members or one that would unpack to more than `max_bytes`
    bytes (a "zip bomb": kilobytes that unpack to gigabytes and fill the disk).
    """
    for name, value in (("max_files", max_files), ("max_bytes", max_bytes)):
        if not _is_count(value, 1):
            raise ValueError(f"{name}={value!r} must be a whole number >= 1")
    target = os.path.realpath(target_dir)
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist() if members is None else [zf.getinfo(m) for m in members]
        # zipfile stops reading a member at the size its header declares (and then fails its
        # CRC check), so the declared sizes bound what extraction can write.
        total = sum(info.file_size for info in infos)
        for what, count, name, bound in (("members", len(infos), "max_files", max_files),
                                         ("bytes unpacked", total, "max_bytes", max_bytes)):
            if count > bound:
                raise ValueError(f"refusing to extract {Path(archive).name}: {count:,} {what}, more than "
                                 f"{name}={bound:,}; nothing was extracted (pass a larger {name} if you "
                                 f"trust this archive)")
        for info in infos:
            reason = _refusal(info, target)
            if reason is not None:
                raise ValueError(f"refusing to extract {Path(archive).name}: member {info.filename!r} "
                                 f"is unsafe ({reason}); nothing was extracted")
        Path(target).mkdir(parents=True, exist_ok=True)
        paths = []
        for info in infos:  # each file appears whole or not at all (zf.extract writes in place)
            dest = Path(target, *Path(info.filename).parts)
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            else:
                with zf.open(info) as member:
                    write_atomically(dest, lambda f: shutil.copyfileobj(member, f))
            paths.append(dest)
        return paths


# ---- ch06_classification.ipynb, cell 129 ----
from helpers.support.data import COURSE_FILES, cache_dir, cached_copy, fetch
from helpers.support.download import DownloadError, download_file, sha256_of
from helpers.support.files import copy_atomically

SMS_SPAM_FILE = "sms_spam_collection/SMSSpamCollection"  # the collection's name in the course cache


def download_and_unzip_spam_data(url, zip_path, extracted_path, data_file_path, *, data_dir=None):
    """The book's function: save the SMS Spam Collection from `url` (a zip holding the file
    SMSSpamCollection) as `data_file_path`, the archive at `zip_path` and its members in
    `extracted_path`; does nothing but say so when `data_file_path` exists.

    Underneath: for the collection's known URLs (UCI's and the book's mirror, tried in turn) the
    file comes through the course cache (`data_dir`): downloaded once and checked against its
    SHA-256, and offline a cached copy is used (a cache seeded from a copy may hold no archive;
    then only the file is provided). Any other URL is downloaded with retries and resuming.
    Members are checked before extraction (`safe_extract_zip`), and the result must be the
    collection the course knows (its SHA-256), else DownloadError.
    """
    zip_path, extracted_path, data_file_path = Path(zip_path), Path(extracted_path), Path(data_file_path)
    if data_file_path.exists():
        print(f"{data_file_path} already exists. Skipping download and extraction.")
        return
    spec = COURSE_FILES[SMS_SPAM_FILE]
    extracted = extracted_path / spec.member
    how = "downloaded"  # the book's word, kept where it is true
    if url in spec.urls:
        cached = cached_copy(SMS_SPAM_FILE, data_dir)  # the verified file: nothing to download
        if cached is None:
            cached = fetch(SMS_SPAM_FILE, data_dir)
        else:
            how = "copied from the course cache"
        archive = cached.parent / f"{cached.parent.name}.zip"  # where fetch keeps a downloaded archive
        if archive.exists() and archive.resolve() != zip_path.resolve():
            copy_atomically(archive, zip_path)
        if not archive.exists():  # a seeded cache: the verified file, no archive
            copy_atomically(cached, extracted)
    else:
        download_file(url, zip_path)
    if not extracted.exists() or url not in spec.urls or sha256_of(extracted) != spec.sha256:
        safe_extract_zip(zip_path, extracted_path)
    if not extracted.exists() or sha256_of(extracted) != spec.sha256:
        raise DownloadError(f"{zip_path.name} from {url} does not hold the SMS Spam Collection the course knows "
                            f"(a file {spec.member} with SHA-256 {spec.sha256}); use {spec.urls[0]}")
    data_file_path.parent.mkdir(parents=True, exist_ok=True)
    if extracted.resolve() == (cache_dir(data_dir) / SMS_SPAM_FILE).resolve():  # the cache's own copy: never moved away
        copy_atomically(extracted, data_file_path)
    else:
        os.replace(extracted, data_file_path)
    print(f"File {how} and saved as {data_file_path}")


# ---- ch06_classification.ipynb, cell 133 ----
import csv

import pandas as pd

from helpers.support.data import cache_dir

SMS_LABELS = {"ham": 0, "spam": 1}  # the class index the model predicts for each label


def read_sms_spam(path):
    """The SMS Spam Collection (`label<TAB>text` lines, no header) as a DataFrame with columns
    Label and Text. Quoting is off: a message that starts with a quote would otherwise swallow
    the lines after it up to the next quote, and messages such as "NA" stay text, not NaN."""
    return pd.read_csv(path, sep="\t", header=None, names=["Label", "Text"], quoting=csv.QUOTE_NONE,
                       dtype=str, keep_default_na=False)


def create_balanced_dataset(df, seed=123):
    """As many ham messages (drawn at random) as there are spam messages, plus all the spam."""
    if "Label" not in df:
        raise ValueError(f"df has no Label column (columns: {', '.join(map(str, df.columns)) or 'none'}); "
                         "read the data with read_sms_spam, which names its columns Label and Text")
    spam, ham = df[df["Label"] == "spam"], df[df["Label"] == "ham"]
    if len(spam) == 0:
        found = ", ".join(map(repr, sorted(map(str, df["Label"].unique()))[:5]))
        raise ValueError(f"df has no rows labelled 'spam' (Label values: {found or 'none'}), so there is "
                         "nothing to balance; balance before mapping labels to 0/1")
    if len(ham) < len(spam):
        raise ValueError(f"df has fewer 'ham' rows ({len(ham)}) than 'spam' rows ({len(spam)}); "
                         "undersampling ham cannot balance it")
    return pd.concat([ham.sample(len(spam), random_state=seed), spam])


# ---- ch06_classification.ipynb, cell 134 ----
from helpers.support.files import write_atomically
from helpers.text import _is_real


def _check_fraction(name, value):
    if not (_is_real(value) and 0 <= value <= 1):
        raise ValueError(f"{name}={value!r} must be a fraction between 0 and 1 (the book: train_frac=0.7, "
                         "validation_frac=0.1; the test set gets the rest)")


def random_split(df, train_frac, validation_frac, seed=123):
    """Shuffle `df` (reproducibly) and cut it into train / validation / test parts; the test
    part gets what is left after the first two fractions (rounded down)."""
    _check_fraction("train_frac", train_frac)
    _check_fraction("validation_frac", validation_frac)
    if train_frac + validation_frac > 1:
        raise ValueError(f"train_frac + validation_frac = {train_frac + validation_frac:g} exceeds 1, which "
                         "leaves a negative share for the test set; make them add up to at most 1")
    df = df.sample(frac=1, random_state=seed).reset_index(drop=True)
    train_end = int(len(df) * train_frac)
    validation_end = train_end + int(len(df) * validation_frac)
    return df[:train_end], df[train_end:validation_end], df[validation_end:]


def prepare_spam_data(data_dir=None, out_dir=None, seed=123, train_frac=0.7, validation_frac=0.1):
    """Section 6.2 in one call: fetch the collection, balance it, label ham 0 / spam 1, split it
    and write train.csv, validation.csv and test.csv (columns Label, Text) into `out_dir`
    (default: the course cache's sms_spam_collection folder). Returns {split name: path}."""
    df = read_sms_spam(fetch(SMS_SPAM_FILE, data_dir))
    balanced = create_balanced_dataset(df, seed=seed)
    balanced["Label"] = balanced["Label"].map(SMS_LABELS)
    out_dir = Path(out_dir) if out_dir is not None else cache_dir(data_dir) / "sms_spam_collection"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, part in zip(("train", "validation", "test"),
                          random_split(balanced, train_frac, validation_frac, seed=seed)):
        # a reader never sees a half-written split
        paths[name] = write_atomically(out_dir / f"{name}.csv", lambda f: part.to_csv(f, index=False), mode="w")
    return paths


# ---- ch06_classification.ipynb, cell 138 ----
from functools import partial

import torch
from torch.utils.data import Dataset

from helpers.text import _encode_takes, _is_count


def _message_encoder(tokenizer):
    """tokenizer.encode for messages (asked once per dataset or message, not once per text)."""
    # tiktoken: a message that happens to contain "<|endoftext|>" is plain text, not the special
    # token, so the pad ID 50256 never occurs inside a real message. Tokenizers without that
    # argument (chapter 2's SimpleTokenizerV2, as in the book) encode the text as it is.
    if _encode_takes(tokenizer, "disallowed_special"):
        return partial(tokenizer.encode, disallowed_special=())
    return tokenizer.encode


def _check_max_length(max_length):
    if max_length is not None and not _is_count(max_length, 1):
        raise ValueError(f"max_length={max_length!r} must be a positive number of tokens (or None: "
                         "the longest message); pass the training set's, e.g. train_dataset.max_length")


def _check_pad_token_id(pad_token_id):
    if not _is_count(pad_token_id, 0):  # -1 would index the last embedding row, 1.5 fail in torch.tensor
        raise ValueError(f"pad_token_id={pad_token_id!r} must be a token ID, a whole number >= 0 "
                         "(the book's: 50256, <|endoftext|>)")


class SpamDataset(Dataset):
    """Labelled messages from a CSV (columns Text, Label) as equal-length token ID tensors.

    Every message is padded with `pad_token_id` on the right to `max_length` tokens: by default
    the longest message of this file (use the training set's value for validation and test
    sets); longer messages are cut to `max_length`. Items are (token IDs, label), or
    (token IDs, label, length) with `return_lengths=True`, where length counts the real tokens
    (so a model can read the last real one rather than the last padding position). With
    `context_length` (the model's), messages are cut to fit it and a `max_length` beyond it is
    refused. An empty message raises ValueError naming its row: it has no token to classify; so
    does a label that is not a class number yet ("spam"), and a CSV without a Text or Label column.
    """

    def __init__(self, csv_file, tokenizer, max_length=None, pad_token_id=50256, *,
                 return_lengths=False, context_length=None):
        _check_max_length(max_length)
        _check_pad_token_id(pad_token_id)
        if context_length is not None and not _is_count(context_length, 1):
            raise ValueError(f"context_length={context_length!r} must be a whole number >= 1 "
                             f"(the model's, model.cfg['context_length']) or None")
        name = Path(csv_file).name if isinstance(csv_file, (str, os.PathLike)) else "the CSV"  # or a file object
        self.data = pd.read_csv(csv_file, dtype={"Text": str}, keep_default_na=False)
        _check_columns(self.data, name)
        encode = _message_encoder(tokenizer)
        self.encoded_texts = [encode(text) for text in self.data["Text"]]
        empty = [i for i, ids in enumerate(self.encoded_texts) if not ids]
        if empty:
            raise ValueError(f"{name}: row {empty[0]} (0-based, after the header) is an "
                             f"empty message, which has no token to classify; drop such rows first")
        if max_length is None:
            max_length = self._longest_encoded_length()
            if context_length is not None:
                max_length = min(max_length, context_length)
        elif context_length is not None and max_length > context_length:
            raise ValueError(f"max_length={max_length} exceeds the model's context length of "
                             f"{context_length}; use max_length={context_length} or less")
        self.max_length = max_length
        self.encoded_texts = [ids[:max_length] for ids in self.encoded_texts]
        self.lengths = [len(ids) for ids in self.encoded_texts]
        self.encoded_texts = [ids + [pad_token_id] * (max_length - len(ids)) for ids in self.encoded_texts]
        self.return_lengths = return_lengths

    def __getitem__(self, index):
        item = (torch.tensor(self.encoded_texts[index]), torch.tensor(int(self.data.iloc[index]["Label"])))
        return item + (torch.tensor(self.lengths[index]),) if self.return_lengths else item

    def __len__(self):
        return len(self.data)

    def _longest_encoded_length(self):
        """The book's helper: the most tokens of any message (after __init__, padded: max_length)."""
        return max((len(ids) for ids in self.encoded_texts), default=0)


def _check_columns(data, name):
    """A clear error for a CSV (called `name`) that SpamDataset cannot use, before any message is encoded."""
    missing = [column for column in ("Text", "Label") if column not in data.columns]
    if missing:
        raise ValueError(f"{name} has no {' or '.join(missing)} column (its columns: {', '.join(map(str, data.columns))}); "
                         f"SpamDataset reads a CSV with the columns Text and Label, as 6.2 writes them")
    if data.empty:  # every later step would fail far from the cause (no batches, max_length 0)
        raise ValueError(f"{name} has a header but no messages; SpamDataset needs at least one labelled row")
    labels = pd.to_numeric(data["Label"], errors="coerce")
    bad = [i for i, label in enumerate(labels) if not (math.isfinite(label) and label >= 0 and label == int(label))]
    if bad:
        raise ValueError(f"{name}: row {bad[0]} (0-based, after the header) has the label {str(data['Label'].iloc[bad[0]])!r}, "
                         f"not a class number; map the labels to 0, 1, ... first (SMS_LABELS: {SMS_LABELS})")


# ---- ch06_classification.ipynb, cell 141 ----
import itertools

from helpers.training import _check_eval_iter, _check_loaders, _check_optimizer_holds


def _split_batch(batch):
    """(inputs, targets, lengths or None) from a loader batch of 2 or 3 tensors."""
    input_batch, target_batch, *rest = batch
    return input_batch, target_batch, (rest[0] if rest else None)


def last_token_logits(logits, lengths=None):
    """The logits (batch, classes) of the position that classifies each row: the last one, or,
    given `lengths` (real tokens per row), the last real token of each row."""
    if lengths is None:
        return logits[:, -1, :]
    if lengths.numel() and (lengths.min() < 1 or lengths.max() > logits.shape[1]):
        raise ValueError(f"lengths must be in [1, {logits.shape[1]}] (real tokens per row); "
                         f"got [{lengths.min().item()}, {lengths.max().item()}]")
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, lengths.to(logits.device) - 1, :]


def _model_vocab_size(model):
    """The model's vocabulary size (its token embedding's rows, else its cfg's); None if it says neither."""
    tok_emb = getattr(model, "tok_emb", None)
    if isinstance(tok_emb, nn.Embedding):
        return tok_emb.num_embeddings
    cfg = getattr(model, "cfg", None)
    return cfg.get("vocab_size") if isinstance(cfg, dict) else None


def _check_has_head(model, logits):
    # without a head, labels 0 and 1 are read as token IDs: the loss and accuracy come out as
    # numbers (accuracy near 0 %) and nothing says why
    if logits.shape[-1] == _model_vocab_size(model):
        raise ValueError(f"the model gives {logits.shape[-1]:,} scores per token, one per vocabulary entry, not one "
                         f"per class: give it a classification head first (add_classification_head(model), "
                         f"section 6.5) and finetune it")


def _check_count(name, value, minimum, hint=""):
    if not _is_count(value, minimum):
        raise ValueError(f"{name}={value!r} must be a whole number >= {minimum}{hint}")


def _check_loader(data_loader, num_batches):
    _check_loaders(data_loader=data_loader)
    if num_batches is not None:
        _check_count("num_batches", num_batches, 1, " (or None: every batch)")


def calc_accuracy_loader(data_loader, model, device, num_batches=None):
    """Share of correctly classified examples in the first `num_batches` batches (all when None).
    Puts the model in eval mode. Reads the last real token when the loader yields lengths."""
    _check_loader(data_loader, num_batches)
    model.eval()
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    correct = seen = 0
    for batch in itertools.islice(data_loader, num_batches):
        input_batch, target_batch, lengths = _split_batch(batch)
        with torch.no_grad():
            logits = model(input_batch.to(device))
        _check_has_head(model, logits)
        predicted = last_token_logits(logits, lengths).argmax(dim=-1)
        seen += predicted.shape[0]
        correct += (predicted == target_batch.to(device)).sum().item()
    return correct / seen


def calc_loss_batch(input_batch, target_batch, model, device, lengths=None):
    """Cross-entropy of the class logits at the last (or, given lengths, last real) token."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)
    _check_has_head(model, logits)
    logits = last_token_logits(logits, lengths)
    _check_labels(target_batch, logits.shape[-1])
    return torch.nn.functional.cross_entropy(logits, target_batch)


def _check_labels(target_batch, num_classes):
    # out of range, cross_entropy says "Target 2 is out of bounds" on the CPU; on a GPU a
    # device-side assert ends the whole CUDA session
    bad = (target_batch < 0) | (target_batch >= num_classes)
    if bad.any():
        raise ValueError(f"label {target_batch[bad][0].item()} is not a class of the model's head, which has "
                         f"{num_classes} (0 to {num_classes - 1}); map the labels to those, or give the model "
                         f"a head with more: add_classification_head(model, num_classes=...)")


def calc_loss_loader(data_loader, model, device, num_batches=None):
    """Average `calc_loss_batch` over the first `num_batches` batches (all when None)."""
    _check_loader(data_loader, num_batches)
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    losses = [calc_loss_batch(x, y, model, device, lengths).item()
              for x, y, lengths in map(_split_batch, itertools.islice(data_loader, num_batches))]
    return sum(losses) / num_batches


# ---- ch06_classification.ipynb, cell 142 ----
import time

from tqdm.auto import tqdm


def evaluate_model(model, train_loader, val_loader, device, eval_iter):
    """(train loss, validation loss) over `eval_iter` batches each, in eval mode, no gradients;
    the model is back in training mode afterwards, also when a loader fails."""
    _check_eval_iter(eval_iter)  # chapter 5's check and message
    model.eval()
    try:
        with torch.no_grad():
            losses = [calc_loss_loader(loader, model, device, num_batches=eval_iter) for loader in (train_loader, val_loader)]
    finally:
        model.train()
    return tuple(losses)


def _check_optimizer_trains_head(model, optimizer):
    """Refuse an optimizer made for another model, or made before the head was swapped in: the
    new head would stay random, and the accuracy near chance would not say why."""
    _check_optimizer_holds(model, optimizer)  # chapter 5's check and message
    head = getattr(model, "out_head", None)
    trainable = [p for p in head.parameters() if p.requires_grad] if isinstance(head, nn.Module) else []
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if trainable and not any(id(p) in held for p in trainable):
        raise ValueError("the optimizer holds none of the model's out_head: it was made before the head was "
                         "replaced (add_classification_head), so the new head would not train; create the "
                         "optimizer again after the head is added")


def train_classifier_simple(model, train_loader, val_loader, optimizer, device, num_epochs,
                            eval_freq, eval_iter, *, progress=True):
    """Finetune a classifier; returns (train_losses, val_losses, train_accs, val_accs, examples_seen).

    Every `eval_freq` steps the loss on `eval_iter` batches of each loader is recorded and
    printed; after each epoch, the accuracy on `eval_iter` batches of each. `examples_seen` is
    the number of training examples processed. Loaders that yield lengths (SpamDataset with
    return_lengths=True) train on the last real token of each message.
    """
    _check_count("num_epochs", num_epochs, 0)
    _check_count("eval_freq", eval_freq, 1)
    _check_eval_iter(eval_iter)  # None: every batch, as num_batches=None in the book's loaders
    # an empty loader is found before the first step, not at the first evaluation
    _check_loaders(num_epochs, train_loader=train_loader, val_loader=val_loader)
    _check_optimizer_trains_head(model, optimizer)
    train_losses, val_losses, train_accs, val_accs = [], [], [], []
    examples_seen, global_step = 0, -1
    bar = tqdm(total=num_epochs * len(train_loader), desc="finetuning", unit="step", disable=not progress)
    t0 = time.perf_counter()
    try:
        for epoch in range(num_epochs):
            model.train()
            for batch in train_loader:
                input_batch, target_batch, lengths = _split_batch(batch)
                optimizer.zero_grad(set_to_none=True)
                loss = calc_loss_batch(input_batch, target_batch, model, device, lengths)
                loss.backward()
                optimizer.step()
                examples_seen += input_batch.shape[0]
                global_step += 1
                bar.update(1)
                if global_step % eval_freq == 0:
                    train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                    train_losses.append(train_loss)
                    val_losses.append(val_loss)
                    bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
                    bar.write(f"Ep {epoch + 1} (Step {global_step:06d}): "
                              f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
            train_accs.append(calc_accuracy_loader(train_loader, model, device, num_batches=eval_iter))
            val_accs.append(calc_accuracy_loader(val_loader, model, device, num_batches=eval_iter))
            bar.write(f"Ep {epoch + 1}: training accuracy {train_accs[-1] * 100:.2f}% | "
                      f"validation accuracy {val_accs[-1] * 100:.2f}%")
    finally:
        bar.close()
    print(f"{global_step + 1} steps, {examples_seen:,} examples in {time.perf_counter() - t0:.1f} s")
    return train_losses, val_losses, train_accs, val_accs, examples_seen


def plot_values(epochs_seen, examples_seen, train_values, val_values, label="loss", *, show=True):
    """Training and validation `label` against epochs (bottom axis) and examples seen (top).
    Shown at once, as in the book (which also saves <label>-plot.pdf); `show=False` returns the
    figure instead, to change or save it (Jupyter's inline backend still draws it at the cell's end)."""
    import matplotlib.pyplot as plt

    fig, ax1 = plt.subplots(figsize=(5.5, 3.2))
    ax1.plot(epochs_seen, train_values, label=f"training {label}")
    ax1.plot(epochs_seen, val_values, linestyle="-.", label=f"validation {label}")
    ax1.set_xlabel("epochs")
    ax1.set_ylabel(label)
    ax1.legend()
    ax2 = ax1.twiny()  # a second x axis on top, sharing the y axis
    ax2.plot(examples_seen, train_values, alpha=0)  # invisible: only aligns the tick labels
    ax2.set_xlabel("examples seen")
    fig.tight_layout()
    if not show:
        return fig
    plt.show()


# ---- ch06_classification.ipynb, cell 146 ----
from helpers.generation import _model_context_length


def _message_logits(text, model, tokenizer, device, max_length, pad_token_id, last_real_token):
    _check_max_length(max_length)
    _check_pad_token_id(pad_token_id)
    ids = _message_encoder(tokenizer)(text)
    if not ids:
        raise ValueError("empty message: there is no token to classify")
    context_length = _model_context_length(model)  # None: a model that takes any length
    if max_length is not None and context_length is not None and max_length > context_length:
        raise ValueError(f"max_length={max_length} exceeds the model's context length of "
                         f"{context_length}; use max_length={context_length} or less")
    ids = ids[:context_length if max_length is None else max_length]  # too long: cut, as in training (None: no cut)
    length = len(ids)
    if max_length is not None:  # pad as the training messages were
        ids = ids + [pad_token_id] * (max_length - length)
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=device))
    _check_has_head(model, logits)
    classes = logits.shape[-1]
    if classes != len(SMS_LABELS):
        raise ValueError(f"the model's head has {classes} classes, but this reads the {len(SMS_LABELS)} of SMS_LABELS "
                         f"{SMS_LABELS}; for other classes take last_token_logits(model(ids)).argmax(-1)")
    lengths = torch.tensor([length]) if last_real_token else None
    return last_token_logits(logits, lengths)[0]


def classify_review(text, model, tokenizer, device, max_length=None, pad_token_id=50256, *,
                    last_real_token=False):
    """"spam" or "not spam" for one message (the book's name; it also classified reviews).

    With `max_length` (the training set's) the message is padded or cut to it, as in training;
    without, it is only cut to the model's context. `last_real_token=True` reads the class from
    the message's last real token instead of the last (possibly padding) position.
    """
    logits = _message_logits(text, model, tokenizer, device, max_length, pad_token_id, last_real_token)
    return "spam" if logits.argmax().item() == SMS_LABELS["spam"] else "not spam"


def spam_probability(text, model, tokenizer, device, max_length=None, pad_token_id=50256, *,
                     last_real_token=False):
    """The classifier's probability (softmax over the two classes) that `text` is spam."""
    logits = _message_logits(text, model, tokenizer, device, max_length, pad_token_id, last_real_token)
    return torch.softmax(logits, dim=-1)[SMS_LABELS["spam"]].item()


# ---- ch06_classification.ipynb, cell 147 ----
import torch.nn as nn


def add_classification_head(model, num_classes=2, trainable_blocks=1):
    """Turn a pretrained GPTModel into a classifier, in place (section 6.5); returns it.

    Freezes every parameter, replaces `out_head` with a fresh Linear(emb_dim, num_classes)
    (trainable, like any new layer), and unfreezes the last `trainable_blocks` transformer
    blocks and the final LayerNorm. The model then gives (batch, tokens, num_classes) logits.
    """
    _check_count("num_classes", num_classes, 2)
    _check_count("trainable_blocks", trainable_blocks, 0)
    if trainable_blocks > len(model.trf_blocks):  # a negative slice start would train fewer, silently
        raise ValueError(f"trainable_blocks={trainable_blocks} exceeds the model's {len(model.trf_blocks)} "
                         f"transformer blocks; pass {len(model.trf_blocks)} to train them all")
    for param in model.parameters():
        param.requires_grad = False
    old = model.out_head
    model.out_head = nn.Linear(old.in_features, num_classes).to(old.weight.device, old.weight.dtype)
    for block in list(model.trf_blocks)[len(model.trf_blocks) - trainable_blocks:]:
        for param in block.parameters():
            param.requires_grad = True
    for param in model.final_norm.parameters():
        param.requires_grad = True
    return model
