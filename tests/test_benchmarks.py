"""The benchmark scripts run end to end (tiny shapes, nothing timed or asserted about speed):
benchmarks/gpu_check.sh as a dry run on the CPU, so the one prepared GPU run cannot rot between
the sessions that get a GPU, and bench_ch05_loop.py, whose notebook and script sides must train
to the very same losses."""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_ch05_loop  # noqa: E402
import bench_speed  # noqa: E402


def test_gpu_check_dry_run_on_the_cpu(tmp_path, data_dir):
    tiny = "--n-layers 1 --context 32 --batch 1 --train-rounds 1 --no-memory "
    env = {**os.environ, "DEVICE": "cpu", "PYTHON": sys.executable, "COURSE_DATA_DIR": str(data_dir),
           "OMP_NUM_THREADS": "1", "CORPUS_REPEAT": "1", "TIMEOUT_SCALE": "2",
           "EAGER_ARGS": tiny + "--amp bf16 --amp-all --train book default default-fused fast hf --gen-batches 1 "
                          "--gen-rounds 1 --new-tokens 4 --profile default hf --profile-rows 3",
           "COMPILED_ARGS": tiny + "--train fast fast-pad fast-ce --gen --profile fast --profile-rows 3",
           "PRETRAIN_ARGS": "--n-layers 1 --emb-dim 32 --n-heads 2 --batch-size 2 --context-length 32 "
                            "--tie-weights --max-steps 4 --eval-windows 4 --warmup-steps 2 --cosine 4e-5 --clip-grad 1.0",
           "MEMORY_ARGS": "--batch 1 --tokens 16"}
    # a session of its own: on a hang, every process of it is killed (the steps run under
    # `timeout`, which moves them to process groups of their own), not only bash
    proc = subprocess.Popen(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        if shutil.which("pkill"):
            subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)], check=False)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        stdout, stderr = proc.communicate()
        pytest.fail("gpu_check.sh's dry run took over 900 s:\n" + stdout[-3000:] + stderr[-3000:])
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    entry = (tmp_path / "RESULTS.md").read_text()
    for line in ("| fast |", "| book |", "| hf |", "| fast-pad |", "| fast-ce |", "- fast / book:", "- fast-pad / fast:", "- fast-ce / fast:",
                 "measured matmul peak", "Greedy generation: batch 1", "(all implementations)",
                 "Profile of one run of `fast`", "aten::", "| default-fused |", "- default-fused / hf:",
                 "Profile of one run of `default`", "Profile of one run of `hf`"):
        assert line in entry, line
    summary = json.loads((tmp_path / "pretrain" / "summary.json").read_text())
    assert summary["step"] == 4 and summary["device"] == "cpu"
    assert 0 < summary["mfu"] and "GFLOP/token" in summary["mfu_basis"]  # added from the run's own numbers
    assert not list((tmp_path / "pretrain").glob("*.pt"))  # the large file is not kept
    assert json.loads((tmp_path / "pretrain_fp16" / "summary.json").read_text())["autocast"] == "float16"
    assert (tmp_path / "memory.md").read_text().count("| cpu |") == 3  # estimate beside measurement


def test_default_fused_is_the_same_model_with_one_kernel_norms_and_gelu():
    """bench_speed's `default-fused` must measure only the kernels: same parameters, same logits
    and gradients as GPTModel to float rounding, and no step-by-step LayerNorm or GELU left."""
    from helpers.model import GPTModel
    cfg = {"vocab_size": 97, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
           "drop_rate": 0.0, "qkv_bias": True}
    torch.manual_seed(0)
    plain = GPTModel(cfg)
    fused = GPTModel(cfg)
    fused.load_state_dict(plain.state_dict())
    bench_speed.fuse_norms_and_gelu(fused)
    with torch.no_grad():  # non-trivial scales and shifts, so a norm that ignores them fails
        for model in (plain, fused):
            torch.manual_seed(1)
            for name, param in model.named_parameters():
                if "norm" in name:
                    param.add_(torch.randn_like(param) * 0.5)
    ids = torch.randint(0, 97, (3, 16), generator=torch.Generator().manual_seed(2))
    outs = []
    for model in (plain, fused):
        logits = model(ids)
        logits.square().mean().backward()
        outs.append((logits, {n: p.grad for n, p in model.named_parameters()}))
    (a, grads_a), (b, grads_b) = outs
    assert torch.allclose(a, b, atol=1e-5) and not torch.equal(a, torch.zeros_like(a))
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-5), name
    profiled = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    with profiled, torch.no_grad():
        fused(ids)
    ops = {e.key for e in profiled.key_averages()}
    assert "aten::layer_norm" in ops and "aten::gelu" in ops and "aten::tanh" not in ops and "aten::var" not in ops


def test_ch05_loop_notebook_and_script_train_to_the_same_losses(tmp_path):
    runs = bench_ch05_loop.main(["--epochs", "1", "--context", "32", "--n-layers", "1", "--emb-dim", "32",
                                 "--n-heads", "2", "--no-record"])
    notebook, script = runs["notebook"][0], runs["script"][0]
    assert notebook["steps"] == script["steps"] > 5
    assert (notebook["train_loss"], notebook["val_loss"]) == (script["train_loss"], script["val_loss"])
    assert notebook["threads"] == script["threads"]  # the kernel gets the script's thread count


def test_batch_auto_halves_until_every_implementation_fits(monkeypatch):
    """bench_speed's --batch auto, with out-of-memory errors simulated above each model's limit
    (the real probe needs a GPU)."""
    limits, tried = {"fast": 32, "book": 8}, []

    def fake_build(name, cfg, device, args):
        assert not args.compile  # probing never compiles
        return name, name, None

    def fake_step(forward, optimizer, ids, targets, device, amp):
        tried.append((forward, ids.shape[0]))
        if ids.shape[0] > limits[forward]:
            raise torch.cuda.OutOfMemoryError("simulated")

    monkeypatch.setattr(bench_speed, "build", fake_build)
    monkeypatch.setattr(bench_speed, "train_step", fake_step)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    args = argparse.Namespace(max_batch=64, train=["fast", "book"], context=8, amp="bf16", compile=True)
    assert bench_speed.largest_batch({"vocab_size": 50}, torch.device("cpu"), args) == 8
    assert tried == [("fast", 64), ("fast", 32), ("book", 32), ("book", 16), ("book", 8)]
    limits["book"] = 0
    with pytest.raises(SystemExit, match="not even batch 1"):
        bench_speed.largest_batch({"vocab_size": 50}, torch.device("cpu"), args)


def test_ch07_sizes_times_both_shapes_on_the_chapters_batches(data_dir):
    import bench_ch07_sizes
    result = bench_ch07_sizes.main(["--batches", "2", "--rounds", "2", "--emb-dim", "32", "--n-heads", "2",
                                    "--data-dir", str(data_dir), "--no-record"])
    for size in ("124M", "355M"):  # every batch timed in every round, once per shape
        assert len(result["step_s"][size]) == len(result["forward_s"][size]) == 4
        assert all(t > 0 for t in result["step_s"][size])
        assert all(0 < loss < 20 for loss in result["losses"][size])
    # the same batches in both rounds: AdamW's steps lower the loss on them
    assert result["losses"]["124M"][2] < result["losses"]["124M"][0]
    batches = bench_ch07_sizes.chapter_batches(3, 8, 256, 123, data_dir)
    inputs, targets = batches[0]
    assert inputs.shape[0] == 8 and inputs.shape == targets.shape
    assert (targets == -100).any()  # padding beyond the first end-of-text is ignored, as in 7.3
    assert bench_ch07_sizes.chapter_batches(1, 8, 256, 123, data_dir)[0][0].equal(inputs)  # seeded


def test_ch07_sizes_estimate_reads_only_a_full_run_of_the_reference_shape(tmp_path):
    import bench_ch07_sizes
    saved = tmp_path / "m.json"
    saved.write_text(json.dumps({"mode": "full", "gpt2_model_size": "124M", "training_s": 1392.0}))
    assert bench_ch07_sizes.saved_finetuning_minutes(saved, "124M") == pytest.approx(23.2)
    assert bench_ch07_sizes.saved_finetuning_minutes(saved, "355M") is None
    saved.write_text(json.dumps({"mode": "smoke", "gpt2_model_size": "124M", "training_s": 3.0}))
    assert bench_ch07_sizes.saved_finetuning_minutes(saved, "124M") is None
    assert bench_ch07_sizes.saved_finetuning_minutes(tmp_path / "missing.json", "124M") is None


@pytest.mark.parametrize("script", ["gpu_check.sh", "gpu_course.sh"])
def test_gpu_scripts_keep_an_earlier_runs_results(tmp_path, script):
    # PYTHON=false: every step fails at once; what matters is what became of the earlier results
    out = tmp_path / "out"
    out.mkdir()
    (out / "RESULTS.md").write_text("last GPU run\n")
    env = {**os.environ, "DEVICE": "cpu", "PYTHON": "false", "COURSE_DATA_DIR": str(tmp_path / "nodata")}
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / script), str(out)], env=env, capture_output=True,
                         text=True, timeout=120)
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("out.")]
    assert len(kept) == 1 and (kept[0] / "RESULTS.md").read_text() == "last GPU run\n", run.stdout + run.stderr
    assert f"kept in {kept[0]}" in run.stdout
    assert not (out / "RESULTS.md").exists()
    # an empty folder (pytest's tmp_path, as the dry run passes) is used as it is
    empty = tmp_path / "empty"
    empty.mkdir()
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / script), str(empty)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert "kept in" not in run.stdout and not [p for p in tmp_path.iterdir() if p.name.startswith("empty.")]


def test_gpu_check_runs_only_the_steps_asked_for(tmp_path):
    """STEPS splits the GPU run into two calls of a lent machine; a step number it lacks is refused."""
    # PYTHON=false: every step fails at once; what matters is which steps started
    env = {**os.environ, "DEVICE": "cpu", "PYTHON": "false", "COURSE_DATA_DIR": str(tmp_path / "nodata")}
    script = str(ROOT / "benchmarks" / "gpu_check.sh")
    started = {}
    for steps in ("1 2", "4"):
        run = subprocess.run(["bash", script, str(tmp_path / steps.replace(" ", ""))], env={**env, "STEPS": steps},
                             capture_output=True, text=True, timeout=120)
        started[steps] = [n for n in "1234" if f"== {n}." in run.stdout]
    assert started == {"1 2": ["1", "2"], "4": ["4"]}
    run = subprocess.run(["bash", script, str(tmp_path / "bad")], env={**env, "STEPS": "1 5"}, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2 and "STEPS=1 5: give step numbers from 1 to 4" in run.stderr
