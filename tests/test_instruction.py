"""helpers.instruction: prompt format, split, batching, response extraction, a tiny finetune.

Expected values come from the issue's specification (written out by hand) or from independent
computations (the tokenizer on the formatted text, hand-built target rows), never from
running the code under test and pasting its output.
"""
import copy

import pytest
import torch

import helpers.instruction as ins
from helpers.instruction import (InstructionDataset, custom_collate_fn, extract_response, format_example,
                                 format_input, generate_response, load_instruction_data, split_instruction_data)
from helpers.model import GPT_CONFIG_124M, GPTModel

PREAMBLE = ("Below is an instruction that describes a task. Write a response that appropriately "
            "completes the request.")
WITH_INPUT = {"instruction": "Rewrite the sentence in passive voice.", "input": "The cat chased the mouse.",
              "output": "The mouse was chased by the cat."}
WITHOUT_INPUT = {"instruction": "Name the capital of France.", "input": "", "output": "Paris."}
TOY = [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]]
PAD, IGNORE = 50256, -100


@pytest.fixture(scope="module")
def data(data_dir):
    return load_instruction_data(data_dir)


# ---- prompt format ---------------------------------------------------------------------------

def test_format_input_with_input():
    assert format_input(WITH_INPUT) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes "
        "the request.\n\n### Instruction:\nRewrite the sentence in passive voice.\n\n"
        "### Input:\nThe cat chased the mouse.")


def test_format_input_without_input_has_no_input_block():
    expected = PREAMBLE + "\n\n### Instruction:\nName the capital of France."
    assert format_input(WITHOUT_INPUT) == expected
    assert format_input({"instruction": "Name the capital of France."}) == expected  # no "input" key at all


def test_format_example_appends_the_response_block():
    assert format_example(WITHOUT_INPUT) == (
        PREAMBLE + "\n\n### Instruction:\nName the capital of France.\n\n### Response:\nParis.")


# ---- split -----------------------------------------------------------------------------------

def test_split_sizes_on_the_real_data(data):
    assert len(data) == 1100
    train, test, val = split_instruction_data(data, seed=123)
    assert (len(train), len(test), len(val)) == (935, 110, 55)


def test_split_is_a_disjoint_cover(data):
    parts = split_instruction_data(data, seed=123)
    ids = [id(entry) for part in parts for entry in part]
    assert len(ids) == len(set(ids)) == len(data)
    assert set(ids) == {id(entry) for entry in data}


def test_split_is_stable_for_a_seed_and_changes_with_it(data):
    first = split_instruction_data(data, seed=123)
    again = split_instruction_data(list(data), seed=123)
    other = split_instruction_data(data, seed=124)
    assert first == again
    assert first[0] != other[0]
    assert [len(p) for p in other] == [935, 110, 55]


def test_split_leaves_the_input_and_global_rng_alone(data):
    before = list(data)
    state = torch.get_rng_state()
    import random
    py_state = random.getstate()
    split_instruction_data(data, seed=5)
    assert data == before
    assert torch.equal(torch.get_rng_state(), state) and random.getstate() == py_state


# ---- collate ---------------------------------------------------------------------------------

def test_collate_matches_the_specified_example():
    inputs, targets = custom_collate_fn(TOY)
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, PAD, PAD, PAD], [7, 8, 9, PAD, PAD]]
    assert targets.tolist() == [[1, 2, 3, 4, PAD], [6, PAD, IGNORE, IGNORE, IGNORE], [8, 9, PAD, IGNORE, IGNORE]]
    assert inputs.dtype == targets.dtype == torch.int64
    assert inputs.device.type == targets.device.type == "cpu"


def test_collate_puts_the_batch_on_the_requested_device():
    inputs, targets = custom_collate_fn(TOY, device="meta")  # a real second device without a GPU
    assert inputs.device.type == targets.device.type == "meta"
    assert tuple(inputs.shape) == tuple(targets.shape) == (3, 5)


@pytest.mark.parametrize("limit", [1, 3, 4])
def test_allowed_max_length_truncates_inputs_and_targets(limit):
    full_inputs, full_targets = custom_collate_fn(TOY)
    inputs, targets = custom_collate_fn(TOY, allowed_max_length=limit)
    assert tuple(inputs.shape) == tuple(targets.shape) == (3, limit)
    assert torch.equal(inputs, full_inputs[:, :limit]) and torch.equal(targets, full_targets[:, :limit])


def test_allowed_max_length_above_the_batch_changes_nothing():
    for a, b in zip(custom_collate_fn(TOY, allowed_max_length=1024), custom_collate_fn(TOY)):
        assert torch.equal(a, b)


def test_collate_keeps_a_real_end_of_text_inside_a_text():
    # the book masks every 50256 but the first; padding by position keeps a genuine one
    inputs, targets = custom_collate_fn([[1, PAD, 2], [3]])
    assert targets.tolist() == [[PAD, 2, PAD], [PAD, IGNORE, IGNORE]]


def test_custom_pad_and_ignore_values():
    _, targets = custom_collate_fn([[1, 2], [3]], pad_token_id=0, ignore_index=-1)
    assert targets.tolist() == [[2, 0], [0, -1]]


@pytest.mark.parametrize("bad", [0, -1, -5, 2.5, True, "8"])
def test_allowed_max_length_must_be_a_positive_integer(bad):
    # 0 used to give empty tensors and -1 to cut the last position silently
    with pytest.raises(ValueError, match="allowed_max_length"):
        custom_collate_fn(TOY, allowed_max_length=bad)


@pytest.mark.parametrize("collate", [custom_collate_fn, ins.custom_collate_draft_1, ins.custom_collate_draft_2])
def test_collate_refuses_an_empty_batch(collate):
    with pytest.raises(ValueError, match="empty"):
        collate([])


def test_collate_draft_1_pads_the_inputs_only():
    # the specification written out by hand: one end-of-text per example, padded to the longest + 1,
    # the last position dropped
    inputs = ins.custom_collate_draft_1(TOY)
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, PAD, PAD, PAD], [7, 8, 9, PAD, PAD]]
    assert inputs.dtype == torch.int64
    assert ins.custom_collate_draft_1(TOY, pad_token_id=0, device="meta").device.type == "meta"
    assert ins.custom_collate_draft_1([[4, 5]], pad_token_id=9).tolist() == [[4, 5]]


def test_collate_draft_2_shifts_but_masks_nothing():
    inputs, targets = ins.custom_collate_draft_2(TOY)
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, PAD, PAD, PAD], [7, 8, 9, PAD, PAD]]
    assert targets.tolist() == [[1, 2, 3, 4, PAD], [6, PAD, PAD, PAD, PAD], [8, 9, PAD, PAD, PAD]]
    # custom_collate_fn differs from draft 2 exactly where draft 2 has a pad after the first one
    _, masked = custom_collate_fn(TOY)
    differs = (masked != targets)
    assert torch.equal(differs, masked == IGNORE)


def test_collate_fn_on_a_real_batch_agrees_with_cross_entropys_ignore_index(data, tokenizer):
    # the loss over a collated batch equals the loss over each example's own (unpadded) targets
    items = [tokenizer.encode(format_example(e)) for e in data[:3]]
    inputs, targets = custom_collate_fn(items)
    torch.manual_seed(0)
    logits = torch.randn(*inputs.shape, 50257)
    batch_loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
    by_hand = 0.0
    for row, ids in enumerate(items):
        wanted = torch.tensor(ids[1:] + [PAD])  # the shifted text plus one end-of-text
        by_hand += torch.nn.functional.cross_entropy(logits[row, :len(ids)], wanted, reduction="sum")
    assert torch.isclose(batch_loss, by_hand, rtol=1e-5)


# ---- download_and_load_file ------------------------------------------------------------------

@pytest.fixture
def json_server():
    """A loopback HTTP server that serves one body at /data.json and counts the requests."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    state = {"body": b'[{"instruction": "a", "input": "", "output": "b"}]', "hits": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            state["hits"] += 1
            self.send_response(200 if self.path == "/data.json" else 404)
            body = state["body"] if self.path == "/data.json" else b"missing"
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/data.json"
    yield state
    server.shutdown()
    server.server_close()


def test_download_and_load_file_downloads_once_then_reads_the_file(tmp_path, json_server):
    path = tmp_path / "instruction-data.json"
    assert ins.download_and_load_file(str(path), json_server["url"]) == [{"instruction": "a", "input": "", "output": "b"}]
    assert path.exists() and json_server["hits"] == 1
    assert not list(tmp_path.glob("*.part")), "the temporary download file was left behind"
    json_server["body"] = b"[]"  # a second call must read the file, not download again
    assert len(ins.download_and_load_file(path, json_server["url"])) == 1
    assert json_server["hits"] == 1


def test_download_and_load_file_reads_the_course_file_offline(data_dir):
    entries = ins.download_and_load_file(data_dir / "instruction-data.json", "http://127.0.0.1:1/unreachable")
    assert len(entries) == 1100 and set(entries[0]) == {"instruction", "input", "output"}


def test_download_and_load_file_names_a_broken_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"instruction": ', encoding="utf-8")
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        ins.download_and_load_file(path, "http://127.0.0.1:1/unreachable")


def test_download_and_load_file_names_a_file_that_is_not_text(tmp_path):
    path = tmp_path / "binary.json"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ValueError, match="binary.json is not valid JSON.*delete it"):
        ins.download_and_load_file(path, "http://127.0.0.1:1/unreachable")


@pytest.mark.parametrize("item", [(3, [1, 2, 3]), ([1, 2], 1, 0), ([1, 2],)])
def test_collate_names_a_pair_in_the_wrong_order_or_shape(item):
    with pytest.raises(ValueError, match=r"batch item 1 is a tuple .*\(token_ids, prompt_length\)"):
        custom_collate_fn([([5, 6, 7], 1), item])


@pytest.mark.parametrize("length", [1.5, -1, "2", [1, 2], 3])
def test_collate_names_a_prompt_length_that_is_not_a_whole_number_from_0_to_the_item_length(length):
    with pytest.raises(ValueError, match=r"batch item 1's prompt length is .*; it must be a whole number from 0 to "
                                         r"the item's 2 tokens"):
        custom_collate_fn([([5, 6, 7], 1), ([1, 2], length)])
    custom_collate_fn([([5, 6, 7], 3), ([1, 2], 2)])  # the whole item a prompt: only its end-of-text counts


@pytest.mark.parametrize("option", [dict(pad_token_id=1.5), dict(pad_token_id=-1), dict(pad_token_id=None),
                                    dict(ignore_index=None), dict(ignore_index=-100.0), dict(pad_token_id=True)])
def test_collate_refuses_a_pad_or_ignore_id_that_is_not_a_whole_number(option):
    with pytest.raises(ValueError, match="pad_token_id must be a token ID >= 0"):
        custom_collate_fn([[1, 2, 3], [4]], **option)


def test_collate_keeps_an_empty_items_end_of_text_target_as_the_book_does():
    from llms_from_scratch.ch07 import custom_collate_fn as book_collate
    batch = [[], [1, 2]]
    for ours, book in zip(custom_collate_fn(batch), book_collate(batch)):
        assert torch.equal(ours, book)


def test_collate_takes_any_integer_type_as_the_prompt_length():
    import numpy as np
    expected = custom_collate_fn([([5, 6, 7], 2)])
    for length in (np.int64(2), torch.tensor(2)):
        assert all(torch.equal(a, b) for a, b in zip(custom_collate_fn([([5, 6, 7], length)]), expected))


def test_book_names_exist_with_compatible_signatures():
    # llms_from_scratch 1.0.19, llms_from_scratch/ch07.py: every public name with its parameters and
    # defaults, written out from the book's package; ours may add keyword parameters after them
    import inspect
    book = {
        "download_and_load_file": [("file_path", None), ("url", None)],
        "format_input": [("entry", None)],
        "InstructionDataset": [("data", None), ("tokenizer", None)],
        "custom_collate_draft_1": [("batch", None), ("pad_token_id", 50256), ("device", "cpu")],
        "custom_collate_draft_2": [("batch", None), ("pad_token_id", 50256), ("device", "cpu")],
        "custom_collate_fn": [("batch", None), ("pad_token_id", 50256), ("ignore_index", -100),
                              ("allowed_max_length", None), ("device", "cpu")],
        "check_if_running": [("process_name", None)],
        "query_model": [("prompt", None), ("model", "llama3"), ("url", "http://localhost:11434/api/chat")],
        "generate_model_scores": [("json_data", None), ("json_key", None), ("model", "llama3")],
    }
    for name, params in book.items():
        ours = list(inspect.signature(getattr(ins, name)).parameters.values())
        assert [(p.name, None if p.default is inspect.Parameter.empty else p.default)
                for p in ours[:len(params)]] == params, name
        assert all(p.default is not inspect.Parameter.empty for p in ours[len(params):]), name


def test_save_responses_replaces_the_file_atomically(tmp_path):
    import json
    path = tmp_path / "r.json"
    path.write_text("old", encoding="utf-8")
    ins.save_responses([WITH_INPUT], ["a"], path)
    assert json.loads(path.read_text())[0]["model_response"] == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"], "a temporary file was left behind"


# ---- data set and prompt masking -------------------------------------------------------------

def test_dataset_tokenizes_each_example_like_the_tokenizer_does(data, tokenizer):
    dataset = InstructionDataset(data, tokenizer)
    assert len(dataset) == len(data)
    for i, entry in enumerate(data):
        assert len(dataset[i]) == len(tokenizer.encode(format_example(entry)))
        assert dataset.prompt_lengths[i] == len(tokenizer.encode(format_input(entry)))
    assert tokenizer.decode(dataset[7]) == format_example(data[7])


@pytest.mark.parametrize("field", ["instruction", "input", "output"])
def test_dataset_names_the_example_with_special_token_text(data, tokenizer, field):
    broken = [dict(entry) for entry in data[:3]]
    broken[2][field] += " <|endoftext|>"
    with pytest.raises(ValueError, match=r"example 2 holds the text of a special token.*remove it"):
        InstructionDataset(broken, tokenizer)


def test_dataset_names_an_example_without_its_keys_or_not_a_dict(data, tokenizer):
    """The book's class raises a bare KeyError: 'output' (or a TypeError about string indices)
    without saying which example; ours names it and its keys."""
    examples = [dict(entry) for entry in data[:4]]
    del examples[3]["output"]
    with pytest.raises(ValueError, match=r"^example 3 has no 'output' \(its keys: 'instruction', 'input'\)"):
        InstructionDataset(examples, tokenizer)
    with pytest.raises(ValueError, match=r"^example 0 has no 'instruction' or 'output' \(its keys: 'input'\)"):
        InstructionDataset([{"input": "x"}], tokenizer)
    for bad in ("Name a colour.", None, 3):
        with pytest.raises(TypeError, match=rf"^example 1 is a {type(bad).__name__}, not a dict"):
            InstructionDataset([data[0], bad], tokenizer)
    # any mapping with get, [] and `in` is an entry, as in the book (a pandas row, for one)
    import pandas as pd
    row = pd.Series(data[0])
    assert InstructionDataset([row], tokenizer)[0] == InstructionDataset([data[0]], tokenizer)[0]
    # a row without 'output' is named with its keys (the column names), not its values
    with pytest.raises(ValueError, match=r"^example 0 has no 'output' \(its keys: 'instruction', 'input'\)"):
        InstructionDataset([pd.Series({"instruction": "Name a colour.", "input": "the sky"})], tokenizer)
    no_input = {"instruction": "Name a colour.", "output": "Blue."}  # 'input' may be missing, as in the book
    assert InstructionDataset([no_input], tokenizer)[0] == tokenizer.encode(format_example({**no_input, "input": ""}))


def test_generate_responses_names_a_bad_entry_and_refuses_one_dict(tokenizer):
    model = _small_model()
    with pytest.raises(TypeError, match=r"^entries is one entry \(a dict\): pass a list"):
        ins.generate_responses(model, tokenizer, WITH_INPUT, max_new_tokens=1, progress=False)
    with pytest.raises(ValueError, match=r"^entry 1 has no 'instruction'"):
        ins.generate_responses(model, tokenizer, [WITH_INPUT, {"input": "x"}], max_new_tokens=1, progress=False)
    with pytest.raises(TypeError, match=r"^the entry is a str, not a dict"):
        generate_response(model, tokenizer, "Name a colour.", max_new_tokens=1)
    assert isinstance(generate_response(model, tokenizer, {"instruction": "Name a colour."}, max_new_tokens=1), str)


def test_dataset_passes_other_tokenizer_errors_on(data):
    class Refusing:
        def encode(self, text):
            raise ValueError("this tokenizer takes no text today")
    with pytest.raises(ValueError, match="no text today"):
        InstructionDataset(data[:1], Refusing())
    # chapter 2's tokenizer names its own fix for a special token it lacks: that message stays
    from helpers.text import SimpleTokenizerV2, build_vocab, regex_tokenize
    entry = {**data[0], "output": data[0]["output"] + " <|endoftext|>"}
    words = regex_tokenize(format_example(data[0]))
    with pytest.raises(ValueError, match=r"not in the vocabulary; add it with build_vocab"):
        InstructionDataset([entry], SimpleTokenizerV2(build_vocab(words, special_tokens=["<|unk|>"])))
    with_eot = SimpleTokenizerV2(build_vocab(words, special_tokens=["<|endoftext|>", "<|unk|>"]))
    assert InstructionDataset([entry], with_eot)[0][-1] == with_eot.str_to_int["<|endoftext|>"]


def test_prompt_masking_masks_exactly_the_prompt_tokens(data, tokenizer):
    entries = [data[0], data[5], data[999]]  # with input, and without
    assert any(e["input"] for e in entries) and any(not e["input"] for e in entries)
    plain = InstructionDataset(entries, tokenizer)
    masked = InstructionDataset(entries, tokenizer, mask_prompt=True)
    _, plain_targets = custom_collate_fn([plain[i] for i in range(3)])
    _, masked_targets = custom_collate_fn([masked[i] for i in range(3)])
    width = plain_targets.shape[1]
    for row, entry in enumerate(entries):
        ids = tokenizer.encode(format_example(entry))
        p = len(tokenizer.encode(format_input(entry)))
        # targets are the tokens 1..n-1 and one end-of-text; the prompt's tokens 1..p-1 are ignored
        expected = [IGNORE] * (p - 1) + ids[p:] + [PAD]
        expected += [IGNORE] * (width - len(expected))
        assert masked_targets[row].tolist() == expected
        changed = (plain_targets[row] != masked_targets[row]).nonzero().flatten().tolist()
        assert changed == list(range(p - 1))  # nothing but the prompt positions differ


def test_masked_items_carry_their_prompt_length(data, tokenizer):
    masked = InstructionDataset(data[:3], tokenizer, mask_prompt=True)
    ids, p = masked[1]
    assert p == len(tokenizer.encode(format_input(data[1])))
    assert ids == InstructionDataset(data[:3], tokenizer)[1]



def test_a_prompt_ending_in_a_line_break_masks_the_tokens_it_shares(data, tokenizer):
    entry = {**data[0], "input": data[0]["input"] + "\n"}
    ids, p = InstructionDataset([entry], tokenizer, mask_prompt=True)[0]
    assert ids == tokenizer.encode(format_example(entry))  # one text, as the book encodes it
    prompt = tokenizer.encode(format_input(entry))
    assert ids[:len(prompt)] != prompt  # BPE merged the prompt's last line break with the header's
    assert p == len(prompt) - 1 and ids[:p] == prompt[:p]
    assert tokenizer.decode(ids[p:]).startswith("\n\n\n### Response:\n")

# ---- response extraction ---------------------------------------------------------------------

@pytest.mark.parametrize("generated, expected", [
    ("\n\n### Response:\nParis is the capital.", "Paris is the capital."),
    ("Paris is the capital.", "Paris is the capital."),
    ("\n\n### Response:\nParis.\n\n### Instruction:\nName a river.", "Paris."),
    ("### Response:\nParis. " + PREAMBLE, "Paris."),
    ("\n\n### Response:\nUse the header ### Response: here.", "Use the header ### Response: here."),
])
def test_extract_response(generated, expected):
    assert extract_response(generated) == expected


def test_generate_response_returns_only_the_new_tokens(tokenizer, monkeypatch):
    answer = "The mouse was chased by the cat."

    def fake_generate(model, idx, max_new_tokens, context_size, eos_id=None, **_):
        # a model that answers perfectly: prompt, then the response block
        new = torch.tensor([tokenizer.encode("\n\n### Response:\n" + answer)])
        return torch.cat([idx, new], dim=1)

    monkeypatch.setattr(ins, "generate", fake_generate)
    model = GPTModel({**GPT_CONFIG_124M, "context_length": 256, "emb_dim": 8, "n_heads": 2, "n_layers": 1})
    assert generate_response(model, tokenizer, WITH_INPUT, max_new_tokens=20) == answer


@pytest.mark.parametrize("bad", [0, -3, 2.0])
def test_generate_response_refuses_a_context_size_that_makes_no_sense(tokenizer, bad):
    # 0 used to mean "the model's whole context" and -3 "drop the prompt's first 3 tokens"
    model = GPTModel({**GPT_CONFIG_124M, "context_length": 32, "emb_dim": 16, "n_heads": 2, "n_layers": 1})
    with pytest.raises(ValueError, match="context_size"):
        generate_response(model, tokenizer, WITH_INPUT, max_new_tokens=1, context_size=bad)


def test_generate_response_refuses_a_context_size_beyond_the_models(tokenizer):
    model = GPTModel({**GPT_CONFIG_124M, "context_length": 32, "emb_dim": 16, "n_heads": 2, "n_layers": 1})
    with pytest.raises(ValueError, match="context_size=64 is more than the model's context length, 32"):
        generate_response(model, tokenizer, WITH_INPUT, max_new_tokens=1, context_size=64)
    with pytest.warns(UserWarning, match="tokens were dropped"):  # the model's own is fine
        generate_response(model, tokenizer, WITH_INPUT, max_new_tokens=1, context_size=32)


class _OwnLanguageModel(torch.nn.Module):
    """A reader's own model: no cfg, no pos_emb, any length."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50257, 8)
        self.head = torch.nn.Linear(8, 50257)

    def forward(self, ids):
        return self.head(self.emb(ids))


def test_generate_response_asks_a_model_without_a_context_length_for_context_size(tokenizer):
    torch.manual_seed(0)
    model = _OwnLanguageModel()
    with pytest.raises(ValueError, match="no cfg or position embedding to read its context length from: pass context_size"):
        generate_response(model, tokenizer, WITH_INPUT, max_new_tokens=2)
    prompt = tokenizer.encode(ins.format_input(WITH_INPUT))
    with torch.no_grad():  # two greedy steps by hand
        ids = torch.tensor([prompt])
        for _ in range(2):
            ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    expected = ins.extract_response(tokenizer.decode(ids[0, len(prompt):].tolist()))
    assert generate_response(model, tokenizer, WITH_INPUT, max_new_tokens=2, context_size=500) == expected


def test_generate_response_with_a_real_model_never_returns_the_prompt(tokenizer):
    torch.manual_seed(0)
    model = GPTModel({**GPT_CONFIG_124M, "context_length": 32, "emb_dim": 16, "n_heads": 2, "n_layers": 1})
    model.train()
    # the first prompt (about 40 tokens) is longer than the context: it is cropped, with a warning
    with pytest.warns(UserWarning, match=r"1 of 2 prompts did not fit .* entry 0$"):
        responses = ins.generate_responses(model, tokenizer, [WITH_INPUT, WITHOUT_INPUT], max_new_tokens=5,
                                           progress=False)
    assert len(responses) == 2
    for response in responses:
        assert "Below is an instruction" not in response and "### Instruction:" not in response
        assert len(tokenizer.encode(response)) <= 5 + 2  # at most the new tokens (decoding may split)
    assert model.training, "generation must not leave the model in eval mode"


def test_save_responses_writes_one_record_per_entry(tmp_path):
    import json
    path = ins.save_responses([WITH_INPUT, WITHOUT_INPUT], ["a", "b"], tmp_path / "sub" / "r.json")
    records = json.loads(path.read_text())
    assert records == [{**WITH_INPUT, "model_response": "a"}, {**WITHOUT_INPUT, "model_response": "b"}]
    with pytest.raises(ValueError, match="1 entries but 0 responses"):
        ins.save_responses([WITH_INPUT], [], tmp_path / "x.json")


# ---- answers for many entries: nothing finished is lost --------------------------------------

def _counting_generate(tokenizer, calls, fail_at=None):
    """A stand-in for `generate` that answers with the prompt's token count (an answer that
    depends on the entry), counts its calls and raises KeyboardInterrupt on call `fail_at`."""
    def fake_generate(model, idx, max_new_tokens, context_size, eos_id=None, **_):
        calls.append(idx.shape[1])
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt
        new = torch.tensor([tokenizer.encode(f"\n\n### Response:\n{idx.shape[1]} tokens")])
        return torch.cat([idx, new], dim=1)
    return fake_generate


ENTRIES = [{"instruction": "Say something" + " more" * i, "input": "", "output": "x"} for i in range(6)]


def _small_model():
    return GPTModel({**GPT_CONFIG_124M, "context_length": 256, "emb_dim": 8, "n_heads": 2, "n_layers": 1})


def _failing_generate(tokenizer, calls, fail_at):
    """`_counting_generate` that raises RuntimeError (an error, not Ctrl-C) on call `fail_at`."""
    counting = _counting_generate(tokenizer, calls)

    def fake_generate(*args, **kwargs):
        if len(calls) + 1 == fail_at:
            calls.append("failed")
            raise RuntimeError("out of memory, say")
        return counting(*args, **kwargs)
    return fake_generate


def test_generate_responses_checks_every_entry_before_the_first_answer(tokenizer, tmp_path, monkeypatch):
    """A bad entry late in the list is found before any work (it used to cost every answer before
    it when there was no `path`): special-token text, a missing 'instruction', a field not text."""
    calls = []
    monkeypatch.setattr(ins, "generate", _counting_generate(tokenizer, calls))
    path = tmp_path / "answers.json"
    for bad, error, message in [({**ENTRIES[3], "input": "stop <|endoftext|> here"}, ValueError,
                                 r"^entry 3 holds the text of a special token"),
                                ({"input": "x", "output": "y"}, ValueError, r"^entry 3 has no 'instruction'"),
                                ({**ENTRIES[3], "instruction": None}, TypeError,
                                 r"^entry 3's 'instruction' is a NoneType, not text"),
                                ({**ENTRIES[3], "input": 5}, TypeError, r"^entry 3's 'input' is a int, not text")]:
        for where in (None, path):
            with pytest.raises(error, match=message):
                ins.generate_responses(_small_model(), tokenizer, [*ENTRIES[:3], bad, *ENTRIES[4:]], path=where,
                                       progress=False)
    assert calls == [] and not path.exists()


def test_generate_responses_refuses_a_folder_it_cannot_write_before_generating(tokenizer, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ins, "generate", _counting_generate(tokenizer, calls))
    import tempfile

    def refuse(*args, **kwargs):  # a read-only folder or file system (root writes anywhere else)
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(PermissionError, match=r"^cannot write the answers to .*answers\.json \(Read-only file system\)"):
        ins.generate_responses(_small_model(), tokenizer, ENTRIES, path=tmp_path / "answers.json", progress=False)
    assert calls == []


def test_answers_never_go_under_or_come_from_a_field_of_the_entry(tokenizer, tmp_path):
    """key='output' would overwrite the reference answers; json_key='output' would have the judge
    compare the reference with itself."""
    for key in ("output", "instruction", "input"):
        with pytest.raises(ValueError, match=rf"^key={key!r} is a field of the entry itself"):
            ins.save_responses(ENTRIES[:1], ["an answer"], tmp_path / "a.json", key=key)
        with pytest.raises(ValueError, match=rf"^key={key!r} is a field of the entry itself"):
            ins.generate_responses(_small_model(), tokenizer, ENTRIES[:1], max_new_tokens=1, key=key, progress=False)
        with pytest.raises(ValueError, match=rf"^json_key={key!r} is a field of the entry itself"):
            ins.score_responses(ENTRIES[:1], key, host="127.0.0.1:9", progress=False)
        with pytest.raises(ValueError, match=rf"^json_key={key!r} is a field of the entry itself"):
            ins.generate_model_scores(ENTRIES[:1], key, host="127.0.0.1:9", progress=False)
    assert not (tmp_path / "a.json").exists()


def test_one_dict_where_a_list_of_entries_belongs_is_refused_by_name(tokenizer):
    entry = {**ENTRIES[0], "model_response": "x"}
    with pytest.raises(TypeError, match=r"^data is one entry \(a dict\): pass a list"):
        InstructionDataset(entry, tokenizer)
    with pytest.raises(TypeError, match=r"^json_data is one entry \(a dict\): pass a list"):
        ins.generate_model_scores(entry, "model_response", host="127.0.0.1:9", progress=False)
    with pytest.raises(TypeError, match=r"^entries is one entry \(a dict\): pass a list"):
        ins.score_responses(entry, host="127.0.0.1:9", progress=False)
    with pytest.raises(TypeError, match=r"^data is one entry \(a dict\): pass a list"):
        ins.split_instruction_data(entry)


def test_generate_responses_resumes_after_an_error(tokenizer, tmp_path, monkeypatch):
    import json
    calls = []
    monkeypatch.setattr(ins, "generate", _failing_generate(tokenizer, calls, fail_at=4))
    model, path = _small_model(), tmp_path / "answers.json"
    expected = [f"{len(tokenizer.encode(format_input(e)))} tokens" for e in ENTRIES]
    with pytest.raises(RuntimeError, match="out of memory"):
        ins.generate_responses(model, tokenizer, ENTRIES, path=path, progress=False, save_every_s=1e9)
    monkeypatch.setattr(ins, "generate", _counting_generate(tokenizer, calls))
    saved = json.loads(path.read_text())
    assert saved == [{**e, "model_response": a} for e, a in zip(ENTRIES[:3], expected[:3])]
    calls.clear()
    assert ins.generate_responses(model, tokenizer, ENTRIES, path=path, progress=False) == expected
    assert len(calls) == 3, "the three saved answers must be reused, not generated again"
    assert json.loads(path.read_text()) == [{**e, "model_response": a} for e, a in zip(ENTRIES, expected)]
    calls.clear()  # a finished file: nothing left to generate, and nothing written again
    written = path.stat().st_mtime_ns
    assert ins.generate_responses(model, tokenizer, ENTRIES, path=path, progress=False) == expected
    assert calls == [] and path.stat().st_mtime_ns == written


def test_entries_that_change_in_a_json_round_trip_still_resume(tokenizer, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ins, "generate", _counting_generate(tokenizer, calls))
    entries = [{**e, "tags": ("a", "b")} for e in ENTRIES[:3]]  # saved as a list, read back as a list
    path, model = tmp_path / "answers.json", _small_model()
    first = ins.generate_responses(model, tokenizer, entries[:2], path=path, progress=False)
    assert ins.generate_responses(model, tokenizer, entries, path=path, progress=False)[:2] == first
    assert len(calls) == 3


@pytest.mark.parametrize("bad", [-1, float("nan"), None, True, "5", -float("inf")])
def test_generate_responses_refuses_a_save_interval_that_makes_no_sense(tokenizer, tmp_path, bad):
    with pytest.raises(ValueError, match="save_every_s"):
        ins.generate_responses(_small_model(), tokenizer, ENTRIES, path=tmp_path / "a.json", save_every_s=bad)
    assert not (tmp_path / "a.json").exists()


def test_generate_responses_takes_any_real_save_interval_and_infinity(tokenizer, tmp_path, monkeypatch):
    import math
    import numpy as np
    monkeypatch.setattr(ins, "generate", _counting_generate(tokenizer, []))
    for i, every in enumerate((np.float32(5), math.inf, 0)):  # NumPy's, "only at the end", after every answer
        path = tmp_path / f"a{i}.json"
        assert len(ins.generate_responses(_small_model(), tokenizer, ENTRIES[:2], path=path, progress=False,
                                          save_every_s=every)) == 2
        assert path.exists()


def test_generate_responses_keeps_the_answers_done_when_interrupted(tokenizer, tmp_path, monkeypatch):
    import json
    calls = []
    monkeypatch.setattr(ins, "generate", _counting_generate(tokenizer, calls, fail_at=5))
    path = tmp_path / "answers.json"
    # save_every_s large: only the save on the way out can have written the four answers
    with pytest.raises(KeyboardInterrupt):
        ins.generate_responses(_small_model(), tokenizer, ENTRIES, path=path, progress=False, save_every_s=1e9)
    assert [r["instruction"] for r in json.loads(path.read_text())] == [e["instruction"] for e in ENTRIES[:4]]


def test_generate_responses_refuses_a_file_of_other_answers_and_leaves_it_alone(tokenizer, tmp_path, monkeypatch):
    import json
    monkeypatch.setattr(ins, "generate", _counting_generate(tokenizer, []))
    model = _small_model()
    cases = {"other.json": json.dumps([{**WITH_INPUT, "model_response": "a"}]),
             "longer.json": json.dumps([{**e, "model_response": "a"} for e in ENTRIES]),
             "notes.json": "my notes, not JSON", "dict.json": json.dumps({"model_response": "a"})}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        entries = ENTRIES[:2] if name == "longer.json" else ENTRIES
        with pytest.raises(ValueError, match=f"{name}.*delete the file"):
            ins.generate_responses(model, tokenizer, entries, path=tmp_path / name, progress=False)
        assert (tmp_path / name).read_text() == text


def test_entries_that_already_hold_answers_resume_too(tokenizer, tmp_path, monkeypatch):
    # records read back from a responses file hold a model_response field of their own
    calls = []
    monkeypatch.setattr(ins, "generate", _counting_generate(tokenizer, calls))
    records = [{**e, "model_response": "an older answer"} for e in ENTRIES]
    path, model = tmp_path / "again.json", _small_model()
    first = ins.generate_responses(model, tokenizer, records[:2], path=path, progress=False)
    assert ins.generate_responses(model, tokenizer, records, path=path, progress=False)[:2] == first
    assert len(calls) == len(ENTRIES)


def test_saved_answers_from_another_model_or_other_settings_are_refused_and_kept(tokenizer, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ins, "generate", _counting_generate(tokenizer, calls))
    torch.manual_seed(0)
    model, path = _small_model(), tmp_path / "answers.json"
    ins.generate_responses(model, tokenizer, ENTRIES[:2], path=path, progress=False, max_new_tokens=5)
    text, sidecar = path.read_text(), path.with_name("answers.json.model")
    assert sidecar.exists()
    others = {"another model": _small_model(), "other max_new_tokens": model, "other context_size": model}
    settings = {"another model": {"max_new_tokens": 5}, "other max_new_tokens": {"max_new_tokens": 6},
                "other context_size": {"max_new_tokens": 5, "context_size": 128}}
    for what, other in others.items():
        with pytest.raises(ValueError, match=r"answers\.json holds answers from another model.*delete the file"):
            ins.generate_responses(other, tokenizer, ENTRIES, path=path, progress=False, **settings[what])
        assert path.read_text() == text, what
    calls.clear()
    ins.generate_responses(model, tokenizer, ENTRIES, path=path, progress=False, max_new_tokens=5)
    assert len(calls) == len(ENTRIES) - 2, "the same model and settings must reuse the saved answers"


def test_a_responses_file_without_a_fingerprint_is_still_resumed(tokenizer, tmp_path, monkeypatch):
    # save_responses writes the book's plain JSON list, with nothing beside it
    calls = []
    monkeypatch.setattr(ins, "generate", _counting_generate(tokenizer, calls))
    path = ins.save_responses(ENTRIES[:3], ["a", "b", "c"], tmp_path / "book.json")
    answers = ins.generate_responses(_small_model(), tokenizer, ENTRIES, path=path, progress=False)
    assert answers[:3] == ["a", "b", "c"] and len(calls) == len(ENTRIES) - 3
    assert path.with_name("book.json.model").exists(), "the file it completed now says which model finished it"


def test_the_fingerprint_sees_one_training_step():
    torch.manual_seed(0)
    model = _small_model()
    before = ins._model_fingerprint(model, 5, None)
    assert ins._model_fingerprint(copy.deepcopy(model), 5, None) == before
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    logits = model(torch.tensor([[1, 2, 3, 4]]))
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.tensor([2, 3, 4, 5])).backward()
    optimizer.step()
    assert ins._model_fingerprint(model, 5, None) != before


def test_a_prompt_longer_than_the_context_is_cut_with_a_warning(tokenizer, monkeypatch):
    calls = []
    monkeypatch.setattr(ins, "generate", _counting_generate(tokenizer, calls))
    short = len(tokenizer.encode(format_input(ENTRIES[0])))
    with pytest.warns(UserWarning, match=r"its first 1 tokens were dropped"):
        generate_response(_small_model(), tokenizer, ENTRIES[1], context_size=short)
    assert calls == [short]
    with pytest.warns(UserWarning, match=r"4 of 6 prompts did not fit .* entries 2, 3, 4, 5$"):
        ins.generate_responses(_small_model(), tokenizer, ENTRIES, context_size=short + 1, progress=False)


def test_generate_response_names_a_special_token(tokenizer):
    entry = {**WITH_INPUT, "input": "<|endoftext|>"}
    with pytest.raises(ValueError, match="the entry holds the text of a special token"):
        generate_response(_small_model(), tokenizer, entry, max_new_tokens=1)


# ---- a tiny finetune -------------------------------------------------------------------------

def test_a_tiny_finetune_lowers_the_loss(data, tokenizer):
    from functools import partial

    from torch.utils.data import DataLoader

    from helpers.training import calc_loss_loader, train_model_simple

    train, _, val = split_instruction_data(data, seed=123)
    collate = partial(custom_collate_fn, allowed_max_length=128)
    train_loader = DataLoader(InstructionDataset(train[:32], tokenizer), batch_size=8, shuffle=True,
                              drop_last=True, collate_fn=collate)
    val_loader = DataLoader(InstructionDataset(val[:8], tokenizer), batch_size=8, collate_fn=collate)
    torch.manual_seed(123)
    model = GPTModel({**GPT_CONFIG_124M, "context_length": 128, "emb_dim": 32, "n_heads": 2, "n_layers": 1})
    with torch.no_grad():
        model.eval()
        before = calc_loss_loader(train_loader, model, "cpu")
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)
    train_model_simple(model, train_loader, val_loader, optimizer, "cpu", num_epochs=2, eval_freq=100,
                       eval_iter=1, start_context=format_input(val[0]), tokenizer=tokenizer, progress=False)
    with torch.no_grad():
        model.eval()
        after = calc_loss_loader(train_loader, model, "cpu")
    assert after < before - 0.5, (before, after)


def test_the_model_context_length_and_none_resume_each_other(tokenizer, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ins, "generate", _counting_generate(tokenizer, calls))
    model, path = _small_model(), tmp_path / "answers.json"
    ins.generate_responses(model, tokenizer, ENTRIES[:2], path=path, progress=False)  # context_size=None
    calls.clear()
    ins.generate_responses(model, tokenizer, ENTRIES, path=path, progress=False, context_size=256)
    assert len(calls) == len(ENTRIES) - 2


@pytest.mark.parametrize("bad, message", [(0, "must be a whole number"), (2.0, "must be a whole number"),
                                          (257, "is more than the model's context length, 256")])
def test_generate_responses_checks_the_context_size_before_any_file(tokenizer, tmp_path, bad, message):
    # it used to go unchecked for an empty list, and with a saved file the fingerprint
    # mismatch was reported ("other settings") instead of what was wrong with the value
    model, path = _small_model(), tmp_path / "answers.json"
    with pytest.raises(ValueError, match=message):
        ins.generate_responses(model, tokenizer, [], context_size=bad, progress=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ins, "generate", _counting_generate(tokenizer, []))
        ins.generate_responses(model, tokenizer, ENTRIES[:2], path=path, progress=False)
    with pytest.raises(ValueError, match=message):
        ins.generate_responses(model, tokenizer, ENTRIES, path=path, context_size=bad, progress=False)


def test_save_responses_removes_a_fingerprint_that_described_other_answers(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(ins, "generate", _counting_generate(tokenizer, []))
    model, path = _small_model(), tmp_path / "answers.json"
    ins.generate_responses(model, tokenizer, ENTRIES[:2], path=path, progress=False)
    assert path.with_name("answers.json.model").exists()
    ins.save_responses(ENTRIES[:2], ["from", "elsewhere"], path)
    assert not path.with_name("answers.json.model").exists()
    assert ins.generate_responses(_small_model(), tokenizer, ENTRIES[:2], path=path, progress=False) == ["from", "elsewhere"]


def test_generate_responses_takes_tensor_counts_as_generate_does_and_resumes_across_them(tokenizer, tmp_path):
    torch.manual_seed(0)
    model, path = _small_model().eval(), tmp_path / "answers.json"
    numbers = ins.generate_responses(model, tokenizer, ENTRIES[:2], path=path, progress=False,
                                     max_new_tokens=4, context_size=64)
    assert ins.generate_response(model, tokenizer, ENTRIES[0], max_new_tokens=torch.tensor(4),
                                 context_size=torch.tensor([64])) == numbers[0]
    # the same settings as tensors: the saved answers are this model's and these settings' (a
    # fingerprint of "tensor(4)" would have refused them as another run's)
    with pytest.MonkeyPatch.context() as patch:
        calls = []
        patch.setattr(ins, "generate", _counting_generate(tokenizer, calls))
        both = ins.generate_responses(model, tokenizer, ENTRIES, path=path, progress=False,
                                      max_new_tokens=torch.tensor(4), context_size=torch.tensor(64))
    assert both[:2] == numbers and len(calls) == len(ENTRIES) - 2


@pytest.mark.parametrize("bad", [-1, 2.5, torch.tensor(2.5), True, torch.tensor([1, 2])])
def test_generate_responses_refuses_a_max_new_tokens_that_makes_no_sense_before_any_file(tokenizer, tmp_path, bad):
    path = tmp_path / "answers.json"
    with pytest.raises(ValueError, match="max_new_tokens=.* must be a whole number >= 0"):
        ins.generate_responses(_small_model(), tokenizer, ENTRIES, path=path, max_new_tokens=bad, progress=False)
    assert not path.exists() and not path.with_name("answers.json.model").exists()


# ---- found by a review (session 39) --------------------------------------------------------------

def test_an_empty_pandas_cell_is_named_with_the_fix(tokenizer):
    nan_input = {**ENTRIES[1], "input": float("nan")}  # what DataFrame.to_dict("records") gives for an empty cell
    with pytest.raises(TypeError, match=r"^example 1's 'input' is a float \(NaN\), not text.*df\.fillna\(''\) first"):
        InstructionDataset([ENTRIES[0], nan_input], tokenizer)
    with pytest.raises(TypeError, match=r"^entry 0's 'input' is a float, not text: 'instruction' .* or missing$"):
        ins.generate_responses(_small_model(), tokenizer, [{**ENTRIES[0], "input": 1.5}], progress=False)


def test_generate_responses_encodes_each_prompt_once(tokenizer, monkeypatch):
    calls = []
    monkeypatch.setattr(ins, "generate", _counting_generate(tokenizer, calls))

    class CountingTokenizer:
        encoded = 0

        def encode(self, text, **kwargs):
            CountingTokenizer.encoded += 1
            return tokenizer.encode(text, **kwargs)

        def decode(self, ids):
            return tokenizer.decode(ids)

    answers = ins.generate_responses(_small_model(), CountingTokenizer(), ENTRIES, max_new_tokens=2, progress=False)
    assert len(answers) == len(calls) == len(ENTRIES) == CountingTokenizer.encoded
