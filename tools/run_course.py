#!/usr/bin/env python3
"""Run the course notebooks headless with papermill and write a report.

    python tools/run_course.py                     # every chapter; smoke on CPU, full on a GPU
    python tools/run_course.py --mode full ch05_pretraining.ipynb
    python tools/run_course.py --inplace --mode full ch02_text_data.ipynb   # refresh a committed notebook

Executed copies and each notebook's metrics JSON go to runs/<mode>/ (git-ignored), with
report.md, report.html (one page, figures embedded) and report.json: status, wall time, mode,
device, recorded metrics and the figures of cells tagged `report-figure`. A failing notebook
does not stop the others; the report names its failing cell and error, and the command exits 1.
`--inplace` re-executes the committed notebook itself (mode via COURSE_MODE, no injected
cell) and strips run-specific metadata, which is how the committed outputs are produced.

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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP_KEYS = {"notebook", "mode", "started", "elapsed_s"}
FIGURE_TAG = "report-figure"
# No smoke-mode cell takes a minute on 2 cores; a stalled one is retried (see execute()).
SMOKE_CELL_TIMEOUT_S = 300
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
            cell_timeout: int | None = None) -> None:
    """Execute a notebook with papermill (cwd: the repository root); raises papermill's
    PapermillExecutionError, which names the failing cell, when a cell fails.

    The kernel client polls in short slices (`sliced_poll_kernel_manager`), which ends the
    headless stalls after widget cells. `cell_timeout` (seconds per cell) stays as a backstop:
    a notebook with a cell that produces no reply in time is run once more from the start, with
    a warning; a second timeout fails.
    """
    import papermill as pm
    for attempt in (1, 2):
        try:
            with _environment(env or {}):
                pm.execute_notebook(str(nb_in), str(nb_out), parameters=parameters, cwd=str(ROOT),
                                    progress_bar=False, kernel_name="python3", extra_arguments=KERNEL_ARGS,
                                    execution_timeout=cell_timeout, kernel_manager_class=sliced_poll_kernel_manager())
            return
        except Exception as e:
            timed_out = isinstance(e, TimeoutError) or "Timeout" in f"{getattr(e, 'ename', '')}{type(e).__name__}"
            if attempt == 2 or cell_timeout is None or not timed_out:
                raise
            print(f"warning: {nb_in.name}: a cell produced no reply within {cell_timeout} s; "
                  f"running the notebook once more", file=sys.stderr)


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


def clean_metadata(path: Path) -> None:
    """Drop what changes on every run (papermill timings, execution stamps, widget state), and
    turn progress-bar widgets into text showing their final state."""
    import nbformat
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
                if view is not None and (text := _final_bar_text(view, widget_state)) is not None:
                    out["data"]["text/plain"] = text
            cell.outputs = [o for o in cell.outputs if not ("data" in o and not o["data"])]
    nbformat.write(nb, path)


def summarize(metrics: dict, width: int = 110) -> str:
    parts = []
    for key, value in metrics.items():
        if key in SKIP_KEYS:
            continue
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, list):
            value = f"[{len(value)} values]" if len(value) > 3 else value
        parts.append(f"{key}={value}")
    text = ", ".join(parts)
    return text if len(text) <= width else text[: width - 1] + "…"


def figures(nb_path: Path) -> list[str]:
    """Base64 PNGs of the cells tagged `report-figure` in an executed notebook."""
    import nbformat
    if not nb_path.exists():
        return []
    nb = nbformat.read(nb_path, as_version=4)
    return [out["data"]["image/png"] for cell in nb.cells
            if cell.cell_type == "code" and FIGURE_TAG in cell.metadata.get("tags", [])
            for out in cell.outputs if "image/png" in out.get("data", {})]


def run_one(nb: Path, out_dir: Path, mode: str, device: str, inplace: bool) -> dict:
    name = nb.stem
    # --inplace runs the notebook as committed, so it writes its metrics to its own default path
    metrics_path = (ROOT / "runs" / "interactive" if inplace else out_dir).resolve() / f"{name}.metrics.json"
    metrics_path.unlink(missing_ok=True)
    executed = nb if inplace else out_dir / nb.name
    t0 = time.perf_counter()
    status, error, failed_cell = "ok", "", None
    try:
        if inplace:  # no injected cell in a committed notebook: the kernel reads its environment
            # progress bars on (tests switch them off), saved in their final state by clean_metadata
            execute(nb, nb, env={"COURSE_MODE": mode, "COURSE_DEVICE": device, "TQDM_DISABLE": None})
            clean_metadata(nb)
        else:
            execute(nb, executed, parameters={"mode": mode, "device": device,
                                              "metrics_path": str(metrics_path)},
                    cell_timeout=SMOKE_CELL_TIMEOUT_S if mode == "smoke" else None)
    except Exception as e:  # one failing chapter must not hide the others' results
        status = "failed"
        if hasattr(e, "exec_count"):  # papermill's PapermillExecutionError
            first_line = next((ln for ln in str(e.source).splitlines() if ln.strip()), "")
            failed_cell = {"index": e.cell_index, "execution_count": e.exec_count, "first_line": first_line[:120]}
            error = f"{e.ename}: {e.evalue}"[:300]
        else:
            error = str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__
    wall = time.perf_counter() - t0
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    return {"notebook": nb.name, "status": status, "wall_s": round(wall, 1), "mode": mode, "device": device,
            "metrics": metrics, "error": error, "failed_cell": failed_cell, "executed": str(executed),
            "figures": figures(executed)}


def _failure_line(r: dict) -> str:
    cell = r["failed_cell"]
    where = (f"cell {cell['index']} (execution count {cell['execution_count']}: `{cell['first_line']}`)"
             if cell else "before any cell ran")
    return f"{r['notebook']}: {where}: {r['error']}"


def write_reports(results: list[dict], mode: str, out_dir: Path) -> str:
    """Write report.md, report.html and report.json into out_dir; return the summary table."""
    rows = ["| notebook | status | wall time | mode | device | recorded metrics |", "|---|---|---|---|---|---|"]
    for r in results:
        detail = r["error"] if r["status"] != "ok" else summarize(r["metrics"])
        rows.append(f"| {r['notebook']} | {r['status']} | {r['wall_s']:.0f} s | {r['mode']} | {r['device']} | {detail} |")
    table = "\n".join(rows)
    failures = [_failure_line(r) for r in results if r["status"] != "ok"]

    md = [f"# Course run ({mode} mode)", "", table, ""]
    if failures:
        md += ["## Failures", ""] + [f"- {line}" for line in failures] + [""]
    fig_dir = out_dir / "figures"
    for r in results:
        for k, png in enumerate(r["figures"]):
            fig_dir.mkdir(exist_ok=True)
            name = f"{Path(r['notebook']).stem}-{k + 1}.png"
            (fig_dir / name).write_bytes(base64.b64decode(png))
            md.append(f"![{r['notebook']} figure {k + 1}](figures/{name})")
    (out_dir / "report.md").write_text("\n".join(md) + "\n")

    esc = html.escape
    body = [f"<h1>Course run ({esc(mode)} mode)</h1>", "<table><tr><th>notebook</th><th>status</th>"
            "<th>wall time</th><th>mode</th><th>device</th><th>recorded metrics</th></tr>"]
    for r in results:
        detail = r["error"] if r["status"] != "ok" else summarize(r["metrics"], width=400)
        body.append(f"<tr class='{r['status']}'><td>{esc(r['notebook'])}</td><td>{r['status']}</td>"
                    f"<td>{r['wall_s']:.0f} s</td><td>{esc(r['mode'])}</td><td>{esc(r['device'])}</td>"
                    f"<td>{esc(detail)}</td></tr>")
    body.append("</table>")
    if failures:
        body.append("<h2>Failures</h2><ul>" + "".join(f"<li>{esc(f)}</li>" for f in failures) + "</ul>")
    for r in results:
        if r["figures"]:
            body.append(f"<h2>{esc(r['notebook'])}</h2>" + "".join(
                f"<img alt='figure' src='data:image/png;base64,{png}'>" for png in r["figures"]))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
             "tr.failed td{background:#fdd}img{max-width:48%;margin:4px}")
    (out_dir / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>Course run</title><style>{style}</style>"
        f"</head><body>{''.join(body)}</body></html>\n", encoding="utf-8")
    slim = [{k: v for k, v in r.items() if k != "figures"} | {"figures": len(r["figures"])} for r in results]
    (out_dir / "report.json").write_text(json.dumps({"mode": mode, "results": slim}, indent=2))
    return table + ("\n\nFailures:\n" + "\n".join(f"  {f}" for f in failures) if failures else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="default: every ch*.ipynb present")
    parser.add_argument("--mode", default="auto", choices=["auto", "smoke", "full"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--out", type=Path, help="default: runs/<mode>")
    parser.add_argument("--inplace", action="store_true", help="execute the committed notebooks themselves")
    args = parser.parse_args(argv)

    mode = resolve_mode(args.mode)
    device = resolve_device(args.device)
    notebooks = [Path(n) for n in args.notebooks] or sorted(ROOT.glob("ch[0-9][0-9]_*.ipynb"))
    notebooks = [n if n.is_absolute() else (Path.cwd() / n) for n in notebooks]
    out_dir = (args.out or ROOT / "runs" / mode).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"Running {len(notebooks)} notebook(s) in {mode} mode on {device} -> {out_dir}")

    results = []
    for nb in notebooks:
        print(f"  {nb.name} ...", end="", flush=True)
        result = run_one(nb, out_dir, mode, device, args.inplace)
        results.append(result)
        print(f" {result['status']} ({result['wall_s']:.0f} s)")

    print("\n" + write_reports(results, mode, out_dir))
    failed = [r["notebook"] for r in results if r["status"] != "ok"]
    print(f"\n{len(results) - len(failed)} ok, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else "")
          + f"\nReport: {out_dir / 'report.html'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
