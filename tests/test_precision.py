"""--mixed-precision: the decision table over injected device facts (pure: no TensorFlow)."""

import subprocess
import sys

import pytest

from tests.conftest import REPO
from trainer.config import config_from_flags
from trainer.errors import TrainerError
from trainer.precision import DeviceFacts, choose, cpu_flags, cpu_model

AVX2_EPYC = DeviceFacts(cpu_model="AMD EPYC 7B13", cpu_flags=frozenset({"avx2", "fma"}))
SAPPHIRE_RAPIDS = DeviceFacts(cpu_model="Intel Xeon Platinum 8481C",
                              cpu_flags=frozenset({"avx512f", "avx512_bf16", "amx_bf16"}))
# AVX512_BF16 without AMX (this project's dev machine): bf16 measured slower than fp32.
AVX512_BF16_ONLY = DeviceFacts(cpu_model="Intel Xeon", cpu_flags=frozenset({"avx512_bf16"}))


@pytest.mark.parametrize("facts, expected", [
    (DeviceFacts(gpu_capabilities=((8, 0),)), "bf16"),  # A100
    (DeviceFacts(gpu_capabilities=((9, 0), (9, 0))), "bf16"),  # H100 x2
    (DeviceFacts(gpu_capabilities=((7, 5),)), "fp16"),  # T4
    (DeviceFacts(gpu_capabilities=((7, 0),)), "fp16"),  # V100
    (DeviceFacts(gpu_capabilities=((8, 0), (7, 0))), "fp16"),  # mixed: the oldest decides
    (DeviceFacts(gpu_capabilities=((6, 0),)), "none"),  # P100
    (DeviceFacts(tpu=True), "bf16"),
    (SAPPHIRE_RAPIDS, "bf16"),
    (AVX512_BF16_ONLY, "none"),
    (AVX2_EPYC, "none"),
    (DeviceFacts(), "none"),  # no /proc/cpuinfo
])
def test_auto_picks_the_native_precision(facts, expected):
    chosen = choose("auto", facts)
    assert chosen.precision == expected and chosen.warning is None
    assert chosen.reason.startswith("auto: ")
    assert chosen.loss_scaling == (expected == "fp16")


def test_the_reason_names_the_device():
    t4 = choose("auto", DeviceFacts(gpu_capabilities=((7, 5),))).reason
    assert "compute capability 7.5" in t4 and "dynamic loss scaling" in t4
    assert "AMD EPYC 7B13" in choose("auto", AVX2_EPYC).reason
    assert "(amx_bf16, avx512_bf16)" in choose("auto", SAPPHIRE_RAPIDS).reason
    assert "(no amx_bf16, avx512_bf16)" in choose("auto", AVX512_BF16_ONLY).reason


@pytest.mark.parametrize("requested, facts", [
    ("bf16", AVX2_EPYC), ("fp16", AVX2_EPYC), ("fp16", SAPPHIRE_RAPIDS),
    ("bf16", AVX512_BF16_ONLY),
    ("bf16", DeviceFacts(gpu_capabilities=((7, 5),))),
])
def test_explicit_precision_without_native_support_trains_as_asked_with_a_warning(requested,
                                                                                 facts):
    chosen = choose(requested, facts)
    assert chosen.precision == requested
    assert f"no fast native {requested}" in chosen.warning and "slow" in chosen.warning
    if not facts.gpu_capabilities:
        assert "measured" in chosen.warning
    if requested == "bf16" and not facts.gpu_capabilities:
        assert "7x slower" in chosen.warning and "0.7x" in chosen.warning


@pytest.mark.parametrize("requested, facts", [
    ("none", AVX2_EPYC), ("bf16", SAPPHIRE_RAPIDS),
    ("fp16", DeviceFacts(gpu_capabilities=((7, 0),))),
    ("bf16", DeviceFacts(tpu=True)), ("fp16", DeviceFacts(gpu_capabilities=((8, 6),))),
])
def test_explicit_native_precision_does_not_warn(requested, facts):
    chosen = choose(requested, facts)
    assert chosen.precision == requested and chosen.warning is None


def test_cpuinfo_parsing():
    text = ("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 fma\n\n"
            "processor\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 fma\n")
    assert cpu_flags(text) == {"fpu", "avx2", "fma"}
    assert cpu_model(text) == "AMD EPYC 7B13"
    assert cpu_flags("Features\t: fp asimd bf16\n") == {"fp", "asimd", "bf16"}
    assert cpu_flags("") == frozenset() and cpu_model("") == "unknown CPU"


def test_flag_defaults_to_auto_and_rejects_unknown_values():
    assert config_from_flags([], {}).model.mixed_precision == "auto"
    assert config_from_flags(["--mixed-precision", "fp16"], {}).model.mixed_precision == "fp16"
    with pytest.raises(TrainerError, match="--mixed-precision.*invalid choice: 'fp8'"):
        config_from_flags(["--mixed-precision", "fp8"], {})


def test_the_decision_imports_no_tensorflow():
    code = ("import sys, trainer.config, trainer.precision; "
            "sys.exit('tensorflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
