"""instruction: generated from ch07_instruction.ipynb. DO NOT EDIT.

Edit the notebook cells that start with `#| export instruction` and run `make export`.
"""
__all__ = ['PREAMBLE', 'RESPONSE_HEADER', 'format_input', 'format_example', 'load_instruction_data', 'split_instruction_data', 'download_and_load_file', 'custom_collate_draft_1', 'custom_collate_draft_2', 'custom_collate_fn', 'InstructionDataset', 'extract_response', 'generate_response', 'generate_responses', 'save_responses', 'OLLAMA_DEFAULT_PORT', 'JudgeUnavailable', 'ollama_base_url', 'ollama_status', 'query_ollama', 'parse_score', 'judge_prompt', 'score_responses', 'generate_model_scores', 'query_model', 'check_if_running', 'LoopbackOllama']


# ---- ch07_instruction.ipynb, cell 11 ----
import json
import math
import random
import re
from pathlib import Path

import torch
from torch.utils.data import Dataset

from helpers.support.data import fetch

PREAMBLE = ("Below is an instruction that describes a task. "
            "Write a response that appropriately completes the request.")
RESPONSE_HEADER = "\n\n### Response:\n"


def format_input(entry):
    """The Alpaca-style prompt for one entry: preamble, instruction, and an input block only
    when the entry's input is non-empty. The response block is left to the model."""
    text = f"{PREAMBLE}\n\n### Instruction:\n{entry['instruction']}"
    if entry.get("input"):
        text += f"\n\n### Input:\n{entry['input']}"
    return text


def format_example(entry):
    """A whole training example: the prompt, the response header and the reference output."""
    return format_input(entry) + RESPONSE_HEADER + entry["output"]


def load_instruction_data(data_dir=None):
    """The 1,100 entries of instruction-data.json, through the course's download cache."""
    return json.loads(fetch("instruction-data.json", data_dir).read_text(encoding="utf-8"))


# ---- ch07_instruction.ipynb, cell 17 ----
def split_instruction_data(data, seed=123, train_frac=0.85, test_frac=0.10):
    """Shuffle a copy of `data` with `seed` and cut it into (train, test, validation):
    `train_frac` and `test_frac` of the entries (rounded down), validation the rest."""
    if not (0 < train_frac and 0 <= test_frac and train_frac + test_frac <= 1):
        raise ValueError(f"need 0 < train_frac, 0 <= test_frac, sum <= 1; got {train_frac}, {test_frac}")
    _refuse_one_entry(data, "data")
    shuffled = list(data)
    random.Random(seed).shuffle(shuffled)
    n_train = math.floor(len(shuffled) * train_frac + 1e-9)  # 100 * 0.29 is 28.999999999999996: 28 without the nudge
    n_test = math.floor(len(shuffled) * test_frac + 1e-9)
    return shuffled[:n_train], shuffled[n_train:n_train + n_test], shuffled[n_train + n_test:]


def _refuse_one_entry(entries, name):
    """A dict where a list of entries belongs: list() would make its keys the entries."""
    if isinstance(entries, dict):
        raise TypeError(f"{name} is one entry (a dict): pass a list of entries, e.g. [entry]")


# ---- ch07_instruction.ipynb, cell 101 ----
from helpers.support.download import download_file


def download_and_load_file(file_path, url):
    """The JSON list in `file_path`, downloaded from `url` first when the file is missing (the
    book's signature). The download goes to a temporary file that is renamed only when it is
    complete (with retries), so an interrupted one never leaves a truncated file behind."""
    path = Path(file_path)
    if not path.exists():
        download_file(url, path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:  # a binary or otherwise damaged file too
        raise ValueError(f"{path} is not valid JSON ({e}); delete it and run again to download it "
                         f"anew from {url}") from None


# ---- ch07_instruction.ipynb, cell 103 ----
def _padded_rows(batch, pad_token_id):
    """Each item plus one end-of-text, padded to the batch's longest + 1: an int64 tensor."""
    if len(batch) == 0:
        raise ValueError("batch is empty: a collate function needs at least one example")
    longest = max(len(item) for item in batch) + 1
    return torch.stack([torch.tensor(list(item) + [pad_token_id] * (longest - len(item)), dtype=torch.int64)
                        for item in batch])


def custom_collate_draft_1(batch, pad_token_id=50256, device="cpu"):
    """The book's first draft: the padded inputs only, shape (batch, longest)."""
    return _padded_rows(batch, pad_token_id)[:, :-1].to(device)


def custom_collate_draft_2(batch, pad_token_id=50256, device="cpu"):
    """The book's second draft: (inputs, targets), the targets shifted by one; every padding
    position is still a target (`custom_collate_fn` ignores all but the first)."""
    rows = _padded_rows(batch, pad_token_id)
    return rows[:, :-1].to(device), rows[:, 1:].to(device)


# ---- ch07_instruction.ipynb, cell 105 ----
import math
import numbers
import operator

from helpers.model import _is_count


def custom_collate_fn(batch, pad_token_id=50256, ignore_index=-100, allowed_max_length=None, device="cpu"):
    """Pad a batch of token-ID lists to its longest sequence + 1; return (inputs, targets),
    int64 tensors of shape (batch, longest) on `device`.

    targets are the inputs shifted by one; the first pad token after each sequence stays a
    target (the model learns to emit end-of-text), later pads become `ignore_index`. An item
    given as `(token_ids, prompt_length)` also has the targets that are prompt tokens set to
    `ignore_index`. With `allowed_max_length`, both tensors are cut to that many positions.
    """
    if len(batch) == 0:
        raise ValueError("batch is empty: a collate function needs at least one example")
    if allowed_max_length is not None and not _is_count(allowed_max_length, 1):
        raise ValueError(f"allowed_max_length must be a positive number of tokens (the model's context "
                         f"length, e.g. 1024) or None; got {allowed_max_length!r}")
    if not (_is_count(pad_token_id, 0) and _is_count(ignore_index, -math.inf)):  # 1.5 would pad with token 1
        raise ValueError(f"pad_token_id must be a token ID >= 0 (50256: <|endoftext|>) and ignore_index a whole "
                         f"number (-100: what cross_entropy skips); got {pad_token_id!r} and {ignore_index!r}")
    items = [_collate_item(item, i) for i, item in enumerate(batch)]
    longest = max(len(ids) for ids, _ in items) + 1
    inputs, targets = [], []
    for ids, prompt_length in items:
        padded = torch.tensor(ids + [pad_token_id] * (longest - len(ids)), dtype=torch.int64)
        target = padded[1:].clone()
        target[max(len(ids), 1):] = ignore_index  # an empty item keeps one end-of-text target, as in the book
        # target[i] is token i + 1, so the prompt's tokens 1 .. prompt_length - 1 sit at 0 .. prompt_length - 2
        target[:max(prompt_length - 1, 0)] = ignore_index
        inputs.append(padded[:-1])
        targets.append(target)
    inputs, targets = torch.stack(inputs), torch.stack(targets)
    if allowed_max_length is not None:
        inputs, targets = inputs[:, :allowed_max_length], targets[:, :allowed_max_length]
    return inputs.to(device), targets.to(device)


def _collate_item(item, i):
    """(token IDs, prompt length) of batch item `i`: a list of IDs, or a (token_ids, prompt_length) pair."""
    if not isinstance(item, tuple):
        return list(item), 0
    if len(item) != 2 or isinstance(item[0], numbers.Integral):
        kinds = ", ".join(type(x).__name__ for x in item[:3]) + (", ..." if len(item) > 3 else "")
        raise ValueError(f"batch item {i} is a tuple of {len(item)} ({kinds}); it must be (token_ids, prompt_length), "
                         f"the IDs first, as InstructionDataset(mask_prompt=True) yields them")
    try:  # operator.index: any integer type (NumPy's, a 0-d tensor's), never a float
        prompt_length = operator.index(item[1])
    except TypeError:
        prompt_length = -1
    if not 0 <= prompt_length <= len(item[0]):  # -2 would unmask all but the last two targets; 99 mask the answer
        raise ValueError(f"batch item {i}'s prompt length is {item[1]!r:.40}; it must be a whole number from 0 to "
                         f"the item's {len(item[0])} tokens, the count of leading prompt tokens the loss ignores")
    return list(item[0]), prompt_length


# ---- ch07_instruction.ipynb, cell 108 ----
class InstructionDataset(Dataset):
    """Pre-tokenized instruction examples.

    Item i is the token-ID list of `format_example(data[i])` encoded as one text (as the book's
    class does), or, with `mask_prompt=True`, the pair (token IDs, prompt length) that makes
    `custom_collate_fn` ignore the prompt in the loss. `prompt_lengths[i]` counts the leading IDs
    that are exactly those of `format_input(data[i])` alone: all of them, unless the prompt ends in
    a line break that BPE merges with the response header's (that token then counts as the answer's).
    """

    def __init__(self, data, tokenizer, mask_prompt=False):
        _refuse_one_entry(data, "data")
        self.data = list(data)
        self.mask_prompt = mask_prompt
        self.encoded_texts, self.prompt_lengths = [], []
        for i, entry in enumerate(self.data):
            _check_entry(entry, f"example {i}", ("instruction", "output"))
            ids = _encode_text(tokenizer, format_example(entry), f"example {i}")
            prompt = _encode_text(tokenizer, format_input(entry), f"example {i}")
            shared = next((k for k, (a, b) in enumerate(zip(ids, prompt)) if a != b), min(len(ids), len(prompt)))
            self.encoded_texts.append(ids)
            self.prompt_lengths.append(shared)

    def __getitem__(self, index):
        if self.mask_prompt:
            return self.encoded_texts[index], self.prompt_lengths[index]
        return self.encoded_texts[index]

    def __len__(self):
        return len(self.data)


def _encode_text(tokenizer, text, name):
    """`tokenizer.encode(text)`; text holding a special token's text raises ValueError naming `name`."""
    try:
        return tokenizer.encode(text)
    except ValueError as e:  # tiktoken's message suggests an argument the caller does not take
        if "disallowed special token" not in str(e):
            raise
        raise ValueError(f"{name} holds the text of a special token such as '<|endoftext|>', which "
                         f"tiktoken refuses inside ordinary text; remove it from {name}") from e


def _check_entry(entry, name, keys=("instruction",)):
    """Refuse, naming it, an entry that is not a dict with `keys` (the book's code raises a bare
    KeyError: 'output', or TypeError: string indices must be integers, without saying which)."""
    if isinstance(entry, (str, bytes)) or not all(hasattr(entry, a) for a in ("get", "__getitem__", "__contains__")):
        raise TypeError(f"{name} is a {type(entry).__name__}, not a dict with the keys 'instruction', "
                        f"'input' (may be empty) and 'output', as in instruction-data.json")
    missing = [key for key in keys if key not in entry]
    if missing:
        raise ValueError(f"{name} has no {' or '.join(map(repr, missing))} (its keys: {', '.join(map(repr, entry.keys() if hasattr(entry, 'keys') else entry)) or 'none'}); "
                         f"an entry needs 'instruction', may have 'input', and needs 'output' to train on")
    # None or 5 would otherwise become the words "None" or "5" in the prompt, or a bare TypeError
    not_text = [key for key in keys if not isinstance(entry[key], str)]
    not_text += ["input"] if entry.get("input") is not None and not isinstance(entry.get("input"), str) else []
    if not_text:
        value = entry[not_text[0]]
        nan = isinstance(value, float) and math.isnan(value)  # how pandas reads an empty cell
        raise TypeError(f"{name}'s {not_text[0]!r} is a {type(value).__name__}{' (NaN)' if nan else ''}, not text: "
                        f"'instruction' and 'output' must be str, 'input' a str or missing"
                        + ("; for a DataFrame with empty cells, df.fillna('') first" if nan else ""))


# ---- ch07_instruction.ipynb, cell 112 ----
import os
import warnings

from tqdm.auto import tqdm

from helpers.generation import _as_number, _model_context_length, eval_mode, generate


def extract_response(generated_text):
    """The answer in the text a model generated after the prompt: without the leading response
    header, and cut where the model starts another example instead of stopping."""
    text = generated_text.strip()
    if text.startswith(RESPONSE_HEADER.strip()):
        text = text[len(RESPONSE_HEADER.strip()):]
    for marker in ("### Instruction:", PREAMBLE[:30]):
        text = text.split(marker, 1)[0]
    return text.strip()


def _context_size(model, context_size):
    """`context_size`, checked, or the model's own context length for None."""
    model_context = _model_context_length(model)  # None: a model of the reader's own that says neither
    context_size = _as_number(context_size)  # torch.tensor(256) too, as generate takes it
    if context_size is None:
        if model_context is None:
            raise ValueError("this model has no cfg or position embedding to read its context length from: "
                             "pass context_size")
        return model_context
    if not _is_count(context_size, 1):  # 0 would quietly mean "all of it", -3 "drop the first 3 tokens"
        raise ValueError(f"context_size={context_size!r} must be a whole number >= 1 (or None: the model's)")
    if model_context is not None and context_size > model_context:  # positions the model has no embedding for
        raise ValueError(f"context_size={context_size} is more than the model's context length, {model_context}; "
                         f"pass context_size=None to use the model's")
    return int(context_size)


def _prompt_ids(tokenizer, entry, name="the entry"):
    """The token IDs of the entry's prompt; a bad entry raises, naming `name`."""
    _check_entry(entry, name)
    return _encode_text(tokenizer, format_input(entry), name)


def _answer(model, tokenizer, prompt, device, max_new_tokens, context_size, eos_id=50256):
    """(the answer to the prompt's token IDs, how many of them did not fit in the context and
    were dropped); `context_size` is already checked (`_context_size`)."""
    dropped, prompt = max(0, len(prompt) - context_size), prompt[-context_size:]
    with eval_mode(model):
        out = generate(model, torch.tensor([prompt], device=device), max_new_tokens, context_size, eos_id=eos_id)
    return extract_response(tokenizer.decode(out[0, len(prompt):].tolist())), dropped


def generate_response(model, tokenizer, entry, device="cpu", max_new_tokens=256, context_size=None,
                      eos_id=50256):
    """The model's answer to one entry (greedy, KV cache, stops at `eos_id`). A prompt longer
    than `context_size` tokens keeps its last ones, with a warning."""
    context_size = _context_size(model, context_size)
    prompt = _prompt_ids(tokenizer, entry)
    answer, dropped = _answer(model, tokenizer, prompt, device, max_new_tokens, context_size, eos_id)
    if dropped:
        warnings.warn(f"the prompt did not fit in context_size: its first {dropped} tokens were dropped",
                      stacklevel=2)
    return answer


# ---- ch07_instruction.ipynb, cell 114 ----
import hashlib
import time

from helpers.support.files import check_writable, write_atomically, write_atomically_together
from helpers.text import _is_real


def generate_responses(model, tokenizer, entries, device="cpu", max_new_tokens=256, context_size=None,
                       progress=True, path=None, key="model_response", save_every_s=10.0):
    """`generate_response` for every entry, with a progress bar; returns the list of answers.

    With `path`, the answers so far are saved there (the JSON list `save_responses` writes) every
    `save_every_s` seconds and whenever generation stops, by an error or Ctrl-C alike, so no
    finished answer is lost; called again with the same entries and path, it reuses the saved
    answers and generates only the rest. Beside the file, `<path>.model` holds a fingerprint of
    the model's weights and of `max_new_tokens` and `context_size`, so a file answered by another
    model or with other settings is refused (ValueError) instead of mixed in. The fingerprint
    samples the weights, so a change confined to unsampled values goes unnoticed; a file without
    one (from `save_responses` or an older version) is trusted and resumed, and gets this
    model's fingerprint when new answers are saved. An entry holding the text
    of a special token raises ValueError naming the entry; prompts too long for the context
    lose their first tokens, listed in one warning at the end.
    """
    _refuse_one_entry(entries, "entries")
    _check_answer_key(key)
    entries = list(entries)
    # every entry checked before the first answer: a bad one found at the end would cost all before it
    prompts = [_prompt_ids(tokenizer, entry, f"entry {i}") for i, entry in enumerate(entries)]
    max_new_tokens = _as_number(max_new_tokens)  # so torch.tensor(256) and 256 fingerprint alike
    if not _is_count(max_new_tokens, 0):
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a whole number >= 0")
    if not ((_is_real(save_every_s) or save_every_s == math.inf) and save_every_s >= 0):  # inf: at the end only
        raise ValueError(f"save_every_s={save_every_s!r} must be a number of seconds >= 0")
    context_size = _context_size(model, context_size)  # None and the model's own length then hash alike
    answers, fingerprint = [], None
    if path is not None:
        check_writable(path, "the answers to")  # a read-only folder fails now, not after the first answers
        fingerprint = _model_fingerprint(model, max_new_tokens, context_size)
        answers = _saved_answers(path, entries, key, fingerprint)
    if answers:
        print(f"reusing the {len(answers)} answers saved in {path}; generating the other {len(entries) - len(answers)}")
    cut, saved_at, done = [], time.monotonic(), len(answers)

    def save():  # the answers so far, when some are new since the last save
        nonlocal saved_at, done
        if path is not None and len(answers) > done:
            records = _records(entries[:len(answers)], answers, key)
            write_atomically_together([(path, lambda f: json.dump(records, f, indent=4), "w"),
                                       (_fingerprint_path(path), lambda f: f.write(fingerprint + "\n"), "w")])
            saved_at, done = time.monotonic(), len(answers)

    try:
        for i in tqdm(range(len(answers), len(entries)), initial=len(answers), total=len(entries),
                      desc="responses", unit="entry", disable=not progress):
            answer, dropped = _answer(model, tokenizer, prompts[i], device, max_new_tokens, context_size)
            answers.append(answer)
            cut += [i] if dropped else []
            if time.monotonic() - saved_at >= save_every_s:
                save()
    except BaseException:
        try:
            save()
        except OSError as err:  # e.g. a full disk: say so, then raise what stopped generation
            print(f"stopped after {len(answers)} of {len(entries)} answers, which could not be saved in {path}: {err}")
        else:
            if path is not None and answers:
                print(f"stopped after {len(answers)} of {len(entries)} answers, all saved in {path}; "
                      f"call again with the same entries and path to go on")
        raise
    save()
    if cut:
        warnings.warn(f"{len(cut)} of {len(entries)} prompts did not fit in the context and lost their first "
                      f"tokens: entr{'ies' if len(cut) > 1 else 'y'} {', '.join(map(str, cut[:10]))}{' ...' if len(cut) > 10 else ''}", stacklevel=2)
    return answers


def _model_fingerprint(model, max_new_tokens, context_size):
    """A hash of the generation settings and of every state_dict entry's name, shape, dtype and
    values: all of a tensor's under 2,048 values, else 1,024 to 1,536 evenly spaced ones. A training step that moves whole
    tensors (full finetuning, LoRA's matrices) changes it; it costs milliseconds where hashing
    every weight would take seconds, at the price of missing a change confined to the values
    between the samples."""
    digest = hashlib.sha256(f"max_new_tokens={max_new_tokens} context_size={context_size}".encode())
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):  # extra state some modules keep
            digest.update(f"{name} {value!r}".encode())
            continue
        tensor = value.detach().dequantize() if value.is_quantized else value.detach()
        flat = tensor.flatten()
        sample = flat[::max(1, flat.numel() // 1024)].cpu().double()  # on the CPU: MPS has no float64
        digest.update(f"{name} {tuple(value.shape)} {value.dtype}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:32]


def _fingerprint_path(path):
    return Path(path).with_name(Path(path).name + ".model")


def _saved_answers(path, entries, key, fingerprint=None):
    """The answers in `path` if it holds answers to the first entries of `entries` (from the
    model and settings of `fingerprint`, when the file has one beside it), else an error."""
    path = Path(path)
    if not path.exists():
        return []
    fix = "give another path, or delete the file to answer these entries from scratch"
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a JSON file of saved answers ({e}); {fix}") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) and isinstance(r.get(key), str)
                                                for r in records):
        raise ValueError(f"{path} is not a JSON list of records with a {key!r} answer; {fix}")
    without_key = lambda record: {k: v for k, v in record.items() if k != key}  # noqa: E731
    as_saved = lambda entry: json.loads(json.dumps(without_key(entry)))  # tuples become lists, ...  # noqa: E731
    if len(records) > len(entries) or any(without_key(r) != as_saved(e) for r, e in zip(records, entries)):
        raise ValueError(f"{path} holds answers to other entries than these (its {len(records)} records are "
                         f"not the first of the {len(entries)} given); {fix}")
    saved = _fingerprint_path(path)
    if records and fingerprint is not None and saved.exists() and \
            saved.read_text(encoding="utf-8", errors="replace").strip() != fingerprint:
        raise ValueError(f"{path} holds answers from another model, or from other max_new_tokens or context_size "
                         f"(its fingerprint {saved.name} differs from this call's); {fix}")
    return [r[key] for r in records]


def save_responses(entries, responses, path, key="model_response"):
    """Write one record per entry (its fields plus `key`: the response) as a JSON list; the file
    is replaced atomically (temporary file, fsync, rename). Returns the path. A fingerprint that
    `generate_responses` left beside an earlier file of that name is removed: it described
    other answers."""
    if len(entries) != len(responses):
        raise ValueError(f"{len(entries)} entries but {len(responses)} responses: pass one response per entry")
    _check_answer_key(key)
    records = _records(entries, responses, key)
    path = write_atomically(path, lambda f: json.dump(records, f, indent=4), mode="w")
    _fingerprint_path(path).unlink(missing_ok=True)
    return path


def _records(entries, responses, key):
    return [{**entry, key: response} for entry, response in zip(entries, responses)]


def _check_answer_key(key, name="key"):
    """The model's answers must not go under (or be read from) a field of the entry itself."""
    if key in ("instruction", "input", "output"):
        raise ValueError(f"{name}={key!r} is a field of the entry itself (the reference answer, for 'output'), "
                         f"not the model's answer: pass another key, e.g. 'model_response'")


# ---- ch07_instruction.ipynb, cell 121 ----
import ipaddress
import time
import urllib.parse

import requests

OLLAMA_DEFAULT_PORT = 11434
_HOST_HELP = ("write it like 'localhost:11434', 'http://[::1]:11434' or 'https://example.com/ollama' "
              "(check the host argument or the OLLAMA_HOST environment variable)")


class JudgeUnavailable(RuntimeError):
    """The judge model cannot be used right now; the message says how to fix that."""


def ollama_base_url(host=None):
    """The base URL for an Ollama host given as OLLAMA_HOST accepts it ("localhost:11434",
    "0.0.0.0", "example.com", "https://example.com/ollama", ...); None reads OLLAMA_HOST.

    As in Ollama's clients: no scheme means http with port 11434; an explicit http or https
    scheme without a port means 80 or 443; no host means 127.0.0.1. A bind-all address
    ("0.0.0.0", "::") is what a server listens on, not where a client can connect, so it
    becomes the loopback address. An endpoint at the end (".../api/chat", as the book writes the
    URL) is dropped. Anything else (another scheme, a port that is not a number
    from 1 to 65535, a host name with spaces or other odd characters) raises ValueError.
    """
    host = (os.environ.get("OLLAMA_HOST", "") if host is None else str(host)).strip()
    scheme, sep, rest = host.partition("://")
    if not sep:
        scheme, rest, port = "http", host, OLLAMA_DEFAULT_PORT
    elif scheme.lower() in ("http", "https"):
        scheme = scheme.lower()
        port = {"http": 80, "https": 443}[scheme]
    else:
        raise ValueError(f"Ollama host {host!r}: the scheme must be http:// or https:// (or none); {_HOST_HELP}")
    address, slash, tail = rest.partition("/")
    try:  # a bare IPv6 address ("::", "::1"), as `ollama serve` takes it: a URL needs it in brackets
        if ipaddress.ip_address(address).version == 6:
            rest = f"[{address}]{slash}{tail}"
    except ValueError:  # a name, an IPv4 address, host:port, [v6]:port: urlsplit reads those
        pass
    try:
        parts = urllib.parse.urlsplit(f"{scheme}://{rest}")
        hostname, explicit_port = parts.hostname or "127.0.0.1", parts.port
    except ValueError as e:  # a port that is not a number in 0-65535, an unclosed bracket, ...
        raise ValueError(f"Ollama host {host!r} is not host[:port] ({e}); {_HOST_HELP}") from None
    if explicit_port == 0 or not re.fullmatch(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+(%[\w.-]+)?", hostname):
        raise ValueError(f"Ollama host {host!r} has no usable host name and port; {_HOST_HELP}")
    if hostname in ("0.0.0.0", "::"):
        hostname = "127.0.0.1"
    if ":" in hostname:  # IPv6 literals need brackets in a URL
        hostname = f"[{hostname}]"
    # The book's URL ends in the endpoint (".../api/chat"): the server is what comes before it.
    path = re.sub(r"/api/(?:chat|generate|tags)/?$", "", parts.path).rstrip("/")
    return f"{scheme}://{hostname}:{explicit_port or port}{path}"


# ---- ch07_instruction.ipynb, cell 123 ----
from helpers.text import _is_real


def _clip(text, limit=200):
    """`text` on one line, cut at a word boundary to at most `limit` characters (marked "...")."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut + " ..."


def _same_model(a, b):
    full = lambda name: name if ":" in name else f"{name}:latest"  # noqa: E731
    return full(a) == full(b)


def _server_error(reply, model, base):
    try:
        detail = _clip(reply.json().get("error", ""))
    except (ValueError, AttributeError):  # not JSON, or not a JSON object
        detail = _clip(reply.text)
    if "model" in detail.lower() and "not found" in detail.lower():  # Ollama: model "x" not found, try pulling it
        return (f"The Ollama server at {base} has no model {model!r} ({detail}). "
                f"Pull the model with `ollama pull {model}`.")
    if reply.status_code == 404:  # e.g. "404 page not found": the address is not an Ollama server's root
        return (f"{reply.url} answered HTTP 404 ({detail or 'not found'}): no Ollama API at {base}. Give the "
                f"server's address, e.g. 'localhost:11434' (check the host argument or OLLAMA_HOST).")
    return (f"The Ollama server at {base} answered HTTP {reply.status_code}: {detail or reply.reason}. "
            f"Check the server's log; restarting it (`ollama serve`) often helps.")


_MAX_TIMEOUT_S = 1e6  # 11.6 days


def _check_timeout(timeout, example):
    # checked before any request: the socket refuses NaN and overflows on an infinite timeout, and
    # None (no limit, to requests) would let a stuck judge stall the evaluation for good
    if not (_is_real(timeout) and 0 < timeout <= _MAX_TIMEOUT_S):  # the socket overflows from about 9e9 s
        raise ValueError(f"timeout must be a finite number of seconds > 0, e.g. {example}, at most {_MAX_TIMEOUT_S:g} "
                         f"(None, no limit, is not offered: a stuck judge would never return); got {timeout!r}")


def ollama_status(host, model, timeout=5.0):
    """(ok, message): whether an Ollama server answers at `host` and has `model` pulled."""
    _check_timeout(timeout, 5)
    base = ollama_base_url(host)
    try:
        reply = requests.get(f"{base}/api/tags", timeout=timeout)
        if reply.status_code != 200:
            return False, _server_error(reply, model, base)
        listed = [m.get("name") or m.get("model") or "" for m in reply.json().get("models", [])]
    except requests.Timeout:
        return False, (f"The Ollama server at {base} did not answer within {timeout} s. Is it busy or "
                       f"stuck? Restart it with `ollama serve`.")
    except requests.ConnectionError:
        return False, (f"No Ollama server answers at {base}. Start the server with `ollama serve` "
                       f"(install it from https://ollama.com), or set OLLAMA_HOST to where it runs.")
    except (requests.exceptions.JSONDecodeError, AttributeError, TypeError) as e:  # not JSON, or not Ollama's JSON
        # before RequestException, which requests' JSON error also is
        return False, f"Something answers at {base}, but not like Ollama does ({type(e).__name__}: {_clip(e)})."
    except requests.RequestException as e:
        return False, f"The request to {base} failed: {type(e).__name__}: {_clip(e)}"
    if not any(_same_model(name, model) for name in listed):
        return False, (f"The Ollama server at {base} is running but does not have {model!r}. "
                       f"Pull the model with `ollama pull {model}`.")
    return True, f"Ollama at {base} is up and has {model}."


# ---- ch07_instruction.ipynb, cell 125 ----
def query_ollama(prompt, model="llama3.1:8b", host=None, seed=123, temperature=0.0, num_ctx=2048,
                 timeout=120.0, stream=False):
    """Send one user message to Ollama's /api/chat and return the reply's text.

    temperature 0 and a fixed seed make the reply as repeatable as the server allows. Handles a single JSON reply
    (stream=False) and a streamed one (JSON lines, the last with "done": true). Raises
    JudgeUnavailable, with what to do, when the server is down, lacks the model, fails, or takes
    longer than `timeout` seconds in all.
    """
    _check_timeout(timeout, 120)
    for name, value in (("prompt", prompt), ("model", model)):
        if not isinstance(value, str):  # bytes or a list would fail inside the request, blamed on the server
            raise TypeError(f"{name} must be a str, got {type(value).__name__}: {_clip(repr(value), 60)}")
    if not (_is_real(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0 (0: repeatable replies); got {temperature!r}")
    if not _is_count(num_ctx, 1):
        raise ValueError(f"num_ctx must be a whole number of tokens >= 1, e.g. 2048; got {num_ctx!r}")
    if not _is_count(seed, 0):  # 1.5 or "123" would reach the server, which refuses it or picks a seed itself
        raise ValueError(f"seed must be a whole number >= 0, e.g. 123; got {seed!r}")
    base = ollama_base_url(host)
    payload = {"model": model, "messages": [{"role": "user", "content": prompt}],
               "options": {"seed": int(seed), "temperature": float(temperature), "num_ctx": int(num_ctx)},  # NumPy's: JSON's
               "stream": stream}
    deadline = time.monotonic() + timeout
    try:
        with requests.post(f"{base}/api/chat", json=payload, stream=stream,
                           timeout=(min(timeout, 10.0), timeout)) as reply:
            if reply.status_code != 200:
                raise JudgeUnavailable(_server_error(reply, model, base))
            if not stream:
                return reply.json()["message"]["content"]
            parts = []
            for line in reply.iter_lines():
                if time.monotonic() > deadline:  # a reply that trickles in never trips the read timeout
                    raise requests.Timeout()
                if not line.strip():
                    continue
                chunk = json.loads(line)
                if "error" in chunk:
                    raise JudgeUnavailable(f"The Ollama server at {base} reported: {_clip(chunk['error'])}")
                parts.append(chunk.get("message", {}).get("content", ""))
                if chunk.get("done"):
                    return "".join(parts)
            raise JudgeUnavailable(f"The Ollama server at {base} ended its reply early (no final 'done' line).")
    except requests.Timeout:
        raise JudgeUnavailable(f"The Ollama server at {base} did not reply within {timeout} s. A first request "
                               f"also loads the model; try a longer timeout, or check the server.") from None
    except requests.ConnectionError as e:
        if "timed out" in str(e):  # requests reports a stalled stream this way
            raise JudgeUnavailable(f"The Ollama server at {base} stopped replying for {timeout} s.") from None
        raise JudgeUnavailable(f"No Ollama server answers at {base}. Start the server with `ollama serve`, "
                               f"then pull the model with `ollama pull {model}`.") from None
    except (requests.exceptions.JSONDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        # before RequestException, which requests' JSON error also is
        raise JudgeUnavailable(f"The reply from {base} is not Ollama's chat format "
                               f"({type(e).__name__}: {_clip(e)}).") from None
    except requests.RequestException as e:  # e.g. the connection dropped in the middle of a reply
        raise JudgeUnavailable(f"The request to {base} failed: {type(e).__name__}: {_clip(e)}") from None


# ---- ch07_instruction.ipynb, cell 127 ----
_NUMBER = r"[-+]?\d+(?:\.\d+)?"
# "(0-100)", "from 0 to 100", "1-10": the scale a judge repeats from the prompt, not its score
_SCALE = re.compile(r"\(?\b(?:from\s+)?[01]\s*(?:-|–|to)\s*(5|10|100)\b\)?", re.IGNORECASE)
_FRACTION = re.compile(rf"(?<![\w.])({_NUMBER})\s*(?:/|out\s+of)\s*(\d+)(?!\d|\.\d)", re.IGNORECASE)  # "8/10." ends a sentence
_SCALES = (5, 10, 100)
_AFTER_WORD = re.compile(rf"\b(?:score[ds]?|scoring|rating|rate[ds]?|grade[ds]?)\b[^\d+-]{{0,30}}?(?<![\w.])({_NUMBER})(?![\w])",
                         re.IGNORECASE)
_RANGE_NEXT = re.compile(r"\s*(?:-|–|to|and|or)\s*\d")  # "70 and 80", "70-80": two candidates
_ANY_NUMBER = re.compile(rf"(?<![\w.]){_NUMBER}(?![\w]|\.\d)")


def _on_scale(value, scale=100):
    score = float(value) * 100 / scale
    return int(math.floor(score + 0.5)) if 0 <= score <= 100 else None


def parse_score(text):
    """The 0-100 score in a judge's reply, or None when there is no clear one.

    The scale repeated from the prompt ("(0-100)", "from 0 to 100") is set aside first. Then, in
    order: the first number right after "score", "rating", "rate", "grade" (a fraction if one
    starts there: "Score: 8/10"), unless a range follows ("between 70 and 80"); else the first
    fraction; else the reply's only number. A fraction's scale must be 5, 10 or 100 ("85/100",
    "8/10", "4 out of 5"; it is converted to 0-100; another scale gives None). Values
    outside 0-100, replies with several candidate numbers and a number that fits a scale of 5 or
    10 the reply names ("4 on a scale of 1 to 5": 4 of 5, or 4 of 100?) give None.
    """
    if not isinstance(text, str):
        return None
    other_tops = [int(m.group(1)) for m in _SCALE.finditer(text) if m.group(1) != "100"]
    text = _SCALE.sub(" ", text)
    word = _AFTER_WORD.search(text)
    # "Score: 60. It got 9/10 facts": the number named a score wins over a fraction elsewhere
    match = _FRACTION.match(text, word.start(1)) if word else _FRACTION.search(text)
    if match:
        scale = int(match.group(2))
        return _on_scale(match.group(1), scale) if scale in _SCALES else None
    if word:
        if _RANGE_NEXT.match(text, word.end()):
            return None
        value = word.group(1)
    else:
        candidates = _ANY_NUMBER.findall(text)
        if len(candidates) != 1:
            return None
        value = candidates[0]
    if other_tops and float(value) <= max(other_tops):  # 7 beside "1-10": 7 of 10, or of 100? counted, not guessed
        return None
    return _on_scale(value)


# ---- ch07_instruction.ipynb, cell 129 ----
def judge_prompt(entry, response):
    """What the judge is asked about one answer."""
    return (f"You are grading how well a model followed an instruction.\n\n{format_input(entry)}"
            f"\n\nReference answer:\n{entry['output']}\n\nModel answer:\n{response}\n\n"
            "Score the model answer from 0 (wrong or useless) to 100 (as good as the reference). "
            "Reply with the integer score only.")


def score_responses(entries, json_key="model_response", judge_model="llama3.1:8b", host=None, seed=123,
                    timeout=120.0, progress=True):
    """Ask the judge to score `entry[json_key]` for each entry; returns (scores, n_unparseable).

    scores holds the parsed 0-100 scores (replies without a clear score are left out and
    counted). Raises JudgeUnavailable when the judge cannot be reached or fails; the scores
    collected until then are in that error's `.scores` and `.unparseable`.
    """
    _refuse_one_entry(entries, "entries")
    _check_answer_key(json_key, "json_key")  # 'output' would have the judge compare the reference with itself
    entries = list(entries)  # a generator would be used up by the check below
    for i, entry in enumerate(entries):
        if json_key not in entry:
            raise KeyError(f"entry {i} has no {json_key!r} field; pass the key the responses were saved "
                           f"under (save_responses uses 'model_response')")
    scores, unparseable = [], 0
    for done, entry in enumerate(tqdm(entries, desc="scoring", unit="entry", disable=not progress)):
        try:
            reply = query_ollama(judge_prompt(entry, entry[json_key]), judge_model, host, seed=seed, timeout=timeout)
        except JudgeUnavailable as err:  # a timeout at entry 100 of 110 should not lose 99 scores
            err.scores, err.unparseable = scores, unparseable
            if done:
                err.args = (f"{err} (Stopped after {done} of {len(entries)} entries; the error's .scores "
                            f"holds the {len(scores)} scores so far.)",)
            raise
        score = parse_score(reply)
        if score is None:
            unparseable += 1
        else:
            scores.append(score)
    return scores, unparseable


def generate_model_scores(json_data, json_key, model="llama3", host=None, seed=123, timeout=120.0,
                          progress=True):
    """The book's signature and result: the list of 0-100 scores the judge `model` gave to
    `entry[json_key]` (replies without a clear score are left out and counted in a printed
    line; `score_responses` returns that count)."""
    _refuse_one_entry(json_data, "json_data")
    json_data = list(json_data)  # any iterable, as the book's loop takes
    scores, unparseable = score_responses(json_data, json_key, model, host, seed, timeout, progress)
    if unparseable:
        print(f"{unparseable} of {len(json_data)} replies had no clear score and were left out")
    return scores


# ---- ch07_instruction.ipynb, cell 131 ----
def query_model(prompt, model="llama3", url="http://localhost:11434/api/chat", seed=123, timeout=120.0):
    """The book's signature: one chat request to Ollama at `url` (its /api/chat endpoint, or
    just the server's address); returns the reply's text. Errors as in `query_ollama`."""
    return query_ollama(prompt, model, url, seed=seed, timeout=timeout)  # the host drops "/api/chat"


def check_if_running(process_name):
    """Whether a process whose name contains `process_name` (e.g. "ollama") runs on this machine.
    Uses psutil when it is installed, else Linux's /proc; processes that end or deny access while
    being listed are skipped."""
    if not isinstance(process_name, str) or not process_name:
        raise ValueError(f"process_name must be a non-empty string such as 'ollama'; got {process_name!r}")
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return any(process_name in (proc.info.get("name") or "") for proc in psutil.process_iter(["name"]))
    if not Path("/proc").is_dir():
        raise RuntimeError("check_if_running needs psutil on this system: pip install psutil")
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if process_name in comm.read_text().strip():
                return True
        except OSError:  # the process ended while we looked
            continue
    return False


# ---- ch07_instruction.ipynb, cell 133 ----
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _LoopbackHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep notebook and test output clean
        pass

    def send_json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_chunk(self, obj):  # one line of a chunked application/x-ndjson reply
        data = (json.dumps(obj) + "\n").encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_GET(self):
        fake = self.server.fake
        if fake.status != 200:
            return self.send_json(fake.status, {"error": "something broke"})
        if self.path != "/api/tags":
            return self.send_json(404, {"error": "404 page not found"})
        self.send_json(200, {"models": [{"name": m, "model": m, "details": {"format": "gguf"}} for m in fake.models]})

    def do_POST(self):
        fake = self.server.fake
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        fake.requests.append(body)
        if fake.status != 200:
            return self.send_json(fake.status, {"error": "llama runner process has terminated"})
        if self.path != "/api/chat":
            return self.send_json(404, {"error": "404 page not found"})
        if body.get("model") not in fake.models:
            return self.send_json(404, {"error": f"model \"{body.get('model')}\" not found, try pulling it first"})
        time.sleep(fake.delay)
        stamp = {"model": body["model"], "created_at": "2024-08-01T12:00:00Z"}
        reply = fake.next_reply()
        if body.get("stream", True) is False:
            return self.send_json(200, {**stamp, "message": {"role": "assistant", "content": reply},
                                        "done_reason": "stop", "done": True})
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        fake.stream_reply(self, stamp, reply)


class _LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True  # a handler still sleeping must not keep anyone waiting

    def handle_error(self, request, client_address):  # a client hanging up early is expected
        pass


# ---- ch07_instruction.ipynb, cell 135 ----
class LoopbackOllama:
    """A stand-in for an Ollama server, for demonstrations and tests: a real HTTP server on
    127.0.0.1 (a free port) that answers GET /api/tags (listing `models`) and POST /api/chat
    with the canned `replies` in turn. It is not a model: its replies say nothing about the
    prompts. Unknown models get HTTP 404; a `status` other than 200 makes every request fail
    with it; `delay` seconds pass before each chat reply; the JSON body of every chat request is
    kept in `requests`. Use it as a context manager (or start() and close()); `host` is its
    address as OLLAMA_HOST writes it, `chat_url` its /api/chat URL."""

    def __init__(self, replies=("85",), models=("llama3.1:8b",), status=200, delay=0.0):
        if isinstance(replies, str) or not replies or not all(isinstance(r, str) for r in replies):
            raise ValueError(f"replies must be a list of at least one canned reply text, e.g. ['85']; got {replies!r}")
        if isinstance(models, str):  # list("llama3") would list six one-letter models
            raise ValueError(f"models must be a list of model names, e.g. [{models!r}]; got the string {models!r}")
        if not (_is_count(status, 100) and status <= 599):  # "500" would fail every request as "no server"
            raise ValueError(f"status must be an HTTP status code, a whole number from 100 to 599 (200: answer); got {status!r}")
        if not (_is_real(delay) and delay >= 0):
            raise ValueError(f"delay must be a finite number of seconds >= 0; got {delay!r}")
        self.replies, self.models, self.status, self.delay = list(replies), list(models), status, delay
        self.requests, self._turn, self._server = [], 0, None

    def next_reply(self):
        reply = self.replies[self._turn % len(self.replies)]
        self._turn += 1
        return reply

    def stream_reply(self, handler, stamp, reply):
        """Send `reply` a few characters per line, as tokens arrive, then the final line."""
        for i in range(0, len(reply), 3):
            handler.send_chunk({**stamp, "message": {"role": "assistant", "content": reply[i:i + 3]}, "done": False})
        handler.send_chunk({**stamp, "message": {"role": "assistant", "content": ""}, "done_reason": "stop",
                            "done": True})
        handler.wfile.write(b"0\r\n\r\n")

    def start(self):
        """Start serving (a server already running is kept: a second one would be left running)."""
        if self._server is not None:
            return self
        self._server = _LoopbackServer(("127.0.0.1", 0), _LoopbackHandler)
        self._server.fake = self
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def close(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def host(self):
        if self._server is None:
            raise RuntimeError("the loopback server is not running: call start() or use it in a with block")
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def chat_url(self):
        return f"http://{self.host}/api/chat"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
