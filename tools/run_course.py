#!/usr/bin/env python3
"""Run the course notebooks headless with papermill and write a report.

    python tools/run_course.py                     # every chapter; smoke on CPU, full on a GPU
    python tools/run_course.py --mode full ch05_pretraining.ipynb
    python tools/run_course.py --inplace --mode full ch02_text_data.ipynb   # refresh a committed notebook

Executed copies and each notebook's metrics JSON go to runs/<mode>/ (git-ignored), with
report.md, report.html (one page, figures embedded) and report.json: status, wall time, mode,
device, each notebook's headline results whole beside the book's published figures (what it
recorded with `metrics.log(headline={...}, book={...})`), the figures of cells tagged
`report-figure`, and every recorded metric in a collapsible block. A failing notebook does not
stop the others; the report names its failing cell and error (an exception, a `sys.exit()`
that skipped the cells after it, a cell over the time limit, a kernel that died), and the
command exits 1. Every cell has a time limit (smoke: 300 s, full: 2 h; --cell-timeout). Ctrl-C
stops the run and still writes the report of the notebooks that finished (exit code 130).
`--inplace` re-executes the committed notebook itself (mode via COURSE_MODE, no injected
cell) and strips run-specific metadata, which is how the committed outputs are produced. The
run writes its progress into --out; only a complete run replaces the committed notebook
(atomically), so a failed or stopped one leaves it as it was, and it can be read meanwhile.

`execute()` is the one papermill call of the project: the test suite's smoke runs use it too.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import html
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURE_TAG = "report-figure"
# No smoke-mode cell takes a minute on 2 cores; a stalled one is retried (see execute()).
SMOKE_CELL_TIMEOUT_S = 300
# The longest full-mode cell (ch06's or ch07's training on a 2-core CPU) takes well under an
# hour; a cell still running after two has hung, and the run moves on to the next notebook.
FULL_CELL_TIMEOUT_S = 2 * 3600
# The kernel's "running over TCP without encryption" warning concerns kernels reached over a
# network; ours is a local child process, so it is noise a reader would have to learn to ignore.
KERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]


def resolve_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    import torch
    return "full" if torch.cuda.is_available() else "smoke"


def resolve_device(device: str) -> str:
    """The device a notebook given `device` will use (same rule as helpers' get_device)."""
    sys.path.insert(0, str(ROOT))
    from helpers.support.runtime import get_device
    return str(get_device(device))


@contextlib.contextmanager
def _environment(values: dict[str, str | None]):
    """Set (None: unset) a few environment variables, which the kernel inherits; restore
    exactly those afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@functools.cache
def sliced_poll_kernel_manager():
    """An nbclient kernel manager whose client waits for kernel messages in 0.5 s slices.

    Why: executing a cell, nbclient waits for the kernel's reply with one long poll of the shell
    socket (zmq.asyncio). Here, now and then (about 1 run in 6 of ch07's smoke run under load,
    always in a cell that writes into an ipywidgets Output), that poll missed the wake-up for a
    reply that had arrived: the reply was read only when the poll timed out, or never without a
    timeout, so the run hung with the kernel idle (jupyter/nbclient#312 reports the same). Each
    new poll first checks for a message already waiting, so short slices bound such a miss to
    half a second.
    """
    from queue import Empty

    from jupyter_client.asynchronous import AsyncKernelClient
    from jupyter_client.channels import AsyncZMQSocketChannel
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import Type, default

    class SlicedPollChannel(AsyncZMQSocketChannel):
        slice_s = 0.5

        async def get_msg(self, timeout=None):
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = self.slice_s if deadline is None else max(0.0, min(self.slice_s, deadline - time.monotonic()))
                try:
                    return await super().get_msg(timeout=left)
                except Empty:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise

    class SlicedPollClient(AsyncKernelClient):
        shell_channel_class = Type(SlicedPollChannel)
        iopub_channel_class = Type(SlicedPollChannel)

    class SlicedPollKernelManager(AsyncKernelManager):
        @default("client_factory")
        def _default_client_factory(self):
            return SlicedPollClient

    SlicedPollKernelManager.poll_channel = SlicedPollChannel  # for tests
    return SlicedPollKernelManager


def execute(nb_in: Path, nb_out: Path, parameters: dict | None = None, env: dict | None = None,
            cell_timeout: int | None = None, retry_timeout: bool = True) -> None:
    """Execute a notebook with papermill (cwd: the repository root); raises papermill's
    PapermillExecutionError, which names the failing cell, when a cell fails.

    The kernel client polls in short slices (`sliced_poll_kernel_manager`), which ends the
    headless stalls after widget cells. `cell_timeout` (seconds per cell) stays as a backstop:
    a notebook with a cell that produces no reply in time is run once more from the start, with
    a warning (unless `retry_timeout` is False); a second timeout fails.

    papermill raises nothing when a cell calls `sys.exit()` (IPython catches SystemExit), so
    the executed notebook is checked too: a cell marked failed, or cells never run, raise
    `NotebookStopped` naming the cell.
    """
    import papermill as pm
    for attempt in (1, 2):
        try:
            with _environment(env or {}):
                pm.execute_notebook(str(nb_in), str(nb_out), parameters=parameters, cwd=str(ROOT),
                                    progress_bar=False, kernel_name="python3", extra_arguments=KERNEL_ARGS,
                                    execution_timeout=cell_timeout, kernel_manager_class=sliced_poll_kernel_manager())
            check_every_cell_ran(nb_out)
            return
        except Exception as e:
            timed_out = isinstance(e, TimeoutError) or "Timeout" in f"{getattr(e, 'ename', '')}{type(e).__name__}"
            if attempt == 2 or cell_timeout is None or not timed_out or not retry_timeout:
                raise
            print(f"warning: {nb_in.name}: a cell produced no reply within {cell_timeout} s; "
                  f"running the notebook once more", file=sys.stderr)


class NotebookStopped(RuntimeError):
    """A notebook ended early without papermill raising: `sys.exit()` or `exit()` in a cell."""

    def __init__(self, message: str, cell: dict):
        super().__init__(message)
        self.cell = cell


def _cell_ref(nb, index: int) -> dict:
    cell = nb.cells[index]
    first_line = next((ln for ln in cell.source.splitlines() if ln.strip()), "")
    return {"index": index, "execution_count": cell.get("execution_count"), "first_line": first_line[:120]}


def check_every_cell_ran(nb_path: Path) -> None:
    """Raise NotebookStopped when a cell of the executed notebook failed or never ran."""
    import nbformat
    nb = nbformat.read(nb_path, as_version=4)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()]
    failed = [i for i in code if nb.cells[i].metadata.get("papermill", {}).get("exception")
              and "raises-exception" not in nb.cells[i].metadata.get("tags", [])]  # an error the lesson shows
    never = [i for i in code if nb.cells[i].get("execution_count") is None]
    if not failed and not never:
        return
    where = failed[0] if failed else never[0]
    errors = [o for o in nb.cells[where].get("outputs", []) if o.get("output_type") == "error"]
    why = f"{errors[0].get('ename')}: {errors[0].get('evalue')}" if errors else "the kernel stopped here"
    rest = [i for i in never if i > where]
    raise NotebookStopped(f"{why} (the notebook stopped: {len(rest)} later code cell(s) never ran)",
                          _cell_ref(nb, where))


def _running_cell(nb_path: Path) -> dict | None:
    """The cell that was executing when a run was cut off (timeout, dead kernel): the last
    code cell papermill had started."""
    import nbformat
    try:
        nb = nbformat.read(nb_path, as_version=4)
    except Exception:  # noqa: BLE001 - no notebook written yet: no cell to name
        return None
    started = [i for i, c in enumerate(nb.cells)
               if c.cell_type == "code" and c.metadata.get("papermill", {}).get("start_time")]
    return _cell_ref(nb, started[-1]) if started else None


def _final_bar_text(view: dict, state: dict) -> str | None:
    """The text of a tqdm notebook bar in its final state, from the saved widget models.

    A saved widget keeps, as its text/plain fallback, the bar as it was when first displayed
    (0%); the widget models in the notebook metadata hold its last values."""
    box = state.get(view.get("model_id"), {})
    if box.get("model_name") != "HBoxModel":
        return None
    parts = [state.get(ref.removeprefix("IPY_MODEL_"), {}) for ref in box.get("state", {}).get("children", [])]
    if [p.get("model_name") for p in parts] != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
        return None
    left, progress, right = (p.get("state", {}) for p in parts)
    value, top = progress.get("value", 0), progress.get("max", 0) or 1
    filled = max(0, min(10, round(10 * value / top)))
    bar = "█" * filled + " " * (10 - filled)
    return html.unescape(f"{left.get('value', '')}|{bar}|{right.get('value', '')}").replace("\xa0", " ").replace("\u2007", " ")


# What a saved copy shows for a control (slider, text box, button) instead of ipywidgets' repr
# ("VBox(children=(HBox(children=(IntSlider(..."): without a kernel it does nothing anyway.
WIDGET_NOTE = "[an interactive widget: run this cell in Jupyter or Colab to use it]"


_CONTROLS = ("SliderModel", "TextModel", "TextareaModel", "ButtonModel", "ButtonsModel", "DropdownModel",
             "CheckboxModel", "SelectModel", "ComboboxModel")  # widget model names that take input


def _has_control(model_id, state: dict) -> bool:
    """Whether the saved widget `model_id`, or a box inside it, takes input (a slider, a text
    box, a button...); not so for a progress bar or an output area."""
    model = state.get(model_id, {})
    if model.get("model_name", "").endswith(_CONTROLS):
        return True
    return any(_has_control(ref.removeprefix("IPY_MODEL_"), state)
               for ref in model.get("state", {}).get("children", []) if isinstance(ref, str))


def clean_metadata(path: Path) -> None:
    """Drop what changes on every run (papermill timings, execution stamps, widget state), turn
    progress-bar widgets into text showing their final state, and other widgets into WIDGET_NOTE."""
    import nbformat
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor
    nb = nbformat.read(path, as_version=4)
    widgets = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    widget_state = widgets.get("state", {})
    for key in ("papermill", "widgets"):
        nb.metadata.pop(key, None)
    for cell in nb.cells:
        for key in ("papermill", "execution", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            for out in cell.outputs:
                view = out.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)
                if view is None:
                    continue
                if (text := _final_bar_text(view, widget_state)) is not None:
                    out["data"]["text/plain"] = text
                elif _has_control(view.get("model_id"), widget_state):
                    out["data"]["text/plain"] = WIDGET_NOTE
            cell.outputs = [o for o in cell.outputs if not ("data" in o and not o["data"])]
    # One output per run of stdout (or stderr) text, as a reader sees it: whether a print's pieces
    # arrive in one message or several depends on timing, and would show up as a change.
    CoalesceStreamsPreprocessor().preprocess(nb, {})
    nbformat.write(nb, path)


def figures(nb_path: Path) -> list[str]:
    """Base64 PNGs of the cells tagged `report-figure` in an executed notebook."""
    import nbformat
    if not nb_path.exists():
        return []
    nb = nbformat.read(nb_path, as_version=4)
    return [out["data"]["image/png"] for cell in nb.cells
            if cell.cell_type == "code" and FIGURE_TAG in cell.metadata.get("tags", [])
            for out in cell.outputs if "image/png" in out.get("data", {})]


def describe_failure(e: BaseException, executed: Path, cell_timeout: int | None) -> tuple[str, dict | None]:
    """(error text, failed cell) for an exception from `execute`."""
    if hasattr(e, "exec_count"):  # papermill's PapermillExecutionError
        first_line = next((ln for ln in str(e.source).splitlines() if ln.strip()), "")
        cell = {"index": e.cell_index, "execution_count": e.exec_count, "first_line": first_line[:120]}
        return f"{e.ename}: {e.evalue}"[:300], cell
    if isinstance(e, NotebookStopped):
        return str(e)[:300], e.cell
    name = type(e).__name__
    if isinstance(e, TimeoutError) or "Timeout" in name:
        return f"timed out: the cell was still running after {cell_timeout} s (--cell-timeout)", _running_cell(executed)
    if name == "DeadKernelError" or "Kernel died" in str(e):
        return ("the kernel died while this cell ran (out of memory? a crash in native code?)",
                _running_cell(executed))
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip(" -")]
    return (f"{name}: {lines[-1]}" if lines else name)[:300], None


def run_one(nb: Path, out_dir: Path, mode: str, device: str, inplace: bool, cell_timeout: int | None = None) -> dict:
    name = nb.stem
    # --inplace runs the notebook as committed, so it writes its metrics to its own default path
    metrics_path = (ROOT / "runs" / "interactive" if inplace else out_dir).resolve() / f"{name}.metrics.json"
    # An earlier run's metrics stay until this run writes its own (a new file: Metrics writes
    # atomically), so a failed run reports none rather than the last one's. --inplace executes
    # into out_dir too, and the committed notebook is replaced (atomically) only by a complete
    # run: a failed or stopped one leaves it as it was.
    before = _file_identity(metrics_path)
    executed = out_dir / nb.name
    own_folder = executed.resolve() == nb.resolve()  # --out is the notebook's folder
    if own_folder:  # a hidden name (and git-ignored): never the notebook, never taken for a chapter
        executed = out_dir / f".{nb.stem}.executed.ipynb"
    timeout = cell_timeout or (SMOKE_CELL_TIMEOUT_S if mode == "smoke" else FULL_CELL_TIMEOUT_S)
    # a stalled smoke cell is retried once (see execute); a chosen limit, or a full-mode one, is final
    retry = cell_timeout is None and mode == "smoke"
    t0 = time.perf_counter()
    status, error, failed_cell = "ok", "", None
    try:
        if inplace:  # no injected cell in a committed notebook: the kernel reads its environment
            # progress bars on (tests switch them off), saved in their final state by clean_metadata
            execute(nb, executed, env={"COURSE_MODE": mode, "COURSE_DEVICE": device, "TQDM_DISABLE": None},
                    cell_timeout=timeout, retry_timeout=retry)
            clean_metadata(executed)
            _write_atomically(nb.resolve(), executed.read_bytes())  # through a symlink, not over it
        else:
            execute(nb, executed, parameters={"mode": mode, "device": device,
                                              "metrics_path": str(metrics_path)},
                    cell_timeout=timeout, retry_timeout=retry)
    except Exception as e:  # one failing chapter must not hide the others' results
        status = "failed"
        error, failed_cell = describe_failure(e, executed, timeout)
    wall = time.perf_counter() - t0
    figs = figures(executed)
    if inplace and own_folder and status == "ok":  # the notebook itself now holds this run
        executed.unlink(missing_ok=True)
        executed = nb
    changed = _file_identity(metrics_path) not in (before, None)
    return {"notebook": nb.name, "status": status, "wall_s": round(wall, 1), "mode": mode, "device": device,
            "metrics": read_metrics(metrics_path) if changed else {}, "error": error, "failed_cell": failed_cell,
            "executed": str(executed), "figures": figs}


def _file_identity(path: Path) -> tuple | None:
    """What tells one version of a file from another (None: no file); no clock involved."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _write_atomically(path: Path, data: str | bytes) -> None:
    from helpers.support.files import write_atomically
    write_atomically(path, lambda f: f.write(data), mode="w" if isinstance(data, str) else "wb")


def read_metrics(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # none written, or cut off mid-write
        return {}


def _failure_line(r: dict) -> str:
    cell = r["failed_cell"]
    where = (f"cell {cell['index']} (execution count {cell['execution_count']}: `{cell['first_line']}`)"
             if cell else ("stopped by Ctrl-C" if r["status"] == "interrupted" else "before any cell ran"))
    return f"{r['notebook']}: {where}: {r['error']}"


def _value(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def headline_rows(metrics: dict) -> list[tuple[str, str, str]]:
    """(label, this run's value, the book's value or "") for each headline metric, whole."""
    headline, book = metrics.get("headline") or {}, metrics.get("book") or {}
    if not isinstance(headline, dict):
        return []
    return [(str(label), _value(value), _value(book[label]) if label in book else "")
            for label, value in headline.items()]


def metrics_json(metrics: dict) -> str:
    """All recorded metrics, one key a line (a list of 100 losses stays on its line)."""
    return "{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v, default=str)}" for k, v in metrics.items()) + "\n}"


def headline_text(metrics: dict) -> str:
    rows = headline_rows(metrics)
    if not rows:
        return "(no headline results recorded)"
    return "; ".join(f"{label}: {ours}" + (f" (book: {book})" if book else "") for label, ours, book in rows)


def write_reports(results: list[dict], mode: str, out_dir: Path) -> str:
    """Write report.md, report.html and report.json into out_dir; return the summary table."""
    rows = ["| notebook | status | wall time | mode | device | headline results (book's figure) |",
            "|---|---|---|---|---|---|"]
    for r in results:
        detail = r["error"] if r["status"] != "ok" else headline_text(r["metrics"])
        rows.append(f"| {r['notebook']} | {r['status']} | {r['wall_s']:.0f} s | {r['mode']} | {r['device']} | "
                    f"{detail.replace('|', '/')} |")
    table = "\n".join(rows)
    failures = [_failure_line(r) for r in results if r["status"] != "ok"]

    md = [f"# Course run ({mode} mode)", "", table, ""]
    if failures:
        md += ["## Failures", ""] + [f"- {line}" for line in failures] + [""]
    fig_dir = out_dir / "figures"
    for r in results:
        md += [f"## {r['notebook']}", ""]
        if (head := headline_rows(r["metrics"])):
            md += ["| result | this run | book |", "|---|---|---|"]
            md += [f"| {label} | {ours} | {book} |".replace("\n", " ") for label, ours, book in head] + [""]
        for k, png in enumerate(r["figures"]):
            fig_dir.mkdir(exist_ok=True)
            name = f"{Path(r['notebook']).stem}-{k + 1}.png"
            _write_atomically(fig_dir / name, base64.b64decode(png))
            md += [f"![{r['notebook']} figure {k + 1}](figures/{name})", ""]
        if r["metrics"]:
            md += ["<details><summary>all recorded metrics</summary>", "", "```json",
                   metrics_json(r["metrics"]), "```", "", "</details>", ""]
    _write_atomically(out_dir / "report.md", "\n".join(md) + "\n")

    esc = html.escape
    body = [f"<h1>Course run ({esc(mode)} mode)</h1>", "<table><tr><th>notebook</th><th>status</th>"
            "<th>wall time</th><th>mode</th><th>device</th><th>headline results (book's figure)</th></tr>"]
    for r in results:
        detail = r["error"] if r["status"] != "ok" else headline_text(r["metrics"])
        body.append(f"<tr class='{r['status']}'><td>{esc(r['notebook'])}</td><td>{r['status']}</td>"
                    f"<td>{r['wall_s']:.0f} s</td><td>{esc(r['mode'])}</td><td>{esc(r['device'])}</td>"
                    f"<td>{esc(detail)}</td></tr>")
    body.append("</table>")
    if failures:
        body.append("<h2>Failures</h2><ul>" + "".join(f"<li>{esc(f)}</li>" for f in failures) + "</ul>")
    for r in results:
        body.append(f"<h2>{esc(r['notebook'])}</h2>")
        if (head := headline_rows(r["metrics"])):
            body.append("<table class='headline'><tr><th>result</th><th>this run</th><th>book</th></tr>" + "".join(
                f"<tr><td>{esc(label)}</td><td>{esc(ours)}</td><td>{esc(book)}</td></tr>" for label, ours, book in head)
                + "</table>")
        body.extend(f"<img alt='figure' src='data:image/png;base64,{png}'>" for png in r["figures"])
        if r["metrics"]:
            body.append("<details><summary>all recorded metrics</summary><pre>"
                        + esc(metrics_json(r["metrics"])) + "</pre></details>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
             "tr.failed td,tr.interrupted td{background:#fdd}img{max-width:48%;margin:4px}"
             "table.headline{margin:0.5em 0}pre{font-size:85%}")
    _write_atomically(out_dir / "report.html",
        f"<!doctype html><html><head><meta charset='utf-8'><title>Course run</title><style>{style}</style>"
        f"</head><body>{''.join(body)}</body></html>\n")
    slim = [{k: v for k, v in r.items() if k != "figures"} | {"figures": len(r["figures"])} for r in results]
    _write_atomically(out_dir / "report.json", json.dumps({"mode": mode, "results": slim}, indent=2, default=str))
    return table + ("\n\nFailures:\n" + "\n".join(f"  {f}" for f in failures) if failures else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="default: every ch*.ipynb present")
    parser.add_argument("--mode", default="auto", choices=["auto", "smoke", "full"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--out", type=Path, help="default: runs/<mode>")
    parser.add_argument("--inplace", action="store_true", help="execute the committed notebooks themselves")
    parser.add_argument("--cell-timeout", type=int, metavar="SECONDS",
                        help=f"time limit per cell (default: {SMOKE_CELL_TIMEOUT_S} s in smoke mode, "
                             f"{FULL_CELL_TIMEOUT_S} s in full mode)")
    args = parser.parse_args(argv)
    if args.cell_timeout is not None and args.cell_timeout < 1:
        parser.error(f"--cell-timeout must be at least 1 second, got {args.cell_timeout}")
    missing = [str(n) for n in args.notebooks if not Path(n).is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    other = [str(n) for n in args.notebooks if Path(n).suffix != ".ipynb"]
    if other:  # else papermill's NotJSONError, after the report of a previous run was replaced
        parser.error(f"not a notebook (.ipynb): {', '.join(other)}; give chapter notebooks such as ch02_text_data.ipynb")

    mode = resolve_mode(args.mode)
    try:
        device = resolve_device(args.device)
    except (RuntimeError, ValueError) as e:
        parser.error(f"--device {args.device}: {e}")
    notebooks = [Path(n) for n in args.notebooks] or sorted(ROOT.glob("ch[0-9][0-9]_*.ipynb"))
    notebooks = [n if n.is_absolute() else (Path.cwd() / n) for n in notebooks]
    out_dir = (args.out or ROOT / "runs" / mode).resolve()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out_dir, prefix=".write-test-")  # now, not after hours of notebooks
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        parser.error(f"--out {out_dir} is not writable ({e.strerror}); choose another folder")
    print(f"Running {len(notebooks)} notebook(s) in {mode} mode on {device} -> {out_dir}")

    results, interrupted = [], False
    for nb in notebooks:
        print(f"  {nb.name} ...", end="", flush=True)
        t0 = time.perf_counter()
        try:
            result = run_one(nb, out_dir, mode, device, args.inplace, args.cell_timeout)
        except KeyboardInterrupt:  # Ctrl-C: report what finished, and which notebook was cut short
            interrupted = True
            result = {"notebook": nb.name, "status": "interrupted", "wall_s": round(time.perf_counter() - t0, 1),
                      "mode": mode, "device": device, "metrics": {}, "error": "stopped by Ctrl-C",
                      "failed_cell": None, "executed": "", "figures": []}
        results.append(result)
        print(f" {result['status']} ({result['wall_s']:.0f} s)")
        if interrupted:
            break

    print("\n" + write_reports(results, mode, out_dir))
    failed = [r["notebook"] for r in results if r["status"] != "ok"]
    skipped = len(notebooks) - len(results)
    print(f"\n{len(results) - len(failed)} ok, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else "")
          + (f", {skipped} not run (Ctrl-C)" if skipped else "") + f"\nReport: {out_dir / 'report.html'}")
    return 130 if interrupted else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
