r"""Do the long-history models beat what a count knows?

  python -m bench.count_floor --data_dir=DIR --setting=NAME --models=eta,din_long,sim_hard \
      --seeds=0,1,2,3,4 --output=bench/results/count_floor_NAME.json
  python -m bench.count_floor --merge OUT.json OUT.json SIDE.json   # fold in a side run
  python -m bench.count_floor --render            # bench/results/COUNT_FLOOR.md
  python -m bench.count_floor --render A.json     # A's tables on stdout

For one pipeline output (pipelines.build_dataset), per model seed and model: trains with
early stopping on a validation split of train (the train records of 1 in --val_every
users, held out from fitting; never the eval split; all of it by default, up to 10
epochs, patience 2), restores the epoch with the best validation AUC, then evaluates on
the eval split: AUC, GAUC, logloss, the training-free baselines of eta_tf.baselines on
the same eval samples, and for eta the retrieval diagnostics. Model names are presets
(eta_tf/presets.py: eta, eta_paper, din_long, sim_hard, ... and the experimental
eta_oracle, eta_random, ...): each row records its preset and full config. Writes every
row and the paired differences (mean ± standard error over seeds) of eta against each
other model and against the best heuristic (bench/count_floor_summary.py).
"""
import argparse
import contextlib
import json
import os
import sys
import time
import uuid

from eta_tf import baselines  # (eta_tf first: sets tf-keras before TF)
from eta_tf import config as config_lib
from eta_tf import data
from eta_tf import features as F
from eta_tf import presets
from eta_tf import training
from eta_tf.models import CtrModel
from eta_tf.models.weight_average import WeightAverage
from bench.count_floor_summary import RESULTS
from bench.count_floor_summary import load
from bench.count_floor_summary import render
from bench.count_floor_summary import summarize
from bench.count_floor_summary import write_rendered
# Read by bench.report_render and bench.real_data through this module.
from bench.count_floor_summary import MODEL_LEGEND  # noqa: F401
from bench.count_floor_summary import default_table  # noqa: F401
from bench.count_floor_summary import rendered_paths  # noqa: F401
import tensorflow as tf  # after eta_tf: the tf-keras environment guard runs first

HERE = os.path.dirname(os.path.abspath(__file__))
FIT, VAL = "fit", "val"


def split_train_users(data_dir: str, out_dir: str, val_every: int) -> str:
  """Writes train records of users with user_id % val_every == 0 to <out>/val, the rest
  to <out>/fit; returns a make_dataset pattern with "{split}". Each writer has its own
  partial file (a random name), so runs started side by side on the same setting
  each write a whole split and the last rename wins with identical bytes."""
  pattern = os.path.join(out_dir, "{split}", "part-0.tfrecord.gz")
  if all(os.path.exists(pattern.format(split=s)) for s in (FIT, VAL)):
    return pattern
  options = tf.io.TFRecordOptions(compression_type="GZIP")
  writers, partial = {}, f".partial-{uuid.uuid4().hex}"
  for s in (FIT, VAL):
    os.makedirs(os.path.join(out_dir, s), exist_ok=True)
    writers[s] = tf.io.TFRecordWriter(pattern.format(split=s) + partial, options)
  files = data.record_files(data_dir, F.TRAIN_SPLIT)
  for serialized in tf.data.TFRecordDataset(files, compression_type="GZIP"):
    user = int(data.parse_record(serialized)[F.USER_ID].numpy().reshape(-1)[0])
    writers[VAL if user % val_every == 0 else FIT].write(serialized.numpy())
  for s, writer in writers.items():
    writer.close()
    os.replace(pattern.format(split=s) + partial, pattern.format(split=s))
  return pattern


def model_config(name: str, **shapes) -> config_lib.ModelConfig:
  """The ModelConfig of preset `name` (eta_tf/presets.py) with these shapes."""
  return presets.model_config(name, **shapes)


def merge(output: str, inputs) -> dict:
  """Rows of several runs on the same setting (e.g. run in parallel) in one output. An
  existing output must be one of the inputs: its rows are not dropped by a merge."""
  if os.path.exists(output) and not any(os.path.abspath(output) == os.path.abspath(path)
                                        for path in inputs):
    raise SystemExit(f"--merge: {output} exists and is not among the inputs; its rows "
                     f"would be lost: list it first to fold the others into it "
                     f"(--merge {output} {output} {' '.join(inputs)})")
  results = [load(path) for path in inputs]
  settings = {r["setting"] for r in results}
  if len(settings) != 1:
    raise SystemExit(f"--merge: inputs hold different settings {sorted(settings)}")
  for path, r in zip(inputs[1:], results[1:]):
    if r.get("args"):  # side runs that recorded their flags: the same as the first's
      check_same_flags(results[0].get("args"), r["args"], path)
  rows, seen, commands = [], set(), []
  for r in results:
    commands += [c for c in r.get("commands") or [r["command"]] if c not in commands]
    for row in r["rows"]:
      if (row["model"], row["seed"]) not in seen:
        seen.add((row["model"], row["seed"]))
        rows.append(row)
  merged = {"setting": results[0]["setting"], "data_dir": results[0]["data_dir"],
            "commands": commands, "summary": summarize(rows), "rows": rows}
  if results[0].get("args"):
    merged["args"] = results[0]["args"]
  with open(output, "w") as f:
    json.dump(merged, f, indent=2)
  return merged


def train_early_stopped(config, data_dir, split_pattern, seed, args, train_counts):
  """One model: fit epoch by epoch, keep the best validation AUC, evaluate on eval.

  The seed fixes two things: the initial weights (--init_seed) and the order of the
  training samples (--data_seed); either flag pins its part for every seed of the run."""
  tf.keras.backend.clear_session()
  init_seed, data_seed = (getattr(args, key, None) for key in ("init_seed", "data_seed"))
  tf.keras.utils.set_random_seed(seed if init_seed is None else init_seed)
  data_seed = seed if data_seed is None else data_seed
  fit_ds = data.make_dataset(split_pattern, FIT, config.max_len, args.batch_size,
                             shuffle=True, seed=data_seed, repeat=True, include_user_id=False,
                             drop_remainder=True)
  val_ds = data.make_dataset(split_pattern, VAL, config.max_len, args.batch_size,
                             shuffle=False)
  eval_ds = data.make_dataset(data_dir, F.EVAL_SPLIT, config.max_len, args.batch_size,
                              shuffle=False)
  model = CtrModel(config)
  model.build_weights()
  model.compile(optimizer=training.make_optimizer(model, args.learning_rate,
                                               args.embedding_learning_rate))
  best, best_weights, history, bad = -1.0, None, [], 0
  eval_history = []  # --eval_history: eval AUC after every epoch (diagnostic of stopping)
  # --weight_average: validate (and keep) the moving average of the weights.
  average = WeightAverage(args.weight_average) if args.weight_average else None
  start = time.perf_counter()
  for epoch in range(args.max_epochs):
    model.fit(fit_ds, epochs=1, steps_per_epoch=args.steps, verbose=0,
              callbacks=[average] if average else [])
    with average.swapped() if average else contextlib.nullcontext():
      val = training.evaluate(model, val_ds, args.val_steps or None)["auc"]
      history.append(val)
      if args.eval_history:
        eval_history.append(training.evaluate(model, eval_ds, args.eval_steps)["auc"])
      improved = val > best
      if improved:
        best, best_weights, bad = val, model.get_weights(), 0
    if not improved:
      bad += 1
      if bad >= args.patience:
        break
  train_seconds = time.perf_counter() - start
  model.set_weights(best_weights)
  result = training.evaluate(model, eval_ds, args.eval_steps, train_item_counts=train_counts)
  result.update({"val_auc_history": history, "best_epoch": history.index(best) + 1,
                 "train_seconds": train_seconds})
  if args.eval_history:
    result["eval_auc_history"] = eval_history
  return result


def check_same_protocol(rows, weight_average: float, output: str):
  """SystemExit naming the flag when `rows` (an output being extended) were trained with
  another --weight_average: paired seeds must share the training protocol (rows without
  the key kept the last step's weights, 0)."""
  other = {r.get("weight_average", 0.0) for r in rows} - {weight_average}
  if other:
    raise SystemExit(f"--weight_average={weight_average}: {output} holds rows trained with "
                     f"weight_average={sorted(other)}; pass that value to extend it, or "
                     "write another --output")


# The flags that make two runs' rows comparable (paired by seed): extending an output or
# merging side runs needs the same values.
PROTOCOL_FLAGS = ("max_len", "short_len", "top_k", "batch_size", "steps", "max_epochs",
                  "patience", "val_steps", "val_every", "learning_rate",
                  "embedding_learning_rate", "target_stats", "init_seed", "data_seed")


def check_same_flags(previous_args, args: dict, output: str):
  """SystemExit naming each flag whose value differs from the one `output` was written
  with (files without recorded args are not checked)."""
  if not previous_args:
    return
  differ = [f"--{k}={args.get(k)} (the file's: {previous_args[k]})" for k in PROTOCOL_FLAGS
            if k in previous_args and previous_args[k] != args.get(k)]
  if differ:
    raise SystemExit(f"{output} was trained with other flags: {'; '.join(differ)}; pass the "
                     "file's values to extend it, or write another --output")


def main(argv=None):
  if (argv if argv is not None else sys.argv[1:])[:1] == ["--render"]:
    paths = (argv if argv is not None else sys.argv[1:])[1:]
    if paths:  # the given files' tables on stdout
      print(render(paths))
    else:
      write_rendered(os.path.join(RESULTS, "COUNT_FLOOR.md"))
      print(f"wrote {os.path.join(RESULTS, 'COUNT_FLOOR.md')}")
    return
  if (argv if argv is not None else sys.argv[1:])[:1] == ["--merge"]:
    output, *inputs = (argv if argv is not None else sys.argv[1:])[1:]
    merge(output, inputs)
    return
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_dir", required=True, help="pipelines.build_dataset output")
  parser.add_argument("--setting", required=True, help="name of the data set in the output")
  parser.add_argument("--models", default="eta,din_long,sim_hard")
  parser.add_argument("--seeds", default="0,1,2,3,4")
  parser.add_argument("--output", required=True)
  parser.add_argument("--work_dir", default=os.path.join(HERE, "work"))
  parser.add_argument("--val_every", type=int, default=10)
  parser.add_argument("--max_len", type=int, default=256)
  parser.add_argument("--short_len", type=int, default=16)
  parser.add_argument("--top_k", type=int, default=48)
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--steps", type=int, default=150, help="steps per epoch")
  parser.add_argument("--max_epochs", type=int, default=10)
  parser.add_argument("--patience", type=int, default=2,
                      help="epochs without a better validation AUC before stopping")
  parser.add_argument("--val_steps", type=int, default=0,
                      help="validation batches per epoch (0: the whole validation split; "
                           "a slice lets noise pick the epoch kept)")
  parser.add_argument("--eval_steps", type=int, default=None)
  parser.add_argument("--learning_rate", type=float, default=2e-3)
  parser.add_argument("--embedding_learning_rate", type=float, default=0.5)
  parser.add_argument("--target_stats", type=int, default=1, help="ModelConfig.target_stats")
  parser.add_argument("--weight_average", type=float, default=0.99,
                      help="decay of the moving average of the weights that is validated "
                           "and kept (eta_tf/models/weight_average.py; 0 = the last step's "
                           "weights, as rows without a weight_average key were trained)")
  parser.add_argument("--eval_history", type=int, default=0,
                      help="1: also record the eval AUC after every epoch")
  parser.add_argument("--init_seed", type=int, default=None,
                      help="initial weights of every run from this seed (default: the "
                           "run's seed); with --seeds varying, only the data order varies")
  parser.add_argument("--data_seed", type=int, default=None,
                      help="training sample order of every run from this seed (default: "
                           "the run's seed); with --seeds varying, only the init varies")
  args = parser.parse_args(argv)

  split_dir = os.path.join(args.work_dir, "val_split_" + args.setting.replace(" ", "_"))
  pattern = split_train_users(args.data_dir, split_dir, args.val_every)
  train_counts = baselines.train_item_counts(args.data_dir)
  rows, commands = [], []
  if os.path.exists(args.output):  # resume / extend: keep finished (model, seed) rows
    previous = load(args.output)
    rows = previous["rows"]
    commands = previous.get("commands") or [previous["command"]]
    check_same_protocol(rows, args.weight_average, args.output)
    check_same_flags(previous.get("args"), vars(args), args.output)
  command = "python -m bench.count_floor " + " ".join(sys.argv[1:] if argv is None else argv)
  commands += [] if command in commands else [command]
  done = {(r["model"], r["seed"]) for r in rows}
  shapes = dict(max_len=args.max_len, short_len=args.short_len, top_k=args.top_k,
                target_stats=bool(args.target_stats))
  for seed in [int(s) for s in args.seeds.split(",")]:
    for name in args.models.split(","):
      if (name, seed) in done:
        continue
      config = model_config(name, **shapes)
      result = train_early_stopped(config, args.data_dir, pattern, seed, args, train_counts)
      row = {"model": name, "preset": name, "config": config.to_dict(), "seed": seed,
             "weight_average": args.weight_average, **result}
      row.update({key: getattr(args, key) for key in ("init_seed", "data_seed")
                  if getattr(args, key) is not None})
      print(json.dumps({k: v for k, v in row.items() if k not in ("heuristics", "config")}),
            flush=True)
      rows.append(row)
      os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
      with open(args.output, "w") as f:
        json.dump({"setting": args.setting, "data_dir": args.data_dir,
                   "commands": commands, "args": vars(args),
                   "summary": summarize(rows), "rows": rows}, f, indent=2)
  print(json.dumps(summarize(rows)["paired_auc_gaps"], indent=1))


if __name__ == "__main__":
  main()
