"""Smoke run of ch02_text_data.ipynb: its recorded numbers against independent computations."""
import re

import tiktoken


def count_windows(n_tokens, max_length, stride):
    """Window starts 0, stride, 2*stride, ... whose target (one token further) still fits."""
    count, start = 0, 0
    while start + max_length + 1 <= n_tokens:
        count, start = count + 1, start + stride
    return count


def test_ch02_smoke_run(smoke_run, verdict_text, tokenizer):
    metrics = smoke_run("ch02_text_data")
    assert metrics["mode"] == "smoke"

    words = [t for t in re.split(r'([,.:;?_!"()\']|--|\s)', verdict_text) if t.strip()]
    ids = tokenizer.encode(verdict_text)
    assert isinstance(tokenizer, tiktoken.Encoding) and tokenizer.name == "gpt2"

    assert metrics["verdict_chars"] == len(verdict_text) == 20479
    assert metrics["verdict_regex_tokens"] == len(words)
    assert metrics["vocab_size"] == len(set(words))
    assert metrics["vocab_size_with_special"] == len(set(words)) + 2
    assert metrics["verdict_bpe_tokens"] == len(ids)
    assert metrics["windows_len4_stride1"] == count_windows(len(ids), 4, 1) == len(ids) - 4
    assert metrics["windows_len4_stride4"] == count_windows(len(ids), 4, 4)
    assert metrics["windows_len256_stride128"] == count_windows(len(ids), 256, 128)
    assert metrics["batches_b8_len4_stride4"] == count_windows(len(ids), 4, 4) // 8
    assert metrics["input_embeddings_shape"] == [8, 4, 256]
    assert 0 < metrics["batches_embedded"] <= metrics["batches_b8_len4_stride4"]
    # "Under the hood": the exported classes give the book-sized ones' IDs, windows and batches
    for key in ("exported_same_tokenizers", "exported_same_windows", "exported_same_batches"):
        assert metrics[key] is True, key
