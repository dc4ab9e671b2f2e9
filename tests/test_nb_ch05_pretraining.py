"""Smoke run of ch05_pretraining.ipynb: training lowered the loss, the numbers it recorded are
consistent with each other, a resumed run was identical, and the weight loaders agreed."""
import math


def test_ch05_smoke_run(smoke_run, tokenizer, verdict_text):
    m = smoke_run("ch05_pretraining")
    assert m["mode"] == "smoke"
    # An untrained model is about as unsure as a uniform guess over GPT-2's 50,257 tokens.
    assert abs(m["untrained_loss"] - math.log(50257)) < 1.0
    assert abs(m["untrained_perplexity"] - math.exp(m["untrained_loss"])) < 1e-6 * m["untrained_perplexity"]
    n = len(m["train_losses"])
    assert n == len(m["val_losses"]) == len(m["tokens_seen"])
    # the book's split (90 % of the characters), windows of 32 tokens with stride 32, batches of 8
    # (the last partial one dropped): 18 steps per epoch; 2 epochs evaluated every 5 steps
    train_tokens = len(tokenizer.encode(verdict_text[:int(0.9 * len(verdict_text))]))
    assert m["steps_per_epoch"] == len(range(0, train_tokens - 32, 32)) // 8 == 18
    assert n == len(range(0, 2 * 18, 5))
    assert m["tokens_seen"] == [(5 * k + 1) * 8 * 32 for k in range(n)]
    assert m["train_losses"][-1] < m["train_losses"][0] - 0.3
    assert m["val_losses"][-1] < m["val_losses"][0]
    assert len(m["epoch_train_loss"]) == len(m["epoch_val_loss"]) == 2
    assert m["epoch_train_loss"][-1] == round(m["train_losses"][-1], 4)
    assert abs(m["final_train_perplexity"] - math.exp(m["train_losses"][-1])) < 1e-6 * m["final_train_perplexity"]
    assert m["training_s"] > 0
    assert m["resume_identical"] is True
    # 5.6's appendix D loop: 20 % warm-up from 1e-5 to the peak, then cosine decay towards 1e-5
    d = m["appendix_d"]
    lrs, warm = d["lrs"], d["warmup_steps"]
    assert len(lrs) == 2 * 18 and warm == int(0.2 * 36) and lrs[0] == 1e-5
    assert lrs[:warm + 1] == sorted(lrs[:warm + 1]) and abs(lrs[warm] - 4e-4) < 1e-12  # up to the peak
    assert lrs[warm:] == sorted(lrs[warm:], reverse=True) and 1e-5 < lrs[-1] < 2e-5  # then down
    assert len(d["train_losses"]) == len(d["val_losses"]) == n and d["train_losses"][-1] < d["train_losses"][0]
    # the exported train_model: the book-sized loop's numbers, and exact resuming
    assert m["train_model_same_as_book"] is True and m["train_model_resume_identical"] is True
    # the exported generate / beam_search give 5.3's teaching versions' tokens (cache on and off)
    assert m["decoding_same_as_book"] is True
    assert m["weights"] == "standin"  # smoke mode never downloads
    assert m["tf_route"] == "not run"  # the book's TensorFlow route needs the download
    assert m["standin_max_abs_diff"] <= 1e-5  # Hugging Face's format round-trips the trained model
    # 5.6: one helpers.pretrain run per option, each adding one option to the row above.
    table = m["options_table"]
    # a CPU without bf16 instructions gets no autocast row (emulated bf16 is far slower than float32)
    from helpers.support.runtime import supports_bf16
    half_rows = ["+ bf16 autocast"] if supports_bf16("cpu") else []
    assert list(table) == ["script, book setup", "+ fused AdamW", "+ FastGPTModel", "+ tied weights", *half_rows,
                           "+ gradient checkpointing", "+ 4 accumulated micro-batches", "+ clipping, warm-up, cosine"]
    first = table["script, book setup"]
    for name in ("+ fused AdamW", "+ FastGPTModel"):  # the same arithmetic from the same weights
        assert abs(table[name]["val_loss"] - first["val_loss"]) < 1e-4, name
        assert table[name]["parameters"] == first["parameters"]
    assert first["parameters"] - table["+ tied weights"]["parameters"] == 50257 * 64  # smoke: emb_dim 64
    # checkpointing recomputes the same forward pass (same dropout masks): the same numbers
    assert table["+ gradient checkpointing"]["val_loss"] == table[(half_rows or ["+ tied weights"])[0]]["val_loss"]
    assert all(r["tok_s"] > 0 and r["peak_memory_mib"] > 0 and math.isfinite(r["val_loss"]) for r in table.values())
    # the headline for the run report: the last losses; the book's figures only beside a full 10-epoch run
    assert m["headline"] == {"train loss": round(m["train_losses"][-1], 3), "val loss": round(m["val_losses"][-1], 3),
                             "weights (5.5)": "standin"}
    assert m["book"] == {}
