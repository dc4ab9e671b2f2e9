"""The book's package API on `helpers`: every public name of `llms_from_scratch` 1.0.19's
chapter modules (ch02-ch07), appendices D and E and GPT-2 KV-cache modules exists in `helpers`, with a compatible
signature, and the seeded results the book prints come out the same.

BOOK_API below is a list of facts read from the book's package (names, parameter names and
defaults), not its code. "Compatible" means: the book's positional parameters come first, in
the same order, under the same names (RENAMED lists the few deliberate exceptions); every
default the book has is ours too; anything we add comes after, with a default or keyword-only.

The tests from test_same_seed_same_results_as_the_book_package on compare with the book's
package itself, seed for seed and checkpoint for checkpoint: `make` installs it for the tests
(`pip install llms-from-scratch==1.0.19 --no-deps`); the course never imports it. Without it
those tests skip, except under `make test`, which sets COURSE_REQUIRE_BOOK_PACKAGE=1 and then
stops at once (tests/conftest.py).
"""
import ast
import json
import importlib
import inspect

import pytest
import torch

import helpers

# book module -> {name or Class.method: the book's parameters (without self)}
BOOK_API = {
    "ch02": {
        "GPTDatasetV1": "txt, tokenizer, max_length, stride",
        "create_dataloader_v1": "txt, batch_size=4, max_length=256, stride=128, shuffle=True, drop_last=True, num_workers=0",
    },
    "ch03": {
        "SelfAttention_v1": "d_in, d_out",
        "SelfAttention_v1.forward": "x",
        "SelfAttention_v2": "d_in, d_out, qkv_bias=False",
        "SelfAttention_v2.forward": "x",
        "CausalAttention": "d_in, d_out, context_length, dropout, qkv_bias=False",
        "CausalAttention.forward": "x",
        "MultiHeadAttentionWrapper": "d_in, d_out, context_length, dropout, num_heads, qkv_bias=False",
        "MultiHeadAttentionWrapper.forward": "x",
        "MultiHeadAttention": "d_in, d_out, context_length, dropout, num_heads, qkv_bias=False",
        "MultiHeadAttention.forward": "x",
        "PyTorchMultiHeadAttention": "d_in, d_out, num_heads, dropout=0.0, qkv_bias=False",
        "PyTorchMultiHeadAttention.forward": "x",
    },
    "ch04": {
        "LayerNorm": "emb_dim",
        "GELU": "",
        "FeedForward": "cfg",
        "TransformerBlock": "cfg",
        "TransformerBlock.forward": "x",
        "GPTModel": "cfg",
        "GPTModel.forward": "in_idx",
        "generate_text_simple": "model, idx, max_new_tokens, context_size",
        "FeedForwardFast": "cfg",
        "TransformerBlockFast": "cfg",
        "TransformerBlockFast.forward": "x",
        "GPTModelFast": "cfg",
        "GPTModelFast.forward": "in_idx",
    },
    "ch05": {
        "generate": "model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None",
        "train_model_simple": "model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter, start_context, tokenizer",
        "evaluate_model": "model, train_loader, val_loader, device, eval_iter",
        "generate_and_print_sample": "model, tokenizer, device, start_context",
        "assign": "left, right",
        "load_weights_into_gpt": "gpt, params",
        "text_to_token_ids": "text, tokenizer",
        "token_ids_to_text": "token_ids, tokenizer",
        "calc_loss_batch": "input_batch, target_batch, model, device",
        "calc_loss_loader": "data_loader, model, device, num_batches=None",
        "plot_losses": "epochs_seen, tokens_seen, train_losses, val_losses",
        "download_and_load_gpt2": "model_size, models_dir",
        "download_file": "url, destination, backup_url=None",
        "load_gpt2_params_from_tf_ckpt": "ckpt_path, settings",
    },
    "ch06": {
        "download_and_unzip_spam_data": "url, zip_path, extracted_path, data_file_path",
        "create_balanced_dataset": "df",
        "random_split": "df, train_frac, validation_frac",
        "SpamDataset": "csv_file, tokenizer, max_length=None, pad_token_id=50256",
        "calc_accuracy_loader": "data_loader, model, device, num_batches=None",
        "calc_loss_batch": "input_batch, target_batch, model, device",
        "calc_loss_loader": "data_loader, model, device, num_batches=None",
        "evaluate_model": "model, train_loader, val_loader, device, eval_iter",
        "train_classifier_simple": "model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter",
        "plot_values": "epochs_seen, examples_seen, train_values, val_values, label='loss'",
        "classify_review": "text, model, tokenizer, device, max_length=None, pad_token_id=50256",
    },
    "ch07": {
        "download_and_load_file": "file_path, url",
        "format_input": "entry",
        "InstructionDataset": "data, tokenizer",
        "custom_collate_draft_1": "batch, pad_token_id=50256, device='cpu'",
        "custom_collate_draft_2": "batch, pad_token_id=50256, device='cpu'",
        "custom_collate_fn": "batch, pad_token_id=50256, ignore_index=-100, allowed_max_length=None, device='cpu'",
        "check_if_running": "process_name",
        "query_model": "prompt, model='llama3', url='http://localhost:11434/api/chat'",
        "generate_model_scores": "json_data, json_key, model='llama3'",
    },
    "appendix_d": {
        "find_highest_gradient": "model",
        "train_model": "model, train_loader, val_loader, optimizer, device, n_epochs, eval_freq, eval_iter, "
                       "start_context, tokenizer, warmup_steps, initial_lr=3e-05, min_lr=1e-6, orig_book_version=False",
    },
    "appendix_e": {
        "LoRALayer": "in_dim, out_dim, rank, alpha",
        "LinearWithLoRA": "linear, rank, alpha",
        "replace_linear_with_lora": "model, rank, alpha",
    },
    # llms_from_scratch.kv_cache.gpt2 (it re-exports kv_cache.utils.KVCache)
    "kv_cache.gpt2": {
        "MultiHeadAttention": "d_in, d_out, context_length, dropout, num_heads, qkv_bias=False",
        "LayerNorm": "emb_dim",
        "GELU": "",
        "FeedForward": "cfg",
        "TransformerBlock": "cfg",
        "GPTModel": "cfg",
        "GPTModel.forward": "in_idx, use_cache=False, cache=None",
        "GPTModel.reset_kv_cache": "",  # see BOOK_EXPECTS
        "KVCache": "n_layers",
        "KVCache.get": "layer_idx",
        "KVCache.update": "layer_idx, value",
        "KVCache.get_all": "",
        "KVCache.reset": "",
    },
    # llms_from_scratch.kv_cache.generate (it re-exports generate.trim_input_tensor and KVCache)
    "kv_cache.generate": {
        "generate_text_simple": "model, idx, max_new_tokens, context_size=None, use_cache=True",
        "generate_text_simple_stream": "model, token_ids, max_new_tokens, eos_token_id=None, context_size=None",
        "trim_input_tensor": "input_ids_tensor, context_len, max_new_tokens",
        "KVCache": "n_layers",
    },
}

# Where a book name is not simply `helpers.NAME`: chapter 6's loss and evaluation functions
# share their names with chapter 5's (the package keeps them in two modules, and so do we).
HELPERS_HOME = {
    ("ch06", "calc_loss_batch"): "helpers.classification",
    ("ch06", "calc_loss_loader"): "helpers.classification",
    ("ch06", "evaluate_model"): "helpers.classification",
}

# Deliberate parameter renames (positional calls work as in the book; keyword calls need ours).
RENAMED = {
    ("kv_cache.gpt2", "KVCache.get"): {"layer_idx": "layer"},
    ("kv_cache.gpt2", "KVCache.update"): {"layer_idx": "layer", "value": "keys"},
}


# The book's per-layer cache calls, deliberately not reproduced
# (docs/DIFFERENCES_FROM_THE_BOOK.md, "State dicts and attributes"):
# they return (output, cache) pairs, and one name cannot also return chapter 3's tensor. The
# model-level calls in BOOK_API are what the book's generation code uses.
NOT_REPRODUCED = {
    ("kv_cache.gpt2", "MultiHeadAttention.forward"): "x, use_cache=False, start_pos=0, cache=None",
    ("kv_cache.gpt2", "TransformerBlock.forward"): "x, use_cache=False, start_pos=0, cache=None",
}


def book_params(spec):
    """[(name, has_default, default)] from 'a, b=1, c=None'."""
    args = ast.parse(f"def f({spec}): pass").body[0].args
    defaults = [None] * (len(args.args) - len(args.defaults)) + args.defaults
    return [(a.arg, d is not None, ast.literal_eval(d) if d is not None else None)
            for a, d in zip(args.args, defaults)]


def resolve(module, name):
    home = importlib.import_module(HELPERS_HOME.get((module, name.split(".")[0]), "helpers"))
    obj = home
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def signature_problems(module, name, spec):
    obj = resolve(module, name)
    if obj is None:
        return [f"{name} is missing"]
    ours = list(inspect.signature(obj).parameters.values())
    if "." in name or inspect.isclass(obj):
        ours = [p for p in ours if p.name != "self"]
    renamed = RENAMED.get((module, name), {})
    problems = []
    book = book_params(spec)
    for i, (bname, has_default, default) in enumerate(book):
        if i < len(ours) and ours[i].kind is inspect.Parameter.VAR_POSITIONAL:
            break  # *args takes the rest positionally
        if i >= len(ours) or ours[i].kind not in (inspect.Parameter.POSITIONAL_ONLY,
                                                   inspect.Parameter.POSITIONAL_OR_KEYWORD):
            problems.append(f"book parameter {i} {bname!r} has no positional counterpart")
            break
        p = ours[i]
        if p.name != renamed.get(bname, bname):
            problems.append(f"parameter {i} is {p.name!r}, the book's is {bname!r}")
        if has_default and (p.default is inspect.Parameter.empty or p.default != default):
            problems.append(f"{bname}: default {p.default!r}, the book's is {default!r}")
    for p in ours[len(book):]:
        if p.default is inspect.Parameter.empty and p.kind not in (inspect.Parameter.VAR_POSITIONAL,
                                                                   inspect.Parameter.VAR_KEYWORD):
            problems.append(f"extra parameter {p.name!r} has no default")
    return problems


def entries():
    for module, names in BOOK_API.items():
        for name, spec in names.items():
            yield pytest.param(module, name, spec, id=f"{module}.{name}")


@pytest.mark.parametrize("module, name, spec", list(entries()))
def test_book_name_exists_with_a_compatible_signature(module, name, spec):
    assert signature_problems(module, name, spec) == []


@pytest.mark.parametrize("module, name", list(NOT_REPRODUCED))
def test_the_calls_not_reproduced_still_differ_and_the_docs_say_so(module, name):
    """Should one of them become compatible, it belongs in BOOK_API, where it would be checked."""
    from pathlib import Path
    assert signature_problems(module, name, NOT_REPRODUCED[(module, name)]) != []
    root = Path(__file__).resolve().parents[1]
    differences = (root / "docs" / "DIFFERENCES_FROM_THE_BOOK.md").read_text(encoding="utf-8")
    assert f"`{name}" in differences, f"docs/DIFFERENCES_FROM_THE_BOOK.md does not name {name}"
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "docs/DIFFERENCES_FROM_THE_BOOK.md" in readme, "README no longer links the list of differences"


def test_the_checker_catches_what_it_should():
    """The signature check itself: each kind of incompatibility is reported."""
    def ours(a, b, c=2, *, extra=None):
        pass
    helpers._book_api_probe = ours
    try:
        assert signature_problems("x", "_book_api_probe", "a, b, c=2") == []
        assert signature_problems("x", "_book_api_probe", "a, b") == []
        assert signature_problems("x", "_book_api_probe", "a, c, b") != []      # order
        assert signature_problems("x", "_book_api_probe", "a, b, c=3") != []    # default
        assert signature_problems("x", "_book_api_probe", "a, b, c, d") != []   # missing
        assert signature_problems("x", "_book_api_probe", "a, b, extra=None") != []  # keyword-only

        def required_extra(a, b, c):
            pass
        helpers._book_api_probe = required_extra
        assert signature_problems("x", "_book_api_probe", "a, b") != []
    finally:
        del helpers._book_api_probe
    assert signature_problems("x", "NoSuchName", "") == ["NoSuchName is missing"]



# Called by kv_cache.generate on the model it is given, though kv_cache.gpt2's own GPTModel (1.0.19) lacks it.
BOOK_EXPECTS = {("kv_cache.gpt2", "GPTModel.reset_kv_cache")}


def test_book_api_is_what_the_installed_book_package_says():
    """BOOK_API against the book's package itself: every public function and class of each module
    (or, for a re-export, of the module that defines it) is listed, with the book's parameters."""
    pytest.importorskip("llms_from_scratch.ch03")
    problems = []
    for module, names in BOOK_API.items():
        book = importlib.import_module(f"llms_from_scratch.{module}")
        for public, obj in vars(book).items():
            home = getattr(obj, "__module__", "") or ""
            if public.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)) \
                    or not home.startswith("llms_from_scratch."):
                continue
            home = home.removeprefix("llms_from_scratch.")
            if not any(public in {n.split(".")[0] for n in BOOK_API.get(m, {})} for m in (module, home)):
                problems.append(f"{module}.{public} (defined in {home}) is not in BOOK_API")
        for name, spec in names.items():
            obj = book
            for part in name.split("."):
                obj = getattr(obj, part, None)
            if obj is None:
                if (module, name) not in BOOK_EXPECTS:
                    problems.append(f"{module}.{name} is not in the book's package")
                continue
            params = [p for p in inspect.signature(obj).parameters.values() if p.name != "self"]
            theirs = [(p.name, p.default is not inspect.Parameter.empty,
                       None if p.default is inspect.Parameter.empty else p.default) for p in params]
            if theirs != book_params(spec):
                problems.append(f"{module}.{name}: the book's package says {theirs}, BOOK_API {spec!r}")
    assert problems == []

@pytest.mark.parametrize("module", list(BOOK_API))
def test_top_level_names_are_the_chapter_modules_objects(module):
    """`from helpers import NAME` gives the object the chapter exports (no other module's
    same-named object shadows it), except the documented HELPERS_HOME cases."""
    homes = {"ch02": ["text"], "ch03": ["attention"], "ch04": ["model", "generation", "fast"],
             "kv_cache.gpt2": ["attention", "model"], "kv_cache.generate": ["generation", "attention"],
             "ch05": ["training", "generation", "weights", "support.download"], "ch06": ["classification", "weights"],
             "ch07": ["instruction"], "appendix_d": ["training"], "appendix_e": ["classification"]}[module]
    for name in {n.split(".")[0] for n in BOOK_API[module]}:
        if (module, name) in HELPERS_HOME:  # not the top-level name, by design (see HELPERS_HOME)
            continue
        found = [getattr(importlib.import_module(f"helpers.{h}"), name) for h in homes
                 if name in importlib.import_module(f"helpers.{h}").__all__]
        assert found and getattr(helpers, name) is found[0], name


# ---- the book's printed numbers -------------------------------------------------------------

# "Your journey starts with one step": the book's six 3-dimensional toy embeddings (ch. 3).
INPUTS = torch.tensor([[0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64],
                       [0.22, 0.58, 0.33], [0.77, 0.25, 0.10], [0.05, 0.80, 0.55]])


def seeded(seed, cls, *args, **kwargs):
    torch.manual_seed(seed)
    return cls(*args, **kwargs).eval()


@pytest.mark.parametrize("make, x, first_row, last_row", [
    # (the seeds, sizes and printed context vectors of the book's chapter 3)
    (lambda: seeded(123, helpers.SelfAttention_v1, 3, 2), INPUTS, [0.2996, 0.8053], [0.2990, 0.8040]),
    (lambda: seeded(789, helpers.SelfAttention_v2, 3, 2), INPUTS, [-0.0739, 0.0713], [-0.0754, 0.0693]),
    (lambda: seeded(123, helpers.MultiHeadAttentionWrapper, 3, 2, 6, 0.0, num_heads=2),
     torch.stack((INPUTS, INPUTS)), [-0.4519, 0.2216, 0.4772, 0.1063], [-0.5299, -0.1081, 0.5077, 0.3493]),
    (lambda: seeded(123, helpers.MultiHeadAttention, 3, 2, 6, 0.0, num_heads=2),
     torch.stack((INPUTS, INPUTS)), [0.3190, 0.4858], [0.2575, 0.4028]),
], ids=["SelfAttention_v1", "SelfAttention_v2", "MultiHeadAttentionWrapper", "MultiHeadAttention"])
def test_chapter_3_classes_print_the_books_numbers(make, x, first_row, last_row):
    with torch.no_grad():
        out = make()(x)
    rows = out if out.ndim == 2 else out[1]  # both sequences of the batch are the same text
    assert torch.allclose(rows[0], torch.tensor(first_row), atol=1e-4)
    assert torch.allclose(rows[-1], torch.tensor(last_row), atol=1e-4)


def test_causal_attention_is_the_first_head_of_the_wrapper():
    """The book prints only the shape for CausalAttention; with the same seed it is the
    wrapper's first head, whose numbers it prints (above)."""
    batch = torch.stack((INPUTS, INPUTS))
    with torch.no_grad():
        single = seeded(123, helpers.CausalAttention, 3, 2, 6, 0.0)(batch)
        wrapper = seeded(123, helpers.MultiHeadAttentionWrapper, 3, 2, 6, 0.0, 2)(batch)
    assert single.shape == (2, 6, 2)
    assert torch.equal(single, wrapper[..., :2])


def test_pytorch_mha_takes_the_books_arguments_and_any_length():
    mha = seeded(123, helpers.PyTorchMultiHeadAttention, 3, 4, num_heads=2)
    ref = helpers.MultiHeadAttention(3, 4, 6, 0.0, 2)
    ref.load_state_dict(mha.state_dict(), strict=False)
    assert "mask" not in mha.state_dict()
    x = torch.rand(2, 6, 3)
    with torch.no_grad():
        assert (mha(x) - ref.eval()(x)).abs().max() < 1e-6
        assert mha(torch.rand(2, 50, 3)).shape == (2, 50, 4)  # no context length to exceed
    with pytest.raises(ValueError, match="divisible"):
        helpers.PyTorchMultiHeadAttention(3, 5, num_heads=2)


# The book's chapter 4: torch.manual_seed(123), GPTModel(GPT_CONFIG_124M), eval(), greedy from
# "Hello, I am" (15496, 11, 314, 716); it prints the first 6 new tokens, its tests check 10.
BOOK_HELLO = [15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267, 49706, 43231, 47062, 34657]


@pytest.fixture(scope="module")
def gpt124():
    torch.manual_seed(123)
    return helpers.GPTModel(helpers.GPT_CONFIG_124M).eval()


def test_gpt_model_generates_the_books_tokens(gpt124):
    prompt = torch.tensor([BOOK_HELLO[:4]])
    # the book's chapter-4 call (context_size positional), then its cached module's call
    assert helpers.generate_text_simple(gpt124, prompt, 10, 1024).tolist() == [BOOK_HELLO]
    assert helpers.generate_text_simple(gpt124, prompt, 10, use_cache=False).tolist() == [BOOK_HELLO]
    streamed = torch.cat(list(helpers.generate_text_simple_stream(gpt124, prompt, 10)), dim=1)
    assert streamed.tolist() == [BOOK_HELLO[4:]]
    # the book's model-held cache: the prompt once, then one token per call
    gpt124.reset_kv_cache()
    with torch.no_grad():
        ids = [gpt124(prompt, use_cache=True)[:, -1].argmax(-1, keepdim=True)]
        for _ in range(9):
            ids.append(gpt124(ids[-1], use_cache=True)[:, -1].argmax(-1, keepdim=True))
    gpt124.reset_kv_cache()
    assert torch.cat(ids, dim=1).tolist() == [BOOK_HELLO[4:]]


def test_gpt_model_fast_starts_from_the_same_weights_and_tokens(gpt124):
    fast = seeded(123, helpers.GPTModelFast, helpers.GPT_CONFIG_124M)
    ours, book = fast.state_dict(), gpt124.state_dict()
    assert [k for k in book if not torch.equal(ours[k], book[k])] == []
    prompt = torch.tensor([BOOK_HELLO[:4]])
    assert helpers.generate_text_simple(fast, prompt, 10, 1024).tolist() == [BOOK_HELLO]


def test_the_books_parameter_counts(gpt124):
    """Chapter 4 prints 163,009,536 parameters, 124,412,160 without the output head."""
    assert helpers.count_parameters(gpt124) == 163_009_536
    assert helpers.count_parameters(gpt124, tied=True) == 124_412_160


# ---- against the book's package itself, when installed ------------------------------------

SMALL = {"vocab_size": 97, "context_length": 12, "emb_dim": 16, "n_heads": 4, "n_layers": 2,
         "drop_rate": 0.0, "qkv_bias": False}


def test_same_seed_same_results_as_the_book_package():
    """Every chapter 3/4 class and the KV-cache generator against llms_from_scratch 1.0.19."""
    book3 = pytest.importorskip("llms_from_scratch.ch03")
    book4 = importlib.import_module("llms_from_scratch.ch04")
    kv_gen = importlib.import_module("llms_from_scratch.kv_cache.generate")
    batch = torch.stack((INPUTS, INPUTS))
    for name, args, x in [("SelfAttention_v1", (3, 2), INPUTS), ("SelfAttention_v2", (3, 2), INPUTS),
                          ("CausalAttention", (3, 2, 6, 0.0), batch),
                          ("MultiHeadAttentionWrapper", (3, 2, 6, 0.0, 2), batch),
                          ("MultiHeadAttention", (3, 4, 6, 0.0, 2), batch),
                          ("PyTorchMultiHeadAttention", (3, 4, 2), batch),
                          ("MultiHeadAttention", (3, 4, 6, 0.0, 2, True), batch),  # with biases,
                          ("PyTorchMultiHeadAttention", (3, 4, 2, 0.0, True), batch)]:  # drawn in the book's order
        with torch.no_grad():
            theirs = seeded(123, getattr(book3, name), *args)(x)
            ours = seeded(123, getattr(helpers, name), *args)(x)
        assert torch.allclose(ours, theirs, atol=1e-6), name
    idx = torch.tensor([[5, 17, 3]])
    for name in ("GPTModel", "GPTModelFast"):
        with torch.no_grad():
            theirs = seeded(7, getattr(book4, name), SMALL)(idx)
            ours = seeded(7, getattr(helpers, name), SMALL)(idx)
        assert torch.allclose(ours, theirs, atol=2e-6), name
    theirs = book4.generate_text_simple(seeded(7, book4.GPTModel, SMALL), idx, 6, 12)
    ours = seeded(7, helpers.GPTModel, SMALL)
    assert torch.equal(helpers.generate_text_simple(ours, idx, 6, 12), theirs)
    # the book's cached generator, given our model and our KVCache (as a name-for-name shim would)
    original = kv_gen.KVCache
    kv_gen.KVCache = helpers.KVCache
    try:
        assert torch.equal(kv_gen.generate_text_simple(ours, idx, 6), theirs)
    finally:
        kv_gen.KVCache = original


def test_naive_attention_gives_the_book_models_logits_exactly_at_first_then_within_rounding():
    """What docs/DIFFERENCES_FROM_THE_BOOK.md says ("Behaviour"): with cfg["attention"] = "naive" a freshly
    seeded GPTModel computes the book's logits bit for bit (dropout included); after AdamW steps,
    with LayerNorm's scale no longer 1, the two part only at float rounding."""
    book4 = pytest.importorskip("llms_from_scratch.ch04")
    cfg = {**SMALL, "drop_rate": 0.1}
    ours, theirs = seeded(7, helpers.GPTModel, {**cfg, "attention": "naive"}), seeded(7, book4.GPTModel, cfg)
    idx = torch.randint(0, cfg["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(0))
    targets = torch.roll(idx, -1, dims=1)
    losses = {}
    for name, model in (("ours", ours), ("theirs", theirs)):
        opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.1)
        torch.manual_seed(1)
        first = model(idx)
        losses[name] = []
        for _ in range(10):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), targets.flatten())
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
        losses[name + " first"] = first
    assert torch.equal(losses["ours first"], losses["theirs first"])
    assert losses["ours"] == pytest.approx(losses["theirs"], rel=1e-6)
    assert losses["ours"][-1] < losses["ours"][0] - 0.5  # it trained: scale and shift moved


def test_the_books_blocks_and_attention_layers_can_replace_ours():
    """Without a cache our GPTModel calls each block, and each block its attention, with x alone,
    as the book's do: a module with the book's forward(x) fits in either place."""
    book4 = pytest.importorskip("llms_from_scratch.ch04")
    book = seeded(3, book4.GPTModel, SMALL).eval()
    ours = helpers.GPTModel(SMALL).eval()
    ours.load_state_dict(book.state_dict())
    ours.trf_blocks[0] = book.trf_blocks[0]  # the book's TransformerBlock: forward(x)
    ours.trf_blocks[1].att = book.trf_blocks[1].att  # the book's MultiHeadAttention: forward(x)
    idx = torch.randint(0, SMALL["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(ours(idx), book(idx), atol=1e-5)
    ours.trf_blocks[1] = torch.nn.Identity()
    with torch.no_grad():
        assert ours(idx).shape == (2, 12, SMALL["vocab_size"])


def test_same_seed_same_data_training_and_sampling_as_the_book_package(tokenizer, verdict_text):
    """Chapters 2, 5, 6 and 7 against llms_from_scratch 1.0.19: the same windows, the same
    training losses from the same seed (dropout on), the same sampled tokens, the same
    accuracy and the same instruction batches."""
    book2 = pytest.importorskip("llms_from_scratch.ch02")
    book4, book5, book6, book7 = (importlib.import_module(f"llms_from_scratch.ch0{n}") for n in (4, 5, 6, 7))
    text = verdict_text[:4000]
    windows = {}
    for who, module in (("ours", helpers), ("book", book2)):
        torch.manual_seed(123)  # the shuffle draws when the loader is iterated
        windows[who] = list(module.create_dataloader_v1(text, batch_size=2, max_length=16, stride=16, shuffle=True))
    ours, theirs = windows["ours"], windows["book"]
    assert len(ours) == len(theirs) > 10
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(ours, theirs))
    # book code reads the tokenizer back from the loader's dataset
    for module in (helpers, book2):
        assert module.GPTDatasetV1(text, tokenizer, 16, 16).tokenizer is tokenizer

    cfg = {**SMALL, "vocab_size": 50257, "context_length": 16, "drop_rate": 0.1}
    runs = {}
    for who, model_module, loop_module in (("ours", helpers, helpers), ("book", book4, book5)):
        torch.manual_seed(123)
        model = model_module.GPTModel(cfg)
        optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.1)
        torch.manual_seed(123)
        train = model_module is helpers and helpers.create_dataloader_v1 or book2.create_dataloader_v1
        train_loader = train(text, batch_size=2, max_length=16, stride=16, shuffle=True)
        val_loader = train(verdict_text[4000:5000], batch_size=2, max_length=16, stride=16, shuffle=False)
        losses = loop_module.train_model_simple(model, train_loader, val_loader, optimizer, "cpu", num_epochs=2,
                                                eval_freq=5, eval_iter=2, start_context="Every effort moves you",
                                                tokenizer=tokenizer)
        runs[who] = (model, losses)
    (our_model, our_losses), (book_model, book_losses) = runs["ours"], runs["book"]
    assert len(our_losses[0]) > 3
    for ours_, theirs_ in zip(our_losses, book_losses):
        assert ours_ == pytest.approx(theirs_, abs=1e-5)
    # the same draws from the same model (the two trained models differ by float rounding,
    # which a sampled token can amplify)
    idx = torch.tensor([tokenizer.encode("Every effort moves you")])
    sampled = []
    for generate in (helpers.generate, book5.generate):
        for temperature, top_k in ((1.4, 25), (torch.tensor(1.4), torch.tensor([25]))):  # the book takes tensors too
            torch.manual_seed(5)
            sampled.append(generate(book_model, idx, 8, 16, temperature=temperature, top_k=top_k))
        torch.manual_seed(5)  # counts as tensors as well
        sampled.append(generate(book_model, idx, torch.tensor(8), torch.tensor([16]), temperature=1.4, top_k=25))
    assert all(torch.equal(sampled[0], other) for other in sampled[1:])
    # our model, still in training mode (dropout on): generate leaves its KV cache out, so
    # dropout draws for the same positions and the tokens stay the book's
    assert our_model.training
    sampled = []
    for generate in (helpers.generate, book5.generate):
        torch.manual_seed(5)
        sampled.append(generate(our_model, idx, 8, 16, temperature=1.4, top_k=25))
    assert torch.equal(*sampled)

    # chapter 6: the accuracy of a two-class head on the same batches
    for model in (our_model, book_model):
        torch.manual_seed(0)
        model.out_head = torch.nn.Linear(cfg["emb_dim"], 2)
    batches = [(x, (x[:, -1] % 2)) for x, _ in ours]
    assert helpers.calc_accuracy_loader(batches, our_model, "cpu", num_batches=5) == \
        book6.calc_accuracy_loader(batches, book_model, "cpu", num_batches=5)

    # chapter 7: the same padded inputs and masked targets
    batch = [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9], [50256, 11]]
    for limit in (None, 3):
        for a, b in zip(helpers.custom_collate_fn(batch, allowed_max_length=limit),
                        book7.custom_collate_fn(batch, allowed_max_length=limit)):
            assert torch.equal(a, b), limit


def test_appendix_d_and_e_give_the_book_packages_results(tokenizer, verdict_text, nonzero_lora_b):
    """Appendix D's loop (both clipping variants) and appendix E's LoRA against llms_from_scratch
    1.0.19, seed for seed: the same learning rates to the bit, the same losses, the same highest
    gradient, the same LoRA outputs."""
    book_d = pytest.importorskip("llms_from_scratch.appendix_d")
    book2, book4, book_e = (importlib.import_module(f"llms_from_scratch.{m}") for m in ("ch02", "ch04", "appendix_e"))
    cfg = {**SMALL, "vocab_size": 50257, "context_length": 16, "drop_rate": 0.1}
    for orig in (False, True):
        runs, models = {}, {}
        for who, model_module, loader_module, train in (("ours", helpers, helpers, helpers.train_model),
                                                         ("book", book4, book2, book_d.train_model)):
            torch.manual_seed(123)
            model = model_module.GPTModel(cfg)
            optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.1)
            torch.manual_seed(123)
            train_loader = loader_module.create_dataloader_v1(verdict_text[:4000], batch_size=2, max_length=16, stride=16)
            val_loader = loader_module.create_dataloader_v1(verdict_text[4000:5000], batch_size=2, max_length=16,
                                                            stride=16, shuffle=False)
            runs[who] = train(model, train_loader, val_loader, optimizer, "cpu", 1, 5, 2, "Every effort moves you",
                              tokenizer, 7, initial_lr=1e-5, min_lr=1e-5, orig_book_version=orig)
            models[who] = model
        (ours_train, ours_val, ours_tokens, ours_lrs), (book_train, book_val, book_tokens, book_lrs) = runs["ours"], runs["book"]
        assert len(ours_lrs) == 30 and ours_lrs == book_lrs and ours_tokens == book_tokens
        assert ours_train + ours_val == pytest.approx(book_train + book_val, abs=1e-5)
    x = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(0))
    for model in models.values():
        model.zero_grad()
        model(x).logsumexp(-1).mean().backward()
    assert helpers.find_highest_gradient(models["ours"]) == book_d.find_highest_gradient(models["ours"])
    assert helpers.find_highest_gradient(torch.nn.Linear(2, 2)) is book_d.find_highest_gradient(torch.nn.Linear(2, 2)) is None

    outs = []
    for module in (helpers, book_e):
        torch.manual_seed(1)
        model = book4.GPTModel(SMALL)
        torch.manual_seed(2)
        module.replace_linear_with_lora(model, rank=4, alpha=8)
        nonzero_lora_b(model)  # the same values for both: the LoRA path must count
        with torch.no_grad():
            outs.append(model(torch.tensor([[5, 17, 3]])))
    assert torch.allclose(*outs, atol=1e-6)


@pytest.mark.parametrize("n_epochs, warmup_steps", [(1, 40), (0, 7)])
def test_appendix_d_takes_the_books_short_runs(tokenizer, verdict_text, n_epochs, warmup_steps):
    """A warm-up longer than the run (it warms up throughout) and n_epochs=0 (no step, empty lists)
    work as in the book's train_model, with the same learning rates and losses."""
    book_d = pytest.importorskip("llms_from_scratch.appendix_d")
    book4 = importlib.import_module("llms_from_scratch.ch04")
    cfg = {**SMALL, "vocab_size": 50257, "context_length": 16}
    runs = {}
    for who, model_module, train in (("ours", helpers, helpers.train_model), ("book", book4, book_d.train_model)):
        torch.manual_seed(123)
        model = model_module.GPTModel(cfg)
        optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.1)
        loader = helpers.create_dataloader_v1(verdict_text[:3000], batch_size=2, max_length=16, stride=16, shuffle=False)
        runs[who] = train(model, loader, loader, optimizer, "cpu", n_epochs, 5, 1, "Every effort moves you",
                          tokenizer, warmup_steps, initial_lr=1e-5, min_lr=1e-5)
    (ours_train, ours_val, ours_tokens, ours_lrs), (book_train, book_val, book_tokens, book_lrs) = runs["ours"], runs["book"]
    assert ours_lrs == book_lrs and ours_tokens == book_tokens
    assert ours_train + ours_val == pytest.approx(book_train + book_val, abs=1e-5)
    assert len(ours_lrs) == (0 if n_epochs == 0 else len(loader)) and ours_lrs == sorted(ours_lrs)


def test_the_book_packages_fast_state_dicts_load(nonzero_lora_b):
    """A checkpoint of the book package's `GPTModelFast` or `PyTorchMultiHeadAttention` (fused
    `qkv`, `proj`, nn.LayerNorm's `weight`/`bias`) loads, strictly, into ours and gives its
    outputs; what ours then saves is GPTModel's layout."""
    book3 = pytest.importorskip("llms_from_scratch.ch03")
    book4 = importlib.import_module("llms_from_scratch.ch04")
    idx = torch.tensor([[5, 17, 3, 96], [0, 1, 2, 3]])
    for qkv_bias in (False, True):
        cfg = {**SMALL, "qkv_bias": qkv_bias}
        theirs = seeded(11, book4.GPTModelFast, cfg).eval()
        ours = helpers.GPTModelFast(cfg).eval()
        ours.load_state_dict(theirs.state_dict())
        plain = helpers.GPTModel(cfg).eval()
        plain.load_state_dict(ours.state_dict())
        with torch.no_grad():
            expected = theirs(idx)
            assert torch.allclose(ours(idx), expected, atol=1e-5), qkv_bias
            assert torch.allclose(plain(idx), expected, atol=1e-5), qkv_bias
        batch = torch.stack((INPUTS, INPUTS))
        theirs = seeded(5, book3.PyTorchMultiHeadAttention, 3, 4, 2, qkv_bias=qkv_bias).eval()
        ours = helpers.PyTorchMultiHeadAttention(3, 4, 2, qkv_bias=qkv_bias).eval()
        ours.load_state_dict(theirs.state_dict())
        with torch.no_grad():
            assert torch.allclose(ours(batch), theirs(batch), atol=1e-6), qkv_bias
    # with LoRA around every linear layer (the book's appendix E on its fast model)
    book_e = importlib.import_module("llms_from_scratch.appendix_e")
    cfg = {**SMALL, "qkv_bias": True}
    theirs = seeded(11, book4.GPTModelFast, cfg)
    book_e.replace_linear_with_lora(theirs, 4, 8)  # wraps in place, returns None
    nonzero_lora_b(theirs)
    ours = helpers.replace_linear_with_lora(helpers.GPTModelFast(cfg), 4, 8)
    ours.load_state_dict(theirs.state_dict())
    with torch.no_grad():
        assert torch.allclose(ours.eval()(idx), theirs.eval()(idx), atol=1e-5)
    # the book's attention layer, also LoRA-wrapped (one adapter on `qkv`: its A is shared by
    # our three projections, its B split by columns), into ours with or without a context length
    theirs = seeded(5, book3.PyTorchMultiHeadAttention, 3, 4, 2, qkv_bias=True)
    book_e.replace_linear_with_lora(theirs, 2, 8)  # wraps in place, returns None
    nonzero_lora_b(theirs)
    batch = torch.stack((INPUTS, INPUTS))
    for context_length in (None, 6):
        ours = helpers.replace_linear_with_lora(
            helpers.PyTorchMultiHeadAttention(3, 4, 2, qkv_bias=True, context_length=context_length), 2, 8)
        ours.load_state_dict(theirs.state_dict())
        with torch.no_grad():
            assert torch.allclose(ours.eval()(batch), theirs.eval()(batch), atol=1e-6), context_length
    plain = seeded(5, book3.PyTorchMultiHeadAttention, 3, 4, 2).state_dict()
    helpers.PyTorchMultiHeadAttention(3, 4, 2, context_length=6).load_state_dict(plain)  # strict, mask kept
    with pytest.raises(RuntimeError, match="size mismatch"):  # a checkpoint of another size still says so
        helpers.GPTModelFast(SMALL).load_state_dict(book4.GPTModelFast({**SMALL, "emb_dim": 32}).state_dict())


def test_the_documented_differences_from_the_book_package_hold():
    """docs/DIFFERENCES_FROM_THE_BOOK.md, item by item, against the book's package: where we part from it,
    the tests say exactly how."""
    pytest.importorskip("llms_from_scratch.ch03")
    book4 = importlib.import_module("llms_from_scratch.ch04")
    book7 = importlib.import_module("llms_from_scratch.ch07")
    kv_gpt2 = importlib.import_module("llms_from_scratch.kv_cache.gpt2")
    idx = torch.tensor([[5, 17, 3, 96]])
    # kv_cache.gpt2's layers have no `mask` buffer: with strict=False the masks are all that is missing
    theirs = seeded(3, kv_gpt2.GPTModel, SMALL)
    ours = helpers.GPTModel(SMALL).eval()
    result = ours.load_state_dict(theirs.state_dict(), strict=False)
    assert result.unexpected_keys == [] and result.missing_keys == [f"trf_blocks.{i}.att.mask" for i in range(2)]
    with torch.no_grad():
        assert torch.allclose(ours(idx), theirs(idx), atol=1e-6)
    # the book's fast model does not load what ours saves (GPTModel's keys)
    with pytest.raises(RuntimeError, match="att.qkv.weight"):
        book4.GPTModelFast(SMALL).load_state_dict(helpers.GPTModelFast(SMALL).state_dict())
    # with qkv_bias=True our GPTModelFast starts from GPTModel's weights, not the book's GPTModelFast's
    cfg = {**SMALL, "qkv_bias": True}
    with torch.no_grad():
        fast, plain = seeded(7, helpers.GPTModelFast, cfg)(idx), seeded(7, helpers.GPTModel, cfg)(idx)
        book_fast = seeded(7, book4.GPTModelFast, cfg)(idx)
    assert torch.allclose(fast, plain, atol=1e-6) and not torch.allclose(fast, book_fast, atol=1e-3)
    # read-only current_pos, dropout as a module, an empty cache has length 0 and is still true
    with pytest.raises(AttributeError):
        ours.current_pos = 3
    assert isinstance(helpers.PyTorchMultiHeadAttention(4, 4, 2, dropout=0.1).dropout, torch.nn.Dropout)
    assert helpers.KVCache(2) and len(helpers.KVCache(2)) == 0
    # custom_collate_fn masks padding by position: an item's own 50256 and the end-of-text appended
    # after it stay targets; the book's masks every 50256 target after the first
    batch = [[1, 50256, 2], [3, 50256]]
    assert helpers.custom_collate_fn(batch)[1].tolist() == [[50256, 2, 50256], [50256, 50256, -100]]
    assert book7.custom_collate_fn(batch)[1].tolist() == [[50256, 2, -100], [50256, -100, -100]]


def test_the_books_cached_gpt2_model_fills_our_kv_cache():
    """The book's kv_cache.gpt2.GPTModel stores a layer's keys and values only `if cache:`; given
    our KVCache it must store what it stores in its own. (Only the prompt pass: in 1.0.19 its
    mask slicing fails on the next single-token pass with either cache.)"""
    gpt2 = pytest.importorskip("llms_from_scratch.kv_cache.gpt2")
    torch.manual_seed(3)
    model = gpt2.GPTModel(SMALL).eval()
    prompt = torch.randint(0, SMALL["vocab_size"], (2, 4))
    caches = []
    for cache in (gpt2.KVCache(SMALL["n_layers"]), helpers.KVCache(SMALL["n_layers"])):
        model.current_pos = 0
        with torch.no_grad():
            model(prompt, use_cache=True, cache=cache)
        caches.append(cache.get_all())
    book, ours = caches
    assert all(pair is not None for pair in ours)  # an always-empty cache was the bug
    assert all(torch.equal(o, b) for op, bp in zip(ours, book, strict=True) for o, b in zip(op, bp, strict=True))
    assert ours[0][0].shape[-2] == prompt.shape[1]


def test_the_plots_and_evaluate_model_part_from_the_book_as_documented(tmp_path, monkeypatch):
    """docs/DIFFERENCES_FROM_THE_BOOK.md: plot_losses and plot_values show their figure as the book's do,
    without writing a PDF; evaluate_model leaves the model in training mode also when a loader fails
    (the book's: eval)."""
    book5 = pytest.importorskip("llms_from_scratch.ch05")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(plt.gcf()))
    monkeypatch.chdir(tmp_path)
    args = ([0, 1, 2], [0, 512, 1024], [9.0, 7.5, 6.0], [9.2, 8.0, 7.1])
    assert book5.plot_losses(*args) is None and len(shown) == 1 and (tmp_path / "loss-plot.pdf").exists()
    (tmp_path / "loss-plot.pdf").unlink()
    assert helpers.plot_losses(*args) is None and len(shown) == 2 and not list(tmp_path.iterdir())
    book6 = pytest.importorskip("llms_from_scratch.ch06")
    assert book6.plot_values(*args, label="accuracy") is None and (tmp_path / "accuracy-plot.pdf").exists()
    (tmp_path / "accuracy-plot.pdf").unlink()
    assert helpers.classification.plot_values(*args, label="accuracy") is None and len(shown) == 4
    assert not list(tmp_path.iterdir())
    plt.close("all")

    class FailingLoader:  # one batch that cannot be read (a damaged file, a bad collate function)
        def __len__(self):
            return 1

        def __iter__(self):
            raise OSError("batch cannot be read")

    train = [(torch.tensor([[1, 2]]), torch.tensor([[2, 3]]))]
    for evaluate, stays_training in ((book5.evaluate_model, False), (helpers.evaluate_model, True)):
        model = helpers.GPTModel(SMALL).train()
        with pytest.raises(OSError, match="cannot be read"):
            evaluate(model, train, FailingLoader(), "cpu", eval_iter=None)
        assert model.training is stays_training


def test_chapter_6_takes_chapter_2s_tokenizer_as_the_book_does(tmp_path):
    """`SpamDataset` and `classify_review` with chapter 2's `SimpleTokenizerV2` or any other
    `encode(text)` without tiktoken's `disallowed_special`: the book package's tensors and labels
    (its package has no SimpleTokenizerV2; the book's chapter 2 defines it, as ours does)."""
    book6 = pytest.importorskip("llms_from_scratch.ch06")
    import pandas as pd
    from helpers.text import build_vocab, regex_tokenize
    texts = ["Win a FREE prize now, call 0800!", "see you at the station", "ok", "free prize, see you now"]
    path = tmp_path / "m.csv"
    pd.DataFrame({"Label": [1, 0, 0, 1], "Text": texts}).to_csv(path, index=False)
    vocab = build_vocab(regex_tokenize(" ".join(texts[:3])), special_tokens=["<|endoftext|>", "<|unk|>"])
    pad = vocab["<|endoftext|>"]
    class ByWord:  # the plainest tokenizer a reader might write
        def encode(self, text):
            return [vocab.get(word, vocab["<|unk|>"]) for word in text.split()]

    for tokenizer in (helpers.SimpleTokenizerV2(vocab), ByWord()):
        for max_length in (None, 4):
            ours = helpers.SpamDataset(path, tokenizer, max_length=max_length, pad_token_id=pad)
            theirs = book6.SpamDataset(path, tokenizer, max_length=max_length, pad_token_id=pad)
            assert ours.max_length == theirs.max_length and len(ours) == len(theirs) == 4
            for a, b in zip(ours, theirs):
                assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert {pad, vocab["<|unk|>"]} <= set(torch.cat([x for x, _ in ours]).tolist())
        cfg = {**SMALL, "vocab_size": len(vocab), "context_length": 16}
        labels = set()
        for seed in range(6):
            model = seeded(seed, helpers.GPTModel, cfg)
            model.out_head = torch.nn.Linear(cfg["emb_dim"], 2)
            for text in texts:
                label = helpers.classify_review(text, model, tokenizer, "cpu", max_length=12, pad_token_id=pad)
                assert label == book6.classify_review(text, model, tokenizer, "cpu", max_length=12,
                                                      pad_token_id=pad), (seed, text)
                labels.add(label)
        assert labels == {"spam", "not spam"}  # the comparison saw both answers


def test_chapter_7_gives_the_book_packages_tokens_and_batches_on_the_course_data(data_dir, tokenizer):
    """All 1,100 instruction examples give the book package's token IDs and collated batches
    (the book's batch size, 8); so does a prompt ending in a line break, whose last token BPE
    merges with the response header's (where encoding the prompt and the answer apart would part)."""
    book7 = pytest.importorskip("llms_from_scratch.ch07")
    data = json.loads((data_dir / "instruction-data.json").read_text(encoding="utf-8"))
    assert len(data) == 1100
    ours = helpers.InstructionDataset(data, tokenizer)
    theirs = book7.InstructionDataset(data, tokenizer)
    assert len(ours) == len(theirs)
    assert [ours[i] for i in range(len(ours))] == [theirs[i] for i in range(len(theirs))]
    for start in range(0, len(data), 8):
        batch = [ours[i] for i in range(start, min(start + 8, len(data)))]
        for a, b in zip(helpers.custom_collate_fn(batch, allowed_max_length=1024),
                        book7.custom_collate_fn(batch, allowed_max_length=1024)):
            assert torch.equal(a, b), start
    odd = [{**data[0], "input": data[0]["input"] + "\n"}]
    assert helpers.InstructionDataset(odd, tokenizer)[0] == book7.InstructionDataset(odd, tokenizer)[0]


def test_zero_epochs_need_no_batch_as_in_the_book(tokenizer):
    """docs/DIFFERENCES_FROM_THE_BOOK.md: train_model_simple and train_model refuse an empty loader only
    when there is an epoch to train; with zero epochs they return the book's empty lists, even for
    empty loaders."""
    book5 = pytest.importorskip("llms_from_scratch.ch05")
    book_d = pytest.importorskip("llms_from_scratch.appendix_d")
    common = dict(eval_freq=1, eval_iter=1, start_context="Hi", tokenizer=tokenizer)
    results = []
    for train_simple in (book5.train_model_simple, helpers.train_model_simple):
        model = helpers.GPTModel(SMALL)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        results.append(train_simple(model, [], [], optimizer, "cpu", 0, **common))
    for train in (book_d.train_model, helpers.train_model):
        model = helpers.GPTModel(SMALL)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        results.append(train(model, [], [], optimizer, "cpu", 0, warmup_steps=2, **common))
    assert results == [([], [], []), ([], [], []), ([], [], [], []), ([], [], [], [])]
    with pytest.raises(ValueError, match="^train_loader yields no batch"):  # one epoch: refused by name
        helpers.train_model_simple(model, [], [], optimizer, "cpu", 1, **common)


def test_chapter_6_data_preparation_gives_the_book_packages_frames():
    """create_balanced_dataset and random_split, seeded as the book's, on the same frame."""
    book6 = pytest.importorskip("llms_from_scratch.ch06")
    import pandas as pd
    labels = ["spam" if i % 5 == 0 else "ham" for i in range(60)]
    df = pd.DataFrame({"Label": labels, "Text": [f"message {i}" for i in range(60)]})
    ours, book = helpers.create_balanced_dataset(df), book6.create_balanced_dataset(df)
    pd.testing.assert_frame_equal(ours, book)
    for a, b in zip(helpers.random_split(book, 0.7, 0.1), book6.random_split(book, 0.7, 0.1), strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_appendix_e_lora_layers_draw_and_compute_as_the_book_packages():
    book_e = pytest.importorskip("llms_from_scratch.appendix_e")
    torch.manual_seed(5)
    ours = helpers.LinearWithLoRA(torch.nn.Linear(6, 4), rank=2, alpha=8)
    torch.manual_seed(5)
    book = book_e.LinearWithLoRA(torch.nn.Linear(6, 4), rank=2, alpha=8)
    assert torch.equal(ours.lora.A, book.lora.A) and torch.equal(ours.linear.weight, book.linear.weight)
    with torch.no_grad():
        for layer in (ours, book):
            layer.lora.B.copy_(torch.arange(8.0).reshape(2, 4) / 10)  # B starts at zero: make it count
        x = torch.randn(3, 6)
        assert torch.allclose(ours(x), book(x), atol=1e-6)


def test_load_weights_into_gpt_fills_a_model_as_the_books_does():
    """OpenAI's parameter dictionary (random values, GPT-2's layout) into our GPTModel with our
    loader and into the book's GPTModel with the book's: the same weights and the same logits."""
    book4 = pytest.importorskip("llms_from_scratch.ch04")
    book5 = pytest.importorskip("llms_from_scratch.ch05")
    import numpy as np
    cfg = {**SMALL, "qkv_bias": True}
    d, rng = cfg["emb_dim"], np.random.default_rng(0)

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def affine(n_in, n_out):
        return {"w": r(n_in, n_out), "b": r(n_out)}

    params = {"wpe": r(cfg["context_length"], d), "wte": r(cfg["vocab_size"], d), "g": r(d), "b": r(d),
              "blocks": [{"attn": {"c_attn": affine(d, 3 * d), "c_proj": affine(d, d)},
                          "mlp": {"c_fc": affine(d, 4 * d), "c_proj": affine(4 * d, d)},
                          "ln_1": {"g": r(d), "b": r(d)}, "ln_2": {"g": r(d), "b": r(d)}}
                         for _ in range(cfg["n_layers"])]}
    book = book4.GPTModel(cfg)
    book5.load_weights_into_gpt(book, params)
    ours = helpers.GPTModel(cfg)
    helpers.load_weights_into_gpt(ours, params)
    book_state = book.state_dict()
    for name, tensor in ours.state_dict().items():
        if not name.endswith(".mask"):
            assert torch.equal(tensor, book_state[name]), name
    idx = torch.randint(0, cfg["vocab_size"], (2, 7))
    with torch.no_grad():
        assert torch.allclose(ours.eval()(idx), book.eval()(idx), atol=1e-4)


def test_chapter_4_building_blocks_alone_give_the_book_packages_outputs():
    """LayerNorm, GELU, FeedForward and TransformerBlock on their own, seeded as the book's: the same
    parameter names and shapes, and the same outputs (dropout on, in training mode, too)."""
    book4 = pytest.importorskip("llms_from_scratch.ch04")
    cfg = {**SMALL, "drop_rate": 0.25}
    x = torch.randn(2, 5, cfg["emb_dim"], generator=torch.Generator().manual_seed(0)) * 3
    for name, args in [("LayerNorm", (cfg["emb_dim"],)), ("GELU", ()), ("FeedForward", (cfg,)),
                       ("TransformerBlock", (cfg,))]:
        ours, book = seeded(11, getattr(helpers, name), *args), seeded(11, getattr(book4, name), *args)
        book_state = book.state_dict()
        assert {k: v.shape for k, v in ours.state_dict().items() if not k.endswith("mask")} == \
               {k: v.shape for k, v in book_state.items() if not k.endswith("mask")}, name
        for k, v in ours.state_dict().items():
            assert torch.equal(v, book_state[k]), (name, k)
        with torch.no_grad():
            assert torch.allclose(ours(x), book(x), atol=1e-5), name
        if name == "TransformerBlock":  # dropout drawn in the same order: the same masks
            ours.train(), book.train()
            with torch.no_grad():
                torch.manual_seed(3)
                a = ours(x)
                torch.manual_seed(3)
                b = book(x)
            assert torch.allclose(a, b, atol=1e-5) and not torch.allclose(a, ours.eval()(x), atol=1e-3)
    # GELU's tanh approximation: also the book's numbers far out in both tails
    wide = torch.linspace(-12, 12, 97)
    assert torch.allclose(helpers.GELU()(wide), book4.GELU()(wide), atol=1e-6)


def test_chapter_7_collate_drafts_give_the_book_packages_batches():
    """custom_collate_draft_1, custom_collate_draft_2 and custom_collate_fn with every option the
    book's take, on ragged lists of token IDs (one of length 1); then the one documented difference:
    a pad ID inside an example stays a target in ours, where the book masks every pad but the first."""
    book7 = pytest.importorskip("llms_from_scratch.ch07")
    rng = torch.Generator().manual_seed(0)
    batch = [torch.randint(0, 50, (n,), generator=rng).tolist() for n in (5, 1, 3, 7)]
    for pad in (50256, 0):
        assert torch.equal(helpers.custom_collate_draft_1(batch, pad_token_id=pad),
                           book7.custom_collate_draft_1(batch, pad_token_id=pad))
        for a, b in zip(helpers.custom_collate_draft_2(batch, pad_token_id=pad),
                        book7.custom_collate_draft_2(batch, pad_token_id=pad), strict=True):
            assert torch.equal(a, b)
        for ignore_index in (-100, -1):
            for allowed in (None, 4, 100):
                kwargs = dict(pad_token_id=pad, ignore_index=ignore_index, allowed_max_length=allowed)
                for a, b in zip(helpers.custom_collate_fn(batch, **kwargs), book7.custom_collate_fn(batch, **kwargs),
                                strict=True):
                    assert torch.equal(a, b), kwargs
    batch[2][1] = 50256  # an end-of-text ID inside an example is data, not padding
    (ours_in, ours_t), (book_in, book_t) = helpers.custom_collate_fn(batch), book7.custom_collate_fn(batch)
    assert torch.equal(ours_in, book_in) and ours_t[2, :3].tolist() == [50256, batch[2][2], 50256]
    assert book_t[2, :3].tolist() == [50256, batch[2][2], -100]  # the book's own end-of-text is masked
    assert torch.equal(ours_t[[0, 1, 3]], book_t[[0, 1, 3]])


def test_train_classifier_simple_gives_the_book_packages_results(capsys):
    """The same classifier, data and optimizer: ours and the book's finetuning loop give the same
    losses, accuracies and examples seen, step for step (the book's loop reads the last position)."""
    book6 = pytest.importorskip("llms_from_scratch.ch06")
    cfg = {**SMALL, "drop_rate": 0.1}
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg["vocab_size"], (40, cfg["context_length"]), generator=g)
    labels = (ids[:, -1] % 2 == 0).long()  # learnable from the last token, the one both read
    train = torch.utils.data.TensorDataset(ids[:32], labels[:32])
    val = torch.utils.data.TensorDataset(ids[32:], labels[32:])
    results = []
    for train_classifier in (helpers.train_classifier_simple, book6.train_classifier_simple):
        model = seeded(4, helpers.GPTModel, cfg)
        torch.manual_seed(4)
        model.out_head = torch.nn.Linear(cfg["emb_dim"], 2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.1)
        torch.manual_seed(9)  # the shuffle and the dropout masks
        train_loader = torch.utils.data.DataLoader(train, batch_size=8, shuffle=True)
        val_loader = torch.utils.data.DataLoader(val, batch_size=8)
        results.append(train_classifier(model, train_loader, val_loader, optimizer, "cpu",
                                        num_epochs=3, eval_freq=2, eval_iter=2))
    ours, theirs = results
    assert len(ours[0]) == len(theirs[0]) == 6 and ours[4] == theirs[4] == 96
    for a, b in zip(ours[:4], theirs[:4], strict=True):
        assert a == pytest.approx(b, abs=1e-5)
    assert ours[0][-1] < ours[0][0]  # it learned: the comparison is not of two untrained runs


def test_the_judge_sends_the_book_packages_requests_and_reads_its_scores():
    """query_model and generate_model_scores against the loopback Ollama server: query_model sends the book
    package's request (model, messages, options) and returns its answer; the scorer asks the same
    model with the same options, once per entry, and for replies that are plain integers returns the
    same scores. Its prompt is in our own words (docs/DIFFERENCES_FROM_THE_BOOK.md: not copied), so
    only that differs."""
    book7 = pytest.importorskip("llms_from_scratch.ch07")
    from functools import partial
    entries = [{"instruction": "Name the capital of France.", "input": "", "output": "Paris.", "resp": "Paris"},
               {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "resp": "Six."}]
    requests_seen = []
    for ours in (True, False):
        with helpers.LoopbackOllama(replies=["Llamas eat grass.", "85", "40"], models=["llama3"]) as server:
            url = f"http://{server.host}/api/chat"
            if ours:
                answer = helpers.query_model("What do llamas eat?", "llama3", url)
                scores = helpers.generate_model_scores(entries, "resp", "llama3", host=server.host, progress=False)
            else:
                answer = book7.query_model("What do llamas eat?", "llama3", url)
                original = book7.query_model
                book7.query_model = partial(original, url=url)  # its scorer calls query_model(prompt, model)
                try:
                    scores = book7.generate_model_scores(entries, "resp", "llama3")
                finally:
                    book7.query_model = original
            requests_seen.append([{k: r[k] for k in ("model", "messages", "options")} for r in server.requests])
        assert answer == "Llamas eat grass." and scores == [85, 40]
    ours_req, book_req = requests_seen
    assert len(ours_req) == len(book_req) == 3 and ours_req[0] == book_req[0]
    for a, b, entry in zip(ours_req[1:], book_req[1:], entries, strict=True):
        assert a["model"] == b["model"] == "llama3" and a["options"] == b["options"]
        assert [m["role"] for m in a["messages"]] == [m["role"] for m in b["messages"]] == ["user"]
        for text in (entry["output"], entry["resp"]):  # both prompts carry the reference and the answer
            assert text in a["messages"][0]["content"] and text in b["messages"][0]["content"]


def _tensor_count_cases(tokenizer, text, csv_path):
    """(name, the argument's name, call(module home for chapter 2-5 names, chapter 6's, ch07's,
    appendix D's, appendix E's, kv_cache.gpt2's)) for entry points whose count or size the
    book's code happens to accept as a one-element tensor (range(), slicing and min() read one)."""
    T = torch.tensor
    cfg = {**SMALL, "vocab_size": 50257}

    def model(m4, classes=None):
        torch.manual_seed(0)
        model = m4.GPTModel(cfg)
        if classes:
            model.out_head = torch.nn.Linear(cfg["emb_dim"], classes)
        return model

    def loader(m2):
        return m2.create_dataloader_v1(text, batch_size=2, max_length=8, stride=8, shuffle=False)

    def spam_loader(m6):
        dataset = torch.utils.data.Subset(m6.SpamDataset(csv_path, tokenizer, max_length=8), range(4))
        return torch.utils.data.DataLoader(dataset, batch_size=2)

    def adamw(model):
        return torch.optim.AdamW(model.parameters(), lr=1e-3)

    return [
        ("GPTDatasetV1", "max_length", lambda m: m["ch02"].GPTDatasetV1(text, tokenizer, T(8), 4)),
        ("GPTDatasetV1", "stride", lambda m: m["ch02"].GPTDatasetV1(text, tokenizer, 8, T(4))),
        ("MultiHeadAttention", "num_heads", lambda m: m["ch03"].MultiHeadAttention(4, 4, 8, 0.0, T(2))),
        ("MultiHeadAttention", "context_length", lambda m: m["ch03"].MultiHeadAttention(4, 4, T(8), 0.0, 2)),
        ("PyTorchMultiHeadAttention", "num_heads", lambda m: m["ch03"].PyTorchMultiHeadAttention(4, 4, T(2))),
        ("GPTModel", "n_layers", lambda m: m["ch04"].GPTModel({**cfg, "n_layers": T(1)})),
        ("calc_loss_loader", "num_batches",
         lambda m: m["ch05"].calc_loss_loader(loader(m["ch02"]), model(m["ch04"]), "cpu", num_batches=T(1))),
        ("train_model_simple", "num_epochs",
         lambda m: m["ch05"].train_model_simple(mod := model(m["ch04"]), loader(m["ch02"]), loader(m["ch02"]),
                                                adamw(mod), "cpu", T(1), 50, 1, "Every", tokenizer)),
        ("SpamDataset", "max_length", lambda m: m["ch06"].SpamDataset(csv_path, tokenizer, max_length=T(8))),
        ("ch06 calc_accuracy_loader", "num_batches",
         lambda m: m["ch06"].calc_accuracy_loader(spam_loader(m["ch06"]), model(m["ch04"], 2), "cpu", T(1))),
        ("train_classifier_simple", "num_epochs",
         lambda m: m["ch06"].train_classifier_simple(mod := model(m["ch04"], 2), spam_loader(m["ch06"]),
                                                     spam_loader(m["ch06"]), adamw(mod), "cpu", T(1), 5, 1)),
        ("classify_review", "max_length",
         lambda m: m["ch06"].classify_review("You won a prize", model(m["ch04"], 2), tokenizer, "cpu", T(8))),
        ("custom_collate_fn", "allowed_max_length",
         lambda m: m["ch07"].custom_collate_fn([[1, 2, 3], [4, 5]], allowed_max_length=T(2))),
        ("appendix D train_model", "n_epochs",
         lambda m: m["appendix_d"].train_model(mod := model(m["ch04"]), loader(m["ch02"]), loader(m["ch02"]),
                                               adamw(mod), "cpu", T(1), 50, 1, "Every", tokenizer, 2)),
        ("LoRALayer", "rank", lambda m: m["appendix_e"].LoRALayer(4, 4, T(2), 8)),
        ("KVCache", "n_layers", lambda m: m["kv_cache.gpt2"].KVCache(T(2))),
    ]


def test_one_element_tensor_counts_refused_by_name_where_the_book_happens_to_take_them(
        tokenizer, verdict_text, tmp_path, capsys):
    """docs/DIFFERENCES_FROM_THE_BOOK.md: counts and sizes are Python (or NumPy) integers. Where the book's
    code takes torch.tensor(2) for one only because range(), slicing and min() read it, ours refuses
    it with an error naming the argument; generate, generate_text_simple, beam_search and
    trim_input_tensor take such tensors as the book's do (tested with them)."""
    pytest.importorskip("llms_from_scratch.ch02")
    modules = ("ch02", "ch03", "ch04", "ch05", "ch06", "ch07", "appendix_d", "appendix_e", "kv_cache.gpt2")
    book = {name: importlib.import_module(f"llms_from_scratch.{name}") for name in modules}
    ours = {name: helpers for name in modules} | {"ch06": importlib.import_module("helpers.classification")}
    csv_path = tmp_path / "spam.csv"
    csv_path.write_text("Text,Label\nYou won a prize call now,1\nSee you at lunch,0\n"
                        "Free entry in a weekly draw,1\nOk see you then,0\n", encoding="utf-8")
    cases = _tensor_count_cases(tokenizer, verdict_text[:3000], csv_path)
    assert len(cases) == 16
    for name, argument, call in cases:
        call(book)  # the book's takes it
        with pytest.raises((ValueError, TypeError), match=argument):
            call(ours)
    capsys.readouterr()  # the training loops' printed losses


def test_an_eos_id_the_model_cannot_produce_never_stops_the_books_generate_and_ours_refuses_it():
    """docs/DIFFERENCES_FROM_THE_BOOK.md, "Errors where the book returns a value": the book's generate
    compares each new token with eos_id, so one past the vocabulary (or -1) silently runs to
    max_new_tokens."""
    book4 = pytest.importorskip("llms_from_scratch.ch04")
    book5 = pytest.importorskip("llms_from_scratch.ch05")
    cfg = {**helpers.GPT_CONFIG_124M, "vocab_size": 64, "context_length": 12, "emb_dim": 32, "n_heads": 4,
           "n_layers": 2, "drop_rate": 0.0}
    torch.manual_seed(0)
    model = book4.GPTModel(cfg).eval()
    idx = torch.randint(0, 64, (1, 4), generator=torch.Generator().manual_seed(1))
    for eos_id in (64, -1, 50256):
        assert book5.generate(model, idx, 6, 12, eos_id=eos_id).shape == (1, 4 + 6)  # never stopped
        with pytest.raises(ValueError, match=r"eos_id must be a token ID in \[0, 64\)"):
            helpers.generate(model, idx, 6, 12, eos_id=eos_id)
    # an end token the model does produce stops both at the same place
    greedy = helpers.generate(model, idx, 6, 12)
    eos_id = greedy[0, 6].item()  # the third generated token
    assert torch.equal(helpers.generate(model, idx, 6, 12, eos_id=eos_id), book5.generate(model, idx, 6, 12, eos_id=eos_id))


def test_a_model_without_its_classification_head_gets_a_label_from_the_book_and_an_error_from_ours(tokenizer):
    """docs/DIFFERENCES_FROM_THE_BOOK.md, "Errors where the book returns a value": the book's
    classify_review takes the argmax over every score at the last position, so a language model's
    top token ID (or a third class) becomes "spam" when it is 1 and "not spam" otherwise."""
    book4 = pytest.importorskip("llms_from_scratch.ch04")
    book6 = pytest.importorskip("llms_from_scratch.ch06")
    cfg = {**SMALL, "vocab_size": 50257, "context_length": 16}
    model = seeded(0, book4.GPTModel, cfg).eval()
    text = "You won a prize, call now"
    assert book6.classify_review(text, model, tokenizer, "cpu", max_length=12) in {"spam", "not spam"}
    with pytest.raises(ValueError, match="50,257 scores per token, one per vocabulary entry, not one per class"):
        helpers.classification.classify_review(text, model, tokenizer, "cpu", max_length=12)
    model.out_head = torch.nn.Linear(cfg["emb_dim"], 2)  # with the head both answer, and alike
    assert helpers.classification.classify_review(text, model, tokenizer, "cpu", max_length=12) \
        == book6.classify_review(text, model, tokenizer, "cpu", max_length=12)
