"""training: generated from ch05_pretraining.ipynb. DO NOT EDIT.

Edit the notebook cells that start with `#| export training` and run `make export`.
"""
__all__ = ['calc_loss_batch', 'calc_loss_loader', 'evaluate_model', 'generate_and_print_sample', 'plot_losses', 'save_checkpoint', 'load_checkpoint', 'TrainingState', 'interrupt_after_step', 'train_model_simple']


# ---- ch05_pretraining.ipynb, cell 24 ----
import torch
import torch.nn.functional as F

from helpers.generation import generate_text_simple, text_to_token_ids, token_ids_to_text


def calc_loss_batch(input_batch, target_batch, model, device):
    """Mean cross-entropy of the model's next-token predictions over one batch."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)
    return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def calc_loss_loader(data_loader, model, device, num_batches=None):
    """Average `calc_loss_batch` over the first `num_batches` batches (all when None)."""
    if len(data_loader) == 0:
        raise ValueError("the data loader yields no batch (the text is too short for one batch of "
                         "windows); use a smaller batch_size or max_length, or drop_last=False")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i >= num_batches:
            break
        total += calc_loss_batch(input_batch, target_batch, model, device).item()
    return total / num_batches


# ---- ch05_pretraining.ipynb, cell 31 ----
def evaluate_model(model, train_loader, val_loader, device, eval_iter):
    """(train loss, validation loss) over `eval_iter` batches each, without dropout or gradients."""
    model.eval()
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    model.train()
    return train_loss, val_loss


def generate_and_print_sample(model, tokenizer, device, start_context, max_new_tokens=50):
    """Print (and return) a greedy continuation of `start_context`: a quick look at progress.
    Any model that maps token IDs to logits works; the context size is the number of rows of
    its position embedding (or its cfg's context_length); without either, nothing is cropped."""
    model.eval()
    encoded = text_to_token_ids(start_context, tokenizer).to(device)
    if hasattr(model, "pos_emb"):
        context_size = model.pos_emb.weight.shape[0]
    else:
        context_size = getattr(model, "cfg", {}).get("context_length", encoded.shape[1] + max_new_tokens)
    token_ids = generate_text_simple(model, encoded, max_new_tokens, context_size)
    text = token_ids_to_text(token_ids, tokenizer).replace("\n", " ")
    print(text)
    model.train()
    return text


# ---- ch05_pretraining.ipynb, cell 39 ----
def plot_losses(epochs_seen, tokens_seen, train_losses, val_losses):
    """Training and validation loss against epochs (bottom axis) and tokens seen (top axis)."""
    import matplotlib.pyplot as plt

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
    return fig


# ---- ch05_pretraining.ipynb, cell 111 ----
import contextlib
import pickle
import signal
import threading
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from helpers.support.files import write_atomically


def save_checkpoint(path, model, optimizer=None, **state):
    """Save model (and optimizer) state dicts plus extra values (numbers, lists, tensors).

    Written to a temporary file first, flushed to disk and renamed, so an interruption while
    saving never leaves a half-written checkpoint behind, and the old one stays until then.
    """
    payload = {"model": model.state_dict(), **state}
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    write_atomically(path, lambda f: torch.save(payload, f))


def _unreadable(path, err):
    first = (str(err).strip().splitlines() or [""])[0][:200]
    return ValueError(f"{path} is not a readable PyTorch checkpoint: it is truncated or corrupted "
                      f"({type(err).__name__}: {first}). Delete it and write it again (re-run what saved it, "
                      f"or use an intact copy).")


# ---- ch05_pretraining.ipynb, cell 112 ----
import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch's message makes a word bold for terminals


def load_checkpoint(path, model, optimizer=None, map_location="cpu"):
    """Load a checkpoint written by `save_checkpoint`, the book's {"model_state_dict",
    "optimizer_state_dict"} file, or a bare model state dict (`torch.save(model.state_dict(), ...)`)
    into `model` (and `optimizer`); returns the extra values. Only tensors and plain data are read
    (`weights_only=True`): a file that holds pickled Python objects is refused, since unpickling
    can run arbitrary code; a truncated or corrupted file is refused with its name."""
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
    except OSError:  # missing or unreadable: the error already names the file
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
    model.load_state_dict(payload.pop("model"))
    optimizer_state = payload.pop("optimizer", None)
    if optimizer is not None:
        if optimizer_state is None:
            raise ValueError(f"{path} has no optimizer state to restore")
        optimizer.load_state_dict(optimizer_state)
    return payload


# ---- ch05_pretraining.ipynb, cell 114 ----
class TrainingState:
    """What a stopped run needs, besides weights and optimizer, to continue exactly: the losses
    so far, the step, the position inside the epoch, and the random-number states that decide
    the order of the batches and the dropout masks. Saved in the checkpoint with the weights."""

    def __init__(self):
        self.train_losses, self.val_losses, self.track_tokens_seen = [], [], []
        self.tokens_seen, self.global_step, self.epoch, self.batches_done = 0, -1, 0, 0
        self.epoch_rng_state = None
        self._restore = {}  # random states to put back when the resumed run reaches them

    def batches(self, loader):
        """This epoch's batches, skipping those a stopped run had already trained on."""
        if "epoch_rng_state" in self._restore:  # the shuffle order comes from this state
            torch.set_rng_state(self._restore.pop("epoch_rng_state"))
        self.epoch_rng_state = torch.get_rng_state()
        batches = iter(loader)
        for _ in range(self.batches_done):
            next(batches)
        if "rng_state" in self._restore:  # the dropout masks from the stop onwards
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
    def load(cls, path, model, optimizer, device):
        if path is None or not Path(path).exists():
            raise FileNotFoundError(f"resume=True needs an existing checkpoint_path, got {path!r}")
        saved = load_checkpoint(path, model, optimizer, map_location=device)
        state = cls()
        state._restore = {k: saved.pop(k) for k in ("epoch_rng_state", "rng_state", "cuda_rng_state") if k in saved}
        vars(state).update(saved)
        return state


# ---- ch05_pretraining.ipynb, cell 116 ----
@contextlib.contextmanager
def interrupt_after_step(enabled=True):
    """Inside the block, Ctrl-C (the notebook's stop button) only sets `.requested`, so the loop
    can finish its step and save before stopping. Python delivers signals to the main thread
    only, so elsewhere (or with `enabled=False`) Ctrl-C keeps its usual effect."""
    flag = type("Interrupt", (), {"requested": False})()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGINT, lambda *_: setattr(flag, "requested", True))
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# ---- ch05_pretraining.ipynb, cell 118 ----
def train_model_simple(model, train_loader, val_loader, optimizer, device, num_epochs,
                       eval_freq, eval_iter, start_context, tokenizer, *,
                       checkpoint_path=None, resume=False, max_steps=None, progress=True):
    """Train for `num_epochs` epochs; returns (train_losses, val_losses, track_tokens_seen).

    Every `eval_freq` steps the loss on `eval_iter` batches of each loader is recorded and
    printed; after each epoch a greedy sample continuing `start_context` is printed.

    With `checkpoint_path`, everything needed to continue exactly is saved there after each
    epoch, when `max_steps` (optimizer steps since the very start) is reached, and when the run
    is interrupted (Ctrl-C / the notebook's stop button: the current step finishes, the checkpoint
    is written, then KeyboardInterrupt is raised). `resume=True` continues from that file: same
    batches in the same order, same dropout masks, same losses as a run that never stopped.
    """
    state = TrainingState.load(checkpoint_path, model, optimizer, device) if resume else TrainingState()
    bar = tqdm(total=num_epochs * len(train_loader), initial=state.global_step + 1, desc="training",
               unit="step", **({} if progress else {"disable": True}))  # else TQDM_DISABLE decides
    with bar, interrupt_after_step(enabled=checkpoint_path is not None) as interrupt:
        for epoch in range(state.epoch, num_epochs):
            model.train()
            for input_batch, target_batch in state.batches(train_loader):
                optimizer.zero_grad()
                loss = calc_loss_batch(input_batch, target_batch, model, device)
                loss.backward()
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
            generate_and_print_sample(model, tokenizer, device, start_context)
            state.epoch_done()
            if checkpoint_path is not None:
                state.save(checkpoint_path, model, optimizer)
    return state.results()
