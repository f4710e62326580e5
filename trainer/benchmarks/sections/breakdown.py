"""Where a training step's time goes (fp32, ms per step, medians): the input pipeline alone,
forward, backward, the optimizer, the loop as it trains, and the Python cost of one call per
step. `run` takes the tutorials' `cnn` at batch 100; the resnet section reuses `table`."""

from __future__ import annotations

import time

from trainer.benchmarks import loops, runner

_PARTS = (("input", "input pipeline alone (next batch)"),
          ("forward", "forward pass (fixed batch)"),
          ("forward_backward", "forward + backward"),
          ("step_fixed_batch", "forward + backward + optimizer ({optimizer})"),
          ("loop", "the loop as it trains (input included, {steps} steps per call)"),
          ("loop_one_step_per_call", "the loop, one tf.function call per step"))


def measure(budget: runner.Budget, train_files: str, model: str, batch: int,
            shape: list[int]) -> dict:
    """Milliseconds per step of each part, a fixed batch for the model-only parts (in-graph
    loops), rounds alternating after one tracing call each."""
    import tensorflow as tf

    from trainer import data, loop

    source = loops.source(train_files, shape)
    keras_model, optimizer = loops.build(model, "none", source.image_shape)
    optimizer.build(keras_model.trainable_variables)
    steps = loop.StepFunctions(tf.distribute.get_strategy(), keras_model, optimizer, batch)
    iterator = iter(data.make_dataset(source, batch_size=batch, training=True,
                                      shuffle_buffer=10_000, seed=1))
    images, labels = next(iterator)
    n = budget.breakdown_steps

    def in_graph_loop(body):
        @tf.function
        def repeat(count):
            total = tf.constant(0.0)
            for _ in tf.range(count):
                total += body()
            return total
        return lambda: repeat(tf.constant(n)).numpy()

    def reduced(tensors):
        return tf.add_n([tf.reduce_sum(tf.cast(t, tf.float32)) for t in tensors])

    parts = {
        "input": in_graph_loop(lambda: tf.reduce_sum(next(iterator)[0])),
        "forward": in_graph_loop(lambda: tf.reduce_sum(keras_model(images, training=True))),
        "forward_backward": in_graph_loop(
            lambda: reduced(steps._scaled_gradients(images, labels)[0])),
        "step_fixed_batch": in_graph_loop(lambda: tf.reduce_sum(steps._train_step(images,
                                                                                 labels))),
        "loop": lambda: steps.train(iterator, tf.constant(n, tf.int64)).numpy(),
        "loop_one_step_per_call": lambda: [steps.train(iterator, tf.constant(1, tf.int64))
                                           .numpy() for _ in range(n)],
    }

    def ms_per_step(run):
        def timed():
            start = time.perf_counter()
            run()
            return 1000 * (time.perf_counter() - start) / n
        return timed

    return runner.alternate({name: ms_per_step(run) for name, run in parts.items()},
                            budget.rounds)


def table(ctx: runner.Context, files: str, model: str, batch: int, shape) -> list[str]:
    from trainer import models

    ctx.say(f"where a {model} step goes ...")
    ms = runner.medians(runner.child(measure, ctx.budget, train_files=files, model=model,
                                     batch=batch, shape=list(shape)))
    optimizer = models.MODELS[model].optimizer
    return [f"### Where a `{model}` step goes ({'x'.join(map(str, shape))}, fp32, batch {batch}, "
            "ms per step, medians)", "",
            "| part | ms/step |", "|---|---|",
            *(f"| {label.format(optimizer=optimizer, steps=ctx.budget.breakdown_steps)} | "
              f"{ms[key]:.1f} |" for key, label in _PARTS), "",
            f"Derived: backward {ms['forward_backward'] - ms['forward']:.1f} ms, optimizer "
            f"{ms['step_fixed_batch'] - ms['forward_backward']:.1f} ms, input inside the loop "
            f"{ms['loop'] - ms['step_fixed_batch']:.1f} ms, Python per extra call "
            f"{ms['loop_one_step_per_call'] - ms['loop']:.1f} ms."]


def run(ctx: runner.Context) -> list[str]:
    return table(ctx, ctx.train_files, "cnn", 100, loops.MNIST_SHAPE)
