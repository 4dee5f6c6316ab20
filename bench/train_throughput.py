r"""Training examples/s per sample vs user-batched, and AUC after a fixed budget both ways.

  python -m bench.train_throughput --data=taobao=/tmp/ubdata/taobao \
      --data=movielens=/tmp/ubdata/ml --lengths=256,1024,4096 --models=eta,din_long \
      --skip=din_long@4096 --rounds=4 --round_steps=5 --warmup_steps=3

The two logs (the Taobao-calibrated synthetic log and the real MovieLens log):

  python -m pipelines.synthetic --preset=taobao --output=/tmp/ubdata/taobao.csv.gz \
      --num_users=1500 --seed=0
  python -m pipelines.build_dataset --input=/tmp/ubdata/taobao.csv.gz \
      --output_dir=/tmp/ubdata/taobao --seed=0
  python -m pipelines.movielens --input_dir=movielens-latest-small \
      --output_dir=/tmp/ubdata/ml_logs
  python -m pipelines.build_dataset --input=/tmp/ubdata/ml_logs/behaviors.csv \
      --impressions=/tmp/ubdata/ml_logs/impressions.csv --output_dir=/tmp/ubdata/ml \
      --split=user_last

Throughput: for each log, model and L, one model per batching (same config, same seed)
trains in interleaved rounds of --round_steps steps (sample, user, sample, user, ...:
both share the machine's state), after --warmup_steps untimed steps (tracing). Examples
are real targets (the model's own count), so user-batched rows that are not full count
what they hold. The ratio is user / sample examples/s in the same process.

AUC: for each log and seed (--seeds, paired: both batchings start from the same
initial weights and read the same shuffled files), --budget_examples targets of training
at --auc_length, then AUC/GAUC/logloss on the whole eval split (per-sample evaluation,
the same for both). Hours per epoch of the full UserBehavior file (--full_examples
targets) are extrapolated from the taobao log's examples/s.

Writes bench/results/<--output_name> with the machine, the load before and after, and
the command.
"""
import argparse
import sys
import time

import numpy as np

from bench import machine
from eta_tf import config as config_lib
from eta_tf import data
from eta_tf import features as F
from eta_tf import training
from eta_tf.models import CtrModel
import tensorflow as tf

BATCHINGS = ("sample", "user")


def _parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data", action="append", required=True,
                 help="name=pipelines.build_dataset output dir (repeatable); the name "
                      "'taobao' is the one the full-file extrapolation reads.")
  p.add_argument("--lengths", default="256,1024,4096", help="L values (comma list).")
  p.add_argument("--models", default="eta", help="Models timed (comma list).")
  p.add_argument("--skip", default="", help="model@L pairs not timed (comma list), e.g. "
                 "din_long@4096 (its per-sample steps take minutes).")
  p.add_argument("--batch_size", type=int, default=256, help="Targets per batch.")
  p.add_argument("--warmup_steps", type=int, default=3, help="Untimed steps per model.")
  p.add_argument("--round_steps", type=int, default=3, help="Steps per timed round.")
  p.add_argument("--rounds", type=int, default=4, help="Timed rounds per batching.")
  p.add_argument("--seeds", default="0,1,2", help="Paired seeds of the AUC runs.")
  p.add_argument("--auc_length", type=int, default=256, help="L of the AUC runs.")
  p.add_argument("--auc_model", default="eta", help="Model of the AUC runs.")
  p.add_argument("--budget_examples", type=int, default=30000,
                 help="Training targets per AUC run (empty: no AUC runs).")
  p.add_argument("--full_examples", type=float, default=160e6,
                 help="Targets per epoch of the full UserBehavior file.")
  p.add_argument("--output_dir", default="bench/results")
  p.add_argument("--output_name", default="train_throughput.json")
  return p.parse_args(argv)


def _model(config, seed):
  tf.keras.utils.set_random_seed(seed)
  model = CtrModel(config).build_weights()
  model.compile(optimizer=training.make_optimizer(model, 2e-3, 0.5))
  return model


def _train_dataset(batching, config, data_dir, batch_size, seed):
  train_config = config_lib.TrainConfig(batch_size=batch_size, seed=seed, steps=1,
                                        batching=batching)
  return training.train_dataset(config, train_config, data_dir)


class _Trainer:
  """One model fed by one batching: step(n) trains n steps, returns targets trained."""

  def __init__(self, batching, config, data_dir, batch_size, seed):
    self.model = _model(config, seed)
    self.iterator = iter(_train_dataset(batching, config, data_dir, batch_size, seed))
    self.train_function = self.model.make_train_function()

  def examples(self):
    return float(self.model.examples.result())

  def step(self, n):
    before = self.examples()
    for _ in range(n):
      logs = self.train_function(self.iterator)
    float(logs["loss"])  # wait for the step
    return self.examples() - before


def throughput(config, data_dir, args):
  """{batching: examples/s, ...} of interleaved timed rounds."""
  trainers = {b: _Trainer(b, config, data_dir, args.batch_size, seed=0) for b in BATCHINGS}
  for trainer in trainers.values():
    trainer.step(args.warmup_steps)
  seconds = {b: 0.0 for b in BATCHINGS}
  examples = {b: 0.0 for b in BATCHINGS}
  for _ in range(args.rounds):
    for b, trainer in trainers.items():
      start = time.perf_counter()
      examples[b] += trainer.step(args.round_steps)
      seconds[b] += time.perf_counter() - start
  result = {f"{b}_examples_per_second": examples[b] / seconds[b] for b in BATCHINGS}
  result.update({f"{b}_timed_examples": int(examples[b]) for b in BATCHINGS})
  result["speedup"] = result["user_examples_per_second"] / result["sample_examples_per_second"]
  return result


def auc_after_budget(config, data_dir, batching, seed, args):
  """Trains --budget_examples targets, then evaluates the whole eval split."""
  trainer = _Trainer(batching, config, data_dir, args.batch_size, seed)
  start, trained = time.perf_counter(), 0.0
  while trained < args.budget_examples:
    trained += trainer.step(1)
  seconds = time.perf_counter() - start
  eval_ds = data.make_dataset(data_dir, F.EVAL_SPLIT, config.max_len, args.batch_size,
                              shuffle=False)
  metrics = training.evaluate(trainer.model, eval_ds)
  return {"auc": metrics["auc"], "gauc": metrics["gauc"], "logloss": metrics["logloss"],
          "trained_examples": int(trained), "train_seconds": round(seconds, 1)}


def _paired(runs):
  """Mean and std of user - sample AUC over paired seeds."""
  diffs = [u["auc"] - s["auc"] for s, u in zip(runs["sample"], runs["user"])]
  return {"auc_difference_mean": float(np.mean(diffs)),
          "auc_difference_std": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else None,
          "auc_difference_per_seed": diffs}


def main(argv=None):
  args = _parse_args(sys.argv[1:] if argv is None else argv)
  run = machine.start_run("python -m bench.train_throughput", argv)
  logs = dict(item.split("=", 1) for item in args.data)
  result = {"batch_size": args.batch_size, "throughput": [], "auc": []}
  for name, data_dir in logs.items():
    for model_name in args.models.split(","):
      for length in [int(x) for x in args.lengths.split(",")]:
        if f"{model_name}@{length}" in args.skip.split(","):
          continue
        config = config_lib.ModelConfig(model=model_name, max_len=length)
        row = {"log": name, "model": model_name, "max_len": length,
               **throughput(config, data_dir, args), "load": machine.load_average()}
        print(row, flush=True)
        result["throughput"].append(row)
  if args.budget_examples:
    for name, data_dir in logs.items():
      config = config_lib.ModelConfig(model=args.auc_model, max_len=args.auc_length)
      runs = {b: [] for b in BATCHINGS}
      for seed in [int(s) for s in args.seeds.split(",")]:
        for b in BATCHINGS:
          runs[b].append({"seed": seed, **auc_after_budget(config, data_dir, b, seed, args)})
          print(name, b, runs[b][-1], flush=True)
      result["auc"].append({"log": name, "model": args.auc_model, "max_len": args.auc_length,
                            "budget_examples": args.budget_examples, "runs": runs,
                            **_paired(runs)})
  result["full_userbehavior_hours_per_epoch"] = {
      f"{r['model']}_L{r['max_len']}_{b}": args.full_examples /
      r[f"{b}_examples_per_second"] / 3600
      for r in result["throughput"] if r["log"] == "taobao" for b in BATCHINGS}
  result = {**machine.finish_run(run), **result}
  print(machine.write_json(result, args.output_dir, args.output_name))


if __name__ == "__main__":
  main()
