r"""Train, evaluate and export a model of the ETA-Net family.

  python -m eta_tf.train                       # embedded default: synthetic log ->
                                               # Beam pipeline -> train eta -> export
  python -m eta_tf.train --data_dir=DIR --model=eta --epochs=3 --model_dir=runs/eta
  python -m eta_tf.train --data_dir=DIR --preset=eta_paper --top_k=64   # a named preset

`--data_dir` is the output of `python -m pipelines.build_dataset`. Checkpoints go to
`--model_dir` every `--checkpoint_every_steps`; a killed run restarted with the same flags
resumes from the last one (also when killed during the final evaluation or the export),
and a model_dir trained with other flags is refused, naming the field. A model_dir that
holds a finished run is refused too (exit 2) unless `--overwrite`, which keeps the old
final/ and eval_metrics.json in <model_dir>/previous/ until the new run completes. One
process at a time per model_dir: a second is refused at once, naming the first (the lock
of a killed process is taken over). Evaluation on the
eval split after every epoch and at the end writes `<model_dir>/eval_metrics.json` and
prints it as one JSON line. Unless `--noexport`, the model is exported to
`<export_base>/<model_name>/<version>/` for TF Serving. Ctrl-C stops with one line naming
the last checkpoint and the command that resumes from it (exit code 130).

Flags come from three dataclasses: ModelConfig and TrainConfig (eta_tf/config.py, saved
in model_dir) and RunOptions below (where this run reads and writes).
"""
import atexit
import dataclasses
import errno
import json
import os
import shlex
import shutil
import sys
from typing import Optional

from absl import app
from absl import flags

from eta_tf import config as config_lib
from eta_tf import config_flags
from eta_tf import io_utils
from eta_tf import presets
from eta_tf.config import option
from serving import names

FLAGS = flags.FLAGS
PREVIOUS_DIR = "previous"


@dataclasses.dataclass
class RunOptions:
  """Where a training run reads and writes; not hyperparameters (not saved)."""
  preset: str = option("", "A named model preset (eta_tf/presets.py: "
                       f"{', '.join(presets.PRESETS)}); model flags given explicitly "
                       "override its fields. Empty: the flags alone.")
  data_dir: Optional[str] = option(None, "Output dir of pipelines.build_dataset. Empty: "
                                   "generate a synthetic log, run the pipeline into "
                                   "<model_dir>/data and train on it (the embedded "
                                   "default).")
  model_dir: Optional[str] = option(None, "Checkpoints, TensorBoard logs, config and "
                                    "metrics (default runs/<preset or model>).")
  export_base: Optional[str] = option(None, "TF Serving model base dir parent (default "
                                      "<model_dir>/../export).")
  model_name: Optional[str] = option(None, "Name under export_base (default: --preset, "
                                     "else --model).")
  export: bool = option(True, "Export a SavedModel at the end.")
  label: str = option("canary", "Version label given to the export in models.config "
                      "(empty: none).")
  overwrite: bool = option(False, "Retrain a model_dir that holds a finished run (its "
                           "final/ and eval_metrics.json are kept in <model_dir>/previous/ "
                           "until the new run completes). Without it such a run is "
                           "refused.")
  synthetic_users: int = option(2000, "Embedded default: users in the log.")
  verbose: int = option(1, "Keras progress: 0 silent, 1 progress bar, 2 per epoch.")


config_flags.define_flags(config_lib.ModelConfig, __name__)
config_flags.define_flags(config_lib.TrainConfig, __name__)
config_flags.define_flags(RunOptions, __name__)


def _fail(message: str):
  print(f"eta_tf.train: error: {message}", file=sys.stderr)
  sys.exit(2)


def _lock_target(model_dir: str) -> str:
  """model_dir for the chief (or a single process), model_dir/worker_<i> for the other
  workers of a cluster (TF_CONFIG), which write their copies there (eta_tf.training)."""
  tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
  task = tf_config.get("task", {})
  kind, index = task.get("type", "chief"), int(task.get("index", 0))
  chief = kind == "chief" or (kind == "worker" and index == 0 and
                              "chief" not in tf_config.get("cluster", {}))
  return model_dir if chief else os.path.join(model_dir, f"worker_{index}")


def _hold_model_dir(model_dir: str) -> None:
  """One writer per model_dir: refused at once (exit 2) while another process holds it."""
  lock = io_utils.DirectoryLock(_lock_target(model_dir), "--model_dir")
  try:
    lock.acquire()
  except io_utils.LockHeldError as e:
    _fail(str(e))
  except OSError as e:
    _fail(f"--model_dir={model_dir}: cannot write {e.filename or model_dir} ({e.strerror}): "
          "choose a writable --model_dir")
  if lock.took_over:
    print(f"taking over the lock of a process that is gone ({lock.took_over})",
          file=sys.stderr, flush=True)
  atexit.register(lock.release)


def _finished_run(model_dir: str) -> Optional[str]:
  """What a finished run in model_dir holds (final weights + metrics, no backup/)."""
  metrics_path = os.path.join(model_dir, "eval_metrics.json")
  if (os.path.isdir(os.path.join(model_dir, "backup")) or
      not os.path.isdir(os.path.join(model_dir, "final")) or
      not os.path.exists(metrics_path)):
    return None
  try:
    with open(metrics_path) as f:
      metrics = json.load(f)
    return (f"final/ and eval_metrics.json: AUC {metrics['auc']:.4f} after "
            f"{metrics['train_steps']} steps")
  except (ValueError, KeyError, TypeError):
    return "final/ and eval_metrics.json"


def _keep_previous(model_dir: str) -> None:
  """--overwrite: moves the finished run's final/ and eval_metrics.json to previous/."""
  previous = os.path.join(model_dir, PREVIOUS_DIR)
  shutil.rmtree(previous, ignore_errors=True)
  os.makedirs(previous)
  for name in ("final", "eval_metrics.json"):
    os.replace(os.path.join(model_dir, name), os.path.join(previous, name))
  print(f"--overwrite: the finished run is kept in {previous} until this one completes",
        flush=True)


def _data_loss_detail(message: str) -> str:
  """The line of a DataLossError that says what is wrong ('corrupted record at N')."""
  lines = [l.strip() for l in message.splitlines()]
  return next((l for l in lines if any(w in l.lower() for w in ("corrupt", "inflate",
                                                                 "crc", "truncated"))),
              "data loss")


def _corrupt_shard(data_dir: str) -> str:
  """The first TFRecord shard of data_dir that does not read through (or the pattern)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (already loaded here)
  from eta_tf import features  # pylint: disable=g-import-not-at-top
  for split in features.SPLITS:
    for path in sorted(tf.io.gfile.glob(features.split_file_pattern(data_dir, split))):
      try:
        for _ in tf.data.TFRecordDataset(path, compression_type="GZIP"):
          pass
      except tf.errors.DataLossError:
        return path
  return f"a shard of {data_dir}"


def configs_from_flags():
  """(ModelConfig, TrainConfig, RunOptions) of the parsed flags; exits 2 on a bad value."""
  run = config_flags.from_flags(RunOptions)
  embedded = not run.data_dir
  try:
    base = presets.get(run.preset).fields if run.preset else None
    return (config_flags.from_flags(config_lib.ModelConfig, embedded, base=base),
            config_flags.from_flags(config_lib.TrainConfig, embedded), run)
  except ValueError as e:  # ConfigError messages start "<field>=<value>"; flags match
    _fail("--" + str(e))


def main(argv):
  del argv
  config_flags.quiet_library_logs()
  model_config, train_config, run = configs_from_flags()
  if not FLAGS["verbose"].present and not sys.stdout.isatty():
    run.verbose = 2  # a log file gets one line per epoch, not thousands of \r updates
  model_name = run.model_name or run.preset or model_config.model  # the export's name
  if run.export:  # refuse a bad export name now, not after training
    try:
      names.check_model_name(model_name, "--model_name")
      if run.label:
        names.check_label(run.label, "--label")
    except names.InvalidNameError as e:
      _fail(str(e))
  model_dir = _model_dir(model_config, run)
  _hold_model_dir(model_dir)
  # Imported here, not at the top: TensorFlow, Beam and the serving protos take seconds to
  # load and `--help` or a flag error needs none of them.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from eta_tf import release  # pylint: disable=g-import-not-at-top
  from eta_tf import training  # pylint: disable=g-import-not-at-top
  from pipelines import prepare  # pylint: disable=g-import-not-at-top
  if train_config.num_threads:
    tf.config.threading.set_intra_op_parallelism_threads(train_config.num_threads)
    tf.config.threading.set_inter_op_parallelism_threads(train_config.num_threads)
    tf.config.experimental.enable_op_determinism()
  embedded_data = os.path.join(model_dir, "data")
  announce = _step_announcer(
      (2 if not run.data_dir and not prepare.is_complete(embedded_data) else 0) + 1
      + (1 if run.export and training.is_chief() else 0))
  try:
    finished = training.is_chief() and _finished_run(model_dir)
    if not (finished and run.overwrite):  # --overwrite may retrain with other flags
      training.refuse_other_configs(model_dir, model_config, train_config)
    if finished and not run.overwrite:
      _fail(f"--model_dir={model_dir} holds a finished run ({finished}); running again "
            "would train from scratch and replace them: pass --overwrite to retrain (the "
            "finished run is kept in previous/ until the new one completes) or use "
            "another --model_dir")
    if finished:
      _keep_previous(model_dir)
    data_dir = run.data_dir or prepare.prepare_synthetic_data(
        embedded_data, run.synthetic_users, train_config.seed,
        log_path=os.path.join(model_dir, "synthetic_behaviors.csv.gz"), announce=announce)
    training.check_data_dir(data_dir)
    announce(f"Training {model_config.model} (L={model_config.max_len}, "
             f"k={model_config.top_k}, m={model_config.hash_bits}) on {data_dir} -> "
             f"{model_dir}")
    metrics, model = training.train(model_config, train_config, data_dir, model_dir,
                                    verbose=run.verbose, keep_backup=True)
  except training.UsageError as e:
    _fail(str(e))
  except tf.errors.DataLossError as e:  # a shard changed in place (same size) or bad disk
    _fail(f"--data_dir={data_dir}: {_corrupt_shard(data_dir)} is corrupt "
          f"({_data_loss_detail(e.message)}); rebuild it with python -m "
          "pipelines.build_dataset --overwrite (the checkpoints in --model_dir are kept: "
          "the same command then resumes)")
  except OSError as e:
    if e.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM):
      raise
    _fail(f"cannot write {e.filename or model_dir} ({e.strerror}): free space or make "
          "--model_dir writable; the same command then resumes from the last checkpoint")
  except FloatingPointError as e:
    print(f"eta_tf.train: {e}", file=sys.stderr)
    sys.exit(3)

  if run.export and training.is_chief():
    export_base = run.export_base or os.path.join(os.path.dirname(
        os.path.abspath(model_dir)), "export")
    announce(f"Exporting to {export_base}/{model_name}")
    try:
      metrics["export"] = release.export_trained(model_dir, export_base, model_name,
                                                 data_dir=data_dir, label=run.label or None,
                                                 trained_model=model)
    except release.ExportError as e:  # training is kept: the same command retries
      _fail(f"export: {e} (the trained model is kept: run the same command again to "
            "export it without retraining)")
  if training.is_chief():
    training.finish_run(model_dir)  # the export is done: a rerun starts afresh
    shutil.rmtree(os.path.join(model_dir, PREVIOUS_DIR), ignore_errors=True)
  summary = {k: v for k, v in metrics.items() if k != "epoch_history"}
  print(training.baseline_comparison(metrics), flush=True)
  print(json.dumps(summary, sort_keys=True), flush=True)


def _model_dir(model_config, run: RunOptions) -> str:
  return run.model_dir or os.path.join("runs", run.preset or model_config.model)


def _step_announcer(total: int):
  """announce(text) prints "[i/total] text", i counting the steps this run does."""
  done = []

  def announce(text: str):
    done.append(text)
    print(f"[{len(done)}/{total}] {text}", flush=True)
  return announce


def _interrupted():
  """Ctrl-C: one line saying what is saved and the command that resumes; exit 130."""
  command = " ".join(["python -m eta_tf.train", shlex.join(sys.argv[1:])]).strip()
  training = sys.modules.get("eta_tf.training")  # not loaded yet: nothing was trained
  note = "nothing trained yet; run again with"
  if training is not None:  # main() got past the flags: they are valid
    model_config, _, run_options = configs_from_flags()
    note = training.resume_note(_model_dir(model_config, run_options))
  if sys.stdout.isatty():
    print(flush=True)  # end the progress bar's line
  print(f"eta_tf.train: interrupted; {note}: {command}", file=sys.stderr, flush=True)
  sys.exit(130)


def run():
  try:
    app.run(main, flags_parser=config_flags.strict_flags_parser("eta_tf.train"))
  except KeyboardInterrupt:
    _interrupted()


if __name__ == "__main__":
  run()
