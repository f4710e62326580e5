"""`resnet20` at CIFAR's 32x32x3, batch 128, on MNIST padded to 32x32 and repeated over 3
channels (no CIFAR ships here; this keeps its accuracy meaningful at CIFAR-10's cost): our loop
against `fit` in fp32, bf16 against fp32 in speed and in accuracy at equal steps, and where its
step goes."""

from __future__ import annotations

import os
import tempfile

from trainer.benchmarks import loops, runner
from trainer.benchmarks.markdown import met
from trainer.benchmarks.sections import accuracy, breakdown, speed

MODEL = "resnet20"
SHAPE, BATCH = (32, 32, 3), 128  # CIFAR's images, He et al.'s batch


def measure_cifar_shaped(budget: runner.Budget, train_files: str, eval_files: str,
                         output_dir: str) -> dict:
    """Writes the MNIST train and eval sets in CIFAR's shape under output_dir; their globs."""
    return {"train": write_cifar_shaped(train_files, output_dir, "train", 8),
            "eval": write_cifar_shaped(eval_files, output_dir, "eval", 2)}


def write_cifar_shaped(patterns: str, output_dir: str, prefix: str, shards: int) -> str:
    """MNIST with each digit padded to 32x32 and its grey repeated over 3 channels, as raw
    TFRecords; returns their glob."""
    import numpy as np

    from trainer import data
    from trainer.tools.prepare_mnist import write_shards

    images, labels = [], []
    for batch_images, batch_labels in data.make_dataset(loops.source(patterns), batch_size=1000,
                                                        training=False):
        images.append(np.rint(batch_images.numpy() * 255).astype(np.uint8))
        labels.append(batch_labels.numpy())
    padded = np.pad(np.concatenate(images), ((0, 0), (2, 2), (2, 2), (0, 0)))
    write_shards(np.repeat(padded, 3, axis=-1), np.concatenate(labels), output_dir, prefix,
                 shards, progress=False)
    return os.path.join(output_dir, f"{prefix}-*")


def run(ctx: runner.Context) -> list[str]:
    budget, steps = ctx.budget, ctx.budget.resnet_accuracy_steps
    size = ("--image-height", str(SHAPE[0]), "--image-width", str(SHAPE[1]),
            "--image-channels", str(SHAPE[2]))
    with tempfile.TemporaryDirectory(prefix="cifar-shaped-") as tmp:
        ctx.say("MNIST in CIFAR's shape for resnet20 ...")
        files = runner.child(measure_cifar_shaped, budget, train_files=ctx.train_files,
                             eval_files=ctx.eval_files, output_dir=tmp)
        ctx.say(f"training {MODEL} at batch {BATCH} ...")
        rates = runner.medians(runner.child(speed.measure, budget, train_files=files["train"],
                                            model=MODEL, batch=BATCH, shape=list(SHAPE)))
        steps_table = breakdown.table(ctx, files["train"], MODEL, BATCH, SHAPE)
        runs = {}
        for precision in ("none", "bf16"):
            ctx.say(f"{MODEL} to {steps} steps, mixed precision {precision} ...")
            runs[precision] = runner.child(accuracy.measure_run, budget, task_flags=[
                "--train-files", files["train"], "--eval-files", files["eval"], *size,
                "--model", MODEL, "--batch-size", str(BATCH), "--max-steps", str(steps),
                "--eval-every-steps", str(steps), "--lr-schedule", "cosine",
                "--warmup-steps", str(steps // 6), "--seed", "1",
                "--mixed-precision", precision, "--job-dir", os.path.join(tmp, precision)])
    fit_ratio, bf16_ratio = rates["fp32"] / rates["fit"], rates["bf16"] / rates["fp32"]
    final = {p: r["final"]["accuracy"] for p, r in runs.items()}
    gap = 100 * (final["bf16"] - final["none"])
    return [f"### `{MODEL}`, {'x'.join(map(str, SHAPE))}, batch {BATCH} "
            "(MNIST padded to 32x32 and repeated over 3 channels)", "",
            "| measure | value | target |", "|---|---|---|",
            f"| our loop fp32 | {rates['fp32']:,.0f} examples/s | |",
            f"| Keras `model.fit` fp32 (same model, optimizer, data) | {rates['fit']:,.0f} "
            "examples/s | |",
            f"| our loop bf16 | {rates['bf16']:,.0f} examples/s | |",
            f"| fp32 / fit | {fit_ratio:.2f} | >= 1.1 ({met(fit_ratio >= 1.1)}) |",
            f"| bf16 / fp32 | {bf16_ratio:.2f} | >= 1.5 ({met(bf16_ratio >= 1.5)}) |",
            f"| test accuracy after {steps} steps, fp32 / bf16 | "
            f"{final['none']:.2%} / {final['bf16']:.2%} ({gap:+.2f} points) | "
            f"within 0.3 points ({met(abs(gap) <= 0.3)}) |", "", *steps_table]
