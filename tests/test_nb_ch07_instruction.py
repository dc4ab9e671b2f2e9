"""Smoke run of ch07_instruction.ipynb: the split, a finetune that lowers the loss, one saved
response per test entry without the prompt in it, and a judge step that skips cleanly when no
Ollama server answers. Expected values are computed here from the data file itself."""
import json
import math
import os
from pathlib import Path

import torch

PREAMBLE = ("Below is an instruction that describes a task. Write a response that appropriately "
            "completes the request.")


def _prompt(entry):
    text = f"{PREAMBLE}\n\n### Instruction:\n{entry['instruction']}"
    if entry["input"]:
        text += f"\n\n### Input:\n{entry['input']}"
    return text


def _words(text):
    while "### Response:" in text:  # one pass of replace can join two halves into a new header
        text = text.replace("### Response:", "")
    return " ".join(text.split())


def _formatted(entry):
    return _prompt(entry) + f"\n\n### Response:\n{entry['output']}"


def test_ch07_smoke_run(smoke_run, data_dir, tokenizer, refused_port):
    # a port nothing listens on: the notebook must find no judge, say so and carry on
    m = smoke_run("ch07_instruction", ollama_host=f"http://127.0.0.1:{refused_port}")
    data = json.loads((data_dir / "instruction-data.json").read_text(encoding="utf-8"))
    n = len(data)
    assert m["mode"] == "smoke"
    assert m["n_entries"] == n == 1100
    assert m["split_sizes"] == [math.floor(0.85 * n), math.floor(0.10 * n), n - math.floor(0.85 * n) - math.floor(0.10 * n)]
    assert m["split_sizes"] == [935, 110, 55]
    assert m["max_example_tokens"] == max(len(tokenizer.encode(_formatted(e))) for e in data)

    # finetuning lowered the loss, from the pretrained (stand-in) model's starting point
    assert m["weights"] == "standin"  # smoke mode never downloads (one vocabulary: "openai" / "standin")
    assert len(m["train_losses"]) == len(m["val_losses"]) == len(m["tokens_seen"]) >= 2
    assert m["train_losses"][-1] < m["train_losses"][0] - 0.2
    assert m["train_losses"][-1] < m["initial_train_loss"]
    assert m["val_losses"][-1] < m["initial_val_loss"]
    assert m["steps_per_epoch"] == m["n_train_used"] // 8  # batch size 8, last partial batch dropped

    # exactly one response per test entry used, each an original entry plus its answer
    path = Path(m["responses_path"])
    assert path.is_relative_to(os.environ["COURSE_CHECKPOINT_DIR"]), "notebook wrote outside the test cache"
    records = json.loads(path.read_text(encoding="utf-8"))
    assert len(records) == m["n_test_used"] == m["n_responses"] >= 1
    originals = {json.dumps(e, sort_keys=True) for e in data}
    keys = [json.dumps({k: r[k] for k in ("instruction", "input", "output")}, sort_keys=True) for r in records]
    assert all(k in originals for k in keys) and len(set(keys)) == len(keys)
    for record in records:
        assert set(record) == {"instruction", "input", "output", "model_response"}
        assert isinstance(record["model_response"], str)
        assert _prompt(record) not in record["model_response"]  # 7.7 cut the prompt off

    # the resume demo: stopped at its broken entry 4 with four answers saved, resumed to the same
    # answers as the uninterrupted call, and refused to reuse them for other settings
    assert m["resumed_responses"] == {"saved_before": 4, "identical": True, "other_settings_refused": True}

    # Under the hood: the exported generate_response on the first entries, against 7.7's book-sized
    # answers (same greedy tokens: each exported answer begins its book-sized one), and save_responses
    e = m["exported_responses"]
    assert e["compared"] == min(10, len(records)) and e["round_trip"] is True
    markers = ("### Instruction:", PREAMBLE[:30])
    assert e["run_on"] == sum(any(k in r["model_response"] for k in markers) for r in records)
    exported = json.loads((path.parent / "exported-responses.json").read_text(encoding="utf-8"))
    pairs = list(zip(exported, records))
    assert len(exported) == e["compared"]
    assert all({k: x[k] for k in ("instruction", "input", "output")} == {k: r[k] for k in ("instruction", "input", "output")}
               for x, r in pairs)
    assert e["same"] == sum(x["model_response"] == r["model_response"] for x, r in pairs)
    # recomputed from the two files: the same greedy tokens, so the exported answer is the
    # book-sized one cut at a new example (headers removed until none is left, whitespace collapsed)
    assert all(_words(r["model_response"]).startswith(_words(x["model_response"])) for x, r in pairs)
    for x in exported:  # extract_response's promise, whatever the model generated
        assert not any(k in x["model_response"] for k in markers)

    # the finetuned weights: a plain state dict of tensors
    model_path = Path(m["model_path"])
    assert model_path.is_relative_to(os.environ["COURSE_MODELS_DIR"])
    state = torch.load(model_path, weights_only=True)
    assert state["tok_emb.weight"].shape[0] == 50257
    assert state["pos_emb.weight"].shape[0] == m["context_length"]

    # no judge: skipped, with the fix spelled out, and the closing table says so
    assert m["judge_status"] == "not run: no Ollama"
    assert "ollama serve" in m["judge_message"]
    assert m["judge_average"] is None and m["judge_scores"] == []
    assert m["this_run_score"] == "not run: no Ollama"

    # the run report's headline: the final validation loss and the judge's status, the book's figures beside
    assert m["headline"]["final validation loss"] == round(m["val_losses"][-1], 3)
    assert m["headline"]["judge score"] == "not run: no Ollama"
    assert m["headline"]["weights"] == "standin"
    assert m["book"]["final validation loss"] == 0.657 and "50" in m["book"]["judge score"]
    assert set(m["book"]) == set(m["headline"])
