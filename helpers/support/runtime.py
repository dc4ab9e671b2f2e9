"""Notebook plumbing shared by every chapter (hand-written, not exported from a notebook):
device choice, seeding, version printout, and the metrics record a notebook leaves behind."""
from __future__ import annotations

import json
import numbers
import os
import platform
import random
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from .files import write_atomically

__all__ = ["get_device", "set_seed", "print_versions", "cpu_has_bf16", "supports_bf16", "autocast_dtype", "Metrics"]


def get_device(device: str = "auto") -> torch.device:
    """Resolve "auto" | "cpu" | "cuda" | "mps" to a torch.device, with a clear error if absent.

    "auto" prefers CUDA, then Apple's MPS only on PyTorch >= 2.4 (older releases computed some
    losses wrongly on MPS), else the CPU.
    """
    device = str(device).lower()
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps_ok = getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
        if mps_ok and tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 4):
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but PyTorch sees no CUDA GPU; use 'auto' or 'cpu'")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("device='mps' was asked for but MPS is not available; use 'auto' or 'cpu'")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'mps'")
    try:
        resolved = torch.device(device)
    except RuntimeError:  # "cuda:x", "cuda:-1", ...
        raise ValueError(f"unknown device {device!r}: use 'cuda' or 'cuda:N' with N a GPU's number") from None
    count = torch.cuda.device_count() if resolved.type == "cuda" else 0
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= count:
        raise RuntimeError(f"device={device!r} was asked for but PyTorch sees {count} CUDA GPU"
                           f"{'s' * (count != 1)} (cuda:0 to cuda:{count - 1}); use 'cuda' or one of those")
    return resolved


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 matrix products in hardware (x86 with AVX-512 or AMX,
    Arm with its BF16 extension), as oneDNN, PyTorch's CPU kernel library, detects it. Without
    it bf16 is emulated: on a 2-core AMD Zen 2 a bf16 matmul took 150 times as long as float32."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else True  # (an older PyTorch: assume it has)
    except RuntimeError:
        return True


def _older_gpu_path_forced() -> bool:
    """COURSE_NO_BF16 set (and not "0"): rehearse the older-GPU float16 path on any machine."""
    return os.environ.get("COURSE_NO_BF16", "") not in ("", "0")


def supports_bf16(device: torch.device | str) -> bool:
    """Whether bfloat16 autocast is worth using on `device`: CUDA GPUs from compute capability
    8 (Ampere: A100, RTX 30xx, L4, H100) do bf16 matrix products in hardware; older ones (Colab's
    T4 is 7.5, V100 7.0) emulate them slowly. A CPU: whether it has bf16 instructions
    (`cpu_has_bf16`; most laptops' x86 CPUs have not). MPS: yes.

    Setting the environment variable COURSE_NO_BF16=1 answers False on every device: it
    rehearses the older-GPU (float16 with loss scaling) path on any machine, tests included.
    """
    if _older_gpu_path_forced():
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return cpu_has_bf16()
    return True


def autocast_dtype(amp: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for an --amp choice: "none" -> None (float32), "fp16" -> float16,
    "bf16" -> bfloat16, except on a CUDA GPU without bf16 (and wherever COURSE_NO_BF16 is set),
    which gets float16 (it then needs a GradScaler against underflowing gradients); a CPU
    without bf16 instructions keeps bfloat16 as asked (emulated: slow, see `supports_bf16`);
    "auto" -> the half type of a CUDA GPU, None elsewhere."""
    if amp not in ("none", "bf16", "fp16", "auto"):
        raise ValueError(f"amp must be 'none', 'bf16', 'fp16' or 'auto', got {amp!r}")
    device = torch.device(device)
    if amp == "none" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16" or _older_gpu_path_forced() or (device.type == "cuda" and not supports_bf16(device)):
        return torch.float16
    return torch.bfloat16


def is_out_of_memory(e: BaseException) -> bool:
    """Whether `e` means "too little memory": Python's MemoryError, torch's OutOfMemoryError
    (CUDA), or the RuntimeError torch's CPU allocator raises ("can't allocate memory"). Such an
    error says nothing about the file or download being handled, so it must not be reported as
    a damaged one."""
    if isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    message = str(e).lower()
    return "out of memory" in message or "can't allocate memory" in message or "failed to allocate" in message


def set_seed(seed: int) -> None:
    """Seed Python's and PyTorch's generators (all devices) so a run can be repeated."""
    random.seed(seed)
    torch.manual_seed(seed)


def print_versions(*packages: str) -> None:
    """Print Python's and the given packages' versions: the first thing to compare when
    "my numbers differ from the notebook"."""
    print(f"python {platform.python_version()}")
    for name in packages:
        try:
            print(f"{name} {version(name)}")
        except PackageNotFoundError:
            print(f"{name} (not installed)")


def _check_results(key: str, results) -> None:
    """headline= and book= are {label: number, short string or None (not measured this run)}."""
    if not isinstance(results, dict):
        raise ValueError(f"Metrics.log: {key}= must be a dict {{label: value}}, got {type(results).__name__}")
    for label, value in results.items():
        ok = value is None or isinstance(value, str) or (isinstance(value, numbers.Real) and not isinstance(value, bool))
        if not isinstance(label, str) or not ok:
            raise ValueError(f"Metrics.log: {key}[{label!r}] = {value!r}; labels are strings and values "
                             f"numbers or short strings")


class Metrics:
    """The small JSON record a notebook leaves beside its executed copy.

    Each `log` call merges values and rewrites the file at once (atomically), so results
    recorded before an interruption survive it; creating the record writes nothing yet.
    Values must be JSON-serialisable (numbers, strings, lists).

    Two keys are for the run report (tools/run_course.py), which shows them whole:
    ``headline={"<label>": value, ...}``, the notebook's 2-4 headline results (numbers or
    short strings), and ``book={"<label>": value, ...}``, the book's published figure for the
    same labels where there is one.
    """

    def __init__(self, path: str | Path | None, notebook: str, mode: str):
        self.path = Path(path) if path else None
        self.data = {"notebook": notebook, "mode": mode, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self._t0 = time.perf_counter()
        # The file is first written by the first log(): an earlier run's record (a full run's,
        # say) stays until this run has a result to put in its place. Whether it can be written
        # is checked now, not after an hour of training.
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                ok = not self.path.is_dir() and os.access(self.path.parent, os.W_OK | os.X_OK)  # a rename's needs
            except OSError:  # a file where a folder should be, ...
                ok = False
            if not ok:
                raise ValueError(f"metrics_path {self.path} cannot be written; give a writable file path "
                                 f"(or None: record nothing)")

    def log(self, **values) -> None:
        for key in ("headline", "book"):
            if key in values:
                _check_results(key, values[key])
        headline = values.get("headline", self.data.get("headline", {}))
        unknown = [label for label in values.get("book", {}) if label not in headline]
        if unknown:
            raise ValueError(f"Metrics.log: book labels {unknown} are not headline labels {list(headline)}; "
                             f"give the book's figure under the same label as the headline result")
        self.data.update(values)
        self._write()

    def _write(self) -> None:
        self.data["elapsed_s"] = round(time.perf_counter() - self._t0, 2)
        if self.path is not None:
            text = json.dumps(self.data, indent=2, default=float)
            write_atomically(self.path, lambda f: f.write(text), mode="w")

    def __repr__(self) -> str:
        return f"Metrics({self.path}, {len(self.data)} values)"
