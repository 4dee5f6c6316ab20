"""The fit loop of every model: data, optimiser, callbacks, evaluation, final weights.

Library half of `python -m eta_tf.train` (which adds flags, the embedded default and the
export), also used by bench/ and the tests:

    metrics, model = train(ModelConfig(...), TrainConfig(...), data_dir, model_dir)

Writes into model_dir: model_config.json, train_config.json, run_info.json (data_dir),
backup/ (BackupAndRestore state every `checkpoint_every_steps`), tensorboard/,
final/weights and eval_metrics.json. The backup is kept until `finish_run` (the caller
exports first), so a run killed during the final eval, save or export resumes from the end
of training instead of from scratch.
"""
import contextlib
import json
import os
import shutil
from typing import Optional

import numpy as np

from eta_tf import baselines
from eta_tf import config as config_lib
from eta_tf import data
from eta_tf import features as F
from eta_tf import io_utils
from eta_tf import metrics
from eta_tf import training_callbacks as cb
from eta_tf.models import CtrModel
from eta_tf.models import user_batched
from eta_tf.models.weight_average import WeightAverage
import tensorflow as tf  # after eta_tf: the tf-keras environment guard runs first
import tensorflow_recommenders as tfrs

RUN_INFO_FILE = "run_info.json"
EVAL_METRICS_FILE = "eval_metrics.json"
BACKUP_DIR = "backup"
TRAIN_STATE_FILE = "train_state.json"


class UsageError(Exception):
  """Bad flags or data: reported as one line, exit code 2."""


def check_data_dir(data_dir: str):
  """Clear errors for a data_dir that is not the pipeline's output."""
  if not tf.io.gfile.isdir(data_dir):
    raise UsageError(f"--data_dir={data_dir}: no such directory")
  try:
    data.read_schema(data_dir)
  except (ValueError, OSError) as e:
    raise UsageError(f"--data_dir={data_dir}: {e}") from None
  try:  # the pipeline writes its marker last: an unfinished output is never read
    io_utils.check_complete(data_dir, F.COMPLETE_FILE, tf.io.gfile.exists,
                            lambda p: tf.io.gfile.stat(p).length,
                            lambda p: tf.io.gfile.GFile(p).read())
  except ValueError as e:
    raise UsageError(f"--data_dir={data_dir}: {e}") from None
  for split in F.SPLITS:
    if not tf.io.gfile.glob(F.split_file_pattern(data_dir, split)):
      raise UsageError(f"--data_dir={data_dir}: the {split} split is empty (no files "
                       f"match {F.split_file_pattern(data_dir, split)})")


def make_optimizer(model, learning_rate: float, embedding_learning_rate: float):
  """Adagrad for the embedding tables, Adam for everything else (TFRS's DLRM recipe).

  Keras' Adam decays its moment estimates for every row of a table at every step (a dense
  pass over item_buckets x d, measured 3x slower per step than the model itself at the
  default 2^18 buckets); Adagrad's update touches only the rows a batch looked up.
  """
  def embedding_variables():
    return model.embedding.trainable_variables

  def dense_variables():
    sparse = {id(v) for v in model.embedding.trainable_variables}
    return [v for v in model.trainable_variables if id(v) not in sparse]

  return tfrs.experimental.optimizers.CompositeOptimizer([
      (tf.keras.optimizers.legacy.Adagrad(embedding_learning_rate), embedding_variables),
      (tf.keras.optimizers.legacy.Adam(learning_rate), dense_variables)])


def make_strategy(name: str):
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise UsageError("--strategy=multi_worker: TF_CONFIG is not set")
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.get_strategy()


RETRIEVAL_DIAGNOSTICS = ("overlap", "attention_recall", "distance0_share",
                         "same_category_share")


def evaluate(model, dataset, max_steps=None, train_item_counts=None, progress=None) -> dict:
  """AUC, GAUC, logloss, positive rate on a dataset; for eta also the retrieval
  diagnostics of CtrModel.retrieval_diagnostics (overlap@k, attention recall, shares of
  the retrieved at distance 0 and of the candidate's category), means over samples with
  a history.

  With `train_item_counts` ({item id: occurrences in train}, eta_tf.baselines), also the
  training-free baselines on the same samples under "heuristics". `progress(batches
  done)` is called after every batch.
  """
  is_eta = model.config.model == "eta"
  with_heuristics = train_item_counts is not None

  @tf.function
  def step(features):
    out = {"p": model.predict_ctr(features)}
    if is_eta:
      out.update(model.retrieval_diagnostics(features))
    return out

  users, labels, probs, overlaps, heuristic_parts = [], [], [], [], []
  for i, (features, label) in enumerate(dataset):
    if max_steps is not None and i >= max_steps:
      break
    out = step(features)
    users.append(features[F.USER_ID].numpy())
    labels.append(label.numpy())
    probs.append(out["p"].numpy())
    if with_heuristics:
      batch = {name: features[name].numpy() for name in F.MODEL_INPUTS}
      part = baselines.history_scores(batch)
      part["item_popularity"] = baselines.popularity_scores(batch[F.TARGET_ITEM_ID],
                                                            train_item_counts)
      heuristic_parts.append(part)
    if is_eta:
      has_history = out["has_history"].numpy()
      overlaps.append({name: out[name].numpy()[has_history]
                       for name in RETRIEVAL_DIAGNOSTICS})
    if progress is not None:
      progress(i + 1)
  if not labels:
    raise UsageError("the eval split produced no samples")
  users, labels, probs = map(np.concatenate, (users, labels, probs))
  result = {
      "auc": metrics.auc(labels, probs),
      "gauc": metrics.gauc(users, labels, probs),
      "logloss": metrics.logloss(labels, probs),
      "positive_rate": float(labels.mean()),
      "mean_prediction": float(probs.mean()),
      "eval_examples": int(labels.size),
  }
  if is_eta:
    # Means over the samples with a history; overlap keeps its historical key.
    for name in RETRIEVAL_DIAGNOSTICS:
      key = f"overlap_at_{model.config.top_k}" if name == "overlap" else name
      result[key] = float(np.concatenate([o[name] for o in overlaps]).mean())
  if with_heuristics:
    scores = {name: np.concatenate([p[name] for p in heuristic_parts])
              for name in baselines.HEURISTICS}
    result["heuristics"] = baselines.evaluate_heuristics(users, labels, scores)
  return result


def _callbacks(model_dir, eval_fn, checkpoint_every, steps, epochs, eval_batches,
               average=None):
  """The fit callbacks, in the order Keras calls them (the weight average before the
  checkpoint, so that a checkpoint holds the average of the steps it holds; the timing
  ones before the evaluation, so that it is not counted as training time)."""
  return {
      **({"average": average} if average is not None else {}),
      # delete_checkpoint=False: finish_run deletes the state once the export is done.
      "backup": tf.keras.callbacks.BackupAndRestore(
          os.path.join(model_dir, BACKUP_DIR), save_freq=checkpoint_every,
          delete_checkpoint=False),
      "tensorboard": tf.keras.callbacks.TensorBoard(os.path.join(model_dir, "tensorboard"),
                                                    update_freq=50),
      "nan": cb.StopOnNaN(),
      "speed": cb.ExamplesPerSecond(),
      "estimate": cb.EpochTimeEstimate(steps, epochs),
      "eval": cb.EvalEachEpoch(eval_fn, eval_batches, os.path.join(model_dir, "tensorboard")),
      "progbar": cb.ProgbarWithTotal(steps),
  }


def train(model_config: config_lib.ModelConfig, train_config: config_lib.TrainConfig,
          data_dir: str, model_dir: str, verbose: int = 1, keep_backup: bool = False):
  """Trains `model_config.model` on data_dir; returns (final eval metrics, model).

  Phases, each resumable after a kill: fit (BackupAndRestore state in backup/), final
  weights + final/train_state.json, evaluation -> eval_metrics.json. While backup/ exists
  the run is unfinished and a restart skips the phases already done; with `keep_backup`
  it stays until `finish_run(model_dir)` (after the export), else it goes at the end.
  """
  tc = train_config
  tf.keras.utils.set_random_seed(tc.seed)
  strategy = make_strategy(tc.strategy)
  # Workers other than the chief write their copies aside, so files never race.
  out_dir = model_dir if is_chief() else os.path.join(model_dir, f"worker_{task_index()}")
  if not os.path.isdir(os.path.join(model_dir, BACKUP_DIR)):  # a fresh run
    shutil.rmtree(os.path.join(out_dir, "final"), ignore_errors=True)
    if os.path.exists(os.path.join(out_dir, EVAL_METRICS_FILE)):
      os.remove(os.path.join(out_dir, EVAL_METRICS_FILE))
  config_lib.save_configs(model_dir, model_config, tc)
  io_utils.atomic_write_json(os.path.join(model_dir, RUN_INFO_FILE),
                             {"data_dir": os.path.abspath(data_dir)})

  eval_ds = data.make_dataset(data_dir, F.EVAL_SPLIT, model_config.max_len, tc.batch_size,
                              shuffle=False, include_user_id=True)
  with strategy.scope():
    model = CtrModel(model_config)
    model.build_weights()
    model.compile(optimizer=make_optimizer(model, tc.learning_rate,
                                           tc.embedding_learning_rate))
    average = None
    if tc.weight_average:  # before fit: BackupAndRestore restores it with the model
      average = WeightAverage(tc.weight_average)
      average.attach(model)
  weights = os.path.join(out_dir, "final", "weights")
  state_path = os.path.join(out_dir, "final", TRAIN_STATE_FILE)
  if os.path.exists(state_path):
    print(f"resuming after training: final weights {weights}", flush=True)
    tf.train.Checkpoint(model=model).read(weights).expect_partial()
    with open(state_path) as f:
      state = json.load(f)
  else:
    state = _fit(model, model_config, tc, data_dir, model_dir, eval_ds, verbose, average)
    if average is not None:  # the averaged weights are the run's result
      average.apply()
    tf.train.Checkpoint(model=model).write(weights)
    io_utils.atomic_write_json(state_path, state)  # after the weights: they are complete

  metrics_path = os.path.join(out_dir, EVAL_METRICS_FILE)
  if os.path.exists(metrics_path):
    with open(metrics_path) as f:
      final = json.load(f)
  else:
    final = evaluate(model, eval_ds, tc.eval_steps,
                     train_item_counts=baselines.train_item_counts(data_dir))
    final.update({"model": model_config.model, "epochs": tc.epochs, **state})
    io_utils.atomic_write_json(metrics_path, final)
  if not keep_backup:
    finish_run(model_dir)
  return final, model


def _fit(model, model_config, tc, data_dir, model_dir, eval_ds, verbose, average=None) -> dict:
  """model.fit with the callbacks; returns the training facts kept in eval_metrics.
  With `average` (a WeightAverage), each epoch's evaluation reads the averaged weights."""
  train_ds = train_dataset(model_config, tc, data_dir)
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.DATA)
  train_ds = train_ds.with_options(options)
  user_batches = F.TARGET_HISTORY_END in train_ds.element_spec[0]
  steps = tc.steps or (user_epoch_steps(data_dir, tc.batch_size) if user_batches else
                       epoch_steps(data_dir, F.TRAIN_SPLIT, tc.batch_size))
  eval_batches = epoch_steps(data_dir, F.EVAL_SPLIT, tc.batch_size, drop_remainder=False)
  if eval_batches and tc.eval_steps:
    eval_batches = min(eval_batches, tc.eval_steps)
  print(f"{steps or 'unknown'} steps per epoch of "
        + ("{} user chunks of up to {} targets".format(*data.user_batch_shape(tc.batch_size))
           if user_batches else f"{tc.batch_size} samples")
        + (f", evaluation {eval_batches} batches" if eval_batches else ""), flush=True)
  def evaluate_epoch(progress):
    with average.swapped() if average is not None else contextlib.nullcontext():
      return evaluate(model, eval_ds, tc.eval_steps, progress=progress)
  callbacks = _callbacks(model_dir, evaluate_epoch, tc.checkpoint_every_steps, steps,
                         tc.epochs, eval_batches, average)
  model.fit(train_ds, epochs=tc.epochs, steps_per_epoch=tc.steps, verbose=verbose,
            callbacks=list(callbacks.values()))
  nan = callbacks["nan"].bad_batch
  if nan is not None:
    finish_run(model_dir)  # nothing to resume: a rerun starts afresh
    raise FloatingPointError(
        f"loss became {nan[1]} at batch {nan[0]}; stopping. Lower --learning_rate "
        f"(now {tc.learning_rate}) or check the data for extreme values.")
  speed = callbacks["speed"]
  return {
      "train_steps": int(model.optimizer.iterations.numpy()),  # global, across restarts
      "train_examples_per_second": (speed.examples / speed.seconds
                                    if speed.seconds else None),
      "epoch_history": callbacks["eval"].history,
  }


def train_dataset(model_config, tc, data_dir):
  """The shuffled, repeated-if-steps train split, batched as `tc.batching` says (per
  sample when the model has no user-batched path; said on stdout)."""
  args = dict(shuffle=True, seed=tc.seed, repeat=tc.steps is not None,
              include_user_id=False, drop_remainder=True)
  if tc.batching == "user":
    reason = user_batched.unsupported_reason(model_config)
    if reason is None:
      return data.make_user_dataset(data_dir, F.TRAIN_SPLIT, model_config.max_len,
                                    tc.batch_size, **args)
    print(f"batching=user: {model_config.model} with {reason} has no user-batched path; "
          "training per sample", flush=True)
  return data.make_dataset(data_dir, F.TRAIN_SPLIT, model_config.max_len, tc.batch_size,
                           **args)


def user_epoch_steps(data_dir: str, batch_size: int) -> int:
  """Full user-batched batches of one pass over the train split on this worker (counts
  the chunks of every record: reads the split's target labels once)."""
  rows, chunk = data.user_batch_shape(batch_size)
  return data.count_samples(data_dir, F.TRAIN_SPLIT, chunk) // rows // num_workers()


def epoch_steps(data_dir: str, split: str, batch_size: int,
                drop_remainder: bool = True) -> Optional[int]:
  """Steps of one pass over `split` on this worker, from the data's stats.json (None when
  it has no counts): the data is sharded over the workers of a multi-worker cluster."""
  steps = cb.steps_per_epoch(cb.read_split_stats(data_dir, split), batch_size,
                             drop_remainder)
  return None if steps is None else steps // num_workers()


def finish_run(model_dir: str):
  """Deletes the BackupAndRestore state: the next run in model_dir starts afresh."""
  shutil.rmtree(os.path.join(model_dir, BACKUP_DIR), ignore_errors=True)


def _tf_config() -> dict:
  return json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")


def num_workers() -> int:
  """Tasks that train (chief and workers) in TF_CONFIG's cluster; 1 without one."""
  cluster = _tf_config().get("cluster", {})
  return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


def task_index() -> int:
  return int(_tf_config().get("task", {}).get("index", 0))


def is_chief() -> bool:
  """The chief, or worker 0 of a cluster without one (TF's convention)."""
  task = _tf_config().get("task", {})
  has_chief = "chief" in _tf_config().get("cluster", {})
  return task.get("type", "chief") == "chief" or (
      not has_chief and task.get("type") == "worker" and task_index() == 0)


def refuse_other_configs(model_dir: str, model_config: config_lib.ModelConfig,
                         train_config: config_lib.TrainConfig):
  """UsageError naming the first field when model_dir holds a run (backup/ or final/)
  trained with other configs: resuming it would mix two runs, overwriting would lose one."""
  if not any(os.path.isdir(os.path.join(model_dir, d)) for d in (BACKUP_DIR, "final")):
    return
  for field, saved, wanted in config_lib.config_differences(model_dir, model_config,
                                                            train_config):
    raise UsageError(f"--model_dir={model_dir} was trained with {field}={saved!r}, not "
                     f"--{field}={wanted!r}; pass the same flags to resume it or use "
                     "another --model_dir")


def resume_note(model_dir: str) -> str:
  """What a run stopped now would resume from, for the Ctrl-C line: "<what>; resume with"."""
  final = os.path.join(model_dir, "final")
  if os.path.exists(os.path.join(final, TRAIN_STATE_FILE)):
    return (f"training had finished (final weights in {final}); the evaluation and export "
            "resume with")
  backup = os.path.join(model_dir, BACKUP_DIR)
  checkpoint = tf.train.latest_checkpoint(os.path.join(backup, "chief"))
  if checkpoint is None:
    return f"no checkpoint in {backup} yet; start again with"
  return f"last checkpoint {checkpoint}{_checkpoint_position(checkpoint)}; resume with"


def _checkpoint_position(checkpoint: str) -> str:
  """" (epoch E, step S of it)" of a BackupAndRestore checkpoint, "" if it does not say."""
  try:
    reader = tf.train.load_checkpoint(checkpoint)
    epoch, batch = (int(reader.get_tensor(f"ckpt_saved_{name}/.ATTRIBUTES/VARIABLE_VALUE"))
                    for name in ("epoch", "batch"))
  except (tf.errors.OpError, ValueError):
    return ""
  return f" (epoch {epoch + 1}, step {batch + 1} of it)" if batch >= 0 else f" (epoch {epoch + 1})"


def baseline_comparison(result: dict) -> str:
  """One line: the eval AUC / GAUC beside the training-free baselines on the same samples
  (eta_tf.baselines, in result["heuristics"]) and how far it is above the best of them."""
  line = f"eval AUC {result['auc']:.4f}, GAUC {result['gauc']:.4f}"
  heuristics = result.get("heuristics") or {}
  if not heuristics:
    return line
  best = max(heuristics, key=lambda name: heuristics[name]["auc"])
  parts = ", ".join(f"{name} {h['auc']:.4f}" for name, h in heuristics.items())
  margin = result["auc"] - heuristics[best]["auc"]
  return (f"{line}; training-free baselines on the same samples (AUC): {parts}; "
          f"{'above' if margin > 0 else 'NOT above'} the best ({best}) by {margin:+.4f}")
