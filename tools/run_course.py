#!/usr/bin/env python3
"""Run the course notebooks headless with papermill and print a short report.

    python tools/run_course.py                     # every chapter; smoke on CPU, full on a GPU
    python tools/run_course.py --mode full ch05_pretraining.ipynb
    python tools/run_course.py --inplace --mode full ch02_text_data.ipynb   # refresh a committed notebook

Executed copies and each notebook's metrics JSON go to runs/<mode>/ (git-ignored), with
report.json and report.md summarising status, wall time and recorded metrics.
`--inplace` re-executes the committed notebook itself (mode via COURSE_MODE, no injected
cell) and strips run-specific metadata, which is how the committed outputs are produced.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP_KEYS = {"notebook", "mode", "started", "elapsed_s"}


def resolve_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    import torch
    return "full" if torch.cuda.is_available() else "smoke"


def clean_metadata(path: Path) -> None:
    """Drop what changes on every run (papermill timings, execution stamps, widget state)."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    for key in ("papermill", "widgets"):
        nb.metadata.pop(key, None)
    for cell in nb.cells:
        for key in ("papermill", "execution", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            for out in cell.outputs:  # widget views of progress bars mean nothing once saved
                if "data" in out:
                    out["data"].pop("application/vnd.jupyter.widget-view+json", None)
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


def run_one(nb: Path, out_dir: Path, mode: str, device: str, inplace: bool) -> dict:
    import papermill as pm
    name = nb.stem
    metrics_path = (out_dir / f"{name}.metrics.json").resolve()
    metrics_path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    status, error = "ok", ""
    try:
        if inplace:  # the kernel inherits the mode through its environment
            saved = dict(os.environ)
            os.environ.update(COURSE_MODE=mode, COURSE_DEVICE=device, TQDM_DISABLE="1")
            try:
                pm.execute_notebook(str(nb), str(nb), cwd=str(ROOT), progress_bar=False)
            finally:
                os.environ.clear()
                os.environ.update(saved)
            clean_metadata(nb)
        else:
            pm.execute_notebook(str(nb), str(out_dir / nb.name), cwd=str(ROOT), progress_bar=False,
                                parameters={"mode": mode, "device": device,
                                            "metrics_path": str(metrics_path)})
    except Exception as e:  # one failing chapter must not hide the others' results
        status = "failed"
        error = str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__
    wall = time.perf_counter() - t0
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    return {"notebook": nb.name, "status": status, "wall_s": round(wall, 1),
            "metrics": metrics, "error": error}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="default: every ch*.ipynb present")
    parser.add_argument("--mode", default="auto", choices=["auto", "smoke", "full"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--out", type=Path, help="default: runs/<mode>")
    parser.add_argument("--inplace", action="store_true", help="execute the committed notebooks themselves")
    args = parser.parse_args(argv)

    mode = resolve_mode(args.mode)
    notebooks = [Path(n) for n in args.notebooks] or sorted(ROOT.glob("ch[0-9][0-9]_*.ipynb"))
    notebooks = [n if n.is_absolute() else (Path.cwd() / n) for n in notebooks]
    out_dir = (args.out or ROOT / "runs" / mode).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"Running {len(notebooks)} notebook(s) in {mode} mode on device={args.device} -> {out_dir}")

    results = []
    for nb in notebooks:
        print(f"  {nb.name} ...", end="", flush=True)
        result = run_one(nb, out_dir, mode, args.device, args.inplace)
        results.append(result)
        print(f" {result['status']} ({result['wall_s']:.0f} s)")

    lines = [f"| notebook | status | wall time | recorded metrics |", "|---|---|---|---|"]
    for r in results:
        detail = r["error"] if r["status"] != "ok" else summarize(r["metrics"])
        lines.append(f"| {r['notebook']} | {r['status']} | {r['wall_s']:.0f} s | {detail} |")
    report = "\n".join(lines)
    (out_dir / "report.md").write_text(f"# Course run ({mode} mode)\n\n{report}\n")
    (out_dir / "report.json").write_text(json.dumps({"mode": mode, "results": results}, indent=2))
    print("\n" + report)
    failed = [r["notebook"] for r in results if r["status"] != "ok"]
    print(f"\n{len(results) - len(failed)} ok, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
