"""Test setup: no network, data from the offline copies, notebooks in smoke mode.

Environment variables are set at import time, before nbval or papermill start any kernel, so
kernels inherit them: COURSE_MODE=smoke, COURSE_DEVICE=cpu, a fresh COURSE_DATA_DIR filled
from ../shared/data (or $COURSE_SHARED_DATA), and a TIKTOKEN_CACHE_DIR inside it.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import sys

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's helpers, even if another one is pip-installed
SHARED = Path(os.environ.get("COURSE_SHARED_DATA", ROOT.parent / "shared" / "data"))

os.environ["COURSE_MODE"] = "smoke"
os.environ["COURSE_DEVICE"] = "cpu"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["TQDM_DISABLE"] = "1"  # progress bars would only clutter test logs
_CACHE = Path(tempfile.mkdtemp(prefix="course-cache-"))
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ["COURSE_DATA_DIR"] = str(_CACHE)
os.environ["TIKTOKEN_CACHE_DIR"] = str(_CACHE / "tiktoken")
# Files notebooks write (checkpoints, model folders) go here too: never into the checkout, and
# never shared between two test processes that run the same notebook at once.
os.environ["COURSE_MODELS_DIR"] = str(_CACHE / "models")
os.environ["COURSE_CHECKPOINT_DIR"] = str(_CACHE / "checkpoints")

from helpers.support.data import COURSE_FILES, seed_cache  # noqa: E402  (after the env is set)

_source = SHARED if SHARED.is_dir() else ROOT / "data"
if len(seed_cache(_source, _CACHE)) != len(COURSE_FILES):
    raise pytest.UsageError(
        f"The tests need the course data offline: put the shared data folder at {SHARED} "
        f"(or set COURSE_SHARED_DATA), or run `python -m helpers.support fetch` once online.")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The test session's course cache, already holding every course file."""
    return _CACHE


@pytest.fixture(scope="session")
def tokenizer():
    from helpers.support.data import gpt2_tokenizer
    return gpt2_tokenizer(_CACHE)


@pytest.fixture(scope="session")
def verdict_text() -> str:
    return (_CACHE / "the-verdict.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """Run a notebook with papermill in smoke mode on the CPU; return its metrics dict.

    Usage: ``metrics = smoke_run("ch02_text_data")``. A failing cell fails the test with
    papermill's report of the cell and traceback.
    """
    sys.path.insert(0, str(ROOT / "tools"))
    from run_course import SMOKE_CELL_TIMEOUT_S, execute  # the runner `make course` uses

    out_dir = tmp_path_factory.mktemp("smoke")
    done: dict[str, dict] = {}

    def run(name: str, **parameters) -> dict:
        key = name + json.dumps(parameters, sort_keys=True)
        if key not in done:
            metrics_path = out_dir / f"{name}.metrics.json"
            execute(ROOT / f"{name}.ipynb", out_dir / f"{name}.ipynb",
                    parameters={"mode": "smoke", "device": "cpu", "metrics_path": str(metrics_path),
                                **parameters}, cell_timeout=SMOKE_CELL_TIMEOUT_S)
            done[key] = json.loads(metrics_path.read_text())
        return done[key]

    return run
