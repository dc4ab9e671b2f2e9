"""training: generated from ch05_pretraining.ipynb. DO NOT EDIT.

Edit the notebook cells that start with `#| export training` and run `make export`.
"""
__all__ = ['calc_loss_batch', 'calc_loss_loader', 'evaluate_model', 'generate_and_print_sample', 'train_model_simple', 'plot_losses', 'save_checkpoint', 'load_checkpoint']


# ---- ch05_pretraining.ipynb, cell 22 ----
import os
import pickle
import signal
import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

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


# ---- ch05_pretraining.ipynb, cell 25 ----
def evaluate_model(model, train_loader, val_loader, device, eval_iter):
    """(train loss, validation loss) over `eval_iter` batches each, without dropout or gradients."""
    model.eval()
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    model.train()
    return train_loss, val_loss


def generate_and_print_sample(model, tokenizer, device, start_context, max_new_tokens=50):
    """Print (and return) a greedy continuation of `start_context`: a quick look at progress."""
    model.eval()
    context_size = model.pos_emb.weight.shape[0]
    encoded = text_to_token_ids(start_context, tokenizer).to(device)
    token_ids = generate_text_simple(model, encoded, max_new_tokens, context_size, use_cache=True)
    text = token_ids_to_text(token_ids, tokenizer).replace("\n", " ")
    print(text)
    model.train()
    return text


# ---- ch05_pretraining.ipynb, cell 27 ----
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
    state = {"train_losses": [], "val_losses": [], "track_tokens_seen": [], "tokens_seen": 0,
             "global_step": -1, "epoch": 0, "batches_done": 0}
    rng = {}
    if resume:
        if checkpoint_path is None or not Path(checkpoint_path).exists():
            raise FileNotFoundError(f"resume=True needs an existing checkpoint_path, got {checkpoint_path!r}")
        saved = load_checkpoint(checkpoint_path, model, optimizer, map_location=device)
        rng = {k: saved.pop(k) for k in ("epoch_rng_state", "rng_state", "cuda_rng_state") if k in saved}
        state.update(saved)

    def save(epoch_rng_state):
        extra = {"cuda_rng_state": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}
        save_checkpoint(checkpoint_path, model, optimizer, **state, epoch_rng_state=epoch_rng_state,
                        rng_state=torch.get_rng_state(), **extra)

    stop_requested = []
    handler_installed = checkpoint_path is not None and threading.current_thread() is threading.main_thread()
    if handler_installed:  # finish the current step and save before stopping
        previous_handler = signal.signal(signal.SIGINT, lambda *_: stop_requested.append(True))
    bar = tqdm(total=num_epochs * len(train_loader), initial=state["global_step"] + 1,
               desc="training", unit="step", **({} if progress else {"disable": True}))
    model.train()
    try:
        for epoch in range(state["epoch"], num_epochs):
            if "epoch_rng_state" in rng:  # the shuffle order of this epoch comes from this state
                torch.set_rng_state(rng.pop("epoch_rng_state"))
            epoch_rng_state = torch.get_rng_state()
            batches = iter(train_loader)
            for _ in range(state["batches_done"]):  # already trained on before the interruption
                next(batches)
            if "rng_state" in rng:
                torch.set_rng_state(rng.pop("rng_state"))
                if "cuda_rng_state" in rng and torch.cuda.is_available():
                    torch.cuda.set_rng_state_all(rng.pop("cuda_rng_state"))
            for input_batch, target_batch in batches:
                optimizer.zero_grad(set_to_none=True)
                loss = calc_loss_batch(input_batch, target_batch, model, device)
                loss.backward()
                optimizer.step()
                state["tokens_seen"] += input_batch.numel()
                state["global_step"] += 1
                state["batches_done"] += 1
                bar.update(1)
                if state["global_step"] % eval_freq == 0:
                    train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                    state["train_losses"].append(train_loss)
                    state["val_losses"].append(val_loss)
                    state["track_tokens_seen"].append(state["tokens_seen"])
                    bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
                    tqdm.write(f"Ep {epoch + 1} (Step {state['global_step']:06d}): "
                               f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
                reached_max = max_steps is not None and state["global_step"] + 1 >= max_steps
                if stop_requested or reached_max:
                    if checkpoint_path is not None:
                        save(epoch_rng_state)
                        tqdm.write(f"stopped after step {state['global_step']}; checkpoint saved to {checkpoint_path}")
                    if stop_requested:
                        raise KeyboardInterrupt
                    return state["train_losses"], state["val_losses"], state["track_tokens_seen"]
            state["epoch"], state["batches_done"] = epoch + 1, 0
            generate_and_print_sample(model, tokenizer, device, start_context)
            if checkpoint_path is not None:
                save(torch.get_rng_state())
    finally:
        bar.close()
        if handler_installed:
            signal.signal(signal.SIGINT, previous_handler)
    return state["train_losses"], state["val_losses"], state["track_tokens_seen"]


# ---- ch05_pretraining.ipynb, cell 33 ----
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


# ---- ch05_pretraining.ipynb, cell 54 ----
def save_checkpoint(path, model, optimizer=None, **state):
    """Save model (and optimizer) state dicts plus extra values (numbers, lists, tensors).

    Written to a temporary file first and renamed, so an interruption while saving never
    leaves a half-written checkpoint behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": model.state_dict(), **state}
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, model, optimizer=None, map_location="cpu"):
    """Load a checkpoint written by `save_checkpoint` (or a bare model state dict, as the book's
    `torch.save(model.state_dict(), ...)` writes) into `model` (and `optimizer`); returns the
    extra values. Only tensors and plain data are read (`weights_only=True`): a file that holds
    pickled Python objects is refused, since unpickling can run arbitrary code."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path} holds pickled Python objects, not just tensors; loading it could run arbitrary "
            f"code, so it is refused. Only load such a file if you trust its source, and then re-save "
            f"it with save_checkpoint. ({str(e).splitlines()[0]})") from None
    if "model" not in payload:  # a bare state dict
        payload = {"model": payload}
    model.load_state_dict(payload.pop("model"))
    optimizer_state = payload.pop("optimizer", None)
    if optimizer is not None:
        if optimizer_state is None:
            raise ValueError(f"{path} has no optimizer state to restore")
        optimizer.load_state_dict(optimizer_state)
    return payload
