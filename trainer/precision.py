"""Which compute precision a run uses: --mixed-precision and the facts about this host's devices.

Pure logic (no TensorFlow): `trainer.distribute.device_facts` gathers the facts, `choose`
decides. `auto` takes the fast path each device has natively:

| device                                   | auto |
|------------------------------------------|------|
| TPU                                      | bf16 |
| GPU, compute capability >= 8.0 (A100...) | bf16 |
| GPU, compute capability 7.x (T4, V100)   | fp16 with dynamic loss scaling |
| older GPU                                | none |
| CPU with AMX-BF16                        | bf16 |
| any other CPU                            | none |

A CPU with AVX512_BF16 but no AMX counts as having no native bf16: measured on such a Xeon
(BENCHMARKS.md), bf16 trained the `cnn` at ~0.7x its fp32 speed, so auto keeps fp32 there.
An explicit bf16/fp16 on a device without native support is honoured, with one warning naming
what it costs.
"""

from __future__ import annotations

from dataclasses import dataclass

CHOICES = ("auto", "none", "bf16", "fp16")
# Keras policy for each precision a run can use.
POLICIES = {"none": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
CPU_BF16_FLAGS = ("amx_bf16",)
_BF16_CAPABILITY = (8, 0)
_FP16_CAPABILITY = (7, 0)
# Measured with the tutorials' models (issue 14, BENCHMARKS.md).
_CPU_COST = {
    "bf16": "measured: the cnn trained ~7x slower than in fp32 on an AVX2-only AMD EPYC, and "
            "at ~0.7x fp32 speed on a Xeon with AVX512_BF16 but no AMX",
    "fp16": "measured: ~1.1 s per dnn step at batch 50 on a 2-core Xeon, hundreds of times "
            "slower than fp32",
}


@dataclass(frozen=True)
class DeviceFacts:
    """What the precision depends on: the accelerators training runs on, else the CPU."""

    gpu_capabilities: tuple[tuple[int, int], ...] = ()  # one (major, minor) per GPU
    tpu: bool = False
    cpu_model: str = "unknown CPU"
    cpu_flags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Precision:
    precision: str  # none | bf16 | fp16
    reason: str  # why, for the first log lines
    warning: str | None = None  # the requested precision is not native here

    @property
    def policy(self) -> str:
        return POLICIES[self.precision]

    @property
    def loss_scaling(self) -> bool:
        return self.precision == "fp16"


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of /proc/cpuinfo's text (x86 `flags`, Arm `Features`)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown CPU"


def device_name(facts: DeviceFacts) -> str:
    if facts.tpu:
        return "TPU"
    if facts.gpu_capabilities:
        major, minor = min(facts.gpu_capabilities)
        return f"{len(facts.gpu_capabilities)} GPU(s), compute capability {major}.{minor}"
    native = "amx_bf16" if "amx_bf16" in facts.cpu_flags else "no amx_bf16"
    if "avx512_bf16" in facts.cpu_flags:
        native += ", avx512_bf16"
    return f"CPU {facts.cpu_model} ({native})"


def native(facts: DeviceFacts) -> tuple[str, ...]:
    """The reduced precisions this hardware runs natively, fastest first."""
    if facts.tpu:
        return ("bf16",)
    if facts.gpu_capabilities:
        # Mixed GPUs run at the pace of the oldest.
        oldest = min(facts.gpu_capabilities)
        if oldest >= _BF16_CAPABILITY:
            return ("bf16", "fp16")
        return ("fp16",) if oldest >= _FP16_CAPABILITY else ()
    return ("bf16",) if any(f in facts.cpu_flags for f in CPU_BF16_FLAGS) else ()


def choose(requested: str, facts: DeviceFacts) -> Precision:
    """The precision to train in for --mixed-precision `requested` on these devices."""
    device = device_name(facts)
    supported = native(facts)
    if requested == "auto":
        if not supported:
            return Precision("none", f"auto: {device} has no native bf16/fp16, so float32")
        scaling = " with dynamic loss scaling" if supported[0] == "fp16" else ""
        return Precision(supported[0], f"auto: {device} runs {supported[0]} natively, so "
                                       f"mixed {supported[0]}{scaling}")
    reason = f"--mixed-precision {requested} on {device}"
    if requested == "none" or requested in supported:
        return Precision(requested, reason)
    cost = (_CPU_COST[requested] if not (facts.tpu or facts.gpu_capabilities)
            else "typically slower than float32")
    return Precision(requested, reason, warning=(
        f"--mixed-precision {requested}: {device} has no fast native {requested}, so training "
        f"will be slow ({cost}); --mixed-precision auto picks "
        f"{supported[0] if supported else 'none'} here"))
