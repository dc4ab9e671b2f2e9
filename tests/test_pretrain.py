"""python -m helpers.pretrain: one process against two (torchrun, gloo), gradient accumulation
against a larger batch, resuming (also a 2-process checkpoint in 1 process) against an
uninterrupted run, the checkpoint format, and clear errors for unusable data."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.model import GPTModel
from helpers.pretrain import DataError, cli, main, read_log

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--n-layers", "2", "--emb-dim", "32", "--n-heads", "4", "--context-length", "16", "--seed", "7"]
# No dropout: then the processes' split of a global batch is the only difference between runs.
SCHEDULE = ["--drop-rate", "0", "--lr", "1e-3", "--warmup-steps", "2", "--cosine", "1e-4", "--clip-grad", "1.0",
            "--max-steps", "8", "--eval-every", "4", "--eval-windows", "16"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory, verdict_text):
    path = tmp_path_factory.mktemp("data") / "verdict.txt"
    path.write_text(verdict_text[:12000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def one_process(text_file, tmp_path_factory):
    """The reference: 1 process, batch 4, 8 uninterrupted steps."""
    out = tmp_path_factory.mktemp("one")
    main(["--data", str(text_file), "--out", str(out), "--batch-size", "4", *TINY, *SCHEDULE])
    return read_log(out / "log.jsonl")


def _losses(rows, key="train_loss"):
    return {r["step"]: r[key] for r in rows if r[key] is not None}


def _assert_close(rows, reference, steps, key="train_loss", tol=1e-4):
    got, want = _losses(rows, key), _losses(reference, key)
    assert sorted(got) == list(steps), f"{key} logged at steps {sorted(got)}"
    for s in steps:
        assert abs(got[s] - want[s]) <= tol, f"step {s}: {key} {got[s]} vs {want[s]}"


def test_reference_run_learns_and_writes_book_checkpoint(one_process, text_file, tmp_path):
    assert [r["step"] for r in one_process] == list(range(1, 9))
    assert one_process[-1]["train_loss"] < one_process[0]["train_loss"]
    lrs = [r["lr"] for r in one_process]
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3)  # warm-up
    assert lrs[-1] == pytest.approx(1e-4)  # cosine reaches the minimum at the last step
    assert _losses(one_process, "val_loss").keys() == {4, 8}


def test_two_processes_match_one_then_resume_in_one_process(one_process, text_file, tmp_path):
    out = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "helpers.pretrain",
           "--data", str(text_file), "--out", str(out), "--batch-size", "2", *TINY, *SCHEDULE,
           "--stop-after", "5", "--device", "cpu"]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout  # rank 0 printed it, once
    assert result.stdout.count("process(es)") == 1
    rows = read_log(out / "log.jsonl")
    _assert_close(rows, one_process, range(1, 6))
    _assert_close(rows, one_process, [4], key="val_loss")

    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == 5 and ckpt["world_size"] == 2 and ckpt["global_batch"] == 4
    book = GPTModel(ckpt["cfg"])
    book.load_state_dict(ckpt["model"])  # plain GPTModel layout, no "module." or "_orig_mod." prefix

    # The 2-process checkpoint resumes in one process and continues as the uninterrupted run.
    main(["--data", str(text_file), "--out", str(out), "--batch-size", "4", *TINY, *SCHEDULE,
          "--resume", str(out / "checkpoint.pt")])
    rows = read_log(out / "log.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 9))
    _assert_close(rows, one_process, range(1, 9))
    _assert_close(rows, one_process, [4, 8], key="val_loss")


def test_gradient_accumulation_matches_the_larger_batch(one_process, text_file, tmp_path):
    log = tmp_path / "log.csv"
    main(["--data", str(text_file), "--out", str(tmp_path), "--batch-size", "2", "--grad-accum", "2",
          "--log", str(log), *TINY, *SCHEDULE])
    rows = read_log(log)
    assert log.read_text().splitlines()[0].startswith("step,epoch,tokens,lr,train_loss")
    _assert_close(rows, one_process, range(1, 9))


def test_interrupted_and_resumed_equals_uninterrupted_with_dropout(text_file, tmp_path):
    args = ["--data", str(text_file), "--batch-size", "2", *TINY, "--drop-rate", "0.1", "--max-steps", "6",
            "--model", "fast", "--tie-weights", "--grad-checkpointing"]
    main([*args, "--out", str(tmp_path / "full")])
    main([*args, "--out", str(tmp_path / "cut"), "--stop-after", "2"])
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["step"] == 2
    main([*args, "--out", str(tmp_path / "cut"), "--resume", str(tmp_path / "cut" / "checkpoint.pt")])
    full, cut = read_log(tmp_path / "full" / "log.jsonl"), read_log(tmp_path / "cut" / "log.jsonl")
    assert [r["step"] for r in cut] == list(range(1, 7))
    assert [r["train_loss"] for r in cut] == [r["train_loss"] for r in full]
    assert cut[-1]["val_loss"] == full[-1]["val_loss"]


def test_default_model_option_and_resume_needs_the_same_model(text_file, tmp_path):
    main(["--data", str(text_file), "--out", str(tmp_path), "--model", "default", "--batch-size", "2", *TINY,
          "--max-steps", "1", "--val-fraction", "0"])
    with pytest.raises(ValueError, match="exists: pass --resume"):  # a forgotten --resume
        main(["--data", str(text_file), "--out", str(tmp_path), "--model", "default", "--batch-size", "2", *TINY])
    with pytest.raises(ValueError, match="--model default"):
        main(["--data", str(text_file), "--out", str(tmp_path), "--batch-size", "2", *TINY, "--max-steps", "2",
              "--resume", str(tmp_path / "checkpoint.pt")])


def test_folder_of_text_files(tmp_path, verdict_text):
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "a.txt").write_text(verdict_text[:3000], encoding="utf-8")
    (tmp_path / "data" / "sub" / "b.txt").write_text(verdict_text[3000:6000], encoding="utf-8")
    (tmp_path / "data" / "ignored.md").write_text("not text for training")
    summary = main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--batch-size", "2",
                    *TINY, "--max-steps", "2"])
    assert summary["step"] == 2 and summary["val_loss"] is not None


def test_bad_inputs_give_clear_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .txt files under"):
        main(["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), *TINY])
    with pytest.raises(DataError, match="does not exist"):
        main(["--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o"), *TINY])
    (tmp_path / "blank.txt").write_text("  \n")
    with pytest.raises(DataError, match="is empty"):
        main(["--data", str(tmp_path / "blank.txt"), "--out", str(tmp_path / "o"), *TINY])
    (tmp_path / "short.txt").write_text("Too short for one window of sixteen tokens.")
    with pytest.raises(DataError, match="one window with max_length=16"):
        main(["--data", str(tmp_path / "short.txt"), "--out", str(tmp_path / "o"), *TINY])
    assert cli(["--data", str(tmp_path / "short.txt"), "--out", str(tmp_path / "o"), *TINY]) == 2
    assert "error: training text" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--batch-size must be at least 1"):
        main(["--data", str(tmp_path / "short.txt"), "--batch-size", "0", *TINY])


def test_ctrl_c_finishes_the_step_saves_and_resumes_exactly(text_file, tmp_path):
    """A real SIGINT to the script: exit code 130, a checkpoint at the last finished step, and the
    resumed run continues with the same losses as a run that was never stopped."""
    args = ["--data", str(text_file), "--batch-size", "2", *TINY, "--drop-rate", "0.1", "--max-steps", "100000",
            "--val-fraction", "0", "--device", "cpu"]
    out = tmp_path / "cut"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "helpers.pretrain", *args, "--out", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and len(log.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted: checkpoint at step" in stderr and "Traceback" not in stderr

    done = read_log(log)
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == len(done) == done[-1]["step"]  # every logged step is in the checkpoint
    assert json.loads((out / "summary.json").read_text())["stopped_by"] == "Ctrl-C"

    main([*args, "--out", str(out), "--resume", str(out / "checkpoint.pt"), "--stop-after", "3"])
    main([*args, "--out", str(tmp_path / "full"), "--stop-after", str(len(done) + 3)])
    resumed, full = read_log(log), read_log(tmp_path / "full" / "log.jsonl")
    assert [r["step"] for r in resumed] == list(range(1, len(done) + 4))
    # the interrupted part ran with 1 thread, the rest with this process's: rounding differs (~1e-7)
    assert [r["train_loss"] for r in resumed] == pytest.approx([r["train_loss"] for r in full], rel=1e-5)


def test_summary_reports_speed_memory_and_parameters(text_file, tmp_path):
    summary = main(["--data", str(text_file), "--out", str(tmp_path), "--batch-size", "2", *TINY,
                    "--max-steps", "3", "--tie-weights", "--device", "cpu"])
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    model = GPTModel({**torch.load(tmp_path / "checkpoint.pt", weights_only=True)["cfg"], "drop_rate": 0.0})
    untied = sum(p.numel() for p in model.parameters())
    assert summary["parameters"] == untied - model.out_head.weight.numel()  # tied: one matrix fewer
    assert summary["tok_s"] > 0 and summary["peak_memory_mib"] > 50 and summary["stopped_by"] is None
    # fused AdamW is on only for CUDA unless asked for
    groups = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"]
    assert not groups[0]["fused"]
    main(["--data", str(text_file), "--out", str(tmp_path / "fused"), "--batch-size", "2", *TINY,
          "--max-steps", "1", "--fused-adamw", "on", "--device", "cpu"])
    assert torch.load(tmp_path / "fused" / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"][0]["fused"]


def test_fast_and_default_model_start_alike_and_train_alike(text_file, tmp_path):
    """Same seed: FastGPTModel starts from GPTModel's weights, so --model changes only the speed."""
    args = ["--data", str(text_file), "--batch-size", "2", *TINY, "--max-steps", "3", "--val-fraction", "0"]
    main([*args, "--out", str(tmp_path / "default"), "--model", "default"])
    main([*args, "--out", str(tmp_path / "fast"), "--model", "fast"])
    main([*args, "--out", str(tmp_path / "tied"), "--model", "fast", "--tie-weights"])
    default, fast, tied = (read_log(tmp_path / name / "log.jsonl") for name in ("default", "fast", "tied"))
    assert [r["train_loss"] for r in fast] == pytest.approx([r["train_loss"] for r in default], abs=1e-5)
    assert abs(tied[0]["train_loss"] - default[0]["train_loss"]) > 1e-3  # a tied head is another model


def test_peak_memory_is_the_run_s_own_not_its_parent_s(text_file, tmp_path):
    # Linux's ru_maxrss of a child starts at its parent's size at fork: a notebook kernel holding
    # a large model would hide every run's own peak. The summary must count only the run.
    ballast = bytearray(b"x") * (1536 * 2**20)  # touched pages: the parent is now > 1.5 GiB
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "helpers.pretrain", "--data", str(text_file), "--out", str(tmp_path),
                    "--batch-size", "2", *TINY, "--max-steps", "2", "--device", "cpu"],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
    peak = json.loads((tmp_path / "summary.json").read_text())["peak_memory_mib"]
    assert 100 < peak < len(ballast) / 2**20


def test_autocast_bf16_and_fp16_train_close_to_float32_and_fp16_resumes_its_scaler(text_file, tmp_path):
    args = ["--data", str(text_file), "--batch-size", "2", *TINY, "--drop-rate", "0", "--max-steps", "4",
            "--eval-windows", "4", "--device", "cpu"]
    runs = {}
    for amp in ("none", "bf16", "fp16"):
        main([*args, "--out", str(tmp_path / amp), "--amp", amp])
        runs[amp] = [r["train_loss"] for r in read_log(tmp_path / amp / "log.jsonl")]
    for amp in ("bf16", "fp16"):
        assert runs[amp] != runs["none"]  # autocast really computed in the lower precision ...
        assert runs[amp] == pytest.approx(runs["none"], abs=0.05)  # ... and trained the same model
    # fp16 keeps a GradScaler; its state goes into the checkpoint and comes back on resume
    ckpt = torch.load(tmp_path / "fp16" / "checkpoint.pt", weights_only=True)
    assert ckpt["scaler"]["scale"] > 0 and "scaler" not in torch.load(tmp_path / "bf16" / "checkpoint.pt",
                                                                        weights_only=True)
    summary = main([*args, "--out", str(tmp_path / "fp16"), "--amp", "fp16", "--max-steps", "6",
                    "--resume", str(tmp_path / "fp16" / "checkpoint.pt")])
    assert summary["step"] == 6 and math.isfinite(summary["train_loss"])


def test_compiled_model_trains_like_the_eager_one_and_saves_plain_keys(text_file, tmp_path):
    args = ["--data", str(text_file), "--batch-size", "2", *TINY, "--drop-rate", "0", "--max-steps", "3",
            "--val-fraction", "0", "--device", "cpu"]
    main([*args, "--out", str(tmp_path / "eager")])
    main([*args, "--out", str(tmp_path / "compiled"), "--compile"])
    eager, compiled = (read_log(tmp_path / name / "log.jsonl") for name in ("eager", "compiled"))
    assert [r["train_loss"] for r in compiled] == pytest.approx([r["train_loss"] for r in eager], abs=1e-4)
    ckpt = torch.load(tmp_path / "compiled" / "checkpoint.pt", weights_only=True)
    GPTModel(ckpt["cfg"]).load_state_dict(ckpt["model"])  # no "_orig_mod." prefixes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc setting")
def test_large_tensors_are_reused_from_the_heap_not_faulted_in_again():
    """What keep_large_tensors_on_the_heap buys: a freed large tensor's memory is reused by the
    next one instead of being returned to the kernel and faulted in again, page by page."""
    code = (
        "import resource, sys, torch\n"
        "from helpers.pretrain import keep_large_tensors_on_the_heap\n"
        "if sys.argv[1] == 'heap':\n"
        "    assert keep_large_tensors_on_the_heap()\n"
        "for _ in range(3):  # 100 MB, like a step's logits or an embedding gradient; the first steps warm up\n"
        "    x = torch.ones(25_000_000); del x\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(5):\n"
        "    x = torch.ones(25_000_000); del x\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    faults = {how: int(subprocess.run([sys.executable, "-c", code, how], env=env, capture_output=True, text=True,
                                      check=True, timeout=120).stdout)
              for how in ("system", "heap")}
    assert faults["system"] >= 5 * 40  # each 100 MB tensor faulted in anew (>= 40 even with 2 MB huge pages)
    assert faults["heap"] * 10 < faults["system"]
