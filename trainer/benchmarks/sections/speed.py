"""Training examples/s (steady state) of each tutorial model at two batch sizes: our loop in
fp32, bf16 and with XLA (once per model: it compiles long) next to Keras `model.fit`."""

from __future__ import annotations

from trainer.benchmarks import loops, runner
from trainer.benchmarks.markdown import met


def measure(budget: runner.Budget, train_files: str, model: str, batch: int, jit: bool = False,
            shape: list[int] | None = None) -> dict:
    """[examples/s per round] of each variant of one model at one batch size, alternating."""
    source = loops.source(train_files, shape or loops.MNIST_SHAPE)
    steps = budget.steps_per_call
    variants = {"fp32": loops.LoopVariant(source, model, batch, "none", steps),
                "bf16": loops.LoopVariant(source, model, batch, "bf16", steps)}
    if jit:
        variants["xla"] = loops.LoopVariant(source, model, batch, "none", steps, jit=True)
    variants["fit"] = loops.FitVariant(source, model, batch, steps)
    return runner.alternate({name: v.run for name, v in variants.items()}, budget.rounds)


def run(ctx: runner.Context) -> list[str]:
    budget = ctx.budget
    lines = ["### Training examples/s (steady state)", "",
             "| model | batch | trainer fp32 | trainer bf16 | trainer fp32 + XLA | "
             "Keras `fit` fp32 | fp32 / fit | bf16 / fit |", "|---|---|---|---|---|---|---|---|"]
    ratios = {}
    for model in budget.models:
        for batch in budget.batches:
            ctx.say(f"training {model} at batch {batch} ...")
            rates = runner.medians(runner.child(
                measure, budget, train_files=ctx.train_files, model=model, batch=batch,
                jit=batch == budget.batches[0]))
            xla = f"{rates['xla']:,.0f}" if "xla" in rates else "-"
            ratios[model, batch] = rates["fp32"] / rates["fit"], rates["bf16"] / rates["fit"]
            lines.append(f"| {model} | {batch} | {rates['fp32']:,.0f} | {rates['bf16']:,.0f} | "
                         f"{xla} | {rates['fit']:,.0f} | {ratios[model, batch][0]:.2f} | "
                         f"{ratios[model, batch][1]:.2f} |")
    if ("cnn", 100) in ratios:
        fp32, bf16 = ratios["cnn", 100]
        lines += ["", f"`cnn` at batch 100 against `fit`: fp32 {fp32:.2f}x, bf16 {bf16:.2f}x "
                      f"(target fp32 >= 1.5x: {met(fp32 >= 1.5)})."]
    return lines
