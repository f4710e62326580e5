"""BENCHMARKS.md: one `## ` section per hardware class, each a run of `### ` tables.

The hardware heading names the CPU model, its core count and the AVX-512/AMX/bf16 flags that
decide mixed precision, so numbers from different machines never mix. A run replaces, in its
hardware class's section, the tables it measured (matched by their heading up to the first
" ("; a table's details may change) and keeps the others, hand-written notes included. No
TensorFlow import here.
"""

from __future__ import annotations

import os

from trainer.precision import cpu_flags, cpu_model

PREFACE = ("# Benchmarks\n\nOne section per hardware class the benchmark has run on; "
           "`vertex-trainer benchmark` rewrites the tables it measures in its own class's "
           "section and keeps the rest. Compare numbers within a section only.\n")
_FEATURES = (("AVX-512", ("avx512f",)), ("AVX512_BF16", ("avx512_bf16",)),
             ("AMX-BF16", ("amx_bf16",)), ("AVX512_FP16", ("avx512_fp16",)))


def hardware(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """This machine's heading: CPU model, cores, the precision-relevant flags."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    flags = cpu_flags(text)
    features = ", ".join(name if any(f in flags for f in names) else f"no {name}"
                         for name, names in _FEATURES)
    return f"{cpu_model(text)}, {os.cpu_count()} cores ({features}), no GPU"


def load_average() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def met(ok: bool) -> str:
    return "met" if ok else "not met"


def each(values) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


def merge(existing: str, hardware_class: str, tables: str) -> str:
    """`existing` BENCHMARKS.md with `tables` (`### ` blocks) put into `hardware_class`'s
    section, which stays where it is (a new one goes last): a block replaces the one of the
    same key in place, a new one goes last."""
    sections = _split(existing, "## ")[1]
    intro, blocks = "", {}
    for heading, body in sections:
        if heading == hardware_class:
            intro, blocks = _blocks(body)
    for key, block in _blocks(tables)[1].items():
        blocks[key] = block
    merged = "\n\n".join(part for part in (intro, *blocks.values()) if part)
    if all(heading != hardware_class for heading, _ in sections):
        sections.append((hardware_class, merged))
    return "\n".join([PREFACE, *(
        f"## {heading}\n\n{merged if heading == hardware_class else body}\n"
        for heading, body in sections)])


def _blocks(text: str) -> tuple[str, dict[str, str]]:
    """(the text before the first `### `, {key: `### ` block})."""
    intro, parts = _split(text, "### ")
    return intro, {_key(heading): f"### {heading}\n\n{body}".rstrip() for heading, body in parts}


def _key(heading: str) -> str:
    return heading.split(" (", 1)[0].strip()


def _split(text: str, marker: str) -> tuple[str, list[tuple[str, str]]]:
    """(text before the first line starting with `marker`, [(heading, body)] of each part)."""
    chunks = ("\n" + text).split("\n" + marker)
    parts = []
    for chunk in chunks[1:]:
        heading, _, body = chunk.partition("\n")
        parts.append((heading.strip(), body.strip()))
    return chunks[0].strip(), parts
