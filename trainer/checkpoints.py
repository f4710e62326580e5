"""Where a run's checkpoints come from and go to, and how a damaged directory is recovered.

Every replica restores from `directory` (the chief's). The chief also saves there; other
multi-worker replicas must take part in saving (it is a collective) but write to a throwaway
`save_dir` so they never overwrite the chief's files.

Recovery rules (what `restore` does):
- Candidates are the `ckpt-N` files on disk, newest first, whatever the `checkpoint` state
  file says: a missing, truncated, stale or binary state file never hides a checkpoint.
- A candidate is usable when its index and every data shard exist and every tensor reads
  back. An unusable one (a crash mid-save, a deleted or truncated file) is skipped with a
  warning naming it and why; the chief moves its files to `corrupt/` and rewrites the state
  file, so the next run and the checkpoint rotation see only good checkpoints.
- An intact checkpoint that does not fit the model is an error (another model, input or data
  is caught before, by the run record: trainer.run_record).
- If checkpoint files exist but none is usable, the run stops with an error instead of
  silently starting over; `--restart-from-scratch` makes starting from step 0 explicit.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Iterator

import tensorflow as tf

from trainer.errors import TrainerError, short_reason
from trainer.storage import join

log = logging.getLogger(__name__)

PREFIX = "ckpt"
QUARANTINE = "corrupt"
SET_ASIDE = "replaced-"  # + a timestamp: checkpoints of another run, kept
_FILE = re.compile(rf"^{PREFIX}-(\d+)\.(index|data-(\d+)-of-(\d+))$")
_TEMP = re.compile(rf"^{PREFIX}-\d+_temp")  # what a save killed midway leaves behind


class Checkpoints:
    """Restores and saves one `tf.train.Checkpoint` whose `step` variable is the global step.

    `optional` names state that a checkpoint may lack (the fp16 loss scale: checkpoints of
    other precisions or older versions have none). It is saved, and restored when present;
    what must fit is checked on the rest only.
    """

    def __init__(self, checkpoint: tf.train.Checkpoint, step: tf.Variable, *, directory: str,
                 save_dir: str | None = None, keep: int = 5,
                 options: tf.train.CheckpointOptions | None = None,
                 restart_from_scratch: bool = False, optional: dict | None = None):
        self._checkpoint = checkpoint
        self._optional = dict(optional or {})
        self._step = step
        self.directory = directory
        self._save_dir = save_dir
        self._keep = keep
        self._options = options
        self._restart_from_scratch = restart_from_scratch
        self._manager = None

    @property
    def _repairs(self) -> bool:
        return self._save_dir == self.directory  # the chief: the directory is its to fix

    def restore(self) -> str | None:
        """Restores the newest usable checkpoint, if any, and returns its path."""
        files = _listing(self.directory)
        if self._repairs:
            _remove_temp_dirs(self.directory, files)
        candidates = _candidates(self.directory, files)
        skipped = []
        for path, problem in candidates:
            problem = problem or _unreadable(path)
            if problem is None:
                self._restore(path)
                break
            log.warning("checkpoint %s is unusable (%s); trying an older one", path, problem)
            skipped.append((path, problem))
        else:
            path = None
        if skipped and self._repairs:
            self._quarantine([p for p, _ in skipped], files)
        if path is None and skipped and not self._restart_from_scratch:
            newest, problem = skipped[0]
            raise TrainerError(
                f"--job-dir: none of the {len(skipped)} checkpoint(s) in {self.directory} "
                f"restores (newest {newest}: {problem}); rerun with --restart-from-scratch to "
                "start over from step 0, or use another --job-dir")
        if path is None and skipped:
            log.warning("--restart-from-scratch: starting from step 0; the unusable "
                        "checkpoints are in %s", join(self.directory, QUARANTINE))
        if self._repairs and (skipped or not _state_ok(self.directory, path)):
            good = [p for p, problem in candidates if (p, problem) not in skipped and not problem]
            _write_state(self.directory, path, good)
        if path is not None:
            log.info("resumed from checkpoint %s at step %d", path, int(self._step.numpy()))
        return path

    def _restore(self, path: str) -> None:
        try:
            self._checkpoint.restore(path, options=self._options).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as err:
            reason = " ".join(str(err).split())[:200]
            raise TrainerError(f"checkpoint {path} does not fit this model; use another "
                               f"--job-dir or AIP_CHECKPOINT_DIR ({reason})") from None
        self._attach_optional()

    def _attach_optional(self) -> None:
        # Attached after a restore, the objects take their values from that checkpoint if it
        # has them (TensorFlow's deferred restoration) and keep their own otherwise.
        for name, trackable in self._optional.items():
            setattr(self._checkpoint, name, trackable)
        self._optional = {}

    def _quarantine(self, paths: list[str], files: set[str]) -> None:
        target = join(self.directory, QUARANTINE)
        tf.io.gfile.makedirs(target)
        for path in paths:
            prefix = path.rsplit("/", 1)[-1] + "."
            for name in sorted(f for f in files if f.startswith(prefix)):
                tf.io.gfile.rename(join(self.directory, name), join(target, name),
                                   overwrite=True)
        log.warning("moved %d unusable checkpoint(s) to %s", len(paths), target)

    def new_checkpoints(self, timeout_secs: float, poll_secs: float = 1.0) -> Iterator[str]:
        """Each checkpoint as it becomes the newest the state file names (the newest wins when
        several came meanwhile); ends when none comes for `timeout_secs`. As
        tf.train.checkpoints_iterator, but a state file that is not text reads as none yet."""
        last, since = None, time.monotonic()
        while True:
            path = latest(self.directory)
            if path is not None and path != last:
                last = path
                yield path
                since = time.monotonic()
            elif time.monotonic() - since >= timeout_secs:
                return
            else:
                time.sleep(poll_secs)

    def restore_for_evaluation(self, path: str) -> int | None:
        """Restores the model part of `path` and returns its step; None if it vanished."""
        try:
            self._checkpoint.restore(path).expect_partial()
        except (tf.errors.NotFoundError, ValueError):
            log.info("evaluator: %s was deleted before it could be read; waiting for the next",
                     path)
            return None
        return int(self._step.numpy())

    def save(self, step: int) -> None:
        self._attach_optional()
        if self._manager is None:
            self._manager = tf.train.CheckpointManager(self._checkpoint, self._save_dir,
                                                       checkpoint_name=PREFIX,
                                                       max_to_keep=self._keep)
        try:
            self._manager.save(checkpoint_number=step, options=self._options)
        except (tf.errors.OpError, OSError) as err:
            raise TrainerError(f"cannot write the checkpoint of step {step} to {self._save_dir} "
                               f"({short_reason(err)}); the previous checkpoint is kept") \
                from None


def present(directory: str) -> bool:
    """Whether `directory` holds files of any checkpoint (usable or not)."""
    return any(_FILE.match(name) for name in _listing(directory))


def set_aside(directory: str) -> str:
    """Moves every checkpoint file, the state file and the run record into a new
    `replaced-<time>/` subdirectory (a run starting over never deletes another's work);
    returns it. `--init-checkpoint` can warm start from there."""
    from trainer.run_record import RECORD_NAME

    target = join(directory, f"{SET_ASIDE}{time.strftime('%Y%m%d-%H%M%S')}")
    names = sorted(name for name in _listing(directory)
                   if _FILE.match(name) or name in ("checkpoint", RECORD_NAME))
    try:
        tf.io.gfile.makedirs(target)
        for name in names:
            tf.io.gfile.rename(join(directory, name), join(target, name), overwrite=True)
    except tf.errors.OpError as err:
        raise TrainerError(f"cannot move the checkpoints in {directory} to {target} "
                           f"({short_reason(err)})") from None
    return target


def _listing(directory: str) -> set[str]:
    try:
        return set(tf.io.gfile.listdir(directory)) if tf.io.gfile.isdir(directory) else set()
    except tf.errors.OpError as err:
        raise TrainerError(f"cannot list the checkpoints in {directory} ({short_reason(err)})") \
            from None


def _candidates(directory: str, files: set[str]) -> list[tuple[str, str | None]]:
    """(path, problem or None) of every checkpoint with a file on disk, newest first."""
    found: dict[int, dict] = {}
    for name in files:
        match = _FILE.match(name)
        if not match:
            continue
        parts = found.setdefault(int(match.group(1)), {"index": False, "shards": set(),
                                                       "of": set()})
        if match.group(2) == "index":
            parts["index"] = True
        else:
            parts["shards"].add(int(match.group(3)))
            parts["of"].add(int(match.group(4)))
    candidates = []
    for number in sorted(found, reverse=True):
        parts = found[number]
        problem = None
        if not parts["index"]:
            problem = "its .index file is missing"
        elif len(parts["of"]) != 1 or parts["shards"] != set(range(next(iter(parts["of"])))):
            problem = "a .data shard is missing"
        candidates.append((join(directory, f"{PREFIX}-{number}"), problem))
    return candidates


def _unreadable(path: str) -> str | None:
    """Why the tensors of `path` do not all read back, or None when they do."""
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError) as err:
        return f"corrupt: {short_reason(err)}"
    return None


def latest(directory: str) -> str | None:
    """The checkpoint the state file of `directory` names; None when it names none, or is not
    text (TensorFlow's reader raises UnicodeDecodeError on binary bytes)."""
    try:
        return tf.train.latest_checkpoint(directory)
    except UnicodeDecodeError:
        return None


def newest(directory: str) -> str | None:
    """The checkpoint another run's directory offers: the one its state file names, else (no
    state file, or one that is not text) the newest on disk with its index and every shard."""
    return latest(directory) or next(
        (path for path, problem in _candidates(directory, _listing(directory)) if not problem),
        None)


def _state_ok(directory: str, path: str | None) -> bool:
    try:
        return tf.train.latest_checkpoint(directory) == path
    except UnicodeDecodeError:
        log.warning("the checkpoint state file %s is not text; it is rewritten from the "
                    "checkpoints on disk", join(directory, "checkpoint"))
        return False


def _write_state(directory: str, latest: str | None, good: list[str]) -> None:
    """Rewrites the `checkpoint` state file to list the usable checkpoints, oldest first.

    Written as CheckpointManager writes it, timestamps included: entries without them would
    count as preserved and never rotate out under --keep-checkpoints.
    """
    state = join(directory, "checkpoint")
    if latest is None:
        if tf.io.gfile.exists(state):
            tf.io.gfile.remove(state)
        return
    names = [p.rsplit("/", 1)[-1] for p in reversed(good)]
    now = time.time()
    lines = [f'model_checkpoint_path: "{latest.rsplit("/", 1)[-1]}"']
    lines += [f'all_model_checkpoint_paths: "{name}"' for name in names]
    lines += [f"all_model_checkpoint_timestamps: {now:.3f}" for _ in names]
    lines.append("last_preserved_timestamp: 0.0")
    staging = f"{state}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(staging, "w") as f:
        f.write("\n".join(lines) + "\n")
    tf.io.gfile.rename(staging, state, overwrite=True)
    log.info("rewrote the checkpoint state file in %s (latest %s)", directory, names[-1])


def _remove_temp_dirs(directory: str, files: set[str]) -> None:
    for name in sorted(files):
        if _TEMP.match(name):
            tf.io.gfile.rmtree(join(directory, name))
            log.info("removed %s, left by a save that was cut short", join(directory, name))
