r"""Train, evaluate and export a model of the ETA-Net family.

  python -m eta_tf.train                       # embedded default: synthetic log ->
                                               # Beam pipeline -> train eta -> export
  python -m eta_tf.train --data_dir=DIR --model=eta --epochs=3 --model_dir=runs/eta
  python -m eta_tf.train --data_dir=DIR --preset=eta_paper --top_k=64   # a named preset

`--data_dir` is the output of `python -m pipelines.build_dataset`. Checkpoints go to
`--model_dir` every `--checkpoint_every_steps`; a killed run restarted with the same flags
resumes from the last one (also when killed during the final evaluation or the export),
and a model_dir trained with other flags is refused, naming the field. Evaluation on the
eval split after every epoch and at the end writes `<model_dir>/eval_metrics.json` and
prints it as one JSON line. Unless `--noexport`, the model is exported to
`<export_base>/<model_name>/<version>/` for TF Serving.

Flags come from three dataclasses: ModelConfig and TrainConfig (eta_tf/config.py, saved
in model_dir) and RunOptions below (where this run reads and writes).
"""
import dataclasses
import json
import os
import sys
from typing import Optional

from absl import app
from absl import flags

from eta_tf import config as config_lib
from eta_tf import config_flags
from eta_tf import presets
from eta_tf.config import option
from serving import names

FLAGS = flags.FLAGS


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
                                    "metrics (default runs/<model>).")
  export_base: Optional[str] = option(None, "TF Serving model base dir parent (default "
                                      "<model_dir>/../export).")
  model_name: Optional[str] = option(None, "Name under export_base (default: --model).")
  export: bool = option(True, "Export a SavedModel at the end.")
  label: str = option("canary", "Version label given to the export in models.config "
                      "(empty: none).")
  synthetic_users: int = option(2000, "Embedded default: users in the log.")
  verbose: int = option(1, "Keras progress: 0 silent, 1 progress bar, 2 per epoch.")


config_flags.define_flags(config_lib.ModelConfig, __name__)
config_flags.define_flags(config_lib.TrainConfig, __name__)
config_flags.define_flags(RunOptions, __name__)


def _fail(message: str):
  print(f"eta_tf.train: error: {message}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv):
  """absl flag parsing with our error contract: one line, exit code 2, no traceback."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    _fail(str(e).splitlines()[0])


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
  if run.export:  # refuse a bad export name now, not after training
    try:
      names.check_model_name(run.model_name or model_config.model, "--model_name")
      if run.label:
        names.check_label(run.label, "--label")
    except names.InvalidNameError as e:
      _fail(str(e))
  model_dir = run.model_dir or os.path.join("runs", model_config.model)
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
  try:
    training.refuse_other_configs(model_dir, model_config, train_config)
    data_dir = run.data_dir or prepare.prepare_synthetic_data(
        os.path.join(model_dir, "data"), run.synthetic_users, train_config.seed,
        log_path=os.path.join(model_dir, "synthetic_behaviors.csv.gz"), announce=True)
    training.check_data_dir(data_dir)
    print(f"[3/4] Training {model_config.model} (L={model_config.max_len}, "
          f"k={model_config.top_k}, m={model_config.hash_bits}) on {data_dir} -> "
          f"{model_dir}", flush=True)
    metrics, model = training.train(model_config, train_config, data_dir, model_dir,
                                    verbose=run.verbose, keep_backup=True)
  except training.UsageError as e:
    _fail(str(e))
  except FloatingPointError as e:
    print(f"eta_tf.train: {e}", file=sys.stderr)
    sys.exit(3)

  if run.export and training.is_chief():
    export_base = run.export_base or os.path.join(os.path.dirname(
        os.path.abspath(model_dir)), "export")
    model_name = run.model_name or model_config.model
    print(f"[4/4] Exporting to {export_base}/{model_name}", flush=True)
    metrics["export"] = release.export_trained(model_dir, export_base, model_name,
                                               data_dir=data_dir, label=run.label or None,
                                               trained_model=model)
  if training.is_chief():
    training.finish_run(model_dir)  # the export is done: a rerun starts afresh
  summary = {k: v for k, v in metrics.items() if k != "epoch_history"}
  print(json.dumps(summary, sort_keys=True), flush=True)


def run():
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
