"""Training (helpers.training, ch05): losses against a hand computation, a loss that goes down,
checkpoints that only hold data, and a resumed run identical to one that never stopped."""
import random
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.model import GPT_CONFIG_124M, GPTModel
from helpers.text import create_dataloader_v1
from helpers.training import (TrainingState, calc_loss_batch, calc_loss_loader, evaluate_model,
                              interrupt_after_step, load_checkpoint, save_checkpoint, train_model_simple)

CFG = {**GPT_CONFIG_124M, "context_length": 16, "emb_dim": 32, "n_heads": 2, "n_layers": 2, "drop_rate": 0.1}


def new_model(seed=0):
    torch.manual_seed(seed)
    return GPTModel(CFG)


@pytest.fixture(scope="module")
def loaders(verdict_text, tokenizer):
    text = verdict_text[:3000]  # a few batches per epoch keep these tests fast
    split = int(0.9 * len(text))
    train = create_dataloader_v1(text[:split], batch_size=4, max_length=16, stride=16,
                                 shuffle=True, tokenizer=tokenizer)
    val = create_dataloader_v1(text[split:], batch_size=4, max_length=16, stride=8,
                               shuffle=False, drop_last=False, tokenizer=tokenizer)
    return train, val


def test_calc_loss_batch_equals_hand_computed_cross_entropy():
    model = new_model().eval()
    x = torch.randint(0, CFG["vocab_size"], (2, 8))
    y = torch.randint(0, CFG["vocab_size"], (2, 8))
    with torch.no_grad():
        logits = model(x)
        probs = torch.softmax(logits, dim=-1)
        picked = [probs[b, t, y[b, t]].log() for b in range(2) for t in range(8)]
        expected = -sum(picked) / len(picked)
        assert abs(calc_loss_batch(x, y, model, "cpu").item() - expected.item()) < 1e-4


def test_calc_loss_loader_averages_the_first_batches(loaders):
    _, val = loaders
    model = new_model().eval()
    with torch.no_grad():
        per_batch = [calc_loss_batch(x, y, model, "cpu").item() for x, y in val]
        assert abs(calc_loss_loader(val, model, "cpu") - sum(per_batch) / len(per_batch)) < 1e-5
        assert abs(calc_loss_loader(val, model, "cpu", num_batches=2) - sum(per_batch[:2]) / 2) < 1e-5
        assert abs(calc_loss_loader(val, model, "cpu", num_batches=999) - sum(per_batch) / len(per_batch)) < 1e-5


def test_calc_loss_loader_rejects_an_empty_loader():
    with pytest.raises(ValueError, match="no batch"):
        calc_loss_loader([], new_model(), "cpu")


def run(loaders, tokenizer, num_epochs=2, **kwargs):
    train, val = loaders
    model = new_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    torch.manual_seed(42)  # the data order and dropout come from here
    out = train_model_simple(model, train, val, optimizer, "cpu", num_epochs=num_epochs, eval_freq=3, eval_iter=2,
                             start_context="Every effort moves you", tokenizer=tokenizer, **kwargs)
    return model, optimizer, out


def test_loss_goes_down(loaders, tokenizer):
    _, _, (train_losses, val_losses, tokens) = run(loaders, tokenizer)
    assert len(train_losses) == len(val_losses) == len(tokens) >= 4
    assert train_losses[-1] < train_losses[0] - 0.3
    assert tokens == sorted(tokens) and tokens[0] == 4 * 16


@pytest.mark.parametrize("where", ["mid-epoch", "epoch-end"])
def test_resume_after_interrupt_equals_uninterrupted_run(loaders, tokenizer, tmp_path, where):
    reference_model, _, reference = run(loaders, tokenizer)
    n = len(loaders[0])
    assert n >= 5
    stop_at = n // 2 + 1 if where == "mid-epoch" else n
    ckpt = tmp_path / "run.pt"
    _, _, partial = run(loaders, tokenizer, checkpoint_path=ckpt, max_steps=stop_at)
    assert len(partial[0]) < len(reference[0])
    torch.manual_seed(999)  # whatever the global RNG does in between must not matter
    torch.rand(10)
    resumed_model, _, resumed = run(loaders, tokenizer, checkpoint_path=ckpt, resume=True)
    assert resumed == reference
    for (name, a), b in zip(reference_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_from_the_checkpoint_saved_after_an_epoch_equals_uninterrupted_run(loaders, tokenizer, tmp_path):
    # the file a crash in the next epoch leaves behind: written after epoch 1, not by max_steps
    reference_model, _, reference = run(loaders, tokenizer)
    ckpt = tmp_path / "run.pt"
    _, _, first = run(loaders, tokenizer, num_epochs=1, checkpoint_path=ckpt)
    assert 0 < len(first[0]) < len(reference[0])
    resumed_model, _, resumed = run(loaders, tokenizer, checkpoint_path=ckpt, resume=True)
    assert resumed == reference
    for (name, a), b in zip(reference_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name


def plain_loop(model, train, val, optimizer, num_epochs, eval_freq, eval_iter):
    """The textbook loop, written here without any of train_model_simple's machinery."""
    losses, step = ([], [], []), -1
    seen = 0
    for _ in range(num_epochs):
        model.train()
        for x, y in train:
            optimizer.zero_grad()
            calc_loss_batch(x, y, model, "cpu").backward()
            optimizer.step()
            seen += x.numel()
            step += 1
            if step % eval_freq == 0:
                tl, vl = evaluate_model(model, train, val, "cpu", eval_iter)
                for values, v in zip(losses, (tl, vl, seen)):
                    values.append(v)
    return losses


def test_same_numbers_as_the_plain_loop(loaders, tokenizer):
    _, _, out = run(loaders, tokenizer, progress=False)
    model = new_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    torch.manual_seed(42)
    assert plain_loop(model, *loaders, optimizer, num_epochs=2, eval_freq=3, eval_iter=2) == out


def test_interrupt_after_step_defers_ctrl_c_only_inside_the_block():
    # Start from Python's own Ctrl-C handler, as in a notebook kernel: an earlier test in the
    # same pytest worker (an asyncio runner of a notebook run) may have left another installed.
    original = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with interrupt_after_step() as interrupt:
            signal.raise_signal(signal.SIGINT)
            assert interrupt.requested
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        with interrupt_after_step(enabled=False) as interrupt, pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        assert not interrupt.requested
        with pytest.raises(KeyboardInterrupt), interrupt_after_step() as interrupt:  # pressed twice: stop now
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
            pytest.fail("a second Ctrl-C must stop at once")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, original)


def test_ctrl_c_mid_run_saves_and_resumes_exactly(loaders, tokenizer, tmp_path, monkeypatch):
    reference_model, _, reference = run(loaders, tokenizer)
    ckpt, steps = tmp_path / "run.pt", []
    real_step = torch.optim.AdamW.step

    def step_then_ctrl_c(self, *args, **kwargs):  # Ctrl-C arrives during the 4th optimizer step
        out = real_step(self, *args, **kwargs)
        steps.append(1)
        if len(steps) == 4:
            signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run(loaders, tokenizer, checkpoint_path=ckpt)
    monkeypatch.undo()
    assert len(steps) == 4  # the step in progress finished; no further step ran
    state = TrainingState.load(ckpt, new_model(), None)
    assert state.global_step == 3 and state.batches_done == 4 and state.epoch == 0
    resumed_model, _, resumed = run(loaders, tokenizer, checkpoint_path=ckpt, resume=True)
    assert resumed == reference
    assert all(torch.equal(a, b) for a, b in zip(reference_model.state_dict().values(),
                                                   resumed_model.state_dict().values()))


def test_resume_without_checkpoint_is_a_clear_error(loaders, tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="resume=True"):
        run(loaders, tokenizer, checkpoint_path=tmp_path / "missing.pt", resume=True)


def test_a_checkpoint_path_that_cannot_be_written_is_refused_before_the_first_step(loaders, tokenizer, tmp_path):
    """A path below a file used to fail at the first save, after a whole epoch of training."""
    (tmp_path / "notes.txt").write_text("keep me")
    model = new_model()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NotADirectoryError, match=r"notes.txt is a file, not a folder.*pass another path"):
        train_model_simple(model, *loaders, torch.optim.AdamW(model.parameters(), lr=1e-3), "cpu", num_epochs=1,
                           eval_freq=3, eval_iter=2, start_context="Every effort moves you", tokenizer=tokenizer,
                           checkpoint_path=tmp_path / "notes.txt" / "run.pt", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "no step before the refusal"
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_resume_from_a_file_without_training_state_is_a_clear_error(loaders, tokenizer, tmp_path):
    # e.g. 5.4's checkpoint (model and optimizer only): resuming it would silently start at step 0
    model = new_model()
    save_checkpoint(tmp_path / "weights.pt", model, torch.optim.AdamW(model.parameters()))
    with pytest.raises(ValueError, match="no training state.*resume=False"):
        run(loaders, tokenizer, checkpoint_path=tmp_path / "weights.pt", resume=True)


def test_restored_random_states_are_cpu_byte_tensors(loaders, tokenizer, tmp_path, monkeypatch):
    """torch.set_rng_state takes CPU tensors only: the checkpoint is read onto the CPU whatever
    the training device (on a GPU, mapping it there broke every resume)."""
    _, _, _ = run(loaders, tokenizer, checkpoint_path=tmp_path / "run.pt", max_steps=3)
    seen = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: seen.append(k.get("map_location")) or real_load(*a, **k))
    model = new_model()
    state = TrainingState.load(tmp_path / "run.pt", model, torch.optim.AdamW(model.parameters()))
    assert seen == ["cpu"]
    assert {"epoch_rng_state", "rng_state"} <= set(state._restore)
    for value in state._restore.values():
        for t in value if isinstance(value, list) else [value]:
            assert t.device.type == "cpu" and t.dtype == torch.uint8


def test_checkpoint_round_trip(tmp_path):
    model = new_model(1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(0, 100, (1, 5))).sum().backward()
    optimizer.step()
    save_checkpoint(tmp_path / "c.pt", model, optimizer, epoch=3, losses=[1.5, 1.25])
    other = new_model(2)
    other_opt = torch.optim.AdamW(other.parameters(), lr=5e-4)
    extra = load_checkpoint(tmp_path / "c.pt", other, other_opt)
    assert extra == {"epoch": 3, "losses": [1.5, 1.25]}
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)
    assert other_opt.param_groups[0]["lr"] == 1e-3
    assert torch.equal(other_opt.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left


def test_numpy_numbers_in_a_run_still_give_a_loadable_checkpoint(loaders, tokenizer, tmp_path):
    # an optimizer made with a NumPy learning rate and a NumPy epoch count: weights_only loading
    # refused the file as "pickled Python objects" when they were saved as they came
    import numpy as np
    from helpers.training import train_model
    model = new_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=np.float64(1e-3))
    ckpt = tmp_path / "np.pt"
    args = dict(eval_freq=3, eval_iter=1, start_context="Every", tokenizer=tokenizer, progress=False)
    train_model(model, *loaders, optimizer, "cpu", np.int64(2), warmup_steps=np.int64(2),
                initial_lr=np.float64(1e-5), checkpoint_path=ckpt, max_steps=2, **args)
    resumed = new_model()
    optimizer = torch.optim.AdamW(resumed.parameters(), lr=1e-3)
    train_model(resumed, *loaders, optimizer, "cpu", 2, warmup_steps=2, initial_lr=1e-5, checkpoint_path=ckpt,
                resume=True, max_steps=3, **args)
    assert type(optimizer.param_groups[0]["peak_lr"]) is float


def test_resuming_with_a_loader_of_another_length_is_refused(loaders, tokenizer, tmp_path, verdict_text):
    ckpt = tmp_path / "run.pt"
    run(loaders, tokenizer, checkpoint_path=ckpt, max_steps=len(loaders[0]) - 1, progress=False)
    text = verdict_text[:2700]  # a smaller batch after running out of memory: fewer batches per epoch
    other = create_dataloader_v1(text, batch_size=8, max_length=16, stride=16, shuffle=True, tokenizer=tokenizer)
    assert len(other) != len(loaders[0])
    with pytest.raises(ValueError, match=f"saved by a run with {len(loaders[0])} batches per epoch, this "
                                         f"train_loader has {len(other)}"):
        run((other, loaders[1]), tokenizer, checkpoint_path=ckpt, resume=True, progress=False)


def test_a_file_without_optimizer_state_leaves_the_model_unchanged(tmp_path):
    torch.save(new_model(1).state_dict(), tmp_path / "model.pth")
    other = new_model(2)
    before = other.tok_emb.weight.clone()
    with pytest.raises(ValueError, match="has no optimizer state to restore; the model is unchanged"):
        load_checkpoint(tmp_path / "model.pth", other, torch.optim.AdamW(other.parameters()))
    assert torch.equal(other.tok_emb.weight, before)


def test_bare_state_dict_as_the_book_saves_it(tmp_path):
    model = new_model(1)
    torch.save(model.state_dict(), tmp_path / "model.pth")
    other = new_model(2)
    assert load_checkpoint(tmp_path / "model.pth", other) == {}
    assert torch.equal(other.tok_emb.weight, model.tok_emb.weight)


class Payload:  # any custom class makes torch.save fall back to pickling the object
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_pickled_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": new_model().state_dict(), "extra": Payload()}, path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="pickled Python objects"):
        load_checkpoint(path, new_model())
    assert path.read_bytes() == before  # refused, not deleted or rewritten: nothing is lost


def test_a_checkpoint_too_big_for_memory_is_not_called_corrupted(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, new_model())

    def no_memory(*args, **kwargs):
        raise MemoryError
    monkeypatch.setattr(torch, "load", no_memory)
    with pytest.raises(MemoryError):  # not "truncated or corrupted ... delete it"
        load_checkpoint(path, new_model())


# ---- the book's package as a drop-in (issue 18), damaged checkpoints (issue 19) ----

# Parameter names of llms_from_scratch.ch05 (version 1.0.19), the book's package: code written
# against it passes these positionally or by name, so ours must start with the same names.
BOOK_CH05 = {
    "generate": ["model", "idx", "max_new_tokens", "context_size", "temperature", "top_k", "eos_id"],
    "train_model_simple": ["model", "train_loader", "val_loader", "optimizer", "device", "num_epochs",
                           "eval_freq", "eval_iter", "start_context", "tokenizer"],
    "evaluate_model": ["model", "train_loader", "val_loader", "device", "eval_iter"],
    "generate_and_print_sample": ["model", "tokenizer", "device", "start_context"],
    "assign": ["left", "right"],
    "load_weights_into_gpt": ["gpt", "params"],
    "text_to_token_ids": ["text", "tokenizer"],
    "token_ids_to_text": ["token_ids", "tokenizer"],
    "calc_loss_batch": ["input_batch", "target_batch", "model", "device"],
    "calc_loss_loader": ["data_loader", "model", "device", "num_batches"],
    "plot_losses": ["epochs_seen", "tokens_seen", "train_losses", "val_losses"],
    "download_and_load_gpt2": ["model_size", "models_dir"],
    "download_file": ["url", "destination", "backup_url"],
    "load_gpt2_params_from_tf_ckpt": ["ckpt_path", "settings"],
    "generate_text_simple": ["model", "idx", "max_new_tokens", "context_size"],
}


@pytest.mark.parametrize("name", sorted(BOOK_CH05))
def test_every_name_of_the_books_chapter_5_exists_with_a_compatible_signature(name):
    import inspect

    import helpers

    ours = list(inspect.signature(getattr(helpers, name)).parameters.values())
    book = BOOK_CH05[name]
    positional = [p for p in ours if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(positional) >= len(book), f"{name}: the book passes {len(book)} arguments positionally"
    assert [p.name for p in positional[:len(book)]] == book
    assert all(p.default is not p.empty for p in positional[len(book):]), f"{name}: extra parameters need defaults"


class PlainModel(torch.nn.Module):
    """What train_model_simple must accept: any module mapping token IDs to logits. The book's own
    GPTModel has a position embedding and no KV cache; other models tell their context size by a
    cfg dict only."""

    def __init__(self, inner, with_pos_emb):
        super().__init__()
        self.inner = inner
        if with_pos_emb:
            self.pos_emb = inner.pos_emb
        else:
            self.cfg = {"context_length": inner.cfg["context_length"]}

    def forward(self, idx):
        return self.inner(idx)


@pytest.mark.parametrize("with_pos_emb", [True, False])
def test_train_model_simple_trains_a_plain_module(loaders, tokenizer, with_pos_emb, capsys):
    train, val = loaders
    reference_model, _, reference = run(loaders, tokenizer)
    capsys.readouterr()  # the reference run's own samples are not this run's
    model = new_model()
    plain = PlainModel(model, with_pos_emb)
    optimizer = torch.optim.AdamW(plain.parameters(), lr=1e-3, weight_decay=0.1)
    torch.manual_seed(42)  # as run() does
    result = train_model_simple(plain, train, val, optimizer, "cpu", num_epochs=2, eval_freq=3, eval_iter=2,
                                start_context="Every effort moves you", tokenizer=tokenizer, progress=False)
    assert result == reference  # the same numbers as training the GPTModel itself
    assert capsys.readouterr().out.count("Every effort moves you") == 2  # a sample after each epoch


def test_generate_and_print_sample_prints_a_greedy_continuation(tokenizer, capsys):
    from helpers.generation import generate_text_simple, text_to_token_ids, token_ids_to_text
    from helpers.training import generate_and_print_sample

    model = new_model().eval()
    expected = token_ids_to_text(generate_text_simple(model, text_to_token_ids("Every effort moves you", tokenizer), 20,
                                                      CFG["context_length"]), tokenizer)
    text = generate_and_print_sample(model, tokenizer, "cpu", "Every effort moves you", max_new_tokens=20)
    assert model.training  # left in training mode, as the loop expects
    assert text == expected.replace("\n", " ")
    assert capsys.readouterr().out == text + "\n"


def flip_bytes(data, start, stop):
    data = bytearray(data)
    for i in range(start, stop):
        data[i] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize("damage", ["flipped", "truncated", "garbage", "empty"])
def test_a_damaged_checkpoint_names_the_file_and_the_fix(tmp_path, damage):
    import os

    path = tmp_path / "c.pt"
    save_checkpoint(path, new_model(), step=3)
    data = path.read_bytes()
    path.write_bytes({"flipped": flip_bytes(data, 100, 200), "truncated": data[: len(data) // 2],
                      "garbage": os.urandom(5000), "empty": b""}[damage])
    with pytest.raises(ValueError) as err:
        load_checkpoint(path, new_model())
    message = str(err.value)
    assert str(path) in message and "truncated or corrupted" in message and "Delete it" in message
    assert "pickled" not in message  # damage is not the same as an unsafe file


def test_any_garbage_is_refused_with_the_files_name(tmp_path):
    # Random bytes after a pickle header reach torch's unpickler, which fails in many ways
    # (IndexError, ValueError, ...); each must become the same clear error.
    rng = random.Random(0)
    path = tmp_path / "c.pt"
    for n in range(300):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        path.write_bytes((b"\x80\x02" if n % 2 else b"") + body)
        with pytest.raises(ValueError) as err:
            load_checkpoint(path, new_model())
        message = str(err.value)  # bytes that happen to name a Python class are refused as unsafe
        assert str(path) in message and ("truncated or corrupted" in message or "pickled Python" in message)
        assert "\x1b" not in message  # no terminal escape codes from torch's message


def test_the_books_model_and_optimizer_file_loads(tmp_path):
    model = new_model(1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(0, 100, (1, 5))).sum().backward()
    optimizer.step()
    torch.save({"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict()},
               tmp_path / "model_and_optimizer.pth")
    other = new_model(2)
    other_opt = torch.optim.AdamW(other.parameters(), lr=5e-4)
    assert load_checkpoint(tmp_path / "model_and_optimizer.pth", other, other_opt) == {}
    assert torch.equal(other.tok_emb.weight, model.tok_emb.weight)
    assert torch.equal(other_opt.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])


# ---- train_model: appendix D's loop (warm-up, cosine decay, clipping) ------------------------

def run_scheduled(loaders, tokenizer, optimizer_lr=1e-3, **kwargs):
    from helpers.training import train_model
    train, val = loaders
    model = new_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=optimizer_lr, weight_decay=0.1)
    torch.manual_seed(42)
    kwargs = {"warmup_steps": 3, "initial_lr": 1e-5, "min_lr": 1e-5, **kwargs}
    out = train_model(model, train, val, optimizer, "cpu", n_epochs=2, eval_freq=3, eval_iter=2,
                      start_context="Every effort moves you", tokenizer=tokenizer, progress=False, **kwargs)
    return model, optimizer, out


def scheduled_loop(model, train, val, optimizer, n_epochs, warmup_steps, initial_lr, min_lr, max_norm=1.0):
    """Warm-up, cosine decay and clipping written out once more, with torch's own schedulers
    (LinearLR then CosineAnnealingLR) instead of any formula from helpers."""
    peak = optimizer.param_groups[0]["lr"]
    total = len(train) * n_epochs
    warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=initial_lr / peak, end_factor=1.0,
                                             total_iters=warmup_steps)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup_steps, eta_min=min_lr)
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, cosine], milestones=[warmup_steps])
    lrs, step = [], -1
    for _ in range(n_epochs):
        model.train()
        for x, y in train:
            step += 1
            optimizer.zero_grad()
            calc_loss_batch(x, y, model, "cpu").backward()
            if step >= warmup_steps:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
            if step % 3 == 0:  # as run_scheduled's eval_freq: iterating the shuffled loader draws random numbers
                evaluate_model(model, train, val, "cpu", 2)
    return lrs, model


def test_train_model_follows_the_schedule_of_torchs_own_schedulers(loaders, tokenizer):
    trained, _, (train_losses, val_losses, tokens, lrs) = run_scheduled(loaders, tokenizer)
    model = new_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    torch.manual_seed(42)
    expected, expected_model = scheduled_loop(model, *loaders, optimizer, n_epochs=2, warmup_steps=3,
                                              initial_lr=1e-5, min_lr=1e-5)
    assert len(lrs) == len(expected) == 2 * len(loaders[0])
    assert lrs == pytest.approx(expected, rel=1e-6)
    assert lrs[0] == 1e-5 and lrs[3] == pytest.approx(1e-3) and lrs[-1] > 1e-5  # up, peak, down
    assert max(lrs) == pytest.approx(1e-3) and lrs.index(max(lrs)) == 3
    assert len(train_losses) == len(val_losses) == len(tokens) >= 4
    # the optimizer really stepped with those rates (and clipped): the same weights as torch's schedulers
    for (name, a), b in zip(trained.state_dict().items(), expected_model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name
    untouched = new_model()
    assert not torch.allclose(trained.out_head.weight, untouched.out_head.weight, atol=1e-4)


def test_train_model_clips_from_the_end_of_the_warm_up(loaders, tokenizer, monkeypatch):
    seen = []
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm, **kw: seen.append(max_norm) or clip(params, max_norm, **kw))
    steps = 2 * len(loaders[0])
    run_scheduled(loaders, tokenizer)
    assert seen == [1.0] * (steps - 3)
    seen.clear()
    run_scheduled(loaders, tokenizer, orig_book_version=True)  # the first printing: one step later
    assert len(seen) == steps - 4
    seen.clear()
    run_scheduled(loaders, tokenizer, max_norm=None)
    assert seen == []


def test_train_model_without_warm_up_starts_at_the_peak(loaders, tokenizer):
    _, _, (*_, lrs) = run_scheduled(loaders, tokenizer, warmup_steps=0)
    assert lrs[0] == 1e-3 and lrs == sorted(lrs, reverse=True)


def test_train_model_resumes_on_the_same_schedule(loaders, tokenizer, tmp_path):
    reference_model, _, reference = run_scheduled(loaders, tokenizer)
    ckpt = tmp_path / "run.pt"
    _, _, partial = run_scheduled(loaders, tokenizer, checkpoint_path=ckpt, max_steps=5)
    assert len(partial[3]) == 5 and partial[3] == reference[3][:5]
    # a fresh optimizer created with another learning rate: the checkpoint's peak wins
    resumed_model, optimizer, resumed = run_scheduled(loaders, tokenizer, optimizer_lr=0.5, checkpoint_path=ckpt,
                                                      resume=True)
    assert resumed == reference
    for (name, a), b in zip(reference_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name
    assert optimizer.param_groups[0]["peak_lr"] == 1e-3
    # resumed once more at its very end: nothing to train, the same lists come back
    _, _, again = run_scheduled(loaders, tokenizer, checkpoint_path=ckpt, resume=True)
    assert again == reference


@pytest.mark.parametrize("bad, message", [
    (dict(warmup_steps=-1), "warmup_steps must be a whole number >= 0"),
    (dict(warmup_steps=2.5), "warmup_steps must be a whole number"),
    (dict(min_lr=float("nan")), "min_lr must be a finite number"),
    (dict(initial_lr=-1e-5), "initial_lr must be a finite number >= 0"),
    (dict(min_lr=1.0), r"min_lr \(1.0\) is above the optimizer's learning rate"),
    (dict(optimizer_lr=float("inf")), "the optimizer's learning rate"),
    (dict(max_norm=0), "max_norm must be a finite number > 0"),
    (dict(max_norm=-1.0), "max_norm must be a finite number > 0"),
    (dict(max_norm=float("nan")), "max_norm must be a finite number > 0"),
    # a bool is no number here, though True == 1 (a flag passed in the wrong place)
    (dict(max_norm=True), "max_norm must be a finite number > 0"),
    (dict(initial_lr=False), "initial_lr must be a finite number >= 0"),
    (dict(optimizer_lr=True), "the optimizer's learning rate"),
])
def test_train_model_refuses_a_schedule_that_makes_no_sense(loaders, tokenizer, bad, message):
    with pytest.raises(ValueError, match=message):
        run_scheduled(loaders, tokenizer, **bad)


def test_train_model_refuses_an_empty_loader_and_trains_nothing_for_zero_epochs(loaders, tokenizer):
    from helpers.training import train_model
    model = new_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    args = dict(eval_freq=1, eval_iter=1, start_context="Hi", tokenizer=tokenizer, warmup_steps=0, progress=False)
    for train, val, empty in (([], loaders[1], "train_loader"), (loaders[0], [], "val_loader")):
        with pytest.raises(ValueError, match=f"^{empty} yields no batch"):
            train_model(model, train, val, optimizer, "cpu", 1, **args)
        assert "peak_lr" not in optimizer.param_groups[0]  # refused before the optimizer was touched
    assert train_model(model, [], [], optimizer, "cpu", 0, **args) == ([], [], [], [])  # no epoch needs no batch
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="n_epochs must be a whole number >= 0"):
            train_model(model, loaders[0], loaders[1], optimizer, "cpu", bad, **args)
    assert train_model(model, loaders[0], loaders[1], optimizer, "cpu", 0, **args) == ([], [], [], [])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("bad, message", [
    (dict(eval_freq=0), "eval_freq=0 must be a whole number >= 1"),
    (dict(eval_freq=2.5), "eval_freq=2.5"), (dict(eval_freq=float("nan")), "eval_freq=nan"),
    (dict(eval_iter=0), "eval_iter=0 must be a whole number >= 1"),
    (dict(num_epochs=-1), "num_epochs=-1 must be a whole number >= 0"), (dict(num_epochs=2.5), "num_epochs=2.5"),
    # each epoch ends with a sample continuing start_context: found out now, not after an epoch
    (dict(start_context=None), "start_context=None must be a non-empty str"),
    (dict(start_context=""), "start_context='' must be a non-empty str"),
    (dict(start_context=b"Hi"), "start_context=b'Hi'"),
])
def test_train_model_simple_refuses_counts_that_make_no_sense_before_any_step(loaders, tokenizer, bad, message):
    """eval_freq=0 used to fail with ZeroDivisionError after the first update had changed the model."""
    model = new_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    args = dict(num_epochs=1, eval_freq=1, eval_iter=1, start_context="Hi", tokenizer=tokenizer, progress=False) | bad
    with pytest.raises(ValueError, match=message):
        train_model_simple(model, loaders[0], loaders[1], optimizer, "cpu", **args)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_diverging_run_stops_before_the_weights_turn_to_nan(loaders, tokenizer, monkeypatch):
    """A NaN loss at step 3 stops the run before that step's update: the weights are still those
    after step 2, exactly what a run stopped there on purpose (max_steps=3) holds."""
    import helpers.training as training
    from helpers.training import train_model
    calls = {"n": 0}
    real = training.calc_loss_batch

    def loss_that_blows_up(*args):
        calls["n"] += args[2].training  # training steps only, not the evaluations
        loss = real(*args)
        return loss * float("nan") if args[2].training and calls["n"] == 4 else loss  # step 3
    train, val = loaders
    args = dict(eval_freq=100, eval_iter=1, start_context="Every effort moves you", tokenizer=tokenizer,
                warmup_steps=3, initial_lr=1e-5, min_lr=1e-5, progress=False)
    model = new_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    torch.manual_seed(42)
    monkeypatch.setattr(training, "calc_loss_batch", loss_that_blows_up)
    with pytest.raises(FloatingPointError, match=r"loss at step 3 is nan \(learning rate 0.001\): training diverged"):
        train_model(model, train, val, optimizer, "cpu", 2, **args)
    monkeypatch.setattr(training, "calc_loss_batch", real)
    stopped = new_model()
    optimizer = torch.optim.AdamW(stopped.parameters(), lr=1e-3, weight_decay=0.1)
    torch.manual_seed(42)
    train_model(stopped, train, val, optimizer, "cpu", 2, max_steps=3, **args)
    for (name, a), b in zip(stopped.state_dict().items(), model.state_dict().values()):
        assert torch.isfinite(b).all() and torch.equal(a, b), name


def test_train_model_refuses_to_resume_with_another_schedule(loaders, tokenizer, tmp_path):
    ckpt = tmp_path / "run.pt"
    run_scheduled(loaders, tokenizer, checkpoint_path=ckpt, max_steps=5)
    with pytest.raises(ValueError, match=r"run.pt was trained with n_epochs, warmup_steps, .* \[2, 3, 1e-05, 1e-05, False\], "
                                         r"not \[2, 4, 1e-05, 1e-05, False\]"):
        run_scheduled(loaders, tokenizer, checkpoint_path=ckpt, resume=True, warmup_steps=4)


def test_train_model_resumes_a_train_model_simple_checkpoint_with_its_rate_as_the_peak(loaders, tokenizer, tmp_path):
    ckpt = tmp_path / "simple.pt"
    run(loaders, tokenizer, checkpoint_path=ckpt, max_steps=5, progress=False)  # constant lr 1e-3
    _, optimizer, (*_, lrs) = run_scheduled(loaders, tokenizer, optimizer_lr=0.5, checkpoint_path=ckpt, resume=True)
    assert optimizer.param_groups[0]["peak_lr"] == 1e-3  # the checkpoint's rate, not 0.5, and not shrinking
    assert lrs[3] == pytest.approx(1e-3) and lrs[-1] > 1e-5 and lrs[5:] == sorted(lrs[5:], reverse=True)


def test_infinite_gradients_stop_the_run_at_the_first_clipped_step(loaders, tokenizer):
    from helpers.training import train_model
    model = new_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.final_norm.scale.register_hook(lambda grad: grad * float("inf"))  # finite loss, infinite gradient
    with pytest.raises(FloatingPointError, match=r"the gradients at step 0 are not finite"):
        train_model(model, *loaders, optimizer, "cpu", 1, eval_freq=100, eval_iter=1, start_context="Hi",
                    tokenizer=tokenizer, warmup_steps=0, progress=False)
    for name, value in model.state_dict().items():  # stopped before the first update
        assert torch.equal(value, before[name]), name


def test_a_second_train_model_call_on_the_same_optimizer_warms_up_to_the_same_peak(loaders, tokenizer):
    """The book's loop reads the peak from the optimizer's rate, which its previous run left decayed
    to about min_lr: re-running a training cell without a new optimizer would barely train."""
    from helpers.training import train_model
    model, optimizer, (*_, first_lrs) = run_scheduled(loaders, tokenizer)
    assert optimizer.param_groups[0]["lr"] < 1e-3 / 10  # where the schedule left it
    with pytest.warns(UserWarning, match=r"where an earlier train_model call's schedule left it.*peak \(0.001\)"):
        *_, second_lrs = train_model(model, *loaders, optimizer, "cpu", n_epochs=2, eval_freq=3, eval_iter=2,
                                     start_context="Every effort moves you", tokenizer=tokenizer, progress=False,
                                     warmup_steps=3, initial_lr=1e-5, min_lr=1e-5)
    assert second_lrs == first_lrs and max(second_lrs) == pytest.approx(1e-3)
    # a rate the user sets is a new peak, as in the book
    for group in optimizer.param_groups:
        group["lr"] = 5e-4
    *_, third_lrs = train_model(model, *loaders, optimizer, "cpu", n_epochs=2, eval_freq=3, eval_iter=2,
                                start_context="Every effort moves you", tokenizer=tokenizer, progress=False,
                                warmup_steps=3, initial_lr=1e-5, min_lr=1e-5)
    assert max(third_lrs) == pytest.approx(5e-4)


def test_resuming_a_finished_run_with_another_schedule_is_refused_too(loaders, tokenizer, tmp_path):
    ckpt = tmp_path / "done.pt"
    *_, (*_, lrs) = run_scheduled(loaders, tokenizer, checkpoint_path=ckpt)  # runs to the end
    _, _, (*_, again) = run_scheduled(loaders, tokenizer, checkpoint_path=ckpt, resume=True)
    assert again == lrs  # nothing left to train: the schedule it ran
    with pytest.raises(ValueError, match=r"done.pt was trained with .* not \[2, 4, 1e-05, 1e-05, False\]"):
        run_scheduled(loaders, tokenizer, checkpoint_path=ckpt, resume=True, warmup_steps=4)


@pytest.mark.parametrize("num_batches", [0, -1, 1.5, True])
def test_calc_loss_loader_refuses_a_count_that_makes_no_sense(loaders, num_batches):
    with pytest.raises(ValueError, match=rf"num_batches={num_batches!r} must be a whole number >= 1"):
        calc_loss_loader(loaders[1], new_model(), "cpu", num_batches=num_batches)


def test_resuming_a_run_that_reached_max_steps_trains_nothing(loaders, tokenizer, tmp_path, capsys):
    ckpt = tmp_path / "run.pt"
    model, _, first = run(loaders, tokenizer, checkpoint_path=ckpt, max_steps=3)
    saved = ckpt.read_bytes()
    resumed_model, _, again = run(loaders, tokenizer, checkpoint_path=ckpt, resume=True, max_steps=3)
    assert again == first and "the checkpoint has 3 steps, max_steps=3: nothing to train" in capsys.readouterr().out
    for (name, a), b in zip(model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name
    assert ckpt.read_bytes() == saved
    with pytest.raises(ValueError, match="max_steps=0 must be a whole number >= 1"):
        run(loaders, tokenizer, max_steps=0)


# ---- the model comes back in training mode; empty loaders are found before any step ----

class _Failing(torch.nn.Module):
    """A model whose forward pass fails: what an error halfway through an evaluation looks like."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx):
        raise RuntimeError("forward failed")


def test_evaluate_model_restores_training_mode_when_a_loader_fails(loaders):
    model = new_model().train()
    with pytest.raises(ValueError, match="no batch"):
        evaluate_model(model, loaders[0], [], "cpu", eval_iter=1)  # the validation loader is empty
    assert model.training  # the book's would stay in eval mode: dropout off for the rest of the run
    failing = _Failing().train()
    with pytest.raises(RuntimeError, match="forward failed"):
        evaluate_model(failing, loaders[0], loaders[1], "cpu", eval_iter=1)
    assert failing.training


@pytest.mark.parametrize("bad", [None, "", b"Hi", 3])
def test_generate_and_print_sample_names_a_start_context_it_cannot_continue(tokenizer, capsys, bad):
    """"" used to fail inside generation ("idx must be (batch, tokens) ..."), None inside tiktoken."""
    from helpers.training import generate_and_print_sample

    model = new_model().train()
    with pytest.raises(ValueError, match=f"^start_context={bad!r} must be a non-empty str"):
        generate_and_print_sample(model, tokenizer, "cpu", bad)
    assert model.training and capsys.readouterr().out == ""


def test_generate_and_print_sample_restores_training_mode_when_generation_fails(tokenizer, capsys):
    from helpers.training import generate_and_print_sample

    failing = _Failing().train()
    with pytest.raises(RuntimeError, match="forward failed"):
        generate_and_print_sample(failing, tokenizer, "cpu", "Every effort moves you")
    assert failing.training and capsys.readouterr().out == ""  # nothing half-printed either


@pytest.mark.parametrize("empty", ["train_loader", "val_loader"])
def test_train_model_simple_refuses_an_empty_loader_by_name_before_any_step(loaders, tokenizer, empty):
    model = new_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train, val = ([], loaders[1]) if empty == "train_loader" else (loaders[0], [])
    with pytest.raises(ValueError, match=f"^{empty} yields no batch"):
        train_model_simple(model, train, val, optimizer, "cpu", num_epochs=1, eval_freq=1, eval_iter=1,
                           start_context="Hi", tokenizer=tokenizer, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # no step taken
    assert not optimizer.state  # not even the optimizer's moments
    # no epoch needs no batch (the book's loop returns empty lists there too)
    assert train_model_simple(model, train, val, optimizer, "cpu", num_epochs=0, eval_freq=1, eval_iter=1,
                              start_context="Hi", tokenizer=tokenizer, progress=False) == ([], [], [])


def test_plot_losses_shows_the_figure_as_the_book_does_or_returns_it(monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers.training import plot_losses

    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(plt.gcf()))
    args = ([0, 1, 2], [0, 512, 1024], [9.0, 7.5, 6.0], [9.2, 8.0, 7.1])
    assert plot_losses(*args) is None and len(shown) == 1  # the book's call: shown once, nothing returned
    fig = plot_losses(*args, show=False)
    assert len(shown) == 1 and fig is not shown[0]  # returned, not shown
    bottom, top = fig.axes
    assert [list(line.get_ydata()) for line in bottom.lines] == [args[2], args[3]]
    assert [line.get_label() for line in bottom.lines] == ["training loss", "validation loss"]
    assert list(top.lines[0].get_xdata()) == args[1] and top.lines[0].get_alpha() == 0
    assert (bottom.get_xlabel(), top.get_xlabel()) == ("epochs", "tokens seen")
    assert [list(line.get_ydata()) for line in shown[0].axes[0].lines] == [args[2], args[3]]
    plt.close("all")


def test_a_diverged_run_keeps_its_last_good_checkpoint(loaders, tokenizer, tmp_path):
    # train_model_simple, like the book's loop, trains on through NaN; its saves must not
    ckpt = tmp_path / "run.pt"
    run(loaders, tokenizer, checkpoint_path=ckpt, max_steps=2)
    good = ckpt.read_bytes()
    train, val = loaders
    model = new_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=float("inf"))  # the first step makes the weights inf/NaN
    with pytest.raises(ValueError, match=r"not saved to .*run\.pt: the model's weights hold NaN or infinite "
                                         r"values \(.+\): training diverged\. The file there, if any, is unchanged"):
        train_model_simple(model, train, val, optimizer, "cpu", num_epochs=1, eval_freq=3, eval_iter=1,
                           start_context="Every", tokenizer=tokenizer, checkpoint_path=ckpt, max_steps=1,
                           progress=False)
    assert ckpt.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]  # no temporary file left either


def test_loading_weights_that_hold_nan_is_refused_and_leaves_the_model_alone(tmp_path):
    state = new_model(1).state_dict()
    state["trf_blocks.1.att.W_query.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    model = new_model(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"nan\.pth is refused: .*\(trf_blocks\.1\.att\.W_query\.weight\)"):
        load_checkpoint(tmp_path / "nan.pth", model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    ckpt = tmp_path / "state.pt"  # the same for a resumable checkpoint whose weights went bad
    torch.save({"model": state, "global_step": 3}, ckpt)
    with pytest.raises(ValueError, match="training diverged before it was saved"):
        TrainingState.load(ckpt, model, None)


def test_a_buffer_that_holds_minus_infinity_on_purpose_is_no_divergence(tmp_path):
    # a reader's own model may keep an additive causal mask of -inf: only weights are checked
    class Masked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)
            self.register_buffer("mask", torch.full((4, 4), float("-inf")).triu(1))
    model = Masked()
    save_checkpoint(tmp_path / "m.pt", model)
    other = Masked()
    load_checkpoint(tmp_path / "m.pt", other)
    assert torch.equal(other.proj.weight, model.proj.weight)
    with torch.no_grad():
        model.proj.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"\(proj\.weight\): training diverged"):
        save_checkpoint(tmp_path / "m.pt", model)


@pytest.mark.parametrize("eval_iter", [0, -1, 1.5, 2.5, True, float("nan"), "2", torch.tensor(2)])
def test_evaluate_model_names_eval_iter_not_calc_loss_loaders_num_batches(loaders, tokenizer, eval_iter):
    """Named as ours; and the loop's check is the same one, so the two messages cannot drift apart."""
    model = new_model()
    with pytest.raises(ValueError, match="^" + re.escape(f"eval_iter={eval_iter!r} must be a whole number >= 1")) \
            as direct:
        evaluate_model(model, loaders[0], loaders[1], "cpu", eval_iter)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(ValueError) as in_loop:
        train_model_simple(model, loaders[0], loaders[1], optimizer, "cpu", 1, eval_freq=1, eval_iter=eval_iter,
                           start_context="Hi", tokenizer=tokenizer, progress=False)
    assert str(in_loop.value) == str(direct.value)


def test_a_failing_sample_at_the_end_of_an_epoch_costs_no_training(loaders, tokenizer, tmp_path, monkeypatch):
    """The epoch's checkpoint is written before its sample, so a sample that raises leaves the
    epoch saved, and resuming from it gives the run that never failed."""
    import helpers.training as training

    reference_model, _, reference = run(loaders, tokenizer)

    def failing_sample(*args, **kwargs):
        raise RuntimeError("the sample failed")

    monkeypatch.setattr(training, "generate_and_print_sample", failing_sample)
    ckpt = tmp_path / "run.pt"
    with pytest.raises(RuntimeError, match="the sample failed"):
        run(loaders, tokenizer, checkpoint_path=ckpt)
    assert ckpt.exists()
    monkeypatch.undo()
    resumed_model, _, resumed = run(loaders, tokenizer, checkpoint_path=ckpt, resume=True)
    assert resumed == reference
    for (name, a), b in zip(reference_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name


def test_train_model_refuses_a_start_context_it_cannot_sample_from_before_any_step(loaders, tokenizer):
    from helpers.training import train_model
    model = new_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="start_context=None must be a non-empty str"):
        train_model(model, loaders[0], loaders[1], optimizer, "cpu", 1, 3, 2, None, tokenizer, 2, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not optimizer.state


# ---- bad input found by a probe (session 40) ---------------------------------------------------

@pytest.mark.parametrize("cut", [100, 5000, 50_000, "half"])
def test_a_checkpoint_cut_anywhere_is_named_damaged(tmp_path, cut):
    """Some cuts made torch's zip reader raise a bare OSError (Errno 22, no file name)."""
    path = tmp_path / "c.pt"
    save_checkpoint(path, new_model(), step=3)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if cut == "half" else cut])
    with pytest.raises(ValueError, match=re.escape(str(path)) + " is not a readable PyTorch checkpoint"):
        load_checkpoint(path, new_model())


@pytest.mark.parametrize("change", [{"n_layers": 1}, {"context_length": 8}, {"emb_dim": 16}])
def test_a_checkpoint_of_another_config_is_refused_before_a_weight_is_copied(tmp_path, change):
    path = tmp_path / "c.pt"
    save_checkpoint(path, new_model())
    torch.manual_seed(1)
    model = GPTModel({**CFG, **change})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"saved from a model of another config .*The model is unchanged"):
        load_checkpoint(path, model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_an_optimizer_of_other_parameters_is_refused_before_the_model_changes(tmp_path):
    path = tmp_path / "c.pt"
    model = new_model()
    save_checkpoint(path, model, torch.optim.AdamW(model.parameters()))
    other = new_model(seed=1)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match=r"optimizer state is for \d+ parameters in 1 group\(s\), this optimizer holds 3"):
        load_checkpoint(path, other, torch.optim.AdamW(list(other.parameters())[:3]))
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    load_checkpoint(path, other, torch.optim.AdamW(other.parameters()))  # the matching one loads
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


@pytest.mark.parametrize("value", [Path("runs/x"), np.array([1.0, 2.0]), slice(1, 2)])
def test_an_extra_value_load_checkpoint_would_refuse_is_refused_when_saving(tmp_path, value):
    path = tmp_path / "c.pt"
    save_checkpoint(path, new_model(), step=1)
    old = path.read_bytes()
    with pytest.raises(ValueError, match=r"not saved to .*: where is a \w+, which load_checkpoint would refuse"):
        save_checkpoint(path, new_model(), where=value)
    assert path.read_bytes() == old  # the checkpoint there is kept
    save_checkpoint(path, new_model(), where=str(value), xs=[1, 2], lr=np.float64(1e-3))  # plain data is saved
    assert load_checkpoint(path, new_model())["lr"] == 1e-3


def test_an_optimizer_made_for_another_model_is_refused_before_training(loaders, tokenizer):
    """Re-running the cell that builds the model, not the optimizer's: the book's loop prints
    losses for a model whose weights never change."""
    train_loader, val_loader = loaders
    model = new_model()
    stale = torch.optim.AdamW(new_model(seed=1).parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="the optimizer holds none of the model's trainable parameters"):
        train_model_simple(model, train_loader, val_loader, stale, "cpu", 1, 1, 1, "Hi", tokenizer, max_steps=2)
    for p in model.parameters():  # a partly frozen model with an optimizer of its trainable part still trains
        p.requires_grad = False
    model.out_head.weight.requires_grad = True
    before = model.out_head.weight.clone()
    train_model_simple(model, train_loader, val_loader, torch.optim.AdamW([model.out_head.weight], lr=1e-3),
                       "cpu", 1, 1, 1, "Hi", tokenizer, max_steps=2, progress=False)
    assert not torch.equal(before, model.out_head.weight)


def test_plot_losses_takes_loss_tensors_and_names_a_list_of_another_length():
    import matplotlib
    matplotlib.use("Agg")
    from helpers.training import plot_losses

    loss = torch.tensor(2.0, requires_grad=True) * 1.5  # appended without .item()
    fig = plot_losses([0.5, 1.0], [10, 20], [loss, loss], [torch.tensor(3.0), 3.5], show=False)
    assert list(fig.axes[0].lines[0].get_ydata()) == [3.0, 3.0]
    assert list(fig.axes[0].lines[1].get_ydata()) == [3.0, 3.5]
    with pytest.raises(ValueError, match="val_losses has 1 values, epochs_seen 2"):
        plot_losses([0.5, 1.0], [10, 20], [1.0, 2.0], [1.0], show=False)
