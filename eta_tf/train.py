r"""Train, evaluate and export a model of the ETA-Net family.

  python -m eta_tf.train                       # embedded default: synthetic log ->
                                               # Beam pipeline -> train eta -> export
  python -m eta_tf.train --data_dir=DIR --model=eta --epochs=3 --model_dir=runs/eta

`--data_dir` is the output of `python -m pipelines.build_dataset`. Checkpoints go to
`--model_dir` every `--checkpoint_every_steps`; a killed run restarted with the same flags
resumes from the last one. Evaluation on the eval split after every epoch and at the end
writes `<model_dir>/eval_metrics.json` and prints it as one JSON line. Unless `--noexport`,
the model is exported to `<export_base>/<model_name>/<version>/` for TF Serving.
"""
import json
import logging as std_logging
import os
import subprocess
import sys
import time

from absl import app
from absl import flags
from absl import logging

from eta_tf import _keras_env  # noqa: F401  (before TensorFlow)
from eta_tf import config as config_lib
from eta_tf import features as F

FLAGS = flags.FLAGS
_DEFAULTS = config_lib.ModelConfig()

flags.DEFINE_string("data_dir", None, "Output dir of pipelines.build_dataset. Empty: "
                    "generate a synthetic log, run the pipeline into <model_dir>/data and "
                    "train on it (the embedded default).")
flags.DEFINE_enum("model", "eta", list(config_lib.MODEL_NAMES), "Which model to train.")
flags.DEFINE_integer("max_len", None, f"L: long history length (default "
                     f"{_DEFAULTS.max_len}; 256 in the embedded default).")
flags.DEFINE_integer("short_len", None, f"S: short history length (default "
                     f"{_DEFAULTS.short_len}; 16 in the embedded default).")
flags.DEFINE_integer("item_dim", _DEFAULTS.item_dim, "d: item embedding size.")
flags.DEFINE_integer("category_dim", _DEFAULTS.category_dim, "Category embedding size.")
flags.DEFINE_integer("hash_bits", _DEFAULTS.hash_bits,
                     f"m: SimHash bits, one of {config_lib.SUPPORTED_HASH_BITS}.")
flags.DEFINE_integer("top_k", _DEFAULTS.top_k, "k: behaviors retrieved per candidate.")
flags.DEFINE_integer("num_heads", _DEFAULTS.num_heads, "Attention heads.")
flags.DEFINE_integer("head_dim", _DEFAULTS.head_dim, "Size of each attention head.")
flags.DEFINE_integer("item_buckets", _DEFAULTS.item_buckets, "Hash buckets for item ids.")
flags.DEFINE_integer("category_buckets", _DEFAULTS.category_buckets,
                     "Hash buckets for category ids.")
flags.DEFINE_integer("time_buckets", _DEFAULTS.time_buckets, "Time-gap log2 buckets.")
flags.DEFINE_integer("cross_layers", _DEFAULTS.cross_layers, "DCN-v2 cross layers.")
flags.DEFINE_list("mlp_units", [str(u) for u in _DEFAULTS.mlp_units], "MLP layer sizes.")
flags.DEFINE_float("dropout", _DEFAULTS.dropout, "MLP dropout rate.")
flags.DEFINE_integer("sdim_tau", _DEFAULTS.sdim_tau, "SDIM bits per bucket group.")
flags.DEFINE_integer("hash_seed", _DEFAULTS.hash_seed, "Seed of the SimHash projection.")
flags.DEFINE_bool("hamming_xla", _DEFAULTS.hamming_xla, "eta: jit-compile the Hamming "
                  "distance pass (faster for long histories; TF Serving then needs "
                  "--xla_cpu_compilation_enabled=true, which docker/ sets).")
flags.DEFINE_integer("epochs", None, "Epochs over the train split (default 3; 2 in the "
                     "embedded default).")
flags.DEFINE_integer("steps", None, "Steps per epoch (default: the whole train split; "
                     "200 in the embedded default).")
flags.DEFINE_integer("eval_steps", None, "Eval batches (default: the whole eval split; "
                     "60 in the embedded default).")
flags.DEFINE_integer("batch_size", 256, "Global batch size.")
flags.DEFINE_float("learning_rate", 2e-3, "Adam learning rate (all dense weights).")
flags.DEFINE_float("embedding_learning_rate", 0.5, "Adagrad learning rate of the "
                   "embedding tables (sparse updates: only the rows a batch touches).")
flags.DEFINE_string("model_dir", None, "Checkpoints, TensorBoard logs, config and metrics "
                    "(default runs/<model>).")
flags.DEFINE_string("export_base", None, "TF Serving model base dir parent (default "
                    "<model_dir>/../export).")
flags.DEFINE_string("model_name", None, "Name under export_base (default: --model).")
flags.DEFINE_bool("export", True, "Export a SavedModel at the end.")
flags.DEFINE_string("label", "canary", "Version label given to the export in "
                    "models.config (empty: none).")
flags.DEFINE_integer("seed", 0, "Seed for initialisation and shuffling.")
flags.DEFINE_integer("checkpoint_every_steps", 100, "Checkpoint frequency (steps).")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "tf.distribute strategy; multi_worker reads TF_CONFIG.")
flags.DEFINE_integer("num_threads", 0, "Intra- and inter-op threads (0 = TF default). "
                     "1 gives bitwise-reproducible runs.")
flags.DEFINE_integer("synthetic_users", 2000, "Embedded default: users in the log.")
flags.DEFINE_integer("verbose", 1, "Keras progress: 0 silent, 1 progress bar, 2 per epoch.")


class UsageError(Exception):
  """Bad flags or data: reported as one line, exit code 2."""


def _fail(message: str):
  print(f"eta_tf.train: error: {message}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv):
  """absl flag parsing with our error contract: one line, exit code 2, no traceback."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    _fail(str(e).splitlines()[0])


def _embedded_default() -> bool:
  return not FLAGS.data_dir


def model_config_from_flags() -> config_lib.ModelConfig:
  embedded = _embedded_default()
  return config_lib.ModelConfig(
      model=FLAGS.model,
      max_len=FLAGS.max_len or (256 if embedded else _DEFAULTS.max_len),
      short_len=FLAGS.short_len or (16 if embedded else _DEFAULTS.short_len),
      item_dim=FLAGS.item_dim, category_dim=FLAGS.category_dim,
      hash_bits=FLAGS.hash_bits, top_k=FLAGS.top_k, num_heads=FLAGS.num_heads,
      head_dim=FLAGS.head_dim, item_buckets=FLAGS.item_buckets,
      category_buckets=FLAGS.category_buckets, time_buckets=FLAGS.time_buckets,
      cross_layers=FLAGS.cross_layers,
      mlp_units=tuple(int(u) for u in FLAGS.mlp_units), dropout=FLAGS.dropout,
      sdim_tau=FLAGS.sdim_tau, hash_seed=FLAGS.hash_seed, hamming_xla=FLAGS.hamming_xla)


def prepare_embedded_data(model_dir: str, num_users: int, seed: int) -> str:
  """Generates a synthetic log and runs the Beam pipeline on it (DirectRunner)."""
  from pipelines import synthetic  # pylint: disable=g-import-not-at-top
  data_dir = os.path.join(model_dir, "data")
  if os.path.exists(os.path.join(data_dir, F.SCHEMA_FILE)):
    logging.info("Embedded default: reusing %s", data_dir)
    return data_dir
  os.makedirs(model_dir, exist_ok=True)
  log_path = os.path.join(model_dir, "synthetic_behaviors.csv.gz")
  print(f"[1/4] Generating a synthetic Taobao-format log ({num_users} users) -> {log_path}",
        flush=True)
  synthetic.generate(num_users=num_users, seed=seed, output=log_path)
  print(f"[2/4] Beam pipeline (DirectRunner) -> {data_dir}", flush=True)
  tmp_dir = data_dir + ".partial"
  cmd = [sys.executable, "-m", "pipelines.build_dataset", f"--input={log_path}",
         f"--output_dir={tmp_dir}", f"--seed={seed}"]
  result = subprocess.run(cmd, check=False)
  if result.returncode != 0:
    raise RuntimeError(f"pipeline failed ({' '.join(cmd)}), exit {result.returncode}")
  os.replace(tmp_dir, data_dir)
  return data_dir


def check_data_dir(data_dir: str):
  """Clear errors for a data_dir that is not the pipeline's output."""
  from eta_tf import data  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.isdir(data_dir):
    raise UsageError(f"--data_dir={data_dir}: no such directory")
  try:
    data.read_schema(data_dir)
  except (ValueError, OSError) as e:
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
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_recommenders as tfrs  # pylint: disable=g-import-not-at-top

  def embedding_variables():
    return model.embedding.trainable_variables

  def dense_variables():
    sparse = {id(v) for v in model.embedding.trainable_variables}
    return [v for v in model.trainable_variables if id(v) not in sparse]

  return tfrs.experimental.optimizers.CompositeOptimizer([
      (tf.keras.optimizers.legacy.Adagrad(embedding_learning_rate), embedding_variables),
      (tf.keras.optimizers.legacy.Adam(learning_rate), dense_variables)])


def make_strategy(name: str):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise UsageError("--strategy=multi_worker: TF_CONFIG is not set")
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.get_strategy()


RETRIEVAL_DIAGNOSTICS = ("overlap", "attention_recall", "distance0_share",
                         "same_category_share")


def evaluate(model, dataset, max_steps=None, train_item_counts=None) -> dict:
  """AUC, GAUC, logloss, positive rate on a dataset; for eta also the retrieval
  diagnostics of CtrModel.retrieval_diagnostics (overlap@k, attention recall, shares of
  the retrieved at distance 0 and of the candidate's category), means over samples with
  a history.

  With `train_item_counts` ({item id: occurrences in train}, eta_tf.baselines), also the
  training-free baselines on the same samples under "heuristics".
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from eta_tf import baselines  # pylint: disable=g-import-not-at-top
  from eta_tf import metrics  # pylint: disable=g-import-not-at-top
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


def _callbacks(model_dir, eval_fn, checkpoint_every):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  class EvalEachEpoch(tf.keras.callbacks.Callback):
    def __init__(self):
      super().__init__()
      self.history = []

    def on_epoch_end(self, epoch, logs=None):
      result = eval_fn()
      result["epoch"] = epoch + 1
      self.history.append(result)
      print("eval " + json.dumps(result, sort_keys=True), flush=True)
      if logs is not None:
        logs.update({f"eval_{k}": v for k, v in result.items() if k != "epoch"})

  class StopOnNaN(tf.keras.callbacks.Callback):
    def __init__(self):
      super().__init__()
      self.bad_batch = None

    def on_train_batch_end(self, batch, logs=None):
      loss = (logs or {}).get("loss")
      if loss is not None and not (float(loss) == float(loss) and abs(float(loss)) < 1e30):
        self.bad_batch = (batch, loss)
        self.model.stop_training = True

  class ExamplesPerSecond(tf.keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
      self.steps, self.seconds = 0, 0.0

    def on_epoch_begin(self, epoch, logs=None):
      self._start = time.perf_counter()
      self._epoch_steps = 0

    def on_train_batch_end(self, batch, logs=None):
      self._epoch_steps += 1

    def on_epoch_end(self, epoch, logs=None):
      self.seconds += time.perf_counter() - self._start
      self.steps += self._epoch_steps

  callbacks = {
      "backup": tf.keras.callbacks.BackupAndRestore(
          os.path.join(model_dir, "backup"), save_freq=checkpoint_every,
          delete_checkpoint=True),
      "tensorboard": tf.keras.callbacks.TensorBoard(os.path.join(model_dir, "tensorboard"),
                                                    update_freq=50),
      "nan": StopOnNaN(),
      "eval": EvalEachEpoch(),
      "speed": ExamplesPerSecond(),
  }
  return callbacks


def train(config, data_dir, model_dir, epochs, steps_per_epoch, batch_size, learning_rate,
          seed, strategy_name="default", eval_steps=None, checkpoint_every=100,
          verbose=1, embedding_learning_rate=0.5):
  """Trains `config.model` on data_dir; returns the final eval metrics dict."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from eta_tf import data  # pylint: disable=g-import-not-at-top
  from eta_tf.models import CtrModel  # pylint: disable=g-import-not-at-top

  tf.keras.utils.set_random_seed(seed)
  strategy = make_strategy(strategy_name)
  os.makedirs(model_dir, exist_ok=True)
  config.save(model_dir)
  with open(os.path.join(model_dir, "run_info.json"), "w") as f:
    json.dump({"data_dir": os.path.abspath(data_dir), "seed": seed,
               "batch_size": batch_size, "learning_rate": learning_rate,
               "embedding_learning_rate": embedding_learning_rate,
               "strategy": strategy_name}, f, indent=2)

  train_ds = data.make_dataset(data_dir, F.TRAIN_SPLIT, config.max_len, batch_size,
                               shuffle=True, seed=seed, repeat=steps_per_epoch is not None,
                               include_user_id=False, drop_remainder=True)
  eval_ds = data.make_dataset(data_dir, F.EVAL_SPLIT, config.max_len, batch_size,
                              shuffle=False, include_user_id=True)
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.DATA)
  train_ds = train_ds.with_options(options)

  with strategy.scope():
    model = CtrModel(config)
    model.build_weights()
    model.compile(optimizer=make_optimizer(model, learning_rate, embedding_learning_rate))

  callbacks = _callbacks(model_dir, lambda: evaluate(model, eval_ds, eval_steps),
                         checkpoint_every)
  model.fit(train_ds, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=verbose,
            callbacks=list(callbacks.values()))
  nan = callbacks["nan"].bad_batch
  if nan is not None:
    raise FloatingPointError(
        f"loss became {nan[1]} at batch {nan[0]}; stopping. Lower --learning_rate "
        f"(now {learning_rate}) or check the data for extreme values.")

  from eta_tf import baselines  # pylint: disable=g-import-not-at-top
  final = evaluate(model, eval_ds, eval_steps,
                   train_item_counts=baselines.train_item_counts(data_dir))
  speed = callbacks["speed"]
  final.update({
      "model": config.model,
      "epochs": epochs,
      "train_steps": int(model.optimizer.iterations.numpy()),  # global, across restarts
      "train_examples_per_second": (speed.steps * batch_size / speed.seconds
                                    if speed.seconds else None),
      "epoch_history": callbacks["eval"].history,
  })
  # Workers other than the chief write their copies aside, so files never race.
  out_dir = model_dir if _is_chief() else os.path.join(model_dir, f"worker_{_task_index()}")
  weights_prefix = os.path.join(out_dir, "final", "weights")
  tf.train.Checkpoint(model=model).write(weights_prefix)
  with open(os.path.join(out_dir, "eval_metrics.json"), "w") as f:
    json.dump(final, f, indent=2, sort_keys=True)
  return final, model


def main(argv):
  del argv
  std_logging.getLogger("tensorflow").setLevel(std_logging.ERROR)
  try:
    config = model_config_from_flags()
  except config_lib.ConfigError as e:
    _fail("--" + str(e))  # ConfigError messages start "<field>=<value>"; flags match
  if FLAGS.export:  # refuse a bad export name now, not after training
    from serving import names  # pylint: disable=g-import-not-at-top
    try:
      names.check_model_name(FLAGS.model_name or config.model, "--model_name")
      if FLAGS.label:
        names.check_label(FLAGS.label, "--label")
    except names.InvalidNameError as e:
      _fail(str(e))
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if FLAGS.num_threads:
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.num_threads)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.num_threads)
    tf.config.experimental.enable_op_determinism()
  model_dir = FLAGS.model_dir or os.path.join("runs", config.model)
  embedded = _embedded_default()
  epochs = FLAGS.epochs or (2 if embedded else 3)
  steps = FLAGS.steps or (200 if embedded else None)
  eval_steps = FLAGS.eval_steps or (60 if embedded else None)
  try:
    if embedded:
      data_dir = prepare_embedded_data(model_dir, FLAGS.synthetic_users, FLAGS.seed)
    else:
      data_dir = FLAGS.data_dir
    check_data_dir(data_dir)
    print(f"[3/4] Training {config.model} (L={config.max_len}, k={config.top_k}, "
          f"m={config.hash_bits}) on {data_dir} -> {model_dir}", flush=True)
    metrics, model = train(config, data_dir, model_dir, epochs, steps,
                           FLAGS.batch_size, FLAGS.learning_rate, FLAGS.seed,
                           FLAGS.strategy, eval_steps, FLAGS.checkpoint_every_steps,
                           FLAGS.verbose, FLAGS.embedding_learning_rate)
  except UsageError as e:
    _fail(str(e))
  except FloatingPointError as e:
    print(f"eta_tf.train: {e}", file=sys.stderr)
    sys.exit(3)

  if FLAGS.export and _is_chief():
    from eta_tf import export  # pylint: disable=g-import-not-at-top
    export_base = FLAGS.export_base or os.path.join(os.path.dirname(
        os.path.abspath(model_dir)), "export")
    model_name = FLAGS.model_name or config.model
    print(f"[4/4] Exporting to {export_base}/{model_name}", flush=True)
    version_dir = export.export_trained(model_dir, export_base, model_name,
                                        data_dir=data_dir, label=FLAGS.label or None,
                                        trained_model=model)
    metrics["export"] = version_dir
  summary = {k: v for k, v in metrics.items() if k != "epoch_history"}
  print(json.dumps(summary, sort_keys=True), flush=True)


def _tf_config() -> dict:
  return json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")


def _task() -> dict:
  return _tf_config().get("task", {})


def _task_index() -> int:
  return int(_task().get("index", 0))


def _is_chief() -> bool:
  """The chief, or worker 0 of a cluster without one (TF's convention)."""
  task = _task()
  has_chief = "chief" in _tf_config().get("cluster", {})
  return task.get("type", "chief") == "chief" or (
      not has_chief and task.get("type") == "worker" and _task_index() == 0)


def run():
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
