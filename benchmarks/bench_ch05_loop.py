#!/usr/bin/env python3
"""Chapter 5's training loop (5.2: 124M shape, context 256, batch 2, AdamW, The Verdict) timed
in a notebook kernel and in a plain script, on the same machine, alternating.

    .venv/bin/python benchmarks/bench_ch05_loop.py                  # the chapter's 10 epochs, once each (~12 min idle)
    .venv/bin/python benchmarks/bench_ch05_loop.py --epochs 1 --rounds 2 --no-record   # a quicker look

Both sides run the same code string: build the loaders and GPTModel exactly as chapter 5
does, then time `train_model_simple` (with its evaluation every 5 steps and a greedy sample
per epoch, as in the notebook). The notebook side is a one-cell notebook executed by
`tools/run_course.execute`, the papermill + ipykernel path that `make course` uses; the script
side is `python -c` of the same code. Each side prints its torch thread counts, the training
seconds and the final losses, which must agree: same seed, same data, same machine.

Nothing is asserted: read the medians together with the load average printed beside them
(benchmarks/README.md explains what a busy machine does to a 2-core run).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_speed import append_results, cpu_name  # noqa: E402
from helpers.pretrain import NON_NEGATIVE_INT, POSITIVE_INT  # noqa: E402  (argparse types: a bad count is one line)

# The chapter-5 recipe, as one piece of code both sides run. {epochs}, {context}, {seed},
# {threads} and {overrides} (config keys) are filled in; the result is printed as one JSON line
# starting with RESULT.
LOOP = """
import contextlib, io, json, time
import torch
if {threads}:
    torch.set_num_threads({threads})
from helpers.model import GPT_CONFIG_124M, GPTModel
from helpers.support.data import fetch, gpt2_tokenizer
from helpers.text import create_dataloader_v1
from helpers.training import train_model_simple

cfg = {{**GPT_CONFIG_124M, "context_length": {context}, **{overrides}}}
tokenizer = gpt2_tokenizer()
text = fetch("the-verdict.txt", progress=False).read_text(encoding="utf-8")
split = int(0.9 * len(text))
torch.manual_seed({seed})
train_loader = create_dataloader_v1(text[:split], batch_size=2, max_length={context}, stride={context},
                                    shuffle=True, drop_last=True, tokenizer=tokenizer)
val_loader = create_dataloader_v1(text[split:], batch_size=2, max_length={context}, stride={context},
                                  shuffle=False, drop_last=False, tokenizer=tokenizer)
torch.manual_seed({seed})
model = GPTModel(cfg)
optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
t0 = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):  # the loop's own log: not part of the comparison
    train_losses, val_losses, _ = train_model_simple(
        model, train_loader, val_loader, optimizer, "cpu", num_epochs={epochs}, eval_freq=5, eval_iter=5,
        start_context="Every effort moves you", tokenizer=tokenizer, progress=False)
seconds = time.perf_counter() - t0
print("RESULT" + json.dumps({{"seconds": seconds, "steps": {epochs} * len(train_loader),
                             "train_loss": train_losses[-1], "val_loss": val_losses[-1],
                             "threads": torch.get_num_threads(), "interop": torch.get_num_interop_threads()}}))
"""


def parse_result(text: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith("RESULT"):
            return json.loads(line[len("RESULT"):])
    raise RuntimeError(f"the run printed no RESULT line; its output ended with:\n{text[-2000:]}")


def run_script(code: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"script run failed:\n{proc.stderr[-3000:]}")
    return parse_result(proc.stdout)


def run_notebook(code: str, workdir: Path) -> dict:
    import nbformat
    sys.path.insert(0, str(ROOT / "tools"))
    from run_course import execute

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src, out = workdir / "ch05_loop.ipynb", workdir / "ch05_loop.out.ipynb"
    nbformat.write(nb, src)
    execute(src, out, env={"TQDM_DISABLE": "1"})
    text = "".join(o.get("text", "") for o in nbformat.read(out, as_version=4).cells[0].outputs
                   if o.get("output_type") == "stream")
    return parse_result(text)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=POSITIVE_INT, default=10, help="passes over The Verdict (chapter 5: 10)")
    p.add_argument("--context", type=POSITIVE_INT, default=256, help="context length (chapter 5: 256)")
    p.add_argument("--rounds", type=POSITIVE_INT, default=1, help="notebook/script pairs, alternating")
    p.add_argument("--threads", type=NON_NEGATIVE_INT, default=0, help="torch.set_num_threads in both (0: PyTorch's default)")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=123)
    p.add_argument("--n-layers", type=POSITIVE_INT, help="override the 124M shape (quick checks)")
    p.add_argument("--emb-dim", type=POSITIVE_INT, help="override the 124M shape (quick checks)")
    p.add_argument("--n-heads", type=POSITIVE_INT, help="override the 124M shape (quick checks)")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    p.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    p.add_argument("--note", default="", help="free text for the results entry (e.g. 'machine idle')")
    args = p.parse_args(argv)

    overrides = {k: v for k, v in [("n_layers", args.n_layers), ("emb_dim", args.emb_dim), ("n_heads", args.n_heads)]
                 if v is not None}
    code = LOOP.format(epochs=args.epochs, context=args.context, seed=args.seed, threads=args.threads,
                       overrides=overrides)
    shape = "124M shape" + "".join(f", {k} {v}" for k, v in overrides.items())
    runs = {"notebook": [], "script": []}
    loads = []
    with tempfile.TemporaryDirectory(prefix="bench-ch05-") as tmp:
        for r in range(args.rounds):
            # alternate which side goes first, so a trend in the machine's load hits both alike
            order = ["notebook", "script"] if r % 2 == 0 else ["script", "notebook"]
            for side in order:
                loads.append(os.getloadavg()[0])
                t0 = time.perf_counter()
                result = run_notebook(code, Path(tmp)) if side == "notebook" else run_script(code)
                result["process_s"] = time.perf_counter() - t0
                runs[side].append(result)
                print(f"{side}: {result['seconds']:.1f} s of training ({result['process_s']:.1f} s with start-up), "
                      f"losses {result['train_loss']:.3f} / {result['val_loss']:.3f}, "
                      f"{result['threads']} / {result['interop']} threads", flush=True)

    lines = [f"### {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}: chapter 5 loop, notebook vs script",
             "",
             f"- machine: {cpu_name()}, {os.cpu_count()} CPUs, "
             f"{platform.system()} {platform.release()}",
             f"- load average (1 min) before each run: {', '.join(f'{x:.2f}' for x in loads)}"
             + (f"; {args.note}" if args.note else ""),
             f"- command: `{' '.join(['benchmarks/bench_ch05_loop.py'] + (argv if argv is not None else sys.argv[1:]))}`",
             "",
             f"**train_model_simple, {shape}, context {args.context}, batch 2, {args.epochs} epoch(s) "
             f"({runs['script'][0]['steps']} steps)**",
             "",
             "| where | training s (median) | runs (s) | s / step | threads / interop | final train / val loss |",
             "|---|---|---|---|---|---|"]
    median = {}
    for side, results in runs.items():
        median[side] = statistics.median(r["seconds"] for r in results)
        last = results[-1]
        seconds = ", ".join(f"{r['seconds']:.1f}" for r in results)
        lines.append(f"| {side} | {median[side]:.1f} | {seconds} | "
                     f"{median[side] / last['steps']:.2f} | {last['threads']} / {last['interop']} | "
                     f"{last['train_loss']:.3f} / {last['val_loss']:.3f} |")
    ref = runs["script"][0]
    same = all((r["train_loss"], r["val_loss"]) == (ref["train_loss"], ref["val_loss"])
               for rs in runs.values() for r in rs)
    lines += ["", f"- notebook / script time: **{median['notebook'] / median['script']:.2f}x**",
              f"- identical final losses on both sides: {same}", ""]
    text = "\n".join(lines)
    print(text)
    if not same:
        print("warning: the final losses differ between notebook and script", file=sys.stderr)
    if not args.no_record:
        append_results(args.results, "\n" + text)
    return runs


if __name__ == "__main__":
    main()
