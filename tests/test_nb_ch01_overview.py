"""Smoke run of ch01_overview.ipynb: every step of the tour ran, and what it recorded agrees with
counts made here independently (tokenizer, closed-form parameter count, window arithmetic, the
SMS file read line by line)."""
import math


def gpt_param_count(vocab_size, context_length, emb_dim, n_layers, qkv_bias=False, **_):
    """GPTModel's parameters in closed form (untied output head, as GPTModel builds it)."""
    d = emb_dim
    attention = 3 * d * d + (3 * d if qkv_bias else 0) + d * d + d  # W_q, W_k, W_v (+bias), out_proj
    feed_forward = d * 4 * d + 4 * d + 4 * d * d + d
    block = attention + feed_forward + 2 * 2 * d  # two LayerNorms, scale and shift each
    return vocab_size * d + context_length * d + n_layers * block + 2 * d + d * vocab_size


def test_ch01_smoke_run(smoke_run, tokenizer, verdict_text, data_dir):
    m = smoke_run("ch01_overview")
    assert m["mode"] == "smoke"

    # Step 1: the sentence's token IDs are the tokenizer's
    assert m["token_ids"] == tokenizer.encode(m["sentence"])
    assert m["n_tokens"] == len(m["token_ids"])

    # Step 2: parameter count and logits shape follow from the configuration
    cfg = m["config"]
    assert m["n_params"] == gpt_param_count(**cfg)
    assert m["logits_shape"] == [1, m["n_tokens"], cfg["vocab_size"]] and cfg["vocab_size"] == tokenizer.n_vocab

    # Step 3: data sizes, evaluation schedule, and the loss went down
    assert m["verdict_chars"] == len(verdict_text)
    assert m["verdict_tokens"] == len(tokenizer.encode(verdict_text))
    ctx, batch_size, eval_freq = cfg["context_length"], m["batch_size"], m["eval_freq"]
    train_tokens = len(tokenizer.encode(verdict_text[: int(0.9 * len(verdict_text))]))
    windows = len(range(0, train_tokens - ctx, ctx))  # non-overlapping windows of ctx + 1 tokens
    assert m["steps_per_epoch"] == windows // batch_size  # incomplete batches are dropped
    evals = len(range(0, m["num_epochs"] * m["steps_per_epoch"], eval_freq))
    assert len(m["train_losses"]) == len(m["val_losses"]) == len(m["tokens_seen"]) == evals
    assert m["tokens_seen"] == [(k * eval_freq + 1) * batch_size * ctx for k in range(evals)]
    assert abs(m["train_losses"][0] - math.log(cfg["vocab_size"])) < 1.5  # about a uniform guess at first
    assert m["train_losses"][-1] < m["train_losses"][0] - 0.5
    assert m["val_losses"][-1] < m["val_losses"][0]

    # Step 4: greedy generation extends the prompt by max_new_tokens tokens
    prompt_ids = tokenizer.encode(m["prompt"])
    assert m["greedy_ids"][: len(prompt_ids)] == prompt_ids
    assert len(m["greedy_ids"]) == len(prompt_ids) + m["max_new_tokens"]
    assert m["greedy_text"] == tokenizer.decode(m["greedy_ids"])

    # Step 5: the SMS data, read here line by line (label<TAB>text, no quoting)
    labels = [line.split("\t", 1)[0] for line in
              (data_dir / "sms_spam_collection" / "SMSSpamCollection").read_text(encoding="utf-8").splitlines()
              if line.strip()]
    assert (m["n_ham"], m["n_spam"]) == (labels.count("ham"), labels.count("spam"))
    n = 2 * labels.count("spam")
    assert m["n_balanced"] == n
    assert m["split_sizes"] == [int(0.7 * n), int(0.1 * n), n - int(0.7 * n) - int(0.1 * n)]
    sizes = m["clf_sizes"]
    assert 0 < sizes["train"] <= m["split_sizes"][0] and 0 < sizes["val"] <= m["split_sizes"][1]
    assert 0 < sizes["test"] <= m["split_sizes"][2]
    assert m["examples_seen"] == m["clf_epochs"] * (sizes["train"] // 8) * 8  # batches of 8, last one dropped
    accs = m["clf_accs"]
    for acc in [m["clf_acc_before"], *accs.values(), *m["clf_val_accs"]]:
        assert 0.0 <= acc <= 1.0
    # accuracies are counts of correct messages over the messages seen
    for name, seen in [("val", sizes["val"]), ("test", sizes["test"]), ("train", (sizes["train"] // 8) * 8)]:
        assert abs(accs[name] * seen - round(accs[name] * seen)) < 1e-6
    assert abs(m["clf_acc_before"] * sizes["val"] - round(m["clf_acc_before"] * sizes["val"])) < 1e-6

    # Try it
    assert tokenizer.decode(m["exercise_unknown_ids"]) == m["exercise_unknown"]
    assert len(m["exercise_unknown_ids"]) > len(m["exercise_unknown"].split())  # cut into smaller pieces
    assert m["exercise_param_count"] == gpt_param_count(50257, 128, 256, 4)
    assert m["exercise_train_tokens"] == train_tokens
    assert m["exercise_windows"] == len(range(0, train_tokens - 128, 64))
