"""helpers.support.runtime: which half-precision type autocast gets on which device, and which
device strings are refused."""
import pytest
import torch

from helpers.support.runtime import autocast_dtype, supports_bf16


@pytest.mark.parametrize("capability, expected", [((7, 5), torch.float16), ((7, 0), torch.float16),
                                                  ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_bf16_on_a_gpu_depends_on_its_compute_capability(monkeypatch, capability, expected):
    # A T4 (7.5) or V100 (7.0) has no bf16 matrix units: bf16 becomes fp16, "auto" too.
    monkeypatch.delenv("COURSE_NO_BF16", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    cuda = torch.device("cuda")
    assert supports_bf16(cuda) == (expected == torch.bfloat16)
    assert autocast_dtype("bf16", cuda) == expected
    assert autocast_dtype("auto", cuda) == expected
    assert autocast_dtype("fp16", cuda) == torch.float16
    assert autocast_dtype("none", cuda) is None


@pytest.mark.parametrize("has_bf16", [True, False])
def test_cpu_keeps_bf16_unless_the_older_gpu_path_is_forced(monkeypatch, has_bf16):
    import helpers.support.runtime as runtime
    monkeypatch.delenv("COURSE_NO_BF16", raising=False)
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: has_bf16)
    # without bf16 instructions it is only not recommended: asked for, it is what runs (fp16 is no faster)
    assert supports_bf16("cpu") == has_bf16
    assert autocast_dtype("bf16", "cpu") == torch.bfloat16 and autocast_dtype("auto", "cpu") is None
    monkeypatch.setenv("COURSE_NO_BF16", "1")
    assert not supports_bf16("cpu") and autocast_dtype("bf16", "cpu") == torch.float16
    monkeypatch.setenv("COURSE_NO_BF16", "0")
    assert supports_bf16("cpu") == has_bf16


def test_cpu_bf16_detection_agrees_with_the_cpus_flags():
    """oneDNN's answer against the kernel's list of CPU features (x86 Linux only)."""
    from helpers.support.runtime import cpu_has_bf16
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        pytest.skip("needs Linux's /proc/cpuinfo with x86 feature flags")
    has = "avx512_bf16" in flags or "amx_bf16" in flags
    lacks = "avx512f" not in flags and "avx512_core" not in flags and "amx_bf16" not in flags  # e.g. AVX2 only
    if not (has or lacks):
        pytest.skip("AVX-512 without its bf16 extension: the flags alone do not decide")
    assert cpu_has_bf16() == has  # without them bf16 would be emulated


def test_unknown_amp_choice_is_refused():
    with pytest.raises(ValueError, match="'none', 'bf16', 'fp16' or 'auto'"):
        autocast_dtype("half", "cpu")


def test_a_gpu_number_the_machine_lacks_is_refused_by_name(monkeypatch):
    from helpers.support.runtime import get_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert get_device("cuda:0") == torch.device("cuda", 0) and get_device("cuda") == torch.device("cuda")
    with pytest.raises(RuntimeError, match=r"'cuda:5' was asked for but PyTorch sees 1 CUDA GPU \(cuda:0 to cuda:0\)"):
        get_device("cuda:5")
    with pytest.raises(ValueError, match="unknown device 'cuda:x'"):
        get_device("cuda:x")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="sees no CUDA GPU"):
        get_device("cuda:0")
