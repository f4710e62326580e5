"""The sections of `vertex-trainer benchmark`, one module each.

A section is a module here with `run(context) -> list[str]`: the markdown lines of its `### `
table(s), measured through `runner.child` (each measurement in a fresh process, alternating
rounds, medians) within `context.budget`. Register it in trainer.benchmarks.training.SECTIONS
(name, the data flags it needs, one line of help); `--only NAME` then runs it alone, and a run
replaces its tables in BENCHMARKS.md by their headings. Import TensorFlow inside functions only,
so `vertex-trainer benchmark --help` stays fast.
"""
