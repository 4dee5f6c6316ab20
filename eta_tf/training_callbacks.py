"""What the fit loop reports, and how: the Keras callbacks of eta_tf.training.

- `steps_per_epoch(split_stats, batch_size)`: steps of one pass over a split, from the
  pipeline's stats.json, so that the progress bar has a total and an ETA.
- `ProgbarWithTotal`: Keras' progress bar, told that total when the dataset cannot say it.
- `EpochTimeEstimate`: after the first few steps, one line with the time per step and the
  estimated time per epoch and for the whole run.
- `EvalEachEpoch`: evaluates after every epoch on a line of its own (never glued to the
  progress bar), shows the evaluation's progress, prints the metrics as one JSON line and
  writes AUC / GAUC / logloss to TensorBoard (`<model_dir>/tensorboard/eval`).
- `StopOnNaN`, `ExamplesPerSecond`.
"""
import json
import math
import os
import sys
import time
from typing import Callable, Optional

from eta_tf import features as F
import tensorflow as tf  # after eta_tf: the tf-keras environment guard runs first

# Metrics written to TensorBoard after every epoch (tags epoch_<name>, run "eval").
TENSORBOARD_EVAL_METRICS = ("auc", "gauc", "logloss")
ESTIMATE_AFTER_STEPS = 5  # measured after the first (tracing) step


def read_split_stats(data_dir: str, split: str) -> Optional[dict]:
  """stats.json's entry for one split (records, targets, ...), None when absent."""
  path = os.path.join(data_dir, F.STATS_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f).get("splits", {}).get(split)


def steps_per_epoch(split_stats: Optional[dict], batch_size: int,
                    drop_remainder: bool = True) -> Optional[int]:
  """Batches in one pass over a split, for the reader that yields one sample per target.

  `split_stats` is the split's stats.json entry (`targets`: labelled targets = samples);
  None when it does not say. A last partial batch counts unless `drop_remainder`.
  """
  examples = (split_stats or {}).get("targets")
  if examples is None or batch_size < 1:
    return None
  return examples // batch_size if drop_remainder else math.ceil(examples / batch_size)


def format_seconds(seconds: float) -> str:
  if seconds < 90:
    return f"{seconds:.0f} s"
  if seconds < 90 * 60:
    return f"{seconds / 60:.1f} min"
  return f"{seconds / 3600:.1f} h"


def _bar_on_screen(callback) -> bool:
  """True when Keras draws a progress bar in place (verbose=1): a line without its end."""
  return callback.params.get("verbose") == 1


class ProgbarWithTotal(tf.keras.callbacks.ProgbarLogger):
  """Keras' progress bar with `steps` as its total when fit() does not know one (a
  dataset of unknown length): "12/30 [=====>....] - ETA: 9s" instead of "12/Unknown"."""

  def __init__(self, steps: Optional[int]):
    super().__init__(count_mode="steps")
    self.known_steps = steps

  def set_params(self, params):
    if params.get("steps") is None and self.known_steps:
      params = {**params, "steps": self.known_steps}
    super().set_params(params)


class EpochTimeEstimate(tf.keras.callbacks.Callback):
  """Times the steps after the first one (which traces the graph) and prints, once per
  run: "time per step ~0.78 s (steps 2-6): ~23 s per epoch of 30 steps, ~1.2 min for 3
  epochs (+ evaluation)"."""

  def __init__(self, steps: Optional[int], epochs: int, measure: int = ESTIMATE_AFTER_STEPS):
    super().__init__()
    self.steps, self.epochs, self.measure = steps, epochs, measure
    self.line = None

  def on_train_begin(self, logs=None):
    self._seen, self._start = 0, None

  def on_train_batch_end(self, batch, logs=None):
    if self.line is not None:
      return
    self._seen += 1
    if self._seen == 1:
      self._start, self._first = time.perf_counter(), batch
      return
    last = self.steps is not None and batch + 1 >= self.steps
    if self._seen - 1 < self.measure and not last:
      return
    per_step = (time.perf_counter() - self._start) / (self._seen - 1)
    text = f"time per step ~{per_step:.3g} s (steps {self._first + 2}-{batch + 1})"
    if self.steps:
      epoch = per_step * self.steps
      text += f": ~{format_seconds(epoch)} per epoch of {self.steps} steps"
      if self.epochs > 1:
        text += f", ~{format_seconds(epoch * self.epochs)} for {self.epochs} epochs"
      text += " (+ evaluation)"
    self.line = text
    print(("\n" if _bar_on_screen(self) else "") + text, flush=True)


class EvalEachEpoch(tf.keras.callbacks.Callback):
  """Evaluates after every epoch; prints one JSON line, adds eval_* to the logs and
  writes TENSORBOARD_EVAL_METRICS to `<log_dir>/eval` (step = epoch index, as Keras'
  epoch_* scalars).

  `eval_fn(progress)` returns the metrics dict and calls `progress(batches_done)` after
  each batch; `eval_batches` is the number it will run (None: unknown).
  """

  def __init__(self, eval_fn: Callable, eval_batches: Optional[int] = None,
               log_dir: Optional[str] = None):
    super().__init__()
    self.eval_fn, self.eval_batches, self.log_dir = eval_fn, eval_batches, log_dir
    self.history = []
    self._writer = None

  def on_epoch_end(self, epoch, logs=None):
    on_tty = _bar_on_screen(self) and sys.stdout.isatty()
    if _bar_on_screen(self):
      print(flush=True)  # end the progress bar's line
    total = self.eval_batches
    what = f"{total} batches" if total else "the eval split"
    print(f"evaluating {what} ...", end="" if on_tty else "\n", flush=True)
    start = last = time.perf_counter()

    def progress(done):
      nonlocal last
      now = time.perf_counter()
      if on_tty and (now - last >= 1.0 or done == total):
        last = now
        of = f"/{total}" if total else ""
        print(f"\revaluating {done}{of} batches ({now - start:.0f} s)", end="", flush=True)

    result = self.eval_fn(progress)
    if on_tty:
      print(f" done in {time.perf_counter() - start:.1f} s", flush=True)
    result["epoch"] = epoch + 1
    self.history.append(result)
    print("eval " + json.dumps(result, sort_keys=True), flush=True)
    self._write_tensorboard(epoch, result)
    if logs is not None:
      # Keras shows these in the progress bar: "eval_auc", and "eval_examples" not
      # "eval_eval_examples".
      logs.update({k if k.startswith("eval_") else f"eval_{k}": v
                   for k, v in result.items() if k != "epoch"})

  def _write_tensorboard(self, epoch, result):
    if not self.log_dir:
      return
    if self._writer is None:
      self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "eval"))
    # record_if(True): Keras' TensorBoard callback records only every update_freq steps.
    with self._writer.as_default(), tf.summary.record_if(True):
      for name in TENSORBOARD_EVAL_METRICS:
        if result.get(name) is not None:
          tf.summary.scalar(f"epoch_{name}", result[name], step=epoch)
    self._writer.flush()

  def on_train_end(self, logs=None):
    if self._writer is not None:
      self._writer.close()
      self._writer = None


class StopOnNaN(tf.keras.callbacks.Callback):
  """Stops at the first non-finite loss and remembers (batch, loss)."""

  def __init__(self):
    super().__init__()
    self.bad_batch = None

  def on_train_batch_end(self, batch, logs=None):
    loss = (logs or {}).get("loss")
    if loss is not None and not (float(loss) == float(loss) and abs(float(loss)) < 1e30):
      self.bad_batch = (batch, loss)
      self.model.stop_training = True


class ExamplesPerSecond(tf.keras.callbacks.Callback):
  """Steps, examples (real targets: the model's "examples" metric, user-batched batches
  vary) and seconds spent in training epochs (evaluation excluded)."""

  def on_train_begin(self, logs=None):
    self.steps, self.seconds, self.examples = 0, 0.0, 0

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.perf_counter()
    self._epoch_steps, self._epoch_examples = 0, 0

  def on_train_batch_end(self, batch, logs=None):
    self._epoch_steps += 1
    self._epoch_examples = (logs or {}).get("examples", 0)

  def on_epoch_end(self, epoch, logs=None):
    self.seconds += time.perf_counter() - self._start
    self.steps += self._epoch_steps
    self.examples += int(self._epoch_examples)
