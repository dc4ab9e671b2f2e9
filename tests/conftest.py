"""Test setup: no network, data from the offline copies, notebooks in smoke mode.

Environment variables are set at import time, before nbval or papermill start any kernel, so
kernels inherit them: COURSE_MODE=smoke, COURSE_DEVICE=cpu, a fresh COURSE_DATA_DIR filled
from ../shared/data (or $COURSE_SHARED_DATA), and a TIKTOKEN_CACHE_DIR inside it.
"""
from __future__ import annotations

import atexit
import errno
import ipaddress
import json
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import sys

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's helpers, even if another one is pip-installed
SHARED = Path(os.environ.get("COURSE_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Under pytest-xdist the workers share the cores. With PyTorch's default of one intra-op thread
# per core in every worker and in every notebook kernel a worker starts, `-n 2` on 2 cores ran
# 4 busy threads, each waiting on threads that had no core. One share of the cores each
# (kernels and subprocesses inherit it); a variable set by hand wins.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and "OMP_NUM_THREADS" not in os.environ:
    _CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ["OMP_NUM_THREADS"] = str(max(1, _CORES // _WORKERS))
os.environ["COURSE_MODE"] = "smoke"
os.environ["COURSE_DEVICE"] = "cpu"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["TQDM_DISABLE"] = "1"  # progress bars would only clutter test logs
# the user's own cache: where the course files are when there is no shared copy (`make test`
# fills it once online); read, never written, by the tests
_USER_CACHE = Path(os.environ.get("COURSE_DATA_DIR") or ROOT / "data")
_CACHE = Path(tempfile.mkdtemp(prefix="course-cache-"))
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ["COURSE_DATA_DIR"] = str(_CACHE)
os.environ["TIKTOKEN_CACHE_DIR"] = str(_CACHE / "tiktoken")
# Files notebooks write (checkpoints, model folders) go here too: never into the checkout, and
# never shared between two test processes that run the same notebook at once.
os.environ["COURSE_MODELS_DIR"] = str(_CACHE / "models")
os.environ["COURSE_CHECKPOINT_DIR"] = str(_CACHE / "checkpoints")

from helpers.support.data import COURSE_FILES, seed_cache  # noqa: E402  (after the env is set)

# No network: a connection from the test process to anything but this machine, or a name lookup
# of another machine, is refused (as offline) and recorded, and the test that tried it fails
# (kernels and other subprocesses are not covered; their tests point them at loopback servers or
# local files).
_network_attempts: list = []


def _ip(host: str):
    """The address `host` spells, or None for a host name."""
    try:
        return ipaddress.ip_address(host.split("%")[0])  # an IPv6 scope ("fe80::1%eth0") is not part of it
    except ValueError:
        return None


def _is_local(address) -> bool:
    if not isinstance(address, tuple):  # a Unix socket's path
        return True
    host = str(address[0])
    if host in ("localhost", ""):
        return True
    ip = _ip(host)
    if ip is None:  # a host name other than localhost: reaching it needs the network
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return ip.is_loopback or ip.is_unspecified or bool(mapped and mapped.is_loopback)  # 0.0.0.0: this machine


def _refuse_remote(real, refused):
    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address):
            _network_attempts.append(address)
            return refused(address)
        return real(sock, address)
    return connect


def _unreachable(address):
    raise OSError(errno.ENETUNREACH, f"tests need no network: refused a connection to {address!r}")


socket.socket.connect = _refuse_remote(socket.socket.connect, _unreachable)
socket.socket.connect_ex = _refuse_remote(socket.socket.connect_ex, lambda address: errno.ENETUNREACH)
_real_getaddrinfo = socket.getaddrinfo
_LOCAL_NAMES = {"", "localhost", "localhost.localdomain", socket.gethostname()}


def _getaddrinfo_offline(host, *args, **kwargs):
    # A name lookup is network traffic too: where DNS answers it would leak, where it hangs it
    # would stall a test for the resolver's timeout. Refused and recorded like a connection.
    name = host.decode() if isinstance(host, bytes) else host
    # a literal address needs no lookup (a connection to it is checked on its own)
    if name is not None and name not in _LOCAL_NAMES and _ip(name) is None:
        _network_attempts.append((name, "name lookup"))
        raise socket.gaierror(socket.EAI_NONAME, f"tests need no network: refused to look up {name!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _getaddrinfo_offline


@pytest.fixture(autouse=True)
def _no_network():
    start = len(_network_attempts)  # earlier ones (a session fixture's) are reported at the end
    yield
    tried = _network_attempts[start:]
    if tried:
        del _network_attempts[start:]
        pytest.fail(f"this test tried to reach the network ({', '.join(map(repr, tried[:3]))}); "
                    "tests must run offline: use a loopback server, a local file or a monkeypatched download")


def pytest_sessionfinish(session, exitstatus):
    """Connections tried outside any test (collection, session fixtures) fail the session (under
    xdist: the worker's session, whose message is in the worker's output)."""
    if _network_attempts:
        print(f"\nconftest: connections to other machines were tried outside the tests: "
              f"{', '.join(map(repr, _network_attempts[:3]))}; tests must run offline")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

_source = SHARED if SHARED.is_dir() else _USER_CACHE
if not _source.is_dir() or len(seed_cache(_source, _CACHE)) != len(COURSE_FILES):
    raise pytest.UsageError(
        f"The tests need the course files offline, and neither {SHARED} nor {_USER_CACHE} holds them all: "
        f"put the shared data folder at {SHARED} (or set COURSE_SHARED_DATA), or run "
        f"`python -m helpers.support fetch` once online (`make test` does).")

# The side-by-side tests compare with the book's package and skip without it. `make test`, which
# installs it, asks for it: there a missing package stops the run instead of passing on skips.
if os.environ.get("COURSE_REQUIRE_BOOK_PACKAGE") == "1":
    import importlib
    try:  # every module the side-by-side tests compare with (a missing dependency of one skips them too)
        for _module in ("ch02", "ch03", "ch04", "ch05", "ch06", "ch07", "appendix_d", "appendix_e",
                        "kv_cache.gpt2", "kv_cache.generate"):
            importlib.import_module(f"llms_from_scratch.{_module}")
    except ImportError as e:
        raise pytest.UsageError(
            f"COURSE_REQUIRE_BOOK_PACKAGE=1, but the book's package cannot be imported ({e}): run "
            f"`make .venv/.installed` (it installs llms-from-scratch==1.0.19 for the tests), or unset the variable "
            f"to let the side-by-side tests skip") from None


@pytest.fixture(scope="session")
def refused_port() -> int:
    """A loopback port where every connection is refused: bound but never listening, and held
    for the whole session, so no kernel or other worker's server can take it meanwhile (a port
    that was merely free a moment ago can be)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The test session's course cache, already holding every course file."""
    return _CACHE


@pytest.fixture(scope="session")
def tokenizer():
    from helpers.support.data import gpt2_tokenizer
    return gpt2_tokenizer(_CACHE)


@pytest.fixture(scope="session")
def nonzero_lora_b():
    """LoRA's B starts at zero, so a lost or unloaded adapter would change nothing: the returned
    function gives every adapter's B something to carry (seeded, so two models with the same
    adapters get the same values; small, so outputs stay in a float32-friendly range)."""
    import torch

    def fill(model, seed=0):
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(".B"):
                    param.copy_(0.1 * torch.randn(param.shape, generator=generator))
        return model
    return fill


@pytest.fixture(scope="session")
def verdict_text() -> str:
    return (_CACHE / "the-verdict.txt").read_text(encoding="utf-8")


# ---- notebooks: one smoke execution each, shared by every check on it -------------------------
#
# Each notebook is executed once per test process (papermill, smoke mode, on the CPU), and that
# one execution feeds both of its checks: the metrics its tests/test_nb_<notebook>.py asserts on
# (`smoke_run`), and the comparison of its outputs with the committed ones under nbval's rules
# (tests/test_notebooks.py::test_outputs_match_committed, through `executed_notebook`). Under
# xdist (`--dist loadfile` with the scheduler below) all the tests of one notebook go to the same
# worker, so no notebook is executed twice.

@dataclass
class _Execution:
    name: str
    parameters: dict
    notebook: Path                   # the executed copy (written by papermill, even after an error)
    metrics: dict | None = None
    error: BaseException | None = None


_EXECUTIONS: dict[str, _Execution] = {}  # key: name + parameters


def _execute(out_dir: Path, name: str, parameters: dict) -> _Execution:
    key = name + json.dumps(parameters, sort_keys=True)
    if key not in _EXECUTIONS:
        sys.path.insert(0, str(ROOT / "tools"))
        from run_course import SMOKE_CELL_TIMEOUT_S, execute  # the runner `make course` uses

        run_dir = out_dir / f"{name}-{len(_EXECUTIONS)}"
        run_dir.mkdir(parents=True)
        metrics_path = run_dir / f"{name}.metrics.json"
        run = _Execution(name, parameters, run_dir / f"{name}.ipynb")
        try:
            execute(ROOT / f"{name}.ipynb", run.notebook,
                    parameters={"mode": "smoke", "device": "cpu", "metrics_path": str(metrics_path), **parameters},
                    cell_timeout=SMOKE_CELL_TIMEOUT_S)
            run.metrics = json.loads(metrics_path.read_text())
        except Exception as e:  # kept: a second check on the same run fails with the same error
            run.error = e
        _EXECUTIONS[key] = run
    return _EXECUTIONS[key]


@pytest.fixture(scope="session")
def _executions_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("smoke")


@pytest.fixture(scope="session")
def smoke_run(_executions_dir):
    """Run a notebook with papermill in smoke mode on the CPU; return its metrics dict.

    Usage: ``metrics = smoke_run("ch02_text_data")``. A failing cell fails the test with
    papermill's report of the cell and traceback. The same name and parameters run once per
    test process; `executed_notebook` hands the same execution to the output comparison.
    """
    def run(name: str, **parameters) -> dict:
        execution = _execute(_executions_dir, name, parameters)
        if execution.error is not None:
            raise execution.error
        return execution.metrics

    return run


@pytest.fixture(scope="session")
def executed_notebook(_executions_dir):
    """``executed_notebook(name)``: (path of the executed copy, the error that stopped it or None)
    of this process's latest smoke execution of notebook `name` (whatever parameters its
    smoke-run test passed), executing it with no extra parameters if none ran yet."""
    def get(name: str) -> tuple[Path, BaseException | None]:
        runs = [r for r in _EXECUTIONS.values() if r.name == name]
        execution = runs[-1] if runs else _execute(_executions_dir, name, {})
        return execution.notebook, execution.error

    return get


# ---- scheduling under xdist --------------------------------------------------------------------
#
# `make test` runs `pytest -n 2 --dist loadfile`: a work unit is a test file, so that its module
# fixtures (a JupyterLab server, a notebook's metrics) are built once. Here loadfile's units are
# changed in one way: all the tests of one notebook (its tests/test_nb_*.py and its
# test_outputs_match_committed) form one unit, so that they run in one process and share its
# one execution. Units are handed out slowest first (a long unit started last would leave the
# other worker idle at the end), and within a notebook's unit the output comparison comes after
# the smoke-run tests, so that it reuses their execution (ch07's passes parameters).

# The slowest units, slowest first (from `pytest --durations` on 2 cores: the browser test and the
# smoke runs of ch05-ch07 take minutes); all other units follow in collection order.
_SLOW_UNITS = ["tests/test_browser_lab.py", "ch06_classification", "ch05_pretraining", "ch07_instruction",
               "ch01_overview", "ch04_gpt_model", "tests/test_pretrain.py", "tests/test_weights.py",
               "ch03_attention", "ch02_text_data"]
_COMPARISON = "tests/test_notebooks.py::test_outputs_match_committed["


def _unit(nodeid: str) -> str:
    """The work unit of a test: its notebook's name for a notebook's tests, else its file."""
    path = nodeid.split("::", 1)[0]
    if re.fullmatch(r"tests/test_nb_ch\d\d_\w+\.py", path):
        return path.removeprefix("tests/test_nb_").removesuffix(".py")
    if nodeid.startswith(_COMPARISON):
        return nodeid.removeprefix(_COMPARISON).split("]", 1)[0]
    return path


def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile, with a notebook's tests in one unit (above); other modes as xdist has them."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class NotebookFileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    config.option.loadscopereorder = False  # keep the order below, not "most tests first"
    return NotebookFileScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_SLOW_UNITS)}
    first_seen: dict[str, int] = {}
    for item in items:
        first_seen.setdefault(_unit(item.nodeid), len(first_seen))

    def order(item):
        unit = _unit(item.nodeid)
        return rank.get(unit, len(rank)), first_seen[unit], item.nodeid.startswith(_COMPARISON)

    items.sort(key=order)
