"""Pretrain or resume a GPT model on a text file or a folder of text files.

HAND-WRITTEN command-line script, not exported from a notebook (the notebooks teach the
training loop in ch05; this is the same loop with the options a longer run needs).

    python -m helpers.pretrain --data the-verdict.txt --out runs/pretrain --epochs 10 --batch-size 2 \\
        --context-length 256
    python -m helpers.pretrain --data corpus/ --out runs/big --max-steps 20000 --batch-size 16 --grad-accum 4 \\
        --warmup-steps 500 --cosine 4e-5 --clip-grad 1.0 --amp bf16 --compile --tie-weights
    python -m helpers.pretrain ... --resume runs/big/checkpoint.pt      # continue where it stopped
    torchrun --nproc_per_node=4 -m helpers.pretrain ...                  # DistributedDataParallel

Data: the files are read in sorted order, joined with "<|endoftext|>", tokenized with GPT-2's
BPE, and split by characters like chapter 5 (the first 1 - --val-fraction for training, the
rest for validation); training windows are GPTDatasetV1's (stride --stride, default the
context length, so windows do not overlap).

Batches and DDP: with WORLD_SIZE > 1 (set by torchrun) each process joins a process group
(NCCL on CUDA, gloo on the CPU) and trains a DistributedDataParallel copy. Every epoch draws
one permutation of the windows from --seed and the epoch number (DistributedSampler), and
each optimizer step consumes the next batch-size x world-size x grad-accum windows of it. So
the global batch, not the way it is split, decides what a step sees: 2 processes with batch B
take the same steps as 1 process with batch 2B or with batch B and --grad-accum 2 (up to float
rounding, without dropout). Logged losses are averaged over all processes; only rank 0 logs,
shows the progress bar and writes checkpoints.

Checkpoints are helpers.training.save_checkpoint files: {"model": state dict, "optimizer": ...,
plus step, epoch, config and options}. The state dict is the bare model's (no DDP or compile
wrapper) in GPTModel's layout, so `GPTModel(cfg)` loads it (also FastGPTModel's, whose hooks
translate) and a run on N processes resumes on any number of processes. The optimizer state
belongs to the model class that wrote it, so --model must match when resuming.
Dropout masks are seeded from (--seed, step, rank), so an interrupted and resumed run repeats
the uninterrupted one exactly on the same machine and number of processes.

What the script guarantees about its output folder (nothing lost, nothing silently wrong):

* Saves: OUT/checkpoint.pt is written every --save-minutes (default 10) and --save-every steps,
  at each evaluation and at the end. A save goes to a uniquely named temporary file that is
  fsync'ed and then renamed over the old checkpoint, so a crash, a kill or a full disk while
  saving leaves the previous checkpoint whole (and no temporary file behind).
* Last good checkpoint: a step whose loss is NaN or infinite, or weights that are no longer
  finite at a save, stop the run with an error (exit code 3) before anything is saved, so the
  checkpoint on disk is the last good one. --resume refuses a checkpoint with non-finite
  weights.
* Signals: Ctrl-C (SIGINT) and SIGTERM (what schedulers and `kill` send) let the current
  optimizer step finish, write the checkpoint and exit (codes 130 and 143); a second signal
  while that happens is ignored, so the checkpoint is never half-updated. Under torchrun every
  process stops after the same step (the processes agree before stopping).
* Before the first step: every option is checked (a clear error naming it, exit code 2), the
  data is read and tokenized, --out and the log are checked to be writable, and the folder is
  locked (OUT/.pretrain.lock): a second run on the same --out fails at once, naming the PID of
  the first.
* Nothing of an earlier run is deleted before the new run's first save: --overwrite (or a log
  left by a run that saved nothing) writes the new log beside the old one and replaces it at
  the first save (a kill between that save and the log's rename is finished by --resume, which
  takes the log that belongs to the checkpoint). --resume continues a run in --out: pass the
  checkpoint's own folder to continue there (another --out must not hold a checkpoint, unless
  --overwrite); it cuts that folder's log back to the checkpoint's step (rows of steps that were
  never saved are repeated, not duplicated), and takes the seed and the architecture from the
  checkpoint (flags that disagree are named in a note).

In a single CPU process (Linux) large tensors are kept on the heap between steps instead of being handed
back to the kernel and faulted in again: about 12 % more tokens/s for the 124M shape on 2 cores,
for a few hundred MiB more peak memory (--system-malloc turns this off).

At the end OUT/summary.json records the run: steps, losses, parameters, median tokens/s per
step (the first step, which warms up, left out) and peak memory (CUDA: the allocator's peak;
CPU: the process's peak resident memory). The training-options table in chapter 5 is made of
these summaries.
"""
from __future__ import annotations

import argparse
import ctypes
import csv
import errno
import gc
import json
import math
import os
import pickle
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Subset

from helpers.fast import FastGPTModel, compile_model
from helpers.generation import eval_mode
from helpers.model import GPT_CONFIGS, GPTModel, _check_gpt_config
from helpers.support.files import write_atomically
from helpers.support.runtime import autocast_dtype, get_device, is_out_of_memory, supports_bf16
from helpers.text import GPTDatasetV1
from helpers.training import calc_loss_batch, non_finite_tensors

LOG_COLUMNS = ["step", "epoch", "tokens", "lr", "train_loss", "val_loss", "tok_s", "elapsed_s"]
DEFAULT_SEED = 123
LOCK_NAME = ".pretrain.lock"
# A text with more than this share of control characters (NUL bytes ...) is binary data, not text.
MAX_CONTROL_SHARE = 0.01
_CONTROL_CHARS = [chr(c) for c in range(32) if chr(c) not in "\t\n\r\f\v"] + ["\x7f"]


class DataError(ValueError):
    """The data given cannot be trained on (missing, empty, too short); the message says why."""


class CheckpointError(ValueError):
    """A checkpoint cannot be read, resumed or written; the message names the file and the fix."""


class TrainingDiverged(RuntimeError):
    """The loss or the weights stopped being finite; the last good checkpoint was kept."""


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run after a step; its checkpoint is written."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.exit_code = 128 + getattr(signal, signal_name, signal.SIGINT).value


# ---- options -------------------------------------------------------------------------------

def _number(kind, low=None, high=None, low_open=False, high_open=False):
    """An argparse type: `kind` (int or float) within [low, high] (open ends as asked), finite;
    argparse names the option in its message ("argument --lr: must be a number > 0, got '0'")."""
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high}")
    what = ("an integer" if kind is int else "a number") + (" " + " and ".join(bounds) if bounds else "")

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        ok = math.isfinite(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse's own message for a bad literal
    return parse


POSITIVE_INT = _number(int, 1)
NON_NEGATIVE_INT = _number(int, 0)
POSITIVE = _number(float, 0, low_open=True)
NON_NEGATIVE = _number(float, 0)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line naming it (not the whole usage text), exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m helpers.pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data and output")
    g.add_argument("--data", required=True, help="a text file, or a folder searched for *.txt (recursively)")
    g.add_argument("--out", default="runs/pretrain", help="folder for checkpoint.pt and the log")
    g.add_argument("--val-fraction", type=_number(float, 0, 1, high_open=True), default=0.1,
                   help="share of the text kept for validation (0: none)")
    g.add_argument("--stride", type=POSITIVE_INT, help="window stride in tokens (default: the context length)")
    g.add_argument("--log", help="log file; .csv or .jsonl (default: OUT/log.jsonl)")
    g = p.add_argument_group("model (a GPT-2 size, then overrides; on --resume the checkpoint's are used)")
    g.add_argument("--model-size", choices=list(GPT_CONFIGS), help="default 124M")
    g.add_argument("--n-layers", type=POSITIVE_INT)
    g.add_argument("--emb-dim", type=POSITIVE_INT)
    g.add_argument("--n-heads", type=POSITIVE_INT)
    g.add_argument("--context-length", type=POSITIVE_INT, help="default 256, as in chapter 5")
    g.add_argument("--drop-rate", type=_number(float, 0, 1, high_open=True), help="default 0.1")
    g.add_argument("--qkv-bias", action="store_true", default=None)
    g.add_argument("--model", choices=["fast", "default"], default="fast",
                   help="fast: helpers.fast.FastGPTModel (default); default: helpers.model.GPTModel")
    g.add_argument("--tie-weights", action="store_true", default=None,
                   help="share the output head with the token embedding (fast model)")
    g.add_argument("--grad-checkpointing", action="store_true", default=None,
                   help="recompute block activations in backward (fast model)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--chunked-loss", action="store_true",
                   help="training loss without the full logits (FastGPTModel.loss: chunked, gradients "
                        "computed chunk by chunk; fast model); saves memory at large batches")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=POSITIVE_INT, default=2, help="windows per process and micro-batch")
    g.add_argument("--grad-accum", type=POSITIVE_INT, default=1, help="micro-batches per optimizer step")
    g.add_argument("--lr", type=POSITIVE, default=4e-4)
    g.add_argument("--weight-decay", type=NON_NEGATIVE, default=0.1)
    g.add_argument("--warmup-steps", type=NON_NEGATIVE_INT, default=0, help="linear warm-up from 0 to --lr")
    g.add_argument("--cosine", type=NON_NEGATIVE, metavar="MIN_LR",
                   help="cosine decay from --lr to MIN_LR (at most --lr) after warm-up")
    g.add_argument("--clip-grad", type=POSITIVE, metavar="MAX_NORM", help="clip the gradient norm")
    g.add_argument("--amp", choices=["none", "bf16", "fp16", "auto"], default="none",
                   help="autocast; fp16 adds a GradScaler; bf16 becomes fp16 on GPUs without bf16 "
                        "(before Ampere, e.g. Colab's T4); auto: the GPU's half type, none on a CPU")
    g.add_argument("--fused-adamw", choices=["auto", "on", "off"], default="auto",
                   help="fused AdamW kernel; auto: on for CUDA only (on the CPU it is an option: see chapter 5's table)")
    g.add_argument("--epochs", type=POSITIVE_INT,
                   help="passes over the training windows (default 1, or as many as --max-steps needs)")
    g.add_argument("--max-steps", type=POSITIVE_INT,
                   help="optimizer steps in all (with --epochs: whichever ends first); the schedule's length")
    g.add_argument("--stop-after", type=POSITIVE_INT, metavar="STEPS",
                   help="stop this run after STEPS steps and checkpoint, as if interrupted (for time-limited jobs)")
    g = p.add_argument_group("evaluation, checkpoints, run")
    g.add_argument("--eval-every", type=NON_NEGATIVE_INT, default=0,
                   help="validation loss every N steps (0: at the end only)")
    g.add_argument("--eval-windows", type=POSITIVE_INT, help="evaluate on the first N validation windows (default: all)")
    g.add_argument("--save-every", type=NON_NEGATIVE_INT, default=0,
                   help="also checkpoint every N steps (0: only by time, at evaluations and at the end)")
    g.add_argument("--save-minutes", type=NON_NEGATIVE, default=10.0,
                   help="checkpoint when this many minutes have passed since the last save (default 10; 0: off)")
    g.add_argument("--resume", help="checkpoint to continue from (its seed and architecture are used)")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh even if OUT already holds a checkpoint (replaced at the new run's first save)")
    g.add_argument("--seed", type=_number(int, 0, 2**32 - 1), help=f"default {DEFAULT_SEED}; on --resume the checkpoint's")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    g.add_argument("--system-malloc", action="store_true",
                   help="CPU: leave glibc's allocation threshold alone (by default, in a single process, "
                        "large tensors stay on the heap)")
    return p


def check_options(args) -> None:
    """What the parser's per-option checks cannot see: options that contradict each other, and
    paths of the wrong kind (a folder where a file is meant), before anything is created."""
    if args.cosine is not None and args.cosine > args.lr:
        raise ValueError(f"--cosine {args.cosine:g} is above --lr {args.lr:g}: the schedule decays from --lr "
                         f"down to --cosine, so give a smaller --cosine (e.g. {args.lr / 10:g})")
    if args.model == "default" and (args.tie_weights or args.grad_checkpointing):
        raise ValueError("--tie-weights and --grad-checkpointing need --model fast")
    if args.resume and Path(args.resume).is_dir():  # else taken for another run's folder, which misleads
        raise CheckpointError(f"--resume {args.resume} is a folder; give the checkpoint in it: "
                              f"--resume {Path(args.resume) / 'checkpoint.pt'}")
    if args.val_fraction == 0 and (args.eval_every or args.eval_windows is not None):
        flag = "--eval-every" if args.eval_every else "--eval-windows"
        raise ValueError(f"{flag} needs validation windows, and --val-fraction 0 keeps none: drop {flag}, "
                         f"or keep some text for validation (e.g. --val-fraction 0.1)")
    if args.log and Path(args.log).is_dir():  # else found at the first save (os.replace onto a folder)
        raise ValueError(f"--log {args.log} is a folder; give a file name in it, e.g. "
                         f"--log {Path(args.log) / 'log.jsonl'} (or .csv)")
    if args.log and Path(args.log).suffix.lower() not in (".csv", ".jsonl"):
        raise ValueError(f"--log {args.log}: name the log .csv or .jsonl (its format follows the name), "
                         f"e.g. --log {Path(args.log).with_suffix('.jsonl')}")
    emb, heads = args.emb_dim, args.n_heads
    if emb is not None or heads is not None:
        base = GPT_CONFIGS[args.model_size or "124M"]
        emb, heads = emb or base["emb_dim"], heads or base["n_heads"]
        if emb % heads:
            raise ValueError(f"--emb-dim {emb} is not divisible by --n-heads {heads}: each head gets "
                             f"emb-dim / n-heads dimensions; choose values that divide")


# ---- data ----------------------------------------------------------------------------------

def _read_one(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"--data: {path} is not UTF-8 text (byte {e.start}: {e.reason}); "
                        f"convert it to UTF-8 or leave it out") from None
    except OSError as e:
        raise DataError(f"--data: cannot read {path} ({e.strerror})") from None
    if text:
        control = sum(text.count(c) for c in _CONTROL_CHARS)
        if control > MAX_CONTROL_SHARE * len(text):
            raise DataError(f"--data: {path} is {control / len(text):.0%} NUL bytes or other control "
                            f"characters ({control:,} of {len(text):,}): binary data, not text; "
                            f"give a plain-text file")
    return text


def read_texts(path: str | Path) -> str:
    """The text of one file, or of every *.txt under a folder (sorted, joined by <|endoftext|>)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"no .txt files under {path}")
    elif path.is_file():
        files = [path]
    elif path.exists():  # /dev/null, a pipe, a socket
        raise DataError(f"--data {path} is not a regular file or folder; give a text file, or a folder of .txt files")
    else:
        raise DataError(f"--data {path} does not exist")
    texts = [_read_one(f) for f in files]
    if not any(t.strip() for t in texts):
        raise DataError(f"--data: the text in {path} is empty (or only white space); give a file with text to "
                        f"train on")
    return "<|endoftext|>".join(t for t in texts if t.strip())


def model_config(args) -> dict:
    cfg = dict(GPT_CONFIGS[args.model_size or "124M"])
    for key, value in [("n_layers", args.n_layers), ("emb_dim", args.emb_dim), ("n_heads", args.n_heads),
                       ("context_length", args.context_length or 256)]:
        if value is not None:
            cfg[key] = value
    cfg.update(drop_rate=0.1 if args.drop_rate is None else args.drop_rate, qkv_bias=bool(args.qkv_bias))
    if args.model == "fast":
        cfg.update(tie_weights=bool(args.tie_weights), grad_checkpointing=bool(args.grad_checkpointing))
    elif args.tie_weights or args.grad_checkpointing:
        raise ValueError("--tie-weights and --grad-checkpointing need --model fast")
    return cfg


def flags_that_disagree(args, cfg: dict) -> list[str]:
    """The architecture flags given now that differ from a checkpoint's config `cfg`."""
    given = {"n_layers": args.n_layers, "emb_dim": args.emb_dim, "n_heads": args.n_heads,
             "context_length": args.context_length, "drop_rate": args.drop_rate, "qkv_bias": args.qkv_bias,
             "tie_weights": args.tie_weights, "grad_checkpointing": args.grad_checkpointing}
    if args.model_size is not None:
        for key in ("n_layers", "emb_dim", "n_heads"):
            if given[key] is None:
                given[key] = GPT_CONFIGS[args.model_size][key]
    return [f"--{key.replace('_', '-')} {value} (the checkpoint has {cfg.get(key)})"
            for key, value in given.items() if value is not None and value != cfg.get(key, False)]


def build_model(cfg: dict, model_class: str, seed: int):
    """GPTModel or FastGPTModel with GPTModel's initial weights for `seed`, so that --model
    changes the speed, not the numbers (a tied head keeps FastGPTModel's std-0.02 embedding)."""
    torch.manual_seed(seed)
    book = GPTModel(cfg)
    if model_class == "default":
        return book
    fast = FastGPTModel(cfg)
    state = book.state_dict()
    if cfg.get("tie_weights"):  # the shared matrix: FastGPTModel's own (GPT-2's) initialisation
        del state["tok_emb.weight"], state["out_head.weight"]
    missing, _ = fast.load_state_dict(state, strict=not cfg.get("tie_weights"))
    assert set(missing) <= {"tok_emb.weight", "out_head.weight"}, missing
    return fast


def learning_rate(step: int, args, total_steps: int) -> float:
    """Linear warm-up over --warmup-steps, then constant, or cosine decay to --cosine at the end."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    if args.cosine is None:
        return args.lr
    # 0 at the first step after warm-up, 1 at the last step, so the last step runs at MIN_LR
    progress = min(1.0, (step - args.warmup_steps) / max(1, total_steps - args.warmup_steps - 1))
    return args.cosine + 0.5 * (args.lr - args.cosine) * (1 + math.cos(math.pi * progress))


# ---- files: checkpoints, the log, the lock ---------------------------------------------------

REQUIRED_KEYS = ("model", "optimizer", "cfg", "step", "epoch", "step_in_epoch", "tokens")


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint this script wrote, checked: readable, complete, with finite weights.
    Raises CheckpointError naming the file, what is wrong and what to do."""
    path = Path(path)
    where = f"--resume {path}"
    if not path.is_file():
        raise CheckpointError(f"{where}: no such file; give the checkpoint.pt in a run's --out folder")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{where}: the file is empty (a copy or save that was cut short); "
                              f"resume from another checkpoint or start afresh")
    try:
        with path.open("rb"):
            pass
    except OSError as e:  # else torch's error reads like a damaged file
        raise CheckpointError(f"{where}: cannot read it ({e.strerror}); check its permissions") from None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for damaged files; the message decides
        if is_out_of_memory(e):  # a sound file too big for free memory is no damaged one
            raise CheckpointError(f"{where}: ran out of memory while loading it ({path.stat().st_size:,} bytes; "
                                  f"the file itself may be fine); free some memory and try again") from None
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"{where}: not a PyTorch checkpoint (a checkpoint is a zip archive; this "
                                  f"{path.stat().st_size:,}-byte file is not one: truncated, or another "
                                  f"kind of file)") from None
        if isinstance(e, pickle.UnpicklingError) and "weights_only" in str(e):
            raise CheckpointError(f"{where} holds pickled Python objects, not just tensors; it is not "
                                  f"a checkpoint of this script and is refused (loading it could run "
                                  f"arbitrary code)") from None
        raise CheckpointError(f"{where}: the checkpoint is damaged ({str(e).splitlines()[0][:200]}); "
                              f"resume from another checkpoint or start afresh") from None
    missing = [k for k in REQUIRED_KEYS if k not in payload] if isinstance(payload, dict) else list(REQUIRED_KEYS)
    if missing:
        raise CheckpointError(f"{where}: not a checkpoint of python -m helpers.pretrain (it lacks "
                              f"{', '.join(missing)}); resume from the checkpoint.pt a run of this script wrote")
    try:  # a config that cannot build the model would fail later, far from the file's name
        _check_gpt_config(payload["cfg"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: its model config is not usable ({e}); resume from the checkpoint.pt "
                              f"a run of this script wrote") from None
    bad = non_finite_tensors(payload["model"])
    if bad:
        raise CheckpointError(f"{where}: {len(bad)} of {len(payload['model'])} weight tensors hold NaN or "
                              f"infinite values (first: {bad[0]}): the run had diverged when this was saved; "
                              f"resume from an earlier checkpoint, with a lower --lr or --clip-grad")
    return payload


def _csv_by_name(path: Path) -> bool:
    """A new log is CSV by its suffix (any case), else JSON lines."""
    return path.suffix.lower() == ".csv"


def _is_csv(path: Path) -> bool:
    """The format of a log that may exist already: by its first line, since a resumed run must cut
    and append in the format the log was written in (versions before 2026-12 wrote JSON lines to
    an upper-case `.CSV`); by its name when it is new or empty. One rule for cutting, appending
    and reading."""
    try:
        with path.open("rb") as f:
            first = f.readline().strip()
    except OSError:  # absent (or unreadable, which the write reports)
        first = b""
    return not first.startswith(b"{") if first else _csv_by_name(path)


class RunLog:
    """Rows appended to a .jsonl (one JSON object per line) or .csv file (LOG_COLUMNS).

    `staged=True`: an earlier run's log is at `path`; rows go to a temporary file beside it
    until `commit()` (called at the new run's first save) renames it over the old log, so a run
    that fails before saving anything leaves the old log as it was."""

    def __init__(self, path: Path, staged: bool = False):
        self.path = path
        self.committing = False  # True from the first commit: its rows belong to a saved checkpoint
        # Staged rows replace the old log: the format its name asks for, not the old log's.
        self.csv = _csv_by_name(path) if staged else _is_csv(path)
        self.target = path.with_name(f".{path.name}.{os.getpid()}.new") if staged else path
        if self.csv and (not self.target.exists() or self.target.stat().st_size == 0):
            with self.target.open("w", newline="") as f:
                csv.writer(f).writerow(LOG_COLUMNS)

    def write(self, row: dict) -> None:
        with self.target.open("a", newline="") as f:
            if self.csv:
                csv.writer(f).writerow(["" if row.get(c) is None else row[c] for c in LOG_COLUMNS])
            else:
                f.write(json.dumps(row) + "\n")

    def commit(self) -> None:
        """At each save, after the checkpoint: the rows so far go to disk (fsync), and a staged
        log takes the old log's place."""
        self.committing = True
        with self.target.open("ab") as f:
            os.fsync(f.fileno())
        if self.target != self.path:
            os.replace(self.target, self.path)
            self.target = self.path

    def discard(self) -> None:
        """Remove a staged log that was never committed (the run ended before its first save)."""
        if self.target != self.path and not self.committing:
            self.target.unlink(missing_ok=True)


def cut_log(path: Path, step: int) -> int:
    """Drop the rows of steps after `step` (trained, logged, but never saved: a kill or a failed
    save) and any half-written line; returns how many lines went. The resumed run logs them again."""
    lines = path.read_text().splitlines(keepends=True)
    keep = []
    as_csv = _is_csv(path)
    for i, line in enumerate(lines):
        try:
            if as_csv:
                if i == 0:
                    keep.append(line)
                    continue
                row_step = int(next(csv.reader([line]))[0])
            else:
                row_step = json.loads(line)["step"]
        except (ValueError, KeyError, IndexError, StopIteration, TypeError):
            continue
        if row_step <= step and line.endswith("\n"):
            keep.append(line)
    if len(keep) != len(lines):
        write_atomically(path, lambda f: f.write("".join(keep).encode()))
    return len(lines) - len(keep)


def read_log(path: str | Path) -> list[dict]:
    """The rows of a log written by this script (numbers as floats/ints; missing values None)."""
    path = Path(path)
    with path.open(newline="") as f:
        lines = f.read().splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):  # half-written by a run that was killed: not a row
        lines.pop()
    if _is_csv(path):
        return [{k: (None if v == "" else (int(v) if k in ("step", "epoch", "tokens") else float(v)))
                 for k, v in row.items()} for row in csv.DictReader(lines)]
    return [json.loads(line) for line in lines if line.strip()]


def check_writable_folder(folder: Path, what: str) -> None:
    """Create `folder` if needed and write a file in it now, not at the first save hours later."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} {folder} is a file, not a folder; choose a folder (a new one is created)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{what} {folder} is not writable ({e.strerror}); choose another folder") from None


@contextmanager
def folder_lock(out: Path):
    """Hold OUT/.pretrain.lock for the run (an flock: released when the process ends, even if
    killed). A second run on the same folder fails at once, naming the first one's PID."""
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): no lock
        yield
        return
    path = out / LOCK_NAME
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise ValueError(f"--out {out} is in use by another run (PID {holder}); wait for it to end, "
                             f"stop it, or choose another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def stop_signals():
    """Inside the block SIGINT (Ctrl-C) and SIGTERM only record their name in `.signal`, so the
    loop can finish its step and save before stopping; a second signal is ignored. Python
    delivers signals to the main thread only, so elsewhere they keep their usual effect."""
    flag = SimpleNamespace(signal=None)
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.signal is None:
            flag.signal = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---- processes, memory, evaluation -----------------------------------------------------------

def setup_distributed(device_arg: str):
    """(rank, world size, device); joins the process group when torchrun started several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        device = get_device(device_arg)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"--device {device_arg}: {e}") from None
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    elif device.type != "cpu":
        raise ValueError(f"--device {device_arg}: DistributedDataParallel runs on CUDA (NCCL) or the CPU (gloo), "
                         f"not {device.type}")
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def peak_memory_mib(device) -> float:
    """CUDA: the allocator's peak since the start; elsewhere the process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:  # Linux: this process's own high-water mark (ru_maxrss would include a forking parent's)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def keep_large_tensors_on_the_heap() -> bool:
    """CPU training on Linux (glibc): serve allocations of up to 1 GiB from the heap.

    glibc hands out every allocation above a threshold (at most 32 MiB) as fresh pages from
    the kernel and returns them on free, so each training step faults its large tensors (the
    logits, the embedding's gradient, ...) in again, page by page: 7-10 % of a 124M step on a
    2-core CPU (benchmarks/README.md). Kept on the heap, freed memory is reused instead. Returns
    whether the setting took effect (not on other systems or C libraries). `main` applies it
    in a single process only: gloo's threads in a DistributedDataParallel run are left with
    glibc's defaults."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
    # up to 1 GiB from the heap, and up to 2 GiB of freed heap kept for reuse, not handed back
    return bool(mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(M_TRIM_THRESHOLD, 2 << 30))


def sum_over_processes(values: list[float], device, world: int) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)  # SUM: gloo has no AVG
    return t.tolist()


def mean_over_processes(value: float, device, world: int) -> float:
    return sum_over_processes([value], device, world)[0] / world


def evaluate(model, val_set, args, device, rank, world, autocast) -> float:
    """Mean loss over the validation windows, each process taking every world-th window."""
    n = len(val_set) if args.eval_windows is None else min(args.eval_windows, len(val_set))
    shard = Subset(val_set, range(rank, n, world))
    total = torch.zeros(2, dtype=torch.float64, device=device)  # loss x windows, windows
    with eval_mode(model), torch.no_grad():
        for inputs, targets in DataLoader(shard, batch_size=args.batch_size):
            with autocast():
                loss = calc_loss_batch(inputs, targets, model, device)
            total += torch.tensor([loss.item() * len(inputs), len(inputs)], dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(total)
    return (total[0] / total[1]).item()


# ---- the run -------------------------------------------------------------------------------

def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


class Run:
    """One run of the script, in the order it happens:

    * set-up (`__init__`): the output folder's rules, the checkpoint to resume (`_resume_state`),
      which log to write (`_follow_recorded_log`, `_check_log`), the data (`_datasets`), the model
      and optimizer (`_model`), the checkpoint's weights and position (`_resume`), the log
      (`_open_log`). Everything is checked before the first step.
    * `train()`: the loop; `step_evaluate_log_save()` is what each step does, `train_step()` the
      optimizer step itself, `save()` one checkpoint.
    * `finish()`: summary.json and the last line.
    """

    def __init__(self, args, rank: int, world: int, device):
        self.args, self.rank, self.world, self.device = args, rank, world, device
        self.out = Path(args.out)
        self.ckpt_path = self.out / "checkpoint.pt"
        self.log_path = Path(args.log) if args.log else self.out / "log.jsonl"
        self.own_folder = self._check_folder()
        state = self._resume_state()
        self._follow_recorded_log(state)
        self._check_log(state)
        self._datasets()
        self._model()
        self.step = self.epoch = self.step_in_epoch = self.tokens_seen = 0
        if state is not None:
            self._resume(state)
        del state
        self.saved_at, self.last_save_time = (self.step if args.resume else None), time.monotonic()
        self.log = self._open_log() if rank == 0 else None

    # -- set-up --------------------------------------------------------------------------------
    def _check_folder(self) -> bool:
        """Refuse to replace another run's checkpoint; True when resuming in the checkpoint's own folder."""
        a = self.args
        if not a.resume:
            if self.ckpt_path.exists() and not a.overwrite:  # a forgotten --resume would replace a long run
                raise ValueError(f"{self.ckpt_path} exists: pass --resume {self.ckpt_path} to continue it, or "
                                 f"--overwrite to start afresh, or choose another --out")
            return False
        own = Path(a.resume).resolve().parent == self.out.resolve()
        if not own and self.ckpt_path.exists() and not a.overwrite:
            raise ValueError(f"--out {self.out} holds another run's checkpoint: resuming {a.resume} there would "
                             f"replace it and add to its log. Resume with --out {Path(a.resume).parent}, choose "
                             f"an empty --out, or pass --overwrite to replace that run")
        return own

    def _follow_recorded_log(self, state: dict | None) -> None:
        """Resumed without --log in its own folder: carry on the log the checkpoint records (the
        run's --log, perhaps outside OUT), not a second log in OUT. Not when that log lies in
        another run's folder (this OUT copied from there, say): never cut it back."""
        recorded = Path(state["log"]) if state is not None and state.get("log") else None
        if self.args.log is not None or not self.own_folder or recorded is None or not recorded.is_file():
            return
        if recorded.parent != self.out.resolve() and (recorded.parent / "checkpoint.pt").exists():
            return
        if recorded != self.log_path.resolve() and self.rank == 0:
            _note(f"continuing the log of the run in {self.args.resume}, {recorded} (pass --log to choose another)")
        self.log_path = recorded

    def _check_log(self, state: dict | None) -> None:
        """Refuse to replace, or cut back, a log outside OUT that holds another run's rows.

        A log in OUT goes with OUT's checkpoint, which `_check_folder` guards. A --log elsewhere
        is this run's only when resuming, in its own folder, the run that wrote it (the checkpoint
        records that log's path)."""
        a = self.args
        path = self.log_path
        self.foreign_log = False
        if (a.log is None or path.resolve().parent == self.out.resolve()
                or not path.is_file() or path.stat().st_size == 0):
            return
        recorded = state.get("log") if state is not None else None
        # a checkpoint from before logs were recorded: its run's --log, as before
        if self.own_folder and (recorded is None or Path(recorded) == path.resolve()):
            return
        self.foreign_log = True  # with --overwrite: replaced at the first save, never cut back
        if a.overwrite:
            return
        if self.own_folder:
            raise ValueError(f"--log {path} is not the log of the run in {a.resume}"
                             + (f" (that one is {recorded})" if recorded else "")
                             + ": resuming would cut it back. Resume with that run's --log, give a new --log, "
                               "or pass --overwrite to replace it")
        raise ValueError(f"--log {path} already holds another run's log ({path.stat().st_size:,} bytes), which this "
                         f"run would replace: give a new --log, or pass --overwrite to replace it")

    def _resume_state(self) -> dict | None:
        """The checkpoint to resume (checked), and this run's config and seed."""
        a = self.args
        if a.chunked_loss and a.model != "fast":  # a training option, so checked on --resume too
            raise ValueError("--chunked-loss needs --model fast (FastGPTModel.loss)")
        if not a.resume:
            self.cfg, self.seed = model_config(a), DEFAULT_SEED if a.seed is None else a.seed
            return None
        state = read_checkpoint(a.resume)
        if state.get("model_class", "fast") != a.model:
            raise CheckpointError(f"{a.resume} was written with --model {state.get('model_class')}; "
                                  f"resume with the same --model (its optimizer state fits that model)")
        # The architecture and the seed come from the checkpoint: they decide the weights' shapes,
        # the batches' order and the dropout masks, so the resumed run repeats the uninterrupted one.
        self.cfg, self.seed = state["cfg"], state.get("seed", DEFAULT_SEED)
        if self.rank == 0:
            for flag in flags_that_disagree(a, self.cfg):
                _note(f"{flag}: a resumed run keeps the checkpoint's architecture; {flag.split()[0]} is ignored")
            if a.seed is not None and a.seed != self.seed:
                _note(f"--seed {a.seed}: a resumed run keeps the checkpoint's seed {self.seed} (the batches' "
                      f"order and the dropout masks depend on it); --seed is ignored")
        return state

    def _datasets(self) -> None:
        """Data: the same on every process; the sampler decides who sees what."""
        from helpers.support.data import DownloadError, gpt2_tokenizer

        a, cfg = self.args, self.cfg
        text = read_texts(a.data)
        split = int(len(text) * (1 - a.val_fraction))
        try:
            tokenizer = gpt2_tokenizer()
        except DownloadError as e:
            raise DataError(f"GPT-2's tokenizer files are not in the course cache and could not be downloaded "
                            f"({str(e).splitlines()[0][:160]}); run `python -m helpers.support fetch` once "
                            f"online, or `python -m helpers.support seed DIR` with a copy of the course data") from None
        stride = a.stride or cfg["context_length"]
        shorter = "" if a.resume else ", a smaller --context-length"  # resuming: the checkpoint's

        def too_short(e):  # GPTDatasetV1's reason, in this script's terms (its advice names its arguments)
            return str(e).split(";")[0].replace(f"with max_length={cfg['context_length']}",
                                                f"of {cfg['context_length']} tokens")

        try:
            self.train_set = GPTDatasetV1(text[:split], tokenizer, cfg["context_length"], stride)
        except ValueError as e:
            raise DataError(f"training text (the first {1 - a.val_fraction:.0%} of {a.data}): {too_short(e)}; "
                            f"use a longer text{shorter} or a smaller --val-fraction") from None
        self.val_set = None
        if a.val_fraction > 0:
            try:
                self.val_set = GPTDatasetV1(text[split:], tokenizer, cfg["context_length"], stride)
            except ValueError as e:
                raise DataError(f"validation text (the last {a.val_fraction:.0%} of {a.data}): {too_short(e)}; "
                                f"use a longer text{shorter} or --val-fraction 0") from None
        self.sampler = DistributedSampler(self.train_set, num_replicas=self.world, rank=self.rank, shuffle=True,
                                          seed=self.seed, drop_last=True)
        self.loader = DataLoader(self.train_set, batch_size=a.batch_size, sampler=self.sampler, drop_last=True)
        self.steps_per_epoch = len(self.loader) // a.grad_accum
        self.global_batch = a.batch_size * self.world * a.grad_accum
        if self.steps_per_epoch == 0:
            raise DataError(f"the training text gives {len(self.train_set)} windows of {cfg['context_length']} "
                            f"tokens, fewer than one global batch of {self.global_batch} (--batch-size x processes "
                            f"x --grad-accum); lower --batch-size or --grad-accum, or give a longer text or a "
                            f"smaller --stride")
        if a.max_steps is None:
            self.total_steps = (a.epochs or 1) * self.steps_per_epoch
        else:
            self.total_steps = a.max_steps if a.epochs is None else min(a.max_steps, a.epochs * self.steps_per_epoch)
        if a.warmup_steps > self.total_steps:
            raise ValueError(f"--warmup-steps {a.warmup_steps} is longer than the run's {self.total_steps} steps: "
                             f"the learning rate would never reach --lr; give at most {self.total_steps}")

    def _model(self) -> None:
        """Model and optimizer; the same seed on every process gives the same initial weights."""
        a, device = self.args, self.device
        self.model = build_model(self.cfg, a.model, self.seed).to(device)
        fused = {"on": True, "off": False, "auto": device.type == "cuda"}[a.fused_adamw]
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=a.lr, weight_decay=a.weight_decay, fused=fused)
        self.amp_dtype = autocast_dtype(a.amp, device)
        if a.amp == "bf16" and self.amp_dtype == torch.float16 and self.rank == 0:
            _note(f"{device} has no fast bfloat16 (compute capability below 8, or COURSE_NO_BF16 set): "
                  f"--amp bf16 runs as float16 with loss scaling")
        if self.amp_dtype == torch.bfloat16 and not supports_bf16(device) and self.rank == 0:
            _note(f"this CPU has no bfloat16 instructions: --amp {a.amp} is emulated and runs many times slower "
                  f"than float32 (--amp none)")
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.train_model = compile_model(self.model) if a.compile else self.model
        if self.world > 1:
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.train_model, device_ids=[device.index] if device.type == "cuda" else None)

    def _resume(self, state: dict) -> None:
        """The checkpoint's weights, optimizer state and position in the data."""
        a = self.args
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0]
            raise CheckpointError(f"--resume {a.resume}: its weights or optimizer state do not fit its own "
                                  f"config ({detail[:200]}); the file is damaged or was edited") from None
        self.step, self.epoch, self.step_in_epoch = state["step"], state["epoch"], state["step_in_epoch"]
        self.tokens_seen = state["tokens"]
        if "scaler" in state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        if state.get("global_batch") != self.global_batch and self.rank == 0:
            _note(f"the checkpoint was written with a global batch of {state.get('global_batch')}, this run "
                  f"uses {self.global_batch}: steps are counted in this run's batches, so the position in the "
                  f"current epoch is approximate")
        if self.step_in_epoch >= self.steps_per_epoch:  # a larger batch (or more processes): a shorter epoch
            if self.rank == 0:
                _note(f"the checkpoint is {self.step_in_epoch} steps into epoch {self.epoch + 1}, which has "
                      f"{self.steps_per_epoch} step{'s' if self.steps_per_epoch > 1 else ''} with this run's batch: "
                      f"going on with the next epoch")
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
        if self.step >= self.total_steps:
            raise ValueError(f"--resume {a.resume} is at step {self.step} and this run ends at step "
                             f"{self.total_steps}: nothing to train; raise --max-steps or --epochs")

    def _open_log(self) -> RunLog:
        """Continuing in the checkpoint's own folder: the log cut back to the checkpoint's step.
        Otherwise an existing log (another run's) is replaced only at this run's first save."""
        path = self.log_path
        if self.own_folder and path.exists() and not self.foreign_log:
            self._adopt_staged_log(path)
            removed = cut_log(path, self.step)
            if removed:
                _note(f"{path}: removed {removed} row(s) after step {self.step}, the checkpoint's step "
                      f"(trained but never saved); they are trained again")
            return RunLog(path)
        return RunLog(path, staged=path.exists() and path.stat().st_size > 0)

    def _adopt_staged_log(self, path: Path) -> None:
        """A run that replaced an older run's log was killed between its first checkpoint and the
        rename of its staged log: the checkpoint is this run's, its rows are in .<log>.<pid>.new.
        Finish that rename. A staged log written after the checkpoint, or that never reached its
        step, belongs to a run that stopped before its first save, and is left alone."""
        saved_ns = Path(self.args.resume).stat().st_mtime_ns
        for staged in sorted(path.parent.glob(f".{path.name}.*.new"), key=lambda p: p.stat().st_mtime_ns,
                             reverse=True):
            if staged.stat().st_mtime_ns <= saved_ns and any(r.get("step") == self.step for r in read_log(staged)):
                os.replace(staged, path)
                _note(f"{path}: replaced by {staged.name}, the log of the run that wrote the checkpoint "
                      f"(it was stopped before it could rename it)")
                return
            _note(f"{staged} holds rows of a run that stopped before its first save, not of this checkpoint; "
                  f"left as it is")

    # -- the loop ------------------------------------------------------------------------------
    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()

    def train_step(self, batches, lr: float) -> float:
        """One optimizer step over grad-accum micro-batches; returns the mean loss over processes."""
        a = self.args
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # Dropout masks depend only on (seed, step, rank): an interrupted run resumes exactly.
        torch.manual_seed(self.seed + 1_000_003 * (self.step + 1) + self.rank)
        step_loss = torch.zeros((), device=self.device)  # summed on the device: one host sync per step
        for micro in range(a.grad_accum):
            inputs, targets = next(batches)
            last = micro == a.grad_accum - 1
            with self.train_model.no_sync() if self.world > 1 and not last else nullcontext():
                with self.autocast():
                    if a.chunked_loss:  # through forward, so that DDP and torch.compile see it
                        loss = self.train_model(inputs.to(self.device), targets=targets.to(self.device))
                    else:
                        loss = calc_loss_batch(inputs, targets, self.train_model, self.device)
                    loss = loss / a.grad_accum
                self.scaler.scale(loss).backward()
            step_loss += loss.detach().float()
        if a.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), a.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return mean_over_processes(step_loss.item(), self.device, self.world)

    def _kept(self) -> str:
        if self.saved_at is not None:
            return f"{self.ckpt_path} (step {self.saved_at}) is the last good checkpoint and was kept"
        if self.ckpt_path.exists():
            return f"{self.ckpt_path} was left as it was"
        return "no checkpoint was written"

    def diverged(self, what: str) -> TrainingDiverged:
        if self.log is not None:
            self.log.discard()
        resume = f"; resume with --resume {self.ckpt_path} and " if self.saved_at is not None else "; start again with "
        return TrainingDiverged(f"step {self.step}: {what}: the run diverged (learning rate {self.lr:g}); "
                                f"{self._kept()}{resume}a lower --lr, --clip-grad 1.0 or --warmup-steps")

    def save(self) -> None:
        """Checkpoint the model, optimizer and position; refuses non-finite weights."""
        bad = non_finite_tensors(self.model.state_dict())  # the same on every process: all stop together
        if bad:
            raise self.diverged(f"{len(bad)} weight tensors hold NaN or infinite values (first: {bad[0]})")
        if self.rank == 0:
            payload = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                       "step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                       "tokens": self.tokens_seen, "cfg": self.cfg, "model_class": self.args.model,
                       "world_size": self.world, "global_batch": self.global_batch, "seed": self.seed,
                       "log": str(self.log_path.resolve()),
                       **({"scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {})}
            try:
                write_atomically(self.ckpt_path, lambda f: torch.save(payload, f))
            except (OSError, RuntimeError) as e:  # torch's zip writer reports a full disk as RuntimeError
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:200]
                try:
                    free = f"{shutil.disk_usage(self.out).free / 2**20:,.0f} MiB free there"
                except OSError:
                    free = "free space unknown"
                raise CheckpointError(f"could not write the checkpoint {self.ckpt_path} at step {self.step} "
                                      f"({reason}; {free}); {self._kept()}. Free some space (or fix the folder) "
                                      f"and resume from it") from None
            try:
                self.log.commit()
            except OSError as e:
                rows = (f"this run's rows are in {self.log.target}: move it to {self.log.path}, then"
                        if self.log.target != self.log.path else "fix the folder, then")
                raise CheckpointError(f"{self.ckpt_path} was saved at step {self.step}, but its log {self.log.path} "
                                      f"could not be written ({e.strerror or e}); {rows} resume from the "
                                      f"checkpoint") from None
        self.saved_at, self.last_save_time = self.step, time.monotonic()

    def _save_due(self) -> bool:
        a = self.args
        if a.save_every and self.step % a.save_every == 0:
            return True
        return bool(a.save_minutes) and time.monotonic() - self.last_save_time >= 60 * a.save_minutes

    def train(self) -> dict:
        """The loop over epochs and steps; the checkpoint is written at the end (or when stopped)."""
        from tqdm.auto import tqdm

        a, cfg = self.args, self.cfg
        n_params = sum(p.numel() for p in self.model.parameters())
        if self.rank == 0:
            print(f"{a.model} model, {n_params / 1e6:.1f}M parameters, {cfg['n_layers']} layer{'s' * (cfg['n_layers'] != 1)}, context "
                  f"{cfg['context_length']}; {len(self.train_set)} training windows; {self.world} process(es) on "
                  f"{self.device}; global batch {self.global_batch} = {a.batch_size} x {self.world} x {a.grad_accum}; "
                  f"{self.steps_per_epoch} steps per epoch, {self.total_steps} in all"
                  + (f", resuming at step {self.step}" if self.step else ""))
        # Only rank 0 shows a bar; elsewhere tqdm's own default (and TQDM_DISABLE) decides.
        self.bar = tqdm(total=self.total_steps, initial=self.step, desc="pretrain", unit="step",
                        **({"disable": True} if self.rank else {}))
        start_step, self.t_start, self.train_loss, self.val_loss = self.step, time.perf_counter(), None, None
        self.step_seconds, self.stopped_by, self.lr = [], None, a.lr
        self.model.train()
        try:
            with self.bar, stop_signals() as stop:
                while self.step < self.total_steps and self.stopped_by is None:
                    self.sampler.set_epoch(self.epoch)
                    batches = iter(self.loader)
                    for _ in range(self.step_in_epoch * a.grad_accum):  # resume: skip the steps done in this epoch
                        next(batches)
                    while self.step_in_epoch < self.steps_per_epoch and self.step < self.total_steps:
                        if a.stop_after is not None and self.step - start_step >= a.stop_after:
                            self.stopped_by = "--stop-after"
                            break
                        if self.step_evaluate_log_save(batches, stop):
                            self.stopped_by = "Ctrl-C" if (stop.signal or "SIGINT") == "SIGINT" else stop.signal
                            break
                    if self.step_in_epoch >= self.steps_per_epoch:
                        self.epoch, self.step_in_epoch = self.epoch + 1, 0
                if self.saved_at != self.step:
                    self.save()  # still inside stop_signals: a second signal cannot cut the checkpoint short
        finally:
            if self.log is not None:
                self.log.discard()  # a staged log never committed: the old one stays
            self.train_model = None  # the DDP wrapper goes now, not with an exception's traceback (see main)
        return self.finish(n_params)

    def step_evaluate_log_save(self, batches, stop) -> bool:
        """One step, then what follows it: the finite check, an evaluation when due, the log row,
        a save when due. Returns whether a signal asks to stop (all processes agree)."""
        a, rank = self.args, self.rank
        tokens_per_step = self.global_batch * self.cfg["context_length"]
        t0 = time.perf_counter()
        self.lr = learning_rate(self.step, a, self.total_steps)
        self.train_loss = self.train_step(batches, self.lr)  # .item() inside: the step has finished
        self.step_seconds.append(time.perf_counter() - t0)
        self.step, self.step_in_epoch = self.step + 1, self.step_in_epoch + 1
        self.tokens_seen += tokens_per_step
        if not math.isfinite(self.train_loss):
            raise self.diverged(f"the training loss is {self.train_loss}")
        evaluate_now = self.val_set is not None and (
            self.step == self.total_steps or (a.eval_every and self.step % a.eval_every == 0))
        self.val_loss = (evaluate(self.model, self.val_set, a, self.device, rank, self.world, self.autocast)
                         if evaluate_now else None)
        if rank == 0:
            self.log.write({"step": self.step, "epoch": self.epoch, "tokens": self.tokens_seen, "lr": self.lr,
                            "train_loss": self.train_loss, "val_loss": self.val_loss,
                            "tok_s": tokens_per_step / self.step_seconds[-1],
                            "elapsed_s": time.perf_counter() - self.t_start})
            self.bar.set_postfix(loss=f"{self.train_loss:.3f}", lr=f"{self.lr:.2e}",
                                 **({"val": f"{self.val_loss:.3f}"} if self.val_loss is not None else {}))
            self.bar.update(1)
        # every process saves and stops after the same step: they agree first
        stop_now, save_now = sum_over_processes([float(stop.signal is not None), float(self._save_due())],
                                                self.device, self.world)
        if evaluate_now or save_now > 0:
            self.save()
        return stop_now > 0

    def finish(self, n_params: int) -> dict:
        steps = self.step_seconds
        tokens_per_step = self.global_batch * self.cfg["context_length"]
        summary = {"step": self.step, "epoch": self.epoch, "train_loss": self.train_loss, "val_loss": self.val_loss,
                   "stopped_by": self.stopped_by, "parameters": n_params,
                   "tok_s": tokens_per_step / statistics.median(steps[1:] or steps) if steps else None,
                   "peak_memory_mib": peak_memory_mib(self.device), "device": str(self.device),
                   "autocast": str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype else "none",
                   "world_size": self.world, "checkpoint": str(self.ckpt_path), "log": str(self.log_path)}
        if self.rank == 0:
            write_atomically(self.out / "summary.json", lambda f: f.write((json.dumps(summary, indent=1) + "\n").encode()))
            losses = ", ".join(f"{name} loss {loss:.4f}" for name, loss in (("train", self.train_loss),
                                                                            ("val", self.val_loss)) if loss is not None)
            print(f"step {self.step}" + (f": {losses}" if losses else "") + f"; checkpoint {self.ckpt_path}")
        if self.stopped_by in ("Ctrl-C", "SIGTERM"):
            name = "SIGINT" if self.stopped_by == "Ctrl-C" else self.stopped_by
            if self.rank == 0:
                print(f"interrupted ({name}): checkpoint at step {self.step}; resume with --resume {self.ckpt_path}",
                      file=sys.stderr)
            raise RunInterrupted(name)
        return summary


@contextmanager
def output_folder(args):
    """Rank 0's hold on the output folder: created and checked writable (with the log's folder)
    before anything else, and locked for the run. A folder this run created is removed again
    if the run ends before writing anything into it."""
    out = Path(args.out)
    created = not out.exists()
    check_writable_folder(out, "--out")
    if args.log:
        check_writable_folder(Path(args.log).parent, "the folder of --log")
    try:
        with folder_lock(out):
            yield
    finally:
        if created and {p.name for p in out.iterdir()} <= {LOCK_NAME}:  # nothing written: no trace left
            with suppress(OSError):
                (out / LOCK_NAME).unlink()
                out.rmdir()


def main(argv=None) -> dict:
    """Run the script with `argv` (default sys.argv[1:]); returns a summary dict."""
    args = build_parser().parse_args(argv)
    check_options(args)
    rank, world, device = setup_distributed(args.device)
    if device.type == "cpu" and world == 1 and not args.system_malloc:
        keep_large_tensors_on_the_heap()
    run = None
    try:
        with output_folder(args) if rank == 0 else nullcontext():
            run = Run(args, rank, world, device)
            summary = run.train()
        if world > 1:
            dist.barrier()  # no process tears its connections down while another still saves or logs
        return summary
    finally:
        if world > 1:
            # The DDP wrapper holds the process group inside reference cycles; left to the garbage
            # collector, gloo's threads could be destroyed during interpreter shutdown (an abort:
            # "terminate called without an active exception"). Free it while the group is alive.
            run = None
            gc.collect()
            dist.destroy_process_group()


def compare_runs(rows: dict, common: list, out_dir, in_process: bool = False, progress: bool = True) -> dict:
    """Train once per row of `rows` ({name: flags}, each added to the flags in `common`) and
    return each run's summary by name: the measurements behind a table of what each option buys
    (ch05's 5.6). Each run writes to a new folder of its own under `out_dir`, deleted once its
    summary is read (a checkpoint can take gigabytes); nothing already in `out_dir` is touched.

    in_process=False: each row is a fresh `python -m helpers.pretrain` process, and its
    "peak_memory_mib" is that process's peak resident memory. True: main() runs here, with its
    bar and printout silenced and the system allocator (this process's is left alone), which
    saves a start-up per row; on CUDA the peak is the allocator's during the run minus what was
    already allocated. A failing row raises RuntimeError with the flags and the script's error.
    """
    import contextlib
    import functools
    import io
    import subprocess
    from unittest import mock

    import tqdm.auto as tqdm_auto

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = {}
    for name, flags in tqdm_auto.tqdm(rows.items(), desc="runs", unit="run", disable=not progress):
        # a fresh folder of this call's own: the cleanup below must never reach a run already there
        out = Path(tempfile.mkdtemp(dir=out_dir, prefix=f"run{len(summaries)}-"))
        argv = [*common, *flags, "--out", str(out)]
        try:
            if in_process:
                usage = io.StringIO()
                try:
                    with contextlib.redirect_stderr(usage):  # a bad flag: argparse's one line, then SystemExit
                        device = get_device(build_parser().parse_args(argv).device)
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    resident = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
                    quiet_bar = functools.partial(tqdm_auto.tqdm, disable=True)
                    with mock.patch.object(tqdm_auto, "tqdm", quiet_bar), contextlib.redirect_stdout(io.StringIO()):
                        summary = main([*argv, "--system-malloc"])
                except (SystemExit, ValueError, TrainingDiverged) as e:
                    raise RuntimeError(f"helpers.pretrain {' '.join(flags)} failed: {usage.getvalue().strip() or e}") from None
                summaries[name] = {**summary, "peak_memory_mib": summary["peak_memory_mib"] - resident}
            else:
                done = subprocess.run([sys.executable, "-m", "helpers.pretrain", *argv], capture_output=True,
                                      text=True, env={**os.environ, "TQDM_DISABLE": "1"})
                if done.returncode != 0:
                    raise RuntimeError(f"helpers.pretrain {' '.join(flags)} failed:\n{done.stderr[-2000:]}")
                summaries[name] = json.loads((out / "summary.json").read_text())
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return summaries


def cli(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        main(argv)
    except TrainingDiverged as e:  # the last good checkpoint is kept; the message says how to go on
        print(f"error: {e}", file=sys.stderr)
        return 3
    except ValueError as e:  # bad data or options: the message is meant for the user, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunInterrupted as e:  # the checkpoint is written and the way to resume printed
        return e.exit_code
    except KeyboardInterrupt:  # Ctrl-C before the first step: nothing trained, nothing to save
        print("interrupted before the first step: nothing was saved", file=sys.stderr)
        return 130
    except OSError as e:  # a file that cannot be read or written (disk full, permissions)
        print(f"error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise  # a bug, not a user error: the traceback is what a report needs
        print(f"error: out of memory ({(str(e).splitlines() or [''])[0][:160] or type(e).__name__}); lower --batch-size "
              f"or --context-length, or use --grad-accum N (the same batch in N parts), --grad-checkpointing "
              f"or --amp bf16; the last checkpoint, if any, is kept", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
