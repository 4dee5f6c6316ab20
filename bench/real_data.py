r"""The report's real-data section: MovieLens through the converter, the pipeline, all six
models and the oracle retrieval control (run by `python -m bench.report`; rendered into
REPORT.md from movielens.json).

  python -m bench.report --movielens_only            # this section alone, REPORT.md and
                                                     # README re-rendered around it

Steps, all existing machinery:
1. pipelines.movielens.convert: ratings -> a behavior log (every rating a behavior,
   category = the movie's first genre) + an impression log labelled as in the DIN paper
   (rating >= 4 positive);
2. pipelines.build_dataset.run with the impressions as targets and --split=user_last
   --eval_targets_per_user=10 by default (each user's last 10 rated movies are eval);
3. per seed and model (a preset of eta_tf/presets.py): bench/count_floor.py's loop (fit
   epoch by epoch, early stopping on the validation split of train -- the train records of
   1 in --val_every users, held out from fitting, never eval -- then eval AUC, GAUC,
   logloss and the training-free heuristics of eta_tf.baselines on the same eval samples);
4. movielens.json: the machine, command, date, the split as stats.json records it (method,
   per split targets, target share, user share, positive rate), every row, and
   count_floor's summary (per-model means, best heuristic, eta's paired gaps).
"""
import json
import os
import shutil
import types
from typing import Dict, List, Optional, Sequence

from bench import count_floor  # (sets tf-keras before TF via eta_tf)
from bench import machine
from eta_tf import baselines
from eta_tf import config as config_lib
from eta_tf import features as F
from pipelines import build_dataset
from pipelines import dataset_stats
from pipelines import movielens

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where the README and docs/pipeline.md tell users to unpack ml-latest-small (git-ignored: never committed).
DEFAULT_DIR = os.path.join(ROOT, "datasets", "ml-latest-small")
DOWNLOAD_URL = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
RESULT_FILE = "movielens.json"
DEFAULT_PIPELINE_ARGS = ("--split=user_last", "--eval_targets_per_user=10")
# Per report budget: steps per epoch, epoch cap, patience, validation batches (0: the whole
# validation split), seeds, weight average. "full" is count_floor's converged protocol
# (the one the README's MovieLens figures use): whole-split validation, patience 2, the
# moving average the trainer keeps by default (movielens.json records how long a run
# took).
_TRAINER_AVERAGE = config_lib.TrainConfig().weight_average
BUDGETS = {
    "full": dict(steps=150, max_epochs=6, patience=2, val_steps=0, seeds=3,
                 weight_average=_TRAINER_AVERAGE),
    "small": dict(steps=60, max_epochs=3, patience=1, val_steps=10, seeds=3,
                  weight_average=_TRAINER_AVERAGE),
    "smoke": dict(steps=2, max_epochs=1, patience=1, val_steps=2, seeds=1,
                  weight_average=0.0),
}
# The section's models: the product's six and the retrieval control at the default (the
# top-k by the model's own full attention: the selection the Hamming top-k stands in for).
MODELS = config_lib.MODEL_NAMES + ("eta_oracle_default",)


def missing_reason(movielens_dir: str) -> Optional[str]:
  """Why the section cannot run (one line), or None when a MovieLens layout is there."""
  try:
    movielens.detect_format(movielens_dir)
  except movielens.ConversionError:
    layouts = " or ".join(" + ".join(files) for files in movielens.FORMATS.values())
    return (f"--movielens_dir={movielens_dir} holds no MovieLens {layouts}; download "
            f"{DOWNLOAD_URL} and unzip it into {os.path.dirname(DEFAULT_DIR)}/ (or pass "
            "--movielens_dir)")
  return None


def prepare(movielens_dir: str, work_dir: str, pipeline_args: Sequence[str],
            seed: int = 0) -> Dict[str, str]:
  """Converter + Beam job into a fresh work_dir; returns {"logs": dir, "data": data_dir}."""
  shutil.rmtree(work_dir, ignore_errors=True)  # never reuse another input's outputs
  logs = os.path.join(work_dir, "logs")
  data_dir = os.path.join(work_dir, "data")
  movielens.convert(movielens_dir, logs)
  stats = build_dataset.run([
      f"--input={os.path.join(logs, movielens.BEHAVIORS_FILE)}",
      f"--impressions={os.path.join(logs, movielens.IMPRESSIONS_FILE)}",
      f"--output_dir={data_dir}", f"--seed={seed}", "--overwrite", *pipeline_args])
  print(dataset_stats.summarize(stats), flush=True)
  return {"logs": logs, "data": data_dir}


def split_summary(data_dir: str) -> dict:
  """The split as the pipeline's stats.json records it: method, its parameter, and per
  split the records, targets, target share, user share and positive rate."""
  with open(os.path.join(data_dir, F.STATS_FILE)) as f:
    stats = json.load(f)
  params = stats["params"]
  keys = ("records", "targets", "target_share", "user_share", "positive_rate")
  return {"method": stats["time"]["method"],
          "eval_targets_per_user": params["eval_targets_per_user"],
          "eval_fraction": params["eval_fraction"],
          "eval_start": stats["time"].get("eval_start"),
          "users": stats["users"], "items": stats["items"],
          "categories": stats["categories"],
          "splits": {name: {k: s.get(k) for k in keys}
                     for name, s in sorted(stats["splits"].items())}}


def _loop_args(budget: dict, batch_size: int, val_every: int, eval_steps):
  """The namespace count_floor.train_early_stopped reads its budget from."""
  return types.SimpleNamespace(
      batch_size=batch_size, steps=budget["steps"], max_epochs=budget["max_epochs"],
      patience=budget["patience"], val_steps=budget["val_steps"], eval_steps=eval_steps,
      learning_rate=2e-3, embedding_learning_rate=0.5, val_every=val_every,
      # A budget written before the key kept the last step's weights; no per-epoch eval
      # AUC history.
      weight_average=budget.get("weight_average", 0.0), eval_history=False)


def run(movielens_dir: str, work_dir: str, budget: dict, command: str,
        models: Sequence[str] = MODELS, seeds: Optional[Sequence[int]] = None,
        pipeline_args: Sequence[str] = DEFAULT_PIPELINE_ARGS, max_len: int = 256,
        short_len: int = 16, batch_size: int = 256, val_every: int = 10,
        eval_steps=None) -> dict:
  """The whole section; returns what movielens.json holds (see the module docstring)."""
  header = machine.start_run(command, [])
  header["command"] = command
  dirs = prepare(movielens_dir, os.path.join(work_dir, "movielens"), pipeline_args)
  pattern = count_floor.split_train_users(dirs["data"], os.path.join(
      work_dir, "movielens", "val_split"), val_every)
  train_counts = baselines.train_item_counts(dirs["data"])
  loop = _loop_args(budget, batch_size, val_every, eval_steps)
  seeds = list(range(budget["seeds"])) if seeds is None else list(seeds)
  rows: List[dict] = []
  for seed in seeds:
    for model in models:
      config = count_floor.model_config(model, max_len=max_len, short_len=short_len)
      result = count_floor.train_early_stopped(config, dirs["data"], pattern, seed, loop,
                                               train_counts)
      fitted = len(result["val_auc_history"]) * loop.steps * batch_size
      row = {"model": model, "seed": seed, **result,
             # Includes the validation passes after each epoch (count_floor times both).
             "train_examples_per_second": fitted / result["train_seconds"]}
      print(json.dumps({k: v for k, v in row.items() if k != "heuristics"}), flush=True)
      rows.append(row)
  with open(os.path.join(dirs["logs"], "convert_stats.json")) as f:
    converted = json.load(f)
  return {**machine.finish_run(header), "movielens_dir": movielens_dir,
          "format": converted["format"], "ratings": converted["ratings"],
          "pipeline_args": list(pipeline_args), "split": split_summary(dirs["data"]),
          "budget": dict(budget, batch_size=batch_size, max_len=max_len,
                         short_len=short_len, val_every=val_every, eval_steps=eval_steps),
          "rows": rows, "summary": count_floor.summarize(rows)}


def write(result: dict, output_dir: str) -> str:
  return machine.write_json(result, output_dir, RESULT_FILE)


def load(output_dir: str) -> Optional[dict]:
  path = os.path.join(output_dir, RESULT_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)
