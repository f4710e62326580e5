"""Resources: peak RSS of the accuracy section's `cnn` training runs next to what `import
tensorflow` alone holds (TF 2.21 and the estimator's 2.15), the export's wall time, and the time
`python -m trainer.task --help` takes."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from trainer.benchmarks import runner
from trainer.benchmarks.markdown import met
from trainer.benchmarks.sections import accuracy, estimator

_IMPORT_RSS = """
import json, tensorflow
rss = {}
for line in open("/proc/self/status"):
    key, _, value = line.partition(":")
    if key in ("VmRSS", "RssAnon", "RssFile"):
        name = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}[key]
        rss[name] = int(value.split()[0]) // 1024
print(json.dumps(rss))
"""


def _import_rss(python: str) -> dict:
    """What importing TensorFlow alone holds, in MB: the floor under any training run."""
    return runner.run_json([python, "-c", _IMPORT_RSS], f"import tensorflow in {python}")


def _help_seconds(runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "trainer.task", "--help"], check=True,
                       capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(ctx: runner.Context) -> list[str]:
    runs = accuracy.cnn_runs(ctx)
    ctx.say("trainer.task --help, import tensorflow ...")
    help_seconds = _help_seconds(ctx.budget.help_runs)
    rss = runs["none"]["peak_rss_mb"]
    export = max(r["export_seconds"] for r in runs.values())
    imports = {"2.21 (ours)": _import_rss(sys.executable),
               "2.15 (the estimator's)": _import_rss(estimator.python215())}
    return ["### Resources", "", "| measure | value | target |", "|---|---|---|",
            f"| peak RSS of a training run (cnn, {ctx.budget.accuracy_steps} steps with "
            f"evaluations and export, fp32) | {rss:,.0f} MB | <= 700 MB ({met(rss <= 700)}) |",
            f"| the same run in bf16 (keeps a float32 copy for export) | "
            f"{runs['bf16']['peak_rss_mb']:,.0f} MB | |",
            *(f"| RSS after `import tensorflow` alone, TF {version} | {r['rss']:,} MB "
              f"({r['anon']:,} anonymous, {r['file']:,} file-backed) | |"
              for version, r in imports.items()),
            f"| export wall time | {export:.1f} s | <= 10 s ({met(export <= 10)}) |",
            f"| `python -m trainer.task --help` | {help_seconds:.2f} s | < 0.5 s "
            f"({met(help_seconds < 0.5)}) |"]
