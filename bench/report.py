r"""One command for the evidence: accuracy of all six models and serving cost, on this machine.

  python -m bench.report                         # the full report (~60 min on 2 cores)
  python -m bench.report --data='UserBehavior*.csv' # the same report on your own log
  python -m bench.report --budget=small          # a smaller budget (fewer steps/seeds)

Runs, from a fresh checkout:
1. the synthetic log (pipelines.synthetic defaults) and a harder setting (rarer long-term
   revisits, more recent categories) — or --data — through the Beam pipeline;
2. trains all six models with the same budget (steps, batch, seeds) and evaluates AUC,
   GAUC and logloss on the eval split; the default setting over 3 seeds (mean ± std; 2
   with --budget=small);
3. sweeps ETA's hash bits m in {16, 32, 64, 128} and k;
4. collects serving cost from bench/serving_cost.py (--quick unless --full_serving);
5. the real-data section (bench/real_data.py) when MovieLens is in --movielens_dir (default
   datasets/ml-latest-small, where the README says to unzip it; skipped with the reason
   printed when absent): converter, pipeline (--split=user_last), all six models and the
   oracle retrieval control at the default eta, count_floor's converged protocol (early
   stopping on the whole validation split of train, patience 2), 3 seeds, heuristics;
   ~55 min;
6. writes bench/results/REPORT.md (tables; the command, machine and date) and PNG plots
   (AUC per model, latency vs L, AUC vs m, AUC vs k), and regenerates the Results block
   of README.md from it (not with --data unless --readme is given).

  python -m bench.report --rerender --skip_serving   # REPORT.md + README from report.json
                                                     # and the current serving_cost.json
  python -m bench.report --movielens_only            # only the real-data section, then
                                                     # REPORT.md + README re-rendered
Nothing about which model wins is assumed: every table is what this run measured.

This module runs the steps and parses the flags; bench/report_render.py writes REPORT.md
and the README block, bench/report_tables.py renders the tables and plots.
"""
import argparse
import json
import os
import subprocess
import sys
import time

from bench import compare_models  # (sets tf-keras before TF via eta_tf)
from bench import real_data
from bench.report_render import README, write_report
from bench.report_tables import HERE
from eta_tf import config as config_lib

RESULTS = os.path.join(HERE, "results")
HARDER_SYNTHETIC = ("--late_long_term_rate=0.1", "--recent_categories=5")
BUDGETS = {
    # steps per epoch, epochs, seeds, sweep values of m and k
    "full": dict(steps=300, epochs=2, seeds=3, bits=(16, 32, 64, 128), ks=(8, 16, 48, 96)),
    "small": dict(steps=150, epochs=1, seeds=2, bits=(16, 64, 128), ks=(16, 48)),
    # Exercises every step end to end in about a minute (tests/test_report.py); its
    # numbers mean nothing.
    "smoke": dict(steps=3, epochs=1, seeds=2, bits=(16, 64), ks=(4, 8)),
}

def _add_shared_flags(parser):
  """Flags that both a run and --rerender read (the budget and shapes REPORT.md states)."""
  parser.add_argument("--budget", choices=sorted(BUDGETS), default="full")
  parser.add_argument("--max_len", type=int, default=256)
  parser.add_argument("--short_len", type=int, default=16)
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--eval_steps", type=int, default=60)
  parser.add_argument("--output_dir", default=RESULTS)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data", default=None, help="your own Taobao-format behavior log "
                      "(glob, plain or .gz); replaces both synthetic settings")
  _add_shared_flags(parser)
  parser.add_argument("--full_serving", action="store_true",
                      help="all L and N in the serving benchmark (slower)")
  parser.add_argument("--skip_serving", action="store_true", help="do not rerun "
                      "bench/serving_cost.py; report the serving_cost.json already in "
                      "--output_dir (if any)")
  parser.add_argument("--work_dir", default=os.path.join(HERE, "work"))
  parser.add_argument("--readme", default=None, help="README whose generated Results "
                      "block is replaced by the report (default: this checkout's "
                      "README.md for the synthetic report, none with --data; '' = none)")
  parser.add_argument("--movielens_dir", default=real_data.DEFAULT_DIR,
                      help="unpacked MovieLens (ratings.csv + movies.csv, or u.data + "
                      "u.item) for the real-data section; skipped with the reason printed "
                      "when absent (default: %(default)s, where the README says to unzip "
                      "ml-latest-small)")
  parser.add_argument("--movielens_only", action="store_true", help="run only the "
                      "real-data section (exit 2 if --movielens_dir holds no MovieLens), "
                      "then re-render REPORT.md and the README from --output_dir's "
                      "report.json as its last run left it")
  parser.add_argument("--movielens_models", default=",".join(real_data.MODELS),
                      help="models (presets) of the real-data section (default: the six "
                      "and the oracle retrieval control at the default eta)")
  parser.add_argument("--movielens_pipeline_args",
                      default=" ".join(real_data.DEFAULT_PIPELINE_ARGS),
                      help="pipelines.build_dataset flags of the real-data section, space "
                      "separated (default: %(default)s)")
  args = parser.parse_args(argv)
  args.command = "python -m bench.report " + " ".join(
      sys.argv[1:] if argv is None else argv)
  budget = BUDGETS[args.budget]
  os.makedirs(args.output_dir, exist_ok=True)
  if args.movielens_only:
    return movielens_only(args)
  started = time.time()
  common = dict(max_len=args.max_len, short_len=args.short_len)

  def run(data_dir, model, seed, **overrides):
    row = compare_models.train_and_evaluate(
        data_dir, model, args.work_dir, budget["steps"], budget["epochs"], args.batch_size,
        seed, args.eval_steps, **{**common, **overrides})
    print(json.dumps(row), flush=True)
    return row

  settings = {"user log": ()} if args.data else {"synthetic default": (),
                                                 "synthetic harder": HARDER_SYNTHETIC}
  results = {"settings": {}, "bits": [], "ks": [], "serving": []}
  for i, (name, synthetic_args) in enumerate(settings.items()):
    print(f"== setting: {name}", flush=True)
    data_dir = compare_models.prepare_data(args.work_dir, args.data, None, 0,
                                           list(synthetic_args))
    seeds = range(budget["seeds"] if i == 0 else 1)
    rows = [run(data_dir, model, seed) for seed in seeds
            for model in config_lib.MODEL_NAMES]
    results["settings"][name] = {"data_dir": data_dir, "rows": rows,
                                 "synthetic_args": list(synthetic_args)}
    if i == 0:
      results["bits"] = [run(data_dir, "eta", 0, hash_bits=m) for m in budget["bits"]]
      results["ks"] = [run(data_dir, "eta", 0, top_k=k) for k in budget["ks"]]

  results["movielens_skipped"] = run_movielens(args)

  if not args.skip_serving:
    cmd = [sys.executable, "-m", "bench.serving_cost",
           f"--output_dir={args.output_dir}"] + ([] if args.full_serving else ["--quick"])
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
  serving_json = os.path.join(args.output_dir, "serving_cost.json")
  if os.path.exists(serving_json):
    with open(serving_json) as f:
      results["serving"] = json.load(f)

  write_report(args, budget, results, time.time() - started)


def run_movielens(args) -> str:
  """The real-data section into --output_dir/movielens.json; returns why it was skipped
  (printed) or None when it ran."""
  reason = real_data.missing_reason(args.movielens_dir)
  if reason:
    print(f"skipping the real-data (MovieLens) section: {reason}", flush=True)
    return reason
  print(f"== real data: MovieLens from {args.movielens_dir}", flush=True)
  result = real_data.run(
      args.movielens_dir, args.work_dir, real_data.BUDGETS[args.budget], args.command.strip(),
      models=args.movielens_models.split(","),
      pipeline_args=args.movielens_pipeline_args.split(), max_len=args.max_len,
      short_len=args.short_len, batch_size=args.batch_size)
  print(f"wrote {real_data.write(result, args.output_dir)}", flush=True)
  return None


def movielens_only(args):
  """Runs the real-data section, then re-renders the rest from report.json (if any) with
  the command, minutes and serving source its last run or re-render recorded."""
  reason = real_data.missing_reason(args.movielens_dir)
  if reason:
    print(f"report.py: error: --movielens_only: {reason}", file=sys.stderr)
    raise SystemExit(2)
  run_movielens(args)
  report_json = os.path.join(args.output_dir, "report.json")
  results = {"settings": {}, "bits": [], "ks": [], "serving": []}
  if os.path.exists(report_json):
    with open(report_json) as f:
      results = json.load(f)
    args.rerendered = args.command
  results.pop("movielens_skipped", None)
  last = results.get("run", {})
  args.command = last.get("command", args.command)
  args.skip_serving = last.get("skip_serving", False)
  _load_separate_serving(args, results)
  write_report(args, BUDGETS[last.get("budget", args.budget)], results,
               last.get("minutes", 0.0) * 60)


def _load_separate_serving(args, results):
  """With --skip_serving the serving tables come from a separate run's serving_cost.json."""
  serving_json = os.path.join(args.output_dir, "serving_cost.json")
  if args.skip_serving and os.path.exists(serving_json):
    with open(serving_json) as f:
      results["serving"] = json.load(f)


def rerender(argv=None):
  """Re-writes REPORT.md and the plots from report.json (no training)."""
  parser = argparse.ArgumentParser()
  _add_shared_flags(parser)
  parser.add_argument("--skip_serving", action="store_true", help="take the serving "
                      "tables from --output_dir/serving_cost.json (a separate run of "
                      "bench/serving_cost.py) instead of report.json")
  parser.add_argument("--minutes", type=float, default=None, help="how long the run "
                      "that produced report.json took (default: as report.json records)")
  parser.add_argument("--command", default=None, help="the command that produced "
                      "report.json, as it should appear in REPORT.md (default: as "
                      "report.json records)")
  parser.add_argument("--readme", default=README, help="README to update ('' = none)")
  args = parser.parse_args(argv)
  args.rerendered = "python -m bench.report --rerender" + (
      " --skip_serving" if args.skip_serving else "")
  with open(os.path.join(args.output_dir, "report.json")) as f:
    results = json.load(f)
  last = results.get("run", {})
  args.command = args.command or last.get("command")
  minutes = args.minutes if args.minutes is not None else last.get("minutes", 0.0)
  _load_separate_serving(args, results)
  write_report(args, BUDGETS[args.budget], results, minutes * 60)

if __name__ == "__main__":
  if sys.argv[1:2] == ["--rerender"]:
    rerender(sys.argv[2:])
  else:
    main()