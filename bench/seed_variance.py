r"""Where the seed spread of count_floor's rows comes from (read-only over its JSON files).

  python -m bench.seed_variance --results=bench/results/count_floor_movielens.json \
      [--compare=eta_category_first:bench/results/count_floor_movielens.json,\
eta_category_first:bench/results/count_floor_movielens_weight_average.json] \
      [--data_dir=bench/work/data_movielens] [--output=bench/results/seed_variance_movielens.json]

From the rows of one count_floor output (one row per model and seed; every model of a
seed shares the seed's data order and the seed's initialiser stream):
  * per model: standard deviation over seeds of eval AUC, GAUC, logloss, mean prediction;
  * the seed-shared part: correlation over seeds of two models' AUCs, for every pair of
    models with >= 5 common seeds (a correlation near 0 = each model's own noise; near 1 =
    what the seed fixes for every model, data order or initial embeddings);
  * early stopping: correlation over seeds between the best validation AUC (what picks
    the checkpoint) and the eval AUC of that checkpoint, per model; eval AUC minus the
    model's mean by the epoch kept and for runs stopped before max_epochs;
  * --data_dir: how concentrated the eval split is (users, samples of the largest users);
  * --compare: seed sd of MODEL in each FILE, over the seeds they share and over all.
Writes the numbers as JSON (--output) and prints them.
"""
import argparse
import collections
import json
import sys

import numpy as np

from bench import machine
from bench.count_floor_summary import load

MIN_SEEDS = 5


def _rows(path):
  """The rows of a count_floor output under preset names (legacy rows renamed)."""
  return load(path)["rows"]


def _sd(values):
  return float(np.std(values, ddof=1)) if len(values) > 1 else None


def analyse(rows) -> dict:
  """The per-model spread, seed-shared correlations and early-stopping facts."""
  by = collections.defaultdict(dict)
  for r in rows:
    by[r["model"]][r["seed"]] = r
  models = sorted(m for m in by if len(by[m]) >= MIN_SEEDS)
  spread = {m: {"seeds": len(by[m]),
                **{f"sd_{k}": _sd([r[k] for r in by[m].values()])
                   for k in ("auc", "gauc", "logloss", "mean_prediction")},
                "corr_best_val_eval": float(np.corrcoef(
                    [max(r["val_auc_history"]) for r in by[m].values()],
                    [r["auc"] for r in by[m].values()])[0, 1])}
            for m in models}
  pairs = {}
  for i, a in enumerate(models):
    for b in models[i + 1:]:
      seeds = sorted(set(by[a]) & set(by[b]))
      if len(seeds) >= MIN_SEEDS:
        pairs[f"{a} ~ {b}"] = float(np.corrcoef([by[a][s]["auc"] for s in seeds],
                                                [by[b][s]["auc"] for s in seeds])[0, 1])
  centred = [(r, r["auc"] - np.mean([x["auc"] for x in by[r["model"]].values()]))
             for m in models for r in by[m].values()]
  kept = {}
  for epoch in sorted({r["best_epoch"] for r, _ in centred}):
    gaps = [g for r, g in centred if r["best_epoch"] == epoch]
    kept[str(epoch)] = {"runs": len(gaps), "auc_minus_model_mean": float(np.mean(gaps))}
  max_epochs = max(len(r["val_auc_history"]) for r, _ in centred)
  stopped = [g for r, g in centred if len(r["val_auc_history"]) < max_epochs]
  return {"models": spread, "seed_correlation": pairs,
          "mean_seed_correlation": float(np.mean(list(pairs.values()))) if pairs else None,
          "auc_by_epoch_kept": kept,
          "stopped_early": {"runs": len(stopped), "auc_minus_model_mean":
                            float(np.mean(stopped)) if stopped else None}}


def eval_concentration(data_dir: str) -> dict:
  """Users and the largest users' share of the eval split's samples."""
  from eta_tf import data  # lazy: TF only for --data_dir
  from eta_tf import features as F
  users = np.concatenate([f[F.USER_ID].numpy() for f, _ in data.make_dataset(
      data_dir, F.EVAL_SPLIT, 1, 4096, shuffle=False)])
  _, counts = np.unique(users, return_counts=True)
  counts = np.sort(counts)[::-1]
  return {"samples": int(len(users)), "users": int(len(counts)),
          "top_user_share": float(counts[0] / len(users)),
          "top5_users_share": float(counts[:5].sum() / len(users))}


def compare(specs) -> list:
  """[{model, file, seeds, sd_auc, mean_auc, sd_auc_common_seeds}] for MODEL:FILE specs."""
  groups = []
  for spec in specs:
    model, _, path = spec.partition(":")
    rows = {r["seed"]: r["auc"] for r in _rows(path) if r["model"] == model}
    if not rows:
      raise SystemExit(f"--compare {spec!r}: no rows of model {model!r} in {path}")
    groups.append((model, path, rows))
  common = sorted(set.intersection(*[set(g[2]) for g in groups]))
  return [{"model": m, "file": p, "seeds": len(rows), "mean_auc": float(np.mean(
      list(rows.values()))), "sd_auc": _sd(list(rows.values())), "common_seeds": common,
           "sd_auc_common_seeds": _sd([rows[s] for s in common])}
          for m, p, rows in groups]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--results", required=True, help="a count_floor output JSON")
  parser.add_argument("--compare", default="",
                      help="comma-separated MODEL:FILE: seed sd of each (before/after)")
  parser.add_argument("--data_dir", default=None, help="pipelines.build_dataset output")
  parser.add_argument("--output", default=None, help="write the numbers here (JSON)")
  args = parser.parse_args(argv)
  run = machine.start_run("python -m bench.seed_variance",
                          sys.argv[1:] if argv is None else argv)
  result = {"results": args.results, **analyse(_rows(args.results))}
  if args.compare:
    result["compare"] = compare([s for s in args.compare.split(",") if s])
  if args.data_dir:
    result["eval_concentration"] = eval_concentration(args.data_dir)
  result["run"] = machine.finish_run(run)
  text = json.dumps(result, indent=1)
  print(text)
  if args.output:
    with open(args.output, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
