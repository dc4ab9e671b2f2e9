"""python -m helpers.pretrain: one process against two (torchrun, gloo), gradient accumulation
against a larger batch, resuming (also a 2-process checkpoint in 1 process) against an
uninterrupted run, the checkpoint format, and clear errors for unusable data."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.model import GPTModel
from helpers.pretrain import DataError, build_parser, cli, main, read_log, read_texts

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
def one_process_out(text_file, tmp_path_factory):
    """The reference: 1 process, batch 4, 8 uninterrupted steps; its output folder."""
    out = tmp_path_factory.mktemp("one")
    main(["--data", str(text_file), "--out", str(out), "--batch-size", "4", *TINY, *SCHEDULE])
    return out


@pytest.fixture(scope="module")
def one_process(one_process_out):
    """The reference run's log rows."""
    return read_log(one_process_out / "log.jsonl")


def _losses(rows, key="train_loss"):
    return {r["step"]: r[key] for r in rows if r[key] is not None}


def _assert_close(rows, reference, steps, key="train_loss", tol=1e-4):
    got, want = _losses(rows, key), _losses(reference, key)
    assert sorted(got) == list(steps), f"{key} logged at steps {sorted(got)}"
    for s in steps:
        assert abs(got[s] - want[s]) <= tol, f"step {s}: {key} {got[s]} vs {want[s]}"


def test_reference_run_learns_and_writes_book_checkpoint(one_process, one_process_out):
    assert [r["step"] for r in one_process] == list(range(1, 9))
    assert one_process[-1]["train_loss"] < one_process[0]["train_loss"]
    lrs = [r["lr"] for r in one_process]
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3)  # warm-up
    assert lrs[-1] == pytest.approx(1e-4)  # cosine reaches the minimum at the last step
    assert _losses(one_process, "val_loss").keys() == {4, 8}
    # the checkpoint: the last step, and a state dict the book's GPTModel loads as it is
    ckpt = torch.load(one_process_out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == 8 and ckpt["world_size"] == 1
    book = GPTModel(ckpt["cfg"])
    book.load_state_dict(ckpt["model"])
    assert torch.equal(book.tok_emb.weight, ckpt["model"]["tok_emb.weight"])


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
    (tmp_path / "data" / "z.txt").write_text(verdict_text[6000:7000], encoding="utf-8")  # written first
    (tmp_path / "data" / "a.txt").write_text(verdict_text[:3000], encoding="utf-8")
    (tmp_path / "data" / "sub" / "b.txt").write_text(verdict_text[3000:6000], encoding="utf-8")
    (tmp_path / "data" / "ignored.md").write_text("not text for training")
    summary = main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--batch-size", "2",
                    *TINY, "--max-steps", "2"])
    assert summary["step"] == 2 and summary["val_loss"] is not None
    # every .txt file, the nested one too, in sorted order and joined as separate documents; no .md
    text = read_texts(tmp_path / "data")
    assert text == "<|endoftext|>".join([verdict_text[:3000], verdict_text[3000:6000], verdict_text[6000:7000]])


def test_bad_inputs_give_clear_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .txt files under"):
        main(["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), *TINY])
    with pytest.raises(DataError, match="does not exist"):
        main(["--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o"), *TINY])
    with pytest.raises(DataError, match="^--data /dev/null is not a regular file or folder; give a text file"):
        main(["--data", "/dev/null", "--out", str(tmp_path / "o"), *TINY])
    (tmp_path / "blank.txt").write_text("  \n")
    with pytest.raises(DataError, match="^--data: the text in .*blank.txt is empty .*give a file with text"):
        main(["--data", str(tmp_path / "blank.txt"), "--out", str(tmp_path / "o"), *TINY])
    (tmp_path / "short.txt").write_text("Too short for one window of sixteen tokens.")
    with pytest.raises(DataError, match="one window of 16 tokens needs 17"):
        main(["--data", str(tmp_path / "short.txt"), "--out", str(tmp_path / "o"), *TINY])
    assert cli(["--data", str(tmp_path / "short.txt"), "--out", str(tmp_path / "o"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "error: training text" in err and "a smaller --context-length" in err and "max_length" not in err
    (tmp_path / "nul.txt").write_bytes(b"\0" * 200_000)  # binary data would otherwise train without a word
    with pytest.raises(DataError, match="100% NUL bytes.*not text"):
        main(["--data", str(tmp_path / "nul.txt"), "--out", str(tmp_path / "o"), *TINY])
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 100)
    with pytest.raises(DataError, match="latin1.txt is not UTF-8 text"):
        main(["--data", str(tmp_path / "latin1.txt"), "--out", str(tmp_path / "o"), *TINY])
    assert not (tmp_path / "o").exists()  # a run that failed before its first save leaves no folder


BAD_OPTIONS = [  # option, value, words the one-line message must hold
    ("--clip-grad", "-1", "> 0"), ("--clip-grad", "0", "> 0"), ("--lr", "0", "> 0"), ("--lr", "nan", "> 0"),
    ("--max-steps", "0", ">= 1"), ("--max-steps", "-5", ">= 1"), ("--eval-windows", "0", ">= 1"),
    ("--eval-every", "-1", ">= 0"), ("--stride", "0", ">= 1"), ("--warmup-steps", "-5", ">= 0"),
    ("--n-layers", "0", ">= 1"), ("--emb-dim", "0", ">= 1"), ("--batch-size", "0", ">= 1"),
    ("--val-fraction", "1", "< 1"), ("--drop-rate", "-0.1", ">= 0"), ("--save-minutes", "-1", ">= 0"),
    ("--weight-decay", "inf", ">= 0"), ("--epochs", "two", "an integer"), ("--seed", "-1", ">= 0"),
    ("--seed", str(2**32), "<= 4294967295")]  # the per-step seeds add to it: no overflow in torch.manual_seed


@pytest.mark.parametrize("option,value,words", BAD_OPTIONS, ids=[f"{o}={v}" for o, v, _ in BAD_OPTIONS])
def test_every_numeric_option_is_checked_by_name(option, value, words, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli(["--data", "x.txt", "--out", str(tmp_path / "o"), option, value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"argument {option}: must be" in err and words in err and f"got '{value}'" in err
    assert not (tmp_path / "o").exists()


def test_options_that_contradict_each_other_are_refused(tmp_path, capsys):
    base = ["--data", "x.txt", "--out", str(tmp_path / "o")]
    assert cli([*base, "--lr", "1e-3", "--cosine", "1.0"]) == 2  # the lr would climb to 1.0
    assert "--cosine 1 is above --lr 0.001" in capsys.readouterr().err
    assert cli([*base, "--emb-dim", "30", "--n-heads", "4"]) == 2
    assert "--emb-dim 30 is not divisible by --n-heads 4" in capsys.readouterr().err
    for flag, value in (("--eval-every", "5"), ("--eval-windows", "2")):  # nothing to evaluate on
        assert cli([*base, "--val-fraction", "0", flag, value]) == 2
        assert f"{flag} needs validation windows, and --val-fraction 0 keeps none" in capsys.readouterr().err
    assert cli([*base, "--log", str(tmp_path / "run.log")]) == 2  # would have become JSON lines silently
    assert f"--log {tmp_path / 'run.log'}: name the log .csv or .jsonl" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    if not torch.cuda.is_available():
        assert cli([*base, "--device", "cuda"]) == 2
        assert "--device cuda: device='cuda' was asked for" in capsys.readouterr().err


def test_run_length_batch_and_log_problems_are_named_before_training(text_file, tmp_path, capsys):
    base = ["--data", str(text_file), "--out", str(tmp_path / "o"), *TINY]
    assert cli([*base, "--max-steps", "4", "--warmup-steps", "5"]) == 2  # the rate would never reach --lr
    assert "--warmup-steps 5 is longer than the run's 4 steps" in capsys.readouterr().err
    assert cli([*base, "--batch-size", "4096"]) == 2
    err = capsys.readouterr().err
    assert "fewer than one global batch of 4096" in err and "lower --batch-size or --grad-accum" in err
    (tmp_path / "logs").mkdir()
    assert cli([*base, "--log", str(tmp_path / "logs")]) == 2  # else found by os.replace at the first save
    assert f"--log {tmp_path / 'logs'} is a folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_an_offline_machine_without_the_tokenizer_is_told_how_to_fill_the_cache(text_file, tmp_path, capsys,
                                                                                monkeypatch):
    import helpers.support.data as data

    def offline(data_dir=None):
        raise data.DownloadError("could not download https://openaipublic.example/vocab.bpe: offline\n(more)")
    monkeypatch.setattr(data, "gpt2_tokenizer", offline)
    assert cli(["--data", str(text_file), "--out", str(tmp_path / "o"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "python -m helpers.support fetch" in err and "seed DIR" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_an_uppercase_csv_log_is_written_and_read_as_csv(text_file, tmp_path):
    log = tmp_path / "LOG.CSV"
    main(["--data", str(text_file), "--out", str(tmp_path / "o"), *TINY, "--max-steps", "2", "--log", str(log)])
    assert log.read_text().startswith("step,")
    assert [r["step"] for r in read_log(log)] == [1, 2]


def test_resuming_keeps_an_older_versions_json_lines_log_named_dot_csv(two_steps, text_file, tmp_path, capsys):
    """Before 2026-12 only a lower-case .csv meant CSV: an older run's LOG.CSV holds JSON lines.
    Resuming cuts and appends it as JSON lines, losing none of its rows."""
    run = _copy(two_steps, tmp_path / "run")
    (run / "log.jsonl").rename(run / "LOG.CSV")
    old_rows = read_log(run / "LOG.CSV")
    assert [r["step"] for r in old_rows] == [1, 2]
    with (run / "LOG.CSV").open("a") as f:  # trained after the checkpoint, never saved: cut
        f.write(json.dumps({**old_rows[-1], "step": 3}) + "\n")
    assert cli(_resume_args(text_file, run, "--max-steps", "4", "--log", str(run / "LOG.CSV"))) == 0
    lines = (run / "LOG.CSV").read_text().splitlines()
    assert all(line.startswith("{") for line in lines), lines
    rows = read_log(run / "LOG.CSV")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[:2] == old_rows
    assert "removed 1 row(s) after step 2" in capsys.readouterr().err


def test_a_log_outside_out_that_holds_another_runs_rows_is_not_replaced(two_steps, text_file, tmp_path, capsys):
    shared = tmp_path / "shared.jsonl"  # e.g. a --log path copied from another run's command line
    main(["--data", str(text_file), "--out", str(tmp_path / "first"), *TINY, "--max-steps", "1", "--log", str(shared)])
    first_rows = shared.read_text()
    second = ["--data", str(text_file), "--out", str(tmp_path / "second"), *TINY, "--max-steps", "1",
              "--log", str(shared)]
    assert cli(second) == 2
    assert f"--log {shared} already holds another run's log" in capsys.readouterr().err
    assert shared.read_text() == first_rows and not (tmp_path / "second").exists()
    # resuming the run that wrote it, in its own folder, continues that log
    first = tmp_path / "first"
    assert cli(["--data", str(text_file), "--out", str(first), *TINY, "--max-steps", "2", "--log", str(shared),
                "--resume", str(first / "checkpoint.pt")]) == 0
    assert [r["step"] for r in read_log(shared)] == [1, 2]
    # another run resumed in its own folder may not cut that log back to its own step
    run = _copy(two_steps, tmp_path / "run")
    assert cli(_resume_args(text_file, run, "--max-steps", "3", "--log", str(shared))) == 2
    assert f"--log {shared} is not the log of the run in {run / 'checkpoint.pt'}" in capsys.readouterr().err
    assert [r["step"] for r in read_log(shared)] == [1, 2]
    # with --overwrite it is replaced by that run's rows (at its first save), not cut back and appended to
    assert cli(_resume_args(text_file, run, "--max-steps", "3", "--log", str(shared), "--overwrite")) == 0
    assert [r["step"] for r in read_log(shared)] == [3]
    main([*second, "--overwrite"])  # asked for: replaced
    assert [r["step"] for r in read_log(shared)] == [1]


def test_a_checkpoint_whose_config_cannot_build_a_model_is_named(two_steps, tmp_path):
    from helpers.pretrain import CheckpointError, read_checkpoint
    payload = torch.load(two_steps / "checkpoint.pt", weights_only=True)
    for cfg, words in (({k: v for k, v in payload["cfg"].items() if k != "n_heads"}, "lacks"), (7, "not iterable"),
                       ({**payload["cfg"], "emb_dim": 0}, "positive integer")):
        torch.save({**payload, "cfg": cfg}, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError, match=f"--resume {tmp_path / 'bad.pt'}: its model config is not usable"
                                                  rf"[\s\S]*{words}"):
            read_checkpoint(tmp_path / "bad.pt")


def test_out_of_memory_is_one_line_naming_the_options(text_file, tmp_path, capsys, monkeypatch):
    from helpers import pretrain

    def no_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.7 GiB total)")
    monkeypatch.setattr(pretrain, "main", no_memory)
    assert cli(["--data", str(text_file), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "error: out of memory (CUDA out of memory." in err and "--batch-size" in err and "--grad-accum" in err
    for raised in (MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                               "can't allocate memory: you tried to allocate 9663676416 bytes")):
        monkeypatch.setattr(pretrain, "main", lambda *a, e=raised, **k: (_ for _ in ()).throw(e))
        assert cli(["--data", str(text_file), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: out of memory (") and len(err.strip().splitlines()) == 1, err

    def a_bug(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    monkeypatch.setattr(pretrain, "main", a_bug)
    with pytest.raises(RuntimeError, match="shapes"):  # not a user error: the traceback stays
        cli(["--data", str(text_file), "--out", str(tmp_path / "o")])


def test_read_log_skips_a_half_written_last_row(tmp_path):
    jsonl, csv_log = tmp_path / "log.jsonl", tmp_path / "log.csv"
    jsonl.write_text('{"step": 1, "train_loss": 2.5}\n{"step": 2, "train_lo')
    assert read_log(jsonl) == [{"step": 1, "train_loss": 2.5}]
    from helpers.pretrain import LOG_COLUMNS
    row = {c: "" for c in LOG_COLUMNS} | {"step": "1"}
    csv_log.write_text(",".join(LOG_COLUMNS) + "\n" + ",".join(row[c] for c in LOG_COLUMNS) + "\n2,0,12")
    assert [r["step"] for r in read_log(csv_log)] == [1]


def test_a_log_that_cannot_replace_the_old_one_keeps_this_runs_rows(text_file, tmp_path, capsys, monkeypatch):
    """The checkpoint is saved, then the staged log fails to take the old log's place: the error
    says where this run's rows are, and they are not deleted on the way out."""
    out = tmp_path / "o"
    out.mkdir()
    old_log = out / "log.jsonl"
    old_log.write_text('{"step": 1}\n')  # another run's log
    real_replace = os.replace

    def failing(src, dst, *args, **kwargs):
        if str(src).endswith(".new"):
            raise OSError(5, "Input/output error")
        return real_replace(src, dst, *args, **kwargs)
    monkeypatch.setattr(os, "replace", failing)
    assert cli(["--data", str(text_file), "--out", str(out), *TINY, "--max-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "was saved at step 2, but its log" in err and "could not be written" in err and "Traceback" not in err
    (staged,) = out.glob(".log.jsonl.*.new")
    assert f"rows are in {staged}: move it to {old_log}, then resume" in err
    assert [json.loads(line)["step"] for line in staged.read_text().splitlines()] == [1, 2]
    assert old_log.read_text() == '{"step": 1}\n' and (out / "checkpoint.pt").exists()


def test_a_checkpoint_that_cannot_be_read_says_so_not_that_it_is_damaged(tmp_path, monkeypatch):
    from helpers.pretrain import CheckpointError, read_checkpoint
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"PK" + b"\0" * 100)
    real_open = Path.open

    def deny(self, *args, **kwargs):  # chmod 000 does not stop root, who runs CI
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)
    monkeypatch.setattr(Path, "open", deny)
    with pytest.raises(CheckpointError, match=r"cannot read it \(Permission denied\); check its permissions"):
        read_checkpoint(path)


@pytest.mark.parametrize("oom", [MemoryError(), RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried "
                                                              "to allocate 8589934592 bytes")])
def test_a_checkpoint_too_big_for_memory_is_not_called_damaged(two_steps, monkeypatch, oom):
    from helpers.pretrain import CheckpointError, read_checkpoint
    path = two_steps / "checkpoint.pt"
    before = path.read_bytes()

    def no_memory(*args, **kwargs):
        raise oom
    monkeypatch.setattr(torch, "load", no_memory)
    with pytest.raises(CheckpointError, match=r"ran out of memory while loading it .*the file itself may be fine"):
        read_checkpoint(path)
    assert path.read_bytes() == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="names the descriptor's file through /proc")
def test_a_staged_log_is_on_disk_before_it_replaces_the_old_one(tmp_path, monkeypatch):
    from helpers.pretrain import RunLog
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1}\n')
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    log = RunLog(path, staged=True)
    log.write({"step": 7})
    assert path.read_text() == '{"step": 1}\n'  # the old log stays until the commit
    log.commit()
    assert json.loads(path.read_text()) == {"step": 7}
    assert synced and Path(synced[0]).name.startswith(".log.jsonl.")  # the staged file, before its rename


def _signal_a_run(args, ready, sig):
    """Run the script in a child process until `ready()` holds (2 minutes at most), send `sig`,
    and check that it stopped as a stopped run must: exit code 128 + sig, the checkpoint named,
    no traceback."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "helpers.pretrain", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr[-2000:]
    assert f"interrupted ({signal.Signals(sig).name}): checkpoint at step" in stderr and "Traceback" not in stderr


def test_ctrl_c_finishes_the_step_saves_and_resumes_exactly(text_file, tmp_path):
    """A real SIGINT to the script: exit code 130, a checkpoint at the last finished step, and the
    resumed run continues with the same losses as a run that was never stopped."""
    args = ["--data", str(text_file), "--batch-size", "2", *TINY, "--drop-rate", "0.1", "--max-steps", "100000",
            "--val-fraction", "0", "--device", "cpu"]
    out = tmp_path / "cut"
    log = out / "log.jsonl"
    _signal_a_run([*args, "--out", str(out)], lambda: log.exists() and len(log.read_text().splitlines()) >= 3,
                  signal.SIGINT)

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


def test_bf16_on_a_machine_without_it_trains_as_fp16_with_loss_scaling(text_file, tmp_path, monkeypatch, capsys):
    # Colab's T4 path, rehearsed on the CPU: COURSE_NO_BF16 makes every device look like a GPU
    # before Ampere. --amp bf16 must then take exactly the fp16 path (same losses, a GradScaler
    # in the checkpoint) and say so; --amp auto is float32 on a CPU.
    args = ["--data", str(text_file), "--batch-size", "2", *TINY, "--drop-rate", "0", "--max-steps", "3",
            "--eval-windows", "4", "--device", "cpu"]
    fp16 = main([*args, "--out", str(tmp_path / "fp16"), "--amp", "fp16"])
    none = main([*args, "--out", str(tmp_path / "none")])
    auto = main([*args, "--out", str(tmp_path / "auto"), "--amp", "auto"])
    capsys.readouterr()
    monkeypatch.setenv("COURSE_NO_BF16", "1")
    forced = main([*args, "--out", str(tmp_path / "forced"), "--amp", "bf16"])
    assert "runs as float16 with loss scaling" in capsys.readouterr().err
    assert (forced["autocast"], fp16["autocast"], auto["autocast"], none["autocast"]) == (
        "float16", "float16", "none", "none")
    losses = {name: [r["train_loss"] for r in read_log(tmp_path / name / "log.jsonl")]
              for name in ("fp16", "forced", "none", "auto")}
    assert losses["forced"] == losses["fp16"] and losses["auto"] == losses["none"] != losses["fp16"]
    assert torch.load(tmp_path / "forced" / "checkpoint.pt", weights_only=True)["scaler"]["scale"] > 0


def test_chunked_loss_trains_like_the_plain_one_and_needs_the_fast_model(text_file, tmp_path, capsys):
    args = ["--data", str(text_file), "--batch-size", "2", *TINY, "--max-steps", "4", "--eval-windows", "4",
            "--grad-accum", "2", "--device", "cpu"]  # dropout on: the same masks in both runs
    main([*args, "--out", str(tmp_path / "plain")])
    main([*args, "--out", str(tmp_path / "chunked"), "--chunked-loss"])
    plain, chunked = (read_log(tmp_path / name / "log.jsonl") for name in ("plain", "chunked"))
    assert [r["train_loss"] for r in chunked] == pytest.approx([r["train_loss"] for r in plain], abs=1e-5)
    assert cli([*args, "--out", str(tmp_path / "default"), "--model", "default", "--chunked-loss"]) == 2
    assert "--chunked-loss needs --model fast" in capsys.readouterr().err


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
        # 100 MB, like a step's logits or an embedding gradient. The first rounds warm up: on Python 3.10
        # with PyPI's torch the heap took up to 6 rounds to settle (3.11: 2), then faulted nothing.
        "for _ in range(10):\n"
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


# ---- nothing lost: the last good checkpoint, the folder, the log ----------------------------

@pytest.fixture(scope="module")
def two_steps(text_file, tmp_path_factory):
    """A finished 2-step run (seed 5) to resume from; tests copy it before touching it."""
    out = tmp_path_factory.mktemp("two_steps") / "run"
    main(["--data", str(text_file), "--out", str(out), "--batch-size", "2", *TINY, "--seed", "5",
          "--max-steps", "2", "--eval-windows", "2"])
    return out


def test_the_closing_line_rounds_both_losses_as_the_summary_holds_them(text_file, tmp_path, capsys):
    """The train loss used to be printed with every digit of a float (11.082892417907715)."""
    out = tmp_path / "run"
    main(["--data", str(text_file), "--out", str(out), "--batch-size", "2", *TINY, "--max-steps", "1",
          "--eval-windows", "2"])
    summary = json.loads((out / "summary.json").read_text())
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == (f"step 1: train loss {summary['train_loss']:.4f}, val loss {summary['val_loss']:.4f}; "
                    f"checkpoint {summary['checkpoint']}")


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns(".pretrain.lock"))
    return dest


def _files(folder: Path) -> dict:
    """The run's files and their bytes (the lock file, which names the last PID, left out)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".pretrain.lock"}


def _resume_args(text_file, run: Path, *more):
    return ["--data", str(text_file), "--out", str(run), "--batch-size", "2", *TINY, "--eval-windows", "2",
            "--resume", str(run / "checkpoint.pt"), *more]


def test_a_diverging_run_keeps_the_last_good_checkpoint(two_steps, text_file, tmp_path, capsys):
    run = _copy(two_steps, tmp_path / "run")
    good = (run / "checkpoint.pt").read_bytes()
    assert cli(_resume_args(text_file, run, "--lr", "1e30", "--max-steps", "6")) == 3
    err = capsys.readouterr().err
    assert "the run diverged" in err and "is the last good checkpoint and was kept" in err and "Traceback" not in err
    assert (run / "checkpoint.pt").read_bytes() == good
    assert not list(run.glob("*.tmp"))

    # a checkpoint that holds NaN weights is refused, and so is a fresh start from it
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["model"]["trf_blocks.0.att.W_query.weight"][0, 0] = float("nan")
    torch.save(ckpt, run / "checkpoint.pt")
    assert cli(_resume_args(text_file, run, "--max-steps", "3")) == 2
    assert "1 of" in (err := capsys.readouterr().err) and "NaN or infinite" in err and "W_query" in err


def test_resume_refuses_another_runs_folder_and_keeps_seed_and_architecture(two_steps, text_file, tmp_path, capsys):
    other = tmp_path / "other"
    main(["--data", str(text_file), "--out", str(other), "--batch-size", "2", *TINY, "--max-steps", "1",
          "--val-fraction", "0"])
    before = _files(other)
    args = _resume_args(text_file, two_steps, "--max-steps", "4")
    args[args.index("--out") + 1] = str(other)
    assert cli(args) == 2
    assert "holds another run's checkpoint" in capsys.readouterr().err
    assert _files(other) == before

    # In its own folder, a resumed run keeps the checkpoint's seed (5, not the default) and
    # architecture, saying so for flags that disagree, and repeats the uninterrupted run exactly.
    run = _copy(two_steps, tmp_path / "run")
    full = tmp_path / "full"
    main(["--data", str(text_file), "--out", str(full), "--batch-size", "2", *TINY, "--seed", "5",
          "--max-steps", "4", "--eval-windows", "2"])
    main(_resume_args(text_file, run, "--max-steps", "4", "--n-layers", "3"))  # TINY says --seed 7
    err = capsys.readouterr().err
    assert "--n-layers 3 (the checkpoint has 2)" in err and "--seed 7: a resumed run keeps the checkpoint's seed 5" in err
    assert [r["train_loss"] for r in read_log(run / "log.jsonl")] == [r["train_loss"] for r in read_log(full / "log.jsonl")]
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["seed"] == 5 and ckpt["cfg"]["n_layers"] == 2 and ckpt["step"] == 4


def test_unreadable_resume_files_give_one_line_errors(two_steps, text_file, tmp_path, capsys):
    good = (two_steps / "checkpoint.pt").read_bytes()
    ckpt = torch.load(two_steps / "checkpoint.pt", weights_only=True)
    cases = {"missing.pt": None, "empty.pt": b"", "truncated.pt": good[: len(good) // 2],
             "notes.pt": b"step 2, loss 9.8\n", "weights.pt": "bare", "shape.pt": "shape"}
    expected = {"missing.pt": "no such file", "empty.pt": "the file is empty", "truncated.pt": "not a PyTorch checkpoint",
                "notes.pt": "not a PyTorch checkpoint", "weights.pt": "it lacks model, optimizer",
                "shape.pt": "do not fit its own config (size mismatch"}
    for name, content in cases.items():
        run = tmp_path / name.removesuffix(".pt")
        run.mkdir()
        path = run / name
        if content == "bare":  # the book's torch.save(model.state_dict(), ...)
            torch.save(ckpt["model"], path)
        elif content == "shape":  # a config that no longer matches the weights
            torch.save({**ckpt, "cfg": {**ckpt["cfg"], "emb_dim": 64}}, path)
        elif content is not None:
            path.write_bytes(content)
        args = _resume_args(text_file, run, "--max-steps", "3")
        args[args.index("--resume") + 1] = str(path)
        assert cli(args) == 2, name
        err = capsys.readouterr().err
        assert f"--resume {path}" in err and expected[name] in err, (name, err)
        assert len([ln for ln in err.splitlines() if not ln.startswith("note:")]) == 1 and "Traceback" not in err, err


def test_resuming_with_a_batch_whose_epoch_ends_before_the_checkpoints_position(two_steps, text_file, tmp_path,
                                                                                capsys):
    """The checkpoint is 2 steps into its epoch; with 100 windows a step this run's epoch has one
    step: it goes on with the next epoch (it used to die in a StopIteration traceback)."""
    run = _copy(two_steps, tmp_path / "run")
    args = _resume_args(text_file, run, "--max-steps", "4")
    args[args.index("--batch-size") + 1] = "100"
    assert cli(args) == 0
    err = capsys.readouterr().err
    assert "the checkpoint is 2 steps into epoch 1, which has 1 step with this run's batch: going on with the " \
           "next epoch" in err and "Traceback" not in err
    assert [r["step"] for r in read_log(run / "log.jsonl")] == [1, 2, 3, 4]


def test_resuming_without_log_carries_on_the_runs_own_log_but_never_another_folders(text_file, tmp_path, capsys):
    log, run = tmp_path / "logs" / "run.csv", tmp_path / "run"
    main(["--data", str(text_file), "--out", str(run), "--batch-size", "2", *TINY, "--eval-windows", "2",
          "--max-steps", "2", "--log", str(log)])
    assert cli(_resume_args(text_file, run, "--max-steps", "3")) == 0  # no --log: the run's own, not OUT/log.jsonl
    assert f"continuing the log of the run in {run / 'checkpoint.pt'}, {log}" in capsys.readouterr().err
    assert [r["step"] for r in read_log(log)] == [1, 2, 3] and not (run / "log.jsonl").exists()
    # a copy of a run's folder, resumed: the original's log (in the folder it was copied from) is left alone
    original = tmp_path / "original"
    main(["--data", str(text_file), "--out", str(original), "--batch-size", "2", *TINY, "--eval-windows", "2",
          "--max-steps", "2"])
    copy = _copy(original, tmp_path / "copy")
    assert cli(_resume_args(text_file, copy, "--max-steps", "3")) == 0
    assert [r["step"] for r in read_log(original / "log.jsonl")] == [1, 2]
    assert [r["step"] for r in read_log(copy / "log.jsonl")] == [1, 2, 3]


def test_log_is_cut_back_to_the_checkpoint_on_resume(two_steps, text_file, tmp_path):
    run = _copy(two_steps, tmp_path / "run")
    with (run / "log.jsonl").open("a") as f:  # steps 3 and 4 were trained, then the run was killed
        f.write(json.dumps({"step": 3, "train_loss": 1.0}) + "\n" + json.dumps({"step": 4, "train_loss": 1.0}) + "\n")
        f.write('{"step": 5, "tra')  # ... in the middle of a line
    main(_resume_args(text_file, run, "--max-steps", "4"))
    rows = read_log(run / "log.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[2]["train_loss"] != 1.0



# the process dies (SIGKILL) right where a staged log would be renamed over the old run's log
_KILLED_AT_THE_LOG_RENAME = """
import os, signal, sys
real_replace = os.replace
def replace(src, dst, *args, **kwargs):
    if str(src).endswith(".new"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace
from helpers.pretrain import main
main(sys.argv[1:])
"""


def test_a_run_killed_between_its_checkpoint_and_its_log_is_resumed_with_its_own_log(two_steps, text_file,
                                                                                     tmp_path, capsys):
    run = _copy(two_steps, tmp_path / "run")
    old_rows = read_log(run / "log.jsonl")
    args = ["--data", str(text_file), "--out", str(run), "--batch-size", "2", *TINY, "--eval-windows", "2",
            "--seed", "11", "--overwrite", "--max-steps", "3"]
    killed = subprocess.run([sys.executable, "-c", _KILLED_AT_THE_LOG_RENAME, *args], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=240)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (staged,) = run.glob(".log.jsonl.*.new")
    new_rows = read_log(staged)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 3  # the new run's checkpoint ...
    assert read_log(run / "log.jsonl") == old_rows  # ... beside the old run's log
    main(_resume_args(text_file, run, "--max-steps", "4"))
    rows = read_log(run / "log.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[:3] == new_rows
    assert rows[0]["train_loss"] != old_rows[0]["train_loss"]  # the seeds differ: the rows tell the runs apart
    assert f"replaced by {staged.name}" in capsys.readouterr().err
    assert not list(run.glob(".log.jsonl.*"))


def test_a_staged_log_of_a_run_that_never_saved_is_left_alone(two_steps, text_file, tmp_path, capsys):
    run = _copy(two_steps, tmp_path / "run")
    staged = run / ".log.jsonl.4242.new"
    staged.write_text(json.dumps({"step": 1, "train_loss": 9.0}) + "\n" + json.dumps({"step": 2, "train_loss": 9.0}) + "\n")
    saved = (run / "checkpoint.pt").stat().st_mtime
    os.utime(staged, (saved + 60, saved + 60))  # written after the checkpoint: not its rows
    old_rows = read_log(run / "log.jsonl")
    main(_resume_args(text_file, run, "--max-steps", "3"))
    rows = read_log(run / "log.jsonl")
    assert rows[:2] == old_rows and [r["step"] for r in rows] == [1, 2, 3]
    assert staged.exists() and "left as it is" in capsys.readouterr().err

def test_failed_save_on_a_full_disk_keeps_the_old_checkpoint(two_steps, text_file, tmp_path, monkeypatch, capsys):
    run = _copy(two_steps, tmp_path / "run")
    good = (run / "checkpoint.pt").read_bytes()

    def full_disk(obj, f, *a, **k):  # what torch's zip writer says when the disk fills up
        f.write(b"x" * 4096)
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing "
                           "file data/5: file write failed; unexpected pos 39028480")

    monkeypatch.setattr(torch, "save", full_disk)
    assert cli(_resume_args(text_file, run, "--max-steps", "4")) == 2
    err = capsys.readouterr().err
    assert f"could not write the checkpoint {run / 'checkpoint.pt'} at step 4" in err and "step 2) is the last good" in err
    assert (run / "checkpoint.pt").read_bytes() == good
    assert sorted(p.name for p in run.iterdir()) == [".pretrain.lock", "checkpoint.pt", "log.jsonl", "summary.json"]
    monkeypatch.undo()
    main(_resume_args(text_file, run, "--max-steps", "4"))  # later: steps 3 and 4 again, once each
    assert [r["step"] for r in read_log(run / "log.jsonl")] == [1, 2, 3, 4]


def test_overwrite_deletes_nothing_before_its_first_save(two_steps, text_file, tmp_path, capsys):
    run = _copy(two_steps, tmp_path / "run")
    before = _files(run)
    (tmp_path / "short.txt").write_text("Too short for one window of sixteen tokens.")
    args = ["--data", str(tmp_path / "short.txt"), "--out", str(run), "--batch-size", "2", *TINY, "--overwrite"]
    assert cli(args) == 2 and "error: training text" in capsys.readouterr().err
    assert _files(run) == before
    args[1] = str(text_file)
    main([*args, "--max-steps", "1", "--val-fraction", "0"])  # a good run replaces the old one's log
    assert [r["step"] for r in read_log(run / "log.jsonl")] == [1]
    assert not [p for p in run.iterdir() if p.name.endswith((".new", ".tmp"))]


def test_second_run_on_the_same_folder_fails_at_once_naming_the_first(text_file, tmp_path, capsys):
    from helpers.pretrain import folder_lock
    out = tmp_path / "run"
    out.mkdir()
    with folder_lock(out):  # what a first run holds while it trains
        start = time.monotonic()
        assert cli(["--data", str(text_file), "--out", str(out), *TINY, "--max-steps", "1"]) == 2
        assert time.monotonic() - start < 5
    assert f"is in use by another run (PID {os.getpid()})" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == [".pretrain.lock"]


def test_unwritable_out_is_found_before_the_first_step(text_file, tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a folder")
    assert cli(["--data", str(text_file), "--out", str(tmp_path / "file" / "run"), *TINY]) == 2
    assert f"--out {tmp_path / 'file' / 'run'} is not writable" in capsys.readouterr().err
    assert cli(["--data", str(text_file), "--out", str(tmp_path / "o"), "--log", str(tmp_path / "file" / "l.csv"), *TINY]) == 2
    assert "the folder of --log" in capsys.readouterr().err


def test_an_out_that_is_a_file_a_resume_that_is_a_folder_and_nothing_left_to_train(two_steps, text_file,
                                                                                  tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a folder")
    assert cli(["--data", str(text_file), "--out", str(tmp_path / "file"), *TINY]) == 2
    assert f"--out {tmp_path / 'file'} is a file, not a folder" in capsys.readouterr().err
    run = _copy(two_steps, tmp_path / "run")
    args = _resume_args(text_file, run, "--max-steps", "3")
    args[args.index("--resume") + 1] = str(run)  # the run's folder, not its checkpoint.pt
    assert cli(args) == 2
    assert f"--resume {run} is a folder; give the checkpoint in it: --resume {run / 'checkpoint.pt'}" in \
        capsys.readouterr().err
    before = _files(run)
    assert cli(_resume_args(text_file, run, "--max-steps", "2")) == 2  # the checkpoint is at step 2
    err = capsys.readouterr().err
    assert "is at step 2 and this run ends at step 2: nothing to train; raise --max-steps" in err
    assert _files(run) == before  # nothing rewritten, the log not cut


def test_sigterm_saves_like_ctrl_c_and_saves_happen_by_time(text_file, tmp_path):
    """A batch scheduler's SIGTERM: the step finishes, the checkpoint is written, exit code 143;
    before it, --save-minutes had already saved while the run went on."""
    assert build_parser().parse_args(["--data", "x"]).save_minutes == 10  # on by default
    out = tmp_path / "run"
    _signal_a_run(["--data", str(text_file), "--out", str(out), "--batch-size", "2", *TINY, "--max-steps", "100000",
                   "--val-fraction", "0", "--device", "cpu", "--save-minutes", "0.001"],
                  lambda: (out / "checkpoint.pt").exists() and len(read_log(out / "log.jsonl")) >= 2, signal.SIGTERM)
    done = read_log(out / "log.jsonl")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == done[-1]["step"] == len(done)
    assert json.loads((out / "summary.json").read_text())["stopped_by"] == "SIGTERM"


def test_heap_setting_only_in_a_single_process(monkeypatch, tmp_path):
    """The glibc heap setting is for one CPU process; under torchrun gloo's threads keep glibc's defaults."""
    import helpers.pretrain as pretrain
    calls = []
    monkeypatch.setattr(pretrain, "keep_large_tensors_on_the_heap", lambda: calls.append(1) or True)
    monkeypatch.setattr(pretrain, "Run", lambda *a: (_ for _ in ()).throw(DataError("stop here")))
    monkeypatch.setattr(pretrain.dist, "destroy_process_group", lambda: None)
    for world, expected in [(2, []), (1, [1])]:
        monkeypatch.setattr(pretrain, "setup_distributed", lambda device, w=world: (0, w, torch.device("cpu")))
        with pytest.raises(DataError, match="stop here"):
            main(["--data", "x.txt", "--out", str(tmp_path / f"o{world}"), "--device", "cpu"])
        assert calls == expected, world


# ---- compare_runs: the measurements behind ch05's table of training options -----------------

def test_compare_runs_in_process_and_in_fresh_processes(text_file, tmp_path, capsys):
    from helpers.pretrain import compare_runs
    common = ["--data", str(text_file), "--batch-size", "2", *TINY, "--max-steps", "3", "--drop-rate", "0",
              "--overwrite"]
    rows = {"plain": ["--lr", "1e-3"], "clipped": ["--lr", "1e-3", "--clip-grad", "0.01"]}
    here = compare_runs(rows, common, tmp_path / "a", in_process=True, progress=False)
    assert list(here) == ["plain", "clipped"]
    assert capsys.readouterr().out == ""  # the script's printout is silenced in-process
    assert not any((tmp_path / "a").iterdir())  # each run's folder (and checkpoint) is gone
    # a run on its own gives the same summary as the first row (same seed, same flags)
    alone = main([*common, *rows["plain"], "--out", str(tmp_path / "alone")])
    assert here["plain"]["val_loss"] == alone["val_loss"] and here["plain"]["step"] == alone["step"]
    assert here["clipped"]["val_loss"] != here["plain"]["val_loss"]  # the option changed the training
    fresh = compare_runs({"plain": rows["plain"]}, common, tmp_path / "b", progress=False)
    assert fresh["plain"]["val_loss"] == pytest.approx(alone["val_loss"], abs=1e-6)
    assert fresh["plain"]["peak_memory_mib"] > 0 and not any((tmp_path / "b").iterdir())


def test_compare_runs_names_the_row_that_failed(text_file, tmp_path):
    from helpers.pretrain import compare_runs
    common = ["--data", str(text_file), "--batch-size", "2", *TINY, "--max-steps", "2"]
    for in_process in (True, False):
        with pytest.raises(RuntimeError, match=r"helpers.pretrain --lr -1 failed:[\s\S]*--lr"):
            compare_runs({"bad": ["--lr", "-1"]}, common, tmp_path / str(in_process), in_process=in_process,
                         progress=False)
        assert not any((tmp_path / str(in_process)).iterdir())


def test_compare_runs_never_deletes_a_run_it_did_not_create(text_file, tmp_path):
    from helpers.pretrain import compare_runs
    earlier = tmp_path / "runs" / "run0"  # e.g. a user's own run under the same folder
    earlier.mkdir(parents=True)
    (earlier / "checkpoint.pt").write_bytes(b"a long run")
    common = ["--data", str(text_file), "--batch-size", "2", *TINY, "--max-steps", "1"]
    for in_process in (True, False):
        with pytest.raises(RuntimeError, match="--lr -1 failed"):
            compare_runs({"bad": ["--lr", "-1"]}, common, tmp_path / "runs", in_process=in_process, progress=False)
        compare_runs({"ok": ["--lr", "1e-3"]}, common, tmp_path / "runs", in_process=in_process, progress=False)
        assert (earlier / "checkpoint.pt").read_bytes() == b"a long run"
        assert [p.name for p in (tmp_path / "runs").iterdir()] == ["run0"]


def test_the_start_line_counts_layers_in_words(text_file, tmp_path, capsys):
    one = ["--n-layers", "1", "--emb-dim", "16", "--n-heads", "2", "--context-length", "16"]
    main(["--data", str(text_file), "--out", str(tmp_path / "one"), "--batch-size", "2", "--max-steps", "1", *one])
    assert ", 1 layer, context 16;" in capsys.readouterr().out
    main(["--data", str(text_file), "--out", str(tmp_path / "two"), "--batch-size", "2", "--max-steps", "1", *TINY])
    assert ", 2 layers, context 16;" in capsys.readouterr().out
