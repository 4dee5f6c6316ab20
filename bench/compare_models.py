r"""Accuracy of the six models under one harness: same data, features, tower, budget.

  python -m bench.compare_models                      # synthetic default log
  python -m bench.compare_models --data=/path/UserBehavior.csv --steps=2000
  python -m bench.compare_models --data_dir=DIR       # an existing pipeline output

Generates the synthetic log (pipelines.synthetic defaults unless --synthetic_args), runs the
Beam pipeline (pipelines.prepare, in-process), trains every model with the same
steps/batch/seed via eta_tf.training.train,
evaluates on the eval split and prints a table of AUC, GAUC, logloss and train
examples/s. Writes the rows to --output (JSON). Nothing about the ordering is assumed.
"""
import argparse
import json
import os
import time

from eta_tf import config as config_lib
from eta_tf import training
from pipelines import prepare
import tensorflow as tf  # after eta_tf: the tf-keras environment guard runs first

HERE = os.path.dirname(os.path.abspath(__file__))


def prepare_data(work_dir: str, data: str = None, data_dir: str = None, seed: int = 0,
                 synthetic_args=()) -> str:
  """Pipeline output dir for a raw log (--data), an existing dir, or the synthetic log."""
  if data_dir:
    return data_dir
  tag = "user" if data else "synthetic" + "".join(a.strip("-").replace("=", "")
                                                  for a in synthetic_args)
  out = os.path.join(work_dir, f"data_{tag}_s{seed}")
  if data:
    return prepare.build(data, out, seed)
  return prepare.prepare_synthetic_data(
      out, None, seed, log_path=os.path.join(work_dir, f"log_{tag}_s{seed}.csv.gz"),
      synthetic_args=synthetic_args)


def train_and_evaluate(data_dir, model, work_dir, steps, epochs, batch_size, seed,
                       eval_steps=None, **overrides) -> dict:
  """Trains one model in-process; returns its final eval metrics and timing."""
  tf.keras.backend.clear_session()
  config = config_lib.ModelConfig(model=model, **overrides)
  tag = "_".join([model] + [f"{k}{v}" for k, v in sorted(overrides.items())] + [f"s{seed}"])
  model_dir = os.path.join(work_dir, "models", tag)
  start = time.perf_counter()
  train_config = config_lib.TrainConfig(epochs=epochs, steps=steps, batch_size=batch_size,
                                        learning_rate=2e-3, seed=seed, eval_steps=eval_steps,
                                        checkpoint_every_steps=10 ** 9)
  metrics, _ = training.train(config, train_config, data_dir, model_dir, verbose=0)
  row = {k: metrics[k] for k in ("auc", "gauc", "logloss", "positive_rate",
                                 "train_examples_per_second", "train_steps",
                                 "eval_examples")}
  row.update({"model": model, "seed": seed, "wall_seconds": time.perf_counter() - start,
              **overrides})
  if model == "eta":
    row["overlap_at_k"] = metrics.get(f"overlap_at_{config.top_k}")
    for name in ("attention_recall", "distance0_share", "same_category_share"):
      row[name] = metrics.get(name)
  if "heuristics" in metrics:  # training-free baselines on the same eval samples
    row["heuristics"] = metrics["heuristics"]
  return row


def format_table(rows, keys=("model", "seed", "auc", "gauc", "logloss",
                             "train_examples_per_second")) -> str:
  lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
  for r in rows:
    cells = []
    for k in keys:
      v = r.get(k)
      cells.append(f"{v:.4f}" if isinstance(v, float) and k != "train_examples_per_second"
                   else f"{v:.0f}" if isinstance(v, float) else str(v))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def int_list(text: str):
  """argparse type: "1,2,3" -> [1, 2, 3]; anything else is refused naming the value."""
  try:
    return [int(x) for x in text.split(",")]
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", default=",".join(config_lib.MODEL_NAMES))
  parser.add_argument("--data", default=None, help="raw Taobao-format log (glob) to use "
                      "instead of the synthetic one")
  parser.add_argument("--data_dir", default=None, help="existing pipeline output dir")
  parser.add_argument("--synthetic_args", default="", help="extra pipelines.synthetic "
                      "flags, space separated (e.g. '--num_users=2000')")
  parser.add_argument("--work_dir", default=os.path.join(HERE, "work"))
  parser.add_argument("--output", default=os.path.join(HERE, "results",
                                                       "compare_models.json"))
  parser.add_argument("--steps", type=int, default=600, help="train steps per epoch")
  parser.add_argument("--epochs", type=int, default=2)
  parser.add_argument("--eval_steps", type=int, default=None)
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic log and "
                      "of the pipeline; also the model seed unless --model_seeds is given")
  parser.add_argument("--model_seeds", type=int_list, default=None,
                      help="comma-separated seeds of initialisation and shuffling: every "
                      "model is trained once per seed on the same data (default: --seed)")
  parser.add_argument("--max_len", type=int, default=256)
  parser.add_argument("--short_len", type=int, default=16)
  parser.add_argument("--top_k", type=int, default=48)
  parser.add_argument("--hash_bits", type=int, default=64,
                      help="SimHash bits m (eta and sdim)")
  args = parser.parse_args(argv)

  data_dir = prepare_data(args.work_dir, args.data, args.data_dir, args.seed,
                          args.synthetic_args.split())
  model_seeds = args.model_seeds or [args.seed]
  rows = []
  for seed in model_seeds:
    for model in args.models.split(","):
      print(f"== {model} seed {seed}", flush=True)
      row = train_and_evaluate(data_dir, model, args.work_dir, args.steps, args.epochs,
                               args.batch_size, seed, args.eval_steps,
                               max_len=args.max_len, short_len=args.short_len,
                               top_k=args.top_k, hash_bits=args.hash_bits)
      print(json.dumps(row), flush=True)
      rows.append(row)
  print(format_table(rows))
  os.makedirs(os.path.dirname(args.output), exist_ok=True)
  with open(args.output, "w") as f:
    json.dump({"data_dir": data_dir, "args": vars(args), "rows": rows}, f, indent=2)
  print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
