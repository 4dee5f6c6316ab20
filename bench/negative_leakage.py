r"""Do the pipeline's negatives give the answer away? The leakage check on real-shaped logs.

  python -m bench.negative_leakage [--movielens_dir=../shared/data/movielens-latest-small]

Runs pipelines.build_dataset on
  * a Taobao-calibrated synthetic log (pipelines.synthetic --preset=taobao, --users users)
    with the default matched sampler and with --negative_sampler=uniform;
  * when --movielens_dir is given (ratings.csv + movies.csv or u.data + u.item): its
    behaviors.csv (every rating a positive, sampled negatives) with both samplers, and its
    real-label impressions (rating >= 4 positive; nothing sampled), time split;
and records per split the leakage AUCs (stats.json splits.*.leakage: popularity,
seen_before_window and the per-user history_occurrences), target shares, and the
sampler's fallback and history-match counts. The MovieLens behaviors runs are made with the default time split
and with --split=user_last --eval_targets_per_user=10. Results:
bench/results/negative_leakage.json.
"""
import argparse
import os
import tempfile

from bench import machine
from pipelines import build_dataset, leakage as L, movielens, negatives, synthetic

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
RESULTS_FILE = "negative_leakage.json"


def _summary(stats: dict) -> dict:
  return {
      "splits": {name: {"targets": s["targets"], "target_share": s["target_share"],
                        "positive_rate": s["positive_rate"], **s["leakage"]}
                 for name, s in stats["splits"].items()},
      "fallbacks": {k: stats[k] for k in negatives.FALLBACK_COUNTS},
      "history_match": {k: stats[k] for k in negatives.HISTORY_COUNTS},
      "negatives_unavailable": stats["negatives_unavailable"],
      "params": {k: stats["params"][k] for k in ("negative_sampler", "split",
                                                 "negative_time_windows",
                                                 "history_length")},
  }


def _run(name, flags, work, runs):
  out = os.path.join(work, name)
  stats = build_dataset.run([*flags, f"--output_dir={out}"])
  runs[name] = dict(_summary(stats), flags=flags)
  leak = {s: tuple(round(v[f"{score}_auc"], 3) for score in L.SCORES)
          for s, v in runs[name]["splits"].items()}
  print(f"{name}: ({', '.join(L.SCORES)}) AUC per split {leak}", flush=True)


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m bench.negative_leakage",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--users", type=int, default=2000,
                      help="users of the Taobao-preset synthetic log (default 2000)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--movielens_dir", default=None,
                      help="an unpacked MovieLens directory (skipped when not given)")
  parser.add_argument("--output_dir", default=RESULTS_DIR)
  args = parser.parse_args(argv)
  run = machine.start_run("python -m bench.negative_leakage", argv)
  runs = {}
  with tempfile.TemporaryDirectory() as work:
    cfg = synthetic.SyntheticConfig(num_users=args.users, seed=args.seed,
                                    **synthetic.TAOBAO_PRESET)
    log = synthetic.write_lines(os.path.join(work, "taobao.csv"),
                                synthetic.generate_log(cfg).lines)
    for sampler in ("matched", "uniform"):
      _run(f"taobao_preset_{sampler}", [f"--input={log}", f"--negative_sampler={sampler}",
                                        f"--seed={args.seed}"], work, runs)
    if args.movielens_dir:
      logs = os.path.join(work, "movielens")
      convert = movielens.convert(args.movielens_dir, logs, progress_every=0)
      behaviors = os.path.join(logs, movielens.BEHAVIORS_FILE)
      for sampler in ("matched", "uniform"):
        _run(f"movielens_behaviors_{sampler}", [f"--input={behaviors}",
                                                f"--negative_sampler={sampler}"], work, runs)
      _run("movielens_behaviors_matched_user_last", [
          f"--input={behaviors}", "--split=user_last", "--eval_targets_per_user=10"],
           work, runs)
      _run("movielens_real_labels", [
          f"--input={behaviors}",
          f"--impressions={os.path.join(logs, movielens.IMPRESSIONS_FILE)}"], work, runs)
      runs["movielens_convert"] = convert
  result = dict(machine.finish_run(run), synthetic={"users": args.users,
                                                     "preset": synthetic.TAOBAO_PRESET},
                runs=runs)
  print("wrote", machine.write_json(result, args.output_dir, RESULTS_FILE))


if __name__ == "__main__":
  main()
