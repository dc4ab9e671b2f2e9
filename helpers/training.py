"""training: generated from ch05_pretraining.ipynb. DO NOT EDIT.

Edit the notebook cells that start with `#| export training` and run `make export`.
"""
__all__ = ['calc_loss_batch', 'calc_loss_loader', 'evaluate_model', 'generate_and_print_sample', 'plot_losses', 'find_highest_gradient', 'non_finite_tensors', 'save_checkpoint', 'load_checkpoint', 'TrainingState', 'interrupt_after_step', 'train_model_simple', 'train_model']


# ---- ch05_pretraining.ipynb, cell 24 ----
import torch
import torch.nn.functional as F

from helpers.generation import generate_text_simple, text_to_token_ids, token_ids_to_text
from helpers.model import _is_count


def calc_loss_batch(input_batch, target_batch, model, device):
    """Mean cross-entropy of the model's next-token predictions over one batch."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)
    return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def _check_loaders(num_epochs=1, **loaders):
    """Refuse, by name, a loader that yields no batch (a loop over no epoch needs none)."""
    for name, loader in loaders.items():
        if num_epochs and len(loader) == 0:
            raise ValueError(f"{name} yields no batch: it holds fewer examples (for text: windows of max_length "
                             f"tokens) than one batch; use a smaller batch_size or max_length, drop_last=False, "
                             f"or more data")


def calc_loss_loader(data_loader, model, device, num_batches=None):
    """Average `calc_loss_batch` over the first `num_batches` batches (all when None)."""
    _check_loaders(data_loader=data_loader)
    if num_batches is not None and not _is_count(num_batches, 1):
        raise ValueError(f"num_batches={num_batches!r} must be a whole number >= 1 (or None: every batch)")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i >= num_batches:
            break
        total += calc_loss_batch(input_batch, target_batch, model, device).item()
    return total / num_batches


# ---- ch05_pretraining.ipynb, cell 32 ----
def _check_eval_iter(eval_iter):  # named as ours, not as calc_loss_loader's num_batches
    if eval_iter is not None and not _is_count(eval_iter, 1):
        raise ValueError(f"eval_iter={eval_iter!r} must be a whole number >= 1 (batches per evaluation; None: all)")


def evaluate_model(model, train_loader, val_loader, device, eval_iter):
    """(train loss, validation loss) over `eval_iter` batches each, without dropout or gradients."""
    _check_eval_iter(eval_iter)
    model.eval()
    try:  # back in training mode also when a loader fails
        with torch.no_grad():
            train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
            val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    finally:
        model.train()
    return train_loss, val_loss


# ---- ch05_pretraining.ipynb, cell 34 ----
def _check_start_context(start_context, tokenizer):  # the sample needs at least one token to continue
    if not (isinstance(start_context, str) and text_to_token_ids(start_context, tokenizer).numel()):
        raise ValueError(f"start_context={start_context!r} must be a non-empty str: the sample continues it")


def generate_and_print_sample(model, tokenizer, device, start_context, max_new_tokens=50):
    """Print (and return) a greedy continuation of `start_context`: a quick look at progress.
    Any model that maps token IDs to logits works; the context size is the number of rows of
    its position embedding (or its cfg's context_length); without either, nothing is cropped."""
    _check_start_context(start_context, tokenizer)
    model.eval()
    try:
        encoded = text_to_token_ids(start_context, tokenizer).to(device)
        if hasattr(model, "pos_emb"):
            context_size = model.pos_emb.weight.shape[0]
        else:
            context_size = getattr(model, "cfg", {}).get("context_length", encoded.shape[1] + max_new_tokens)
        token_ids = generate_text_simple(model, encoded, max_new_tokens, context_size)
    finally:
        model.train()
    text = token_ids_to_text(token_ids, tokenizer).replace("\n", " ")
    print(text)
    return text


# ---- ch05_pretraining.ipynb, cell 42 ----
def plot_losses(epochs_seen, tokens_seen, train_losses, val_losses, *, show=True):
    """Training and validation loss against epochs (bottom axis) and tokens seen (top axis).
    Shown at once, as in the book; `show=False` returns the figure instead (to change or save it;
    Jupyter's inline backend still draws it when the cell ends, unless `plt.close(fig)`)."""
    import matplotlib.pyplot as plt

    # losses appended as tensors (without .item()) are plotted too
    train_losses, val_losses = ([v.item() if torch.is_tensor(v) else v for v in vs] for vs in (train_losses, val_losses))
    for name, values in (("tokens_seen", tokens_seen), ("train_losses", train_losses), ("val_losses", val_losses)):
        if len(values) != len(epochs_seen):
            raise ValueError(f"{name} has {len(values)} values, epochs_seen {len(epochs_seen)}: one each per evaluation")
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(epochs_seen, train_losses, label="training loss")
    ax1.plot(epochs_seen, val_losses, linestyle="-.", label="validation loss")
    ax1.set_xlabel("epochs")
    ax1.set_ylabel("loss")
    ax1.legend(loc="upper right")
    ax2 = ax1.twiny()  # a second x axis sharing the y axis
    ax2.plot(tokens_seen, train_losses, alpha=0)  # invisible: only aligns the tick labels
    ax2.set_xlabel("tokens seen")
    fig.tight_layout()
    if not show:
        return fig
    plt.show()


# ---- ch05_pretraining.ipynb, cell 103 ----
def find_highest_gradient(model):
    """The largest gradient entry over all parameters (a 0-d tensor; the largest value, not the
    largest magnitude, as in the book), or None before the first backward pass: a quick look at
    what clipping changes."""
    highest = None
    for param in model.parameters():
        if param.grad is not None:
            candidate = param.grad.max()
            if highest is None or candidate > highest:
                highest = candidate
    return highest


# ---- ch05_pretraining.ipynb, cell 134 ----
import contextlib
import io
import pickle
import signal
import threading
import zipfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from helpers.support.files import write_atomically


def non_finite_tensors(state_dict):
    """Names of the floating-point tensors in `state_dict` holding a NaN or an infinity."""
    return [name for name, t in state_dict.items()
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _non_finite_weights(model, state_dict):
    """`non_finite_tensors` of `state_dict` without `model`'s buffers: a buffer may hold -inf
    on purpose (a mask), a weight never does."""
    buffers = {name for name, _ in model.named_buffers()}
    return non_finite_tensors({k: v for k, v in state_dict.items() if k not in buffers})


def _diverged(bad):
    names = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    return f"the model's weights hold NaN or infinite values ({names}): training diverged"


def save_checkpoint(path, model, optimizer=None, **state):
    """Save model (and optimizer) state dicts plus extra values (numbers, lists, tensors).

    Written to a temporary file first, flushed to disk and renamed, so an interruption while
    saving never leaves a half-written checkpoint behind, and the old one stays until then.
    Weights holding NaN or infinity are refused (ValueError) and the file stays as it was:
    a checkpoint from before a run diverged is worth more than one from after.
    """
    payload = {"model": model.state_dict(), **state}
    bad = _non_finite_weights(model, payload["model"])
    if bad:
        raise ValueError(f"not saved to {path}: {_diverged(bad)}. The file there, if any, is unchanged; "
                         f"resume from it with a lower learning rate or gradient clipping")
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    payload = _plain(payload)  # a NumPy number (lr=np.float64(4e-4)) would make weights_only loading refuse the file
    for key in state:
        _check_loadable(path, key, payload[key])
    write_atomically(path, lambda f: torch.save(payload, f))


def _check_loadable(path, key, value):
    """Refuse now, not when loading, an extra value that `load_checkpoint` (weights_only) would refuse."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    try:
        torch.load(buffer, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"not saved to {path}: {key} is a {type(value).__name__}, which load_checkpoint would "
                         f"refuse to unpickle; store plain data (numbers, strings, lists, dicts, tensors), "
                         f"e.g. str(path) or array.tolist()") from None


def _plain(value):
    """`value` with every NumPy scalar inside its dicts, lists and tuples turned into Python's own."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _unreadable(path, err):
    first = (str(err).strip().splitlines() or [""])[0][:200]
    return ValueError(f"{path} is not a readable PyTorch checkpoint: it is truncated or corrupted "
                      f"({type(err).__name__}: {first}). Delete it and write it again (re-run what saved it, "
                      f"or use an intact copy).")


# ---- ch05_pretraining.ipynb, cell 135 ----
import errno
import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch's message makes a word bold for terminals


def load_checkpoint(path, model, optimizer=None, map_location="cpu"):
    """Load a checkpoint written by `save_checkpoint`, the book's {"model_state_dict",
    "optimizer_state_dict"} file, or a bare model state dict (`torch.save(model.state_dict(), ...)`)
    into `model` (and `optimizer`); returns the extra values. Only tensors and plain data are read
    (`weights_only=True`): a file that holds pickled Python objects is refused, since unpickling
    can run arbitrary code; a truncated or corrupted file, or one whose weights hold NaN or
    infinity, is refused with its name."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" not in str(e):  # not a forbidden class, just bytes that are no pickle
            raise _unreadable(path, e) from None
        raise ValueError(
            f"{path} holds pickled Python objects, not just tensors; loading it could run arbitrary "
            f"code, so it is refused. Only load such a file if you trust its source, and then re-save "
            f"it with save_checkpoint. ({_ANSI.sub('', str(e).splitlines()[0])})") from None
    except (EOFError, KeyError, UnicodeDecodeError, zipfile.BadZipFile) as e:
        raise _unreadable(path, e) from None
    except RuntimeError as e:
        if "PytorchStreamReader" not in str(e):
            raise
        raise _unreadable(path, e) from None
    except OSError as e:
        if e.errno == errno.EINVAL:  # what torch's zip reader says of some cut-short files
            raise _unreadable(path, e) from None
        raise  # missing or unreadable: not a damaged file
    except MemoryError:  # too big for free memory: not a damaged file either
        raise
    except Exception as e:  # arbitrary bytes can trip the unpickler in many ways (IndexError, ...)
        raise _unreadable(path, e) from None
    if not isinstance(payload, dict):
        raise ValueError(f"{path} holds a {type(payload).__name__}, not a checkpoint or state dict")
    if "model_state_dict" in payload:  # the book's layout
        payload["model"] = payload.pop("model_state_dict")
        if "optimizer_state_dict" in payload:
            payload["optimizer"] = payload.pop("optimizer_state_dict")
    if "model" not in payload:  # a bare state dict
        payload = {"model": payload}
    bad = _non_finite_weights(model, payload["model"]) if isinstance(payload["model"], dict) else []
    if bad:  # a run that diverged before it saved: its weights would only give NaN losses
        raise ValueError(f"{path} is refused: {_diverged(bad)} before it was saved. The model is unchanged; "
                         f"load an earlier checkpoint")
    optimizer_state = payload.pop("optimizer", None)
    if optimizer is not None and optimizer_state is None:  # refused before the model is changed
        raise ValueError(f"{path} has no optimizer state to restore; the model is unchanged (pass optimizer=None "
                         f"to load the weights alone)")
    _check_fits(path, model, payload["model"])
    if optimizer is not None:
        _check_optimizer_fits(path, optimizer, optimizer_state)
    model.load_state_dict(payload.pop("model"))
    if optimizer is not None:
        optimizer.load_state_dict(optimizer_state)
    return payload


def _check_fits(path, model, state):
    """Refuse, before a single weight is copied, what load_state_dict would refuse halfway through:
    keys or shapes of another config. Left to PyTorch for models whose load hooks rename keys."""
    if not isinstance(state, dict) or any(m._load_state_dict_pre_hooks for m in model.modules()):
        return
    own = model.state_dict()
    wrong = [f"{k} is {tuple(state[k].shape)}, the model's {tuple(v.shape)}" for k, v in own.items()
             if k in state and torch.is_tensor(state[k]) and state[k].shape != v.shape]
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    found = wrong + ([f"{len(missing)} missing (e.g. {missing[0]})"] if missing else [])
    found += [f"{len(unexpected)} unexpected (e.g. {unexpected[0]})"] if unexpected else []
    if found:
        raise ValueError(f"{path} was saved from a model of another config ({'; '.join(found[:3])}): build the "
                         f"model with the config it was saved with (n_layers, emb_dim, context_length, vocab_size, "
                         f"qkv_bias). The model is unchanged")


def _check_optimizer_fits(path, optimizer, state):
    saved = [len(g["params"]) for g in state.get("param_groups", [])] if isinstance(state, dict) else None
    mine = [len(g["params"]) for g in optimizer.param_groups]
    if saved is not None and saved != mine:
        raise ValueError(f"{path}'s optimizer state is for {sum(saved)} parameters in {len(saved)} group(s), this "
                         f"optimizer holds {sum(mine)} in {len(mine)}: make it as the run that saved it did (the "
                         f"same parameters), or pass optimizer=None to load the weights alone. The model is unchanged")


# ---- ch05_pretraining.ipynb, cell 137 ----
class TrainingState:
    """What a stopped run needs, besides weights and optimizer, to continue exactly: the losses
    so far, the step, the position inside the epoch, and the random-number states that decide
    the order of the batches and the dropout masks (the CPU's and CUDA's generators; on Apple's MPS
    the device's own, which draws the dropout masks there, is not kept). Saved in the checkpoint
    with the weights, with the loader's length: a resume with other batches is refused."""

    def __init__(self):
        self.train_losses, self.val_losses, self.track_tokens_seen = [], [], []
        self.tokens_seen, self.global_step, self.epoch, self.batches_done = 0, -1, 0, 0
        self.epoch_rng_state, self.batches_per_epoch = None, None
        self._restore = {}  # random states to put back when the resumed run reaches them

    def batches(self, loader):
        """This epoch's batches, skipping those a stopped run had already trained on."""
        if self.batches_per_epoch not in (None, len(loader)):  # e.g. a smaller batch_size after running out of memory
            raise ValueError(f"the checkpoint was saved by a run with {self.batches_per_epoch} batches per epoch, this "
                             f"train_loader has {len(loader)}: resume with the same text, batch_size, max_length and "
                             f"stride, or load its weights (load_checkpoint) and start a new run")
        self.batches_per_epoch = len(loader)
        if self.batches_done == 0 and "rng_state" in self._restore:
            # stopped at an epoch's end, where the stop's state is the next epoch's start: it goes
            # back before iter(loader), which draws from it (the workers' seed) before the shuffle
            self._restore["epoch_rng_state"] = self._restore.pop("rng_state")
        if "epoch_rng_state" in self._restore:  # the shuffle order comes from this state
            torch.set_rng_state(self._restore.pop("epoch_rng_state"))
        self.epoch_rng_state = torch.get_rng_state()
        batches = iter(loader)
        for _ in range(self.batches_done):
            next(batches)
        if "rng_state" in self._restore:  # the dropout masks from a stop inside the epoch onwards
            torch.set_rng_state(self._restore.pop("rng_state"))
        if "cuda_rng_state" in self._restore and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self._restore.pop("cuda_rng_state"))
        return batches

    def step_done(self, input_batch):
        self.tokens_seen += input_batch.numel()
        self.global_step += 1
        self.batches_done += 1

    def record(self, train_loss, val_loss):
        self.train_losses.append(train_loss)
        self.val_losses.append(val_loss)
        self.track_tokens_seen.append(self.tokens_seen)

    def epoch_done(self):
        self.epoch, self.batches_done = self.epoch + 1, 0
        self.epoch_rng_state = torch.get_rng_state()  # the next epoch's shuffle starts here

    def results(self):
        return self.train_losses, self.val_losses, self.track_tokens_seen

    def save(self, path, model, optimizer):
        values = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        if torch.cuda.is_available():
            values["cuda_rng_state"] = torch.cuda.get_rng_state_all()
        save_checkpoint(path, model, optimizer, **values, rng_state=torch.get_rng_state())

    @classmethod
    def load(cls, path, model, optimizer):
        if path is None or not Path(path).exists():
            raise FileNotFoundError(f"resume=True needs an existing checkpoint_path, got {path!r}")
        # Read onto the CPU: torch.set_rng_state takes CPU tensors only, and load_state_dict
        # copies weights and optimizer state to wherever the model's parameters live.
        saved = load_checkpoint(path, model, optimizer, map_location="cpu")
        if "global_step" not in saved:
            raise ValueError(f"{path} holds weights but no training state (step, losses, random states), so "
                             "resume=True cannot continue it; to train on from these weights, keep them "
                             "(they are now loaded) and pass resume=False")
        state = cls()
        state._restore = {k: saved.pop(k) for k in ("epoch_rng_state", "rng_state", "cuda_rng_state") if k in saved}
        vars(state).update(saved)
        return state


# ---- ch05_pretraining.ipynb, cell 139 ----
@contextlib.contextmanager
def interrupt_after_step(enabled=True):
    """Inside the block, Ctrl-C (the notebook's stop button) only sets `.requested`, so the loop
    can finish its step and save before stopping; a second Ctrl-C stops at once (a save it cuts
    short leaves the last checkpoint as it was). Python delivers signals to the main thread
    only, so elsewhere (or with `enabled=False`) Ctrl-C keeps its usual effect."""
    flag = type("Interrupt", (), {"requested": False})()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def on_ctrl_c(*_):
        if flag.requested:  # pressed again: a slow evaluation or a stuck step need not be waited for
            raise KeyboardInterrupt
        flag.requested = True

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# ---- ch05_pretraining.ipynb, cell 141 ----
from helpers.support.files import check_writable


def _check_optimizer_holds(model, optimizer):
    """Refuse an optimizer made for another model: it would step those weights, and this model's
    losses would stay where they are without a word."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if not any(id(p) in held for p in model.parameters() if p.requires_grad):
        raise ValueError("the optimizer holds none of the model's trainable parameters: it was made for another "
                         "model (re-running the cell that builds the model makes a new one); create it again, "
                         "e.g. torch.optim.AdamW(model.parameters(), lr=...)")


def train_model_simple(model, train_loader, val_loader, optimizer, device, num_epochs,
                       eval_freq, eval_iter, start_context, tokenizer, *,
                       checkpoint_path=None, resume=False, max_steps=None, progress=True, before_update=None):
    """Train for `num_epochs` epochs; returns (train_losses, val_losses, track_tokens_seen).

    Every `eval_freq` steps the loss on `eval_iter` batches of each loader is recorded and
    printed; after each epoch a greedy sample continuing `start_context` is printed.

    With `checkpoint_path`, everything needed to continue exactly is saved there after each
    epoch, when `max_steps` (optimizer steps since the very start) is reached, and when the run
    is interrupted (Ctrl-C / the notebook's stop button: the current step finishes, the checkpoint
    is written, then KeyboardInterrupt is raised; a second Ctrl-C stops at once). `resume=True`
    continues from that file: same batches in the same order, same dropout masks, same losses as
    a run that never stopped (on a CPU or CUDA; a loader of another length is refused).

    `before_update(step, loss)`, if given, is called after each backward pass and before the
    optimizer step (`step` counts from 0): `train_model` sets its learning rate and clips there.
    """
    if max_steps is not None and not _is_count(max_steps, 1):
        raise ValueError(f"max_steps={max_steps!r} must be a whole number >= 1 (or None: all epochs)")
    for name, value, minimum in (("num_epochs", num_epochs, 0), ("eval_freq", eval_freq, 1)):
        if not _is_count(value, minimum):
            raise ValueError(f"{name}={value!r} must be a whole number >= {minimum}")
    _check_loaders(num_epochs, train_loader=train_loader, val_loader=val_loader)
    _check_eval_iter(eval_iter)
    _check_start_context(start_context, tokenizer)  # now, not after the first epoch's training
    _check_optimizer_holds(model, optimizer)
    state = TrainingState.load(checkpoint_path, model, optimizer) if resume else TrainingState()
    if checkpoint_path is not None:  # a path below a file or in a read-only folder: found now, not after an epoch
        check_writable(checkpoint_path, "the checkpoint")
    if max_steps is not None and state.global_step + 1 >= max_steps:  # resumed where it stopped
        print(f"the checkpoint has {state.global_step + 1} steps, max_steps={max_steps}: nothing to train")
        return state.results()
    bar = tqdm(total=num_epochs * len(train_loader), initial=state.global_step + 1, desc="training",
               unit="step", **({} if progress else {"disable": True}))  # else TQDM_DISABLE decides
    with bar, interrupt_after_step(enabled=checkpoint_path is not None) as interrupt:
        for epoch in range(state.epoch, num_epochs):
            model.train()
            for input_batch, target_batch in state.batches(train_loader):
                optimizer.zero_grad()
                loss = calc_loss_batch(input_batch, target_batch, model, device)
                loss.backward()
                if before_update is not None:
                    before_update(state.global_step + 1, loss)
                optimizer.step()
                state.step_done(input_batch)
                bar.update(1)
                if state.global_step % eval_freq == 0:
                    train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                    state.record(train_loss, val_loss)
                    bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
                    tqdm.write(f"Ep {epoch + 1} (Step {state.global_step:06d}): "
                               f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
                if interrupt.requested or (max_steps is not None and state.global_step + 1 >= max_steps):
                    if checkpoint_path is not None:
                        state.save(checkpoint_path, model, optimizer)
                        tqdm.write(f"stopped after step {state.global_step}; checkpoint saved to {checkpoint_path}")
                    if interrupt.requested:
                        raise KeyboardInterrupt
                    return state.results()
            state.epoch_done()
            if checkpoint_path is not None:  # before the sample: nothing it raises can cost the epoch
                state.save(checkpoint_path, model, optimizer)
            generate_and_print_sample(model, tokenizer, device, start_context)
    return state.results()


# ---- ch05_pretraining.ipynb, cell 152 ----
import math
import warnings

from helpers.text import _is_count, _is_real  # a bool is no learning rate, though True == 1


def _appendix_d_lr(step, peak_lr, total_steps, warmup_steps, initial_lr, min_lr):
    """The learning rate of optimizer step `step` (from 0): a linear warm-up, then cosine decay.
    Computed in the book's order of operations, so the rates agree with it to the last bit."""
    if step < warmup_steps:
        return initial_lr + step * ((peak_lr - initial_lr) / warmup_steps)
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def _check_peak_lr(peak_lr, min_lr):
    if not (_is_real(peak_lr) and peak_lr >= 0):
        raise ValueError(f"the optimizer's learning rate (the peak) must be a finite number >= 0, got {peak_lr!r}")
    if min_lr > peak_lr:
        raise ValueError(f"min_lr ({min_lr}) is above the optimizer's learning rate ({peak_lr}), the peak "
                         f"the schedule decays from: create the optimizer with lr=<peak>")


def _check_appendix_d_args(train_loader, n_epochs, eval_freq, warmup_steps, initial_lr, min_lr, max_norm):
    """The run's length in optimizer steps, once every argument of the schedule makes sense."""
    if not _is_count(n_epochs, 0):  # 0, as in the book: no step, empty lists
        raise ValueError(f"n_epochs must be a whole number >= 0, got {n_epochs!r}")
    if not _is_count(eval_freq, 1):
        raise ValueError(f"eval_freq must be a positive integer, got {eval_freq!r}")
    for name, value in (("initial_lr", initial_lr), ("min_lr", min_lr)):
        if not (_is_real(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if max_norm is not None and not (_is_real(max_norm) and max_norm > 0):
        raise ValueError(f"max_norm must be a finite number > 0 (or None: no clipping), got {max_norm!r}")
    if not _is_count(warmup_steps, 0):  # more than the run's steps: it warms up throughout, as the book's does
        raise ValueError(f"warmup_steps must be a whole number >= 0, got {warmup_steps!r}")
    return len(train_loader) * n_epochs


# ---- ch05_pretraining.ipynb, cell 153 ----
from pathlib import Path


def train_model(model, train_loader, val_loader, optimizer, device, n_epochs, eval_freq, eval_iter,
                start_context, tokenizer, warmup_steps, initial_lr=3e-05, min_lr=1e-6, orig_book_version=False,
                *, max_norm=1.0, checkpoint_path=None, resume=False, max_steps=None, progress=True):
    """The book's appendix D loop: `train_model_simple` with a linear warm-up from `initial_lr` to
    the optimizer's learning rate over `warmup_steps` steps, cosine decay towards `min_lr`
    (reached one step after the last), and gradient clipping to `max_norm` from the end of the
    warm-up on (one step later with `orig_book_version=True`, as the book's first printing did).
    Returns (train_losses, val_losses, track_tokens_seen, track_lrs).

    checkpoint_path, resume, max_steps and progress work as in `train_model_simple`. The peak
    learning rate and the schedule are kept in the optimizer's parameter groups, which the
    checkpoint saves: a resumed run continues the same schedule, and one resumed with another
    schedule is refused.
    """
    total_steps = _check_appendix_d_args(train_loader, n_epochs, eval_freq, warmup_steps, initial_lr, min_lr, max_norm)
    _check_loaders(n_epochs, train_loader=train_loader, val_loader=val_loader)  # before the optimizer is touched
    schedule_args = [n_epochs, warmup_steps, initial_lr, min_lr, orig_book_version]
    if not resume:  # the book's peak: the optimizer's learning rate now (resuming: the checkpoint's)
        groups = optimizer.param_groups
        peak_lr = groups[0]["lr"]
        if "peak_lr" in groups[0] and groups[0].get("scheduled_lr") == peak_lr:
            peak_lr = groups[0]["peak_lr"]  # the book would warm up to the rate its last run decayed to
            warnings.warn(f"this optimizer's learning rate ({groups[0]['lr']:.3g}) is where an earlier train_model "
                          f"call's schedule left it, so its peak ({peak_lr:.3g}) is the peak again; to choose "
                          f"another, create a new optimizer or set each param group's 'lr'", stacklevel=2)
        _check_peak_lr(peak_lr, min_lr)
        for group in groups:
            group["peak_lr"], group["schedule"] = peak_lr, schedule_args
    first_clipped_step = warmup_steps + 1 if orig_book_version else warmup_steps
    last_step = []

    def schedule(step):
        peak_lr = optimizer.param_groups[0].get("peak_lr", optimizer.param_groups[0]["lr"])
        return _appendix_d_lr(step, peak_lr, total_steps, warmup_steps, initial_lr, min_lr)

    def stop(why):
        kept = checkpoint_path is not None and Path(checkpoint_path).exists()
        raise FloatingPointError(f"{why}: training diverged. Lower the learning rate or lengthen the warm-up"
                                 + (f"; {checkpoint_path} still holds the last saved state." if kept else "."))

    def adopt_schedule():
        """After a resume the groups are the checkpoint's: refuse another schedule, keep its peak."""
        groups = optimizer.param_groups
        if groups[0].get("schedule", schedule_args) != schedule_args:
            raise ValueError(f"{checkpoint_path} was trained with n_epochs, warmup_steps, initial_lr, min_lr, "
                             f"orig_book_version = {groups[0]['schedule']}, not {schedule_args}: resume it "
                             f"with the same values")
        _check_peak_lr(groups[0].get("peak_lr", groups[0]["lr"]), min_lr)
        for group in groups:  # (a train_model_simple checkpoint: its constant rate is the peak)
            group.setdefault("peak_lr", groups[0]["lr"])
            group["schedule"] = schedule_args

    def before_update(step, loss):
        if not last_step:  # the first step of this call
            adopt_schedule()
        lr = schedule(step)
        if not torch.isfinite(loss):
            stop(f"the loss at step {step} is {loss.item()} (learning rate {lr:.3g})")
        if max_norm is not None and step >= first_clipped_step:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=max_norm)
            if not torch.isfinite(norm):
                stop(f"the gradients at step {step} are not finite (learning rate {lr:.3g})")
        for group in optimizer.param_groups:  # looked up each time: loading a checkpoint replaces them
            group["lr"] = group["scheduled_lr"] = lr  # scheduled_lr: a later call can tell it is no peak
        last_step[:] = [step]

    results = train_model_simple(model, train_loader, val_loader, optimizer, device, n_epochs, eval_freq,
                                 eval_iter, start_context, tokenizer, checkpoint_path=checkpoint_path,
                                 resume=resume, max_steps=max_steps, progress=progress, before_update=before_update)
    if not last_step and resume:  # resumed at its very end: the steps are in the checkpoint
        adopt_schedule()
        last_step = [torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)["global_step"]]
    track_lrs = [schedule(s) for s in range(last_step[0] + 1)] if last_step else []
    return (*results, track_lrs)
