"""Smoke run of ch06_classification.ipynb (papermill, smoke mode) and checks on its metrics."""
import csv

import pytest


@pytest.fixture(scope="module")
def metrics(smoke_run):
    return smoke_run("ch06_classification")


def test_data_preparation_counts(metrics, data_dir):
    with open(data_dir / "sms_spam_collection" / "SMSSpamCollection", encoding="utf-8", newline="") as f:
        labels = [row[0] for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    n_spam = labels.count("spam")
    assert metrics["sms_rows"] == len(labels)
    assert (metrics["sms_ham"], metrics["sms_spam"]) == (labels.count("ham"), n_spam)
    assert metrics["balanced_counts"] == {"ham": n_spam, "spam": n_spam} == {"ham": 747, "spam": 747}
    n = 2 * n_spam
    assert metrics["split_sizes"] == [int(0.7 * n), int(0.1 * n), n - int(0.7 * n) - int(0.1 * n)]
    assert metrics["split_sizes"] == [1045, 149, 300]


def test_model_and_trainable_counts(metrics):
    assert metrics["mode"] == "smoke"
    assert metrics["weights"] == "standin"  # smoke mode never downloads
    cfg = metrics["model_cfg"]
    d = cfg["emb_dim"]
    assert metrics["max_length"] <= cfg["context_length"]
    block = 12 * d * d + (13 if cfg["qkv_bias"] else 10) * d
    assert metrics["trainable_params"] == block + 2 * d + 2 * d + 2
    # one LoRA pair r * (in + out) per Linear: q, k, v, out (d -> d), d -> 4d, 4d -> d; the head d -> 2
    r = metrics["lora_rank"]
    per_block = 4 * r * (d + d) + r * (d + 4 * d) + r * (4 * d + d)
    assert metrics["lora_trainable_params"] == cfg["n_layers"] * per_block + r * (d + 2)


def test_training_record_is_consistent(metrics):
    steps = metrics["num_epochs"] * metrics["steps_per_epoch"]
    assert steps > 0
    assert len(metrics["train_losses"]) == len(metrics["val_losses"]) == (steps - 1) // metrics["eval_freq"] + 1
    assert len(metrics["train_accs"]) == len(metrics["val_accs"]) == metrics["num_epochs"]
    assert metrics["examples_seen"] == steps * 8  # batch 8, incomplete batches dropped
    assert metrics["training_s"] > 0 and metrics["lora_s"] > 0


def test_accuracies_are_fractions(metrics):
    values = (list(metrics["acc_before"].values()) + list(metrics["acc_final"].values())
              + metrics["train_accs"] + metrics["val_accs"] + list(metrics["lora_acc"].values())
              + [run[s] for run in metrics["last_token_comparison"].values() for s in ("val", "test")])
    assert len(values) >= 14
    assert all(0.0 <= v <= 1.0 for v in values)
    assert set(metrics["last_token_comparison"]) == {"last token (book)", "last real token"}
    assert set(metrics["acc_final"]) == {"train", "val", "test"}


def test_headline_and_book_figures(metrics):
    headline, book = metrics["headline"], metrics["book"]
    assert headline["weights"] == metrics["weights"] and book["weights"] == "openai"
    for name, split in [("train accuracy %", "train"), ("validation accuracy %", "val"), ("test accuracy %", "test")]:
        assert headline[name] == pytest.approx(100 * metrics["acc_final"][split], abs=0.006)
    assert (book["train accuracy %"], book["validation accuracy %"], book["test accuracy %"]) == (97.21, 97.32, 95.67)


def test_standin_cache_rebuilds_a_damaged_copy(metrics):
    # the closing section's check: same weights from the cache, a truncated copy built again
    assert metrics["standin_cache_ok"] is True


def test_comparison_noise_and_exercises(metrics):
    runs = metrics["last_token_comparison"]
    difference = runs["last real token"]["test"] - runs["last token (book)"]["test"]
    assert metrics["last_token_difference"] == pytest.approx(difference)
    n = metrics["split_sizes"][2] if metrics["mode"] == "full" else 32  # smoke: the first 32 test messages
    expected_se = ((runs["last token (book)"]["test"] * (1 - runs["last token (book)"]["test"])
                    + runs["last real token"]["test"] * (1 - runs["last real token"]["test"])) / n) ** 0.5
    assert metrics["last_token_difference_se"] == pytest.approx(expected_se)
    for key in ("exercise_61", "exercise_62"):
        assert set(metrics[key]) == {"val", "test", "time_s"}
        assert 0.0 <= metrics[key]["test"] <= 1.0 and metrics[key]["time_s"] > 0
