r"""One command for the evidence: accuracy of all six models and serving cost, on this machine.

  python bench/report.py                         # the full report (~60 min on 2 cores)
  python bench/report.py --data='UserBehavior*.csv' # the same report on your own log
  python bench/report.py --budget=small          # a smaller budget (fewer steps/seeds)

Runs, from a fresh checkout:
1. the synthetic log (pipelines.synthetic defaults) and a harder setting (rarer long-term
   revisits, more recent categories) — or --data — through the Beam pipeline;
2. trains all six models with the same budget (steps, batch, seeds) and evaluates AUC,
   GAUC and logloss on the eval split; the default setting over --seeds seeds (mean ± std);
3. sweeps ETA's hash bits m in {16, 32, 64, 128} and k;
4. collects serving cost from bench/serving_cost.py (--quick unless --full_serving);
5. writes bench/results/REPORT.md (tables; the command, machine and date) and PNG plots
   (AUC per model, latency vs L, AUC vs m, AUC vs k).
Nothing about which model wins is assumed: every table is what this run measured.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import compare_models  # noqa: E402  (sets tf-keras before TF via eta_tf)
from eta_tf import config as config_lib  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
HARDER_SYNTHETIC = ("--late_long_term_rate=0.1", "--recent_categories=5")
BUDGETS = {
    # steps per epoch, epochs, seeds, sweep values of m and k
    "full": dict(steps=300, epochs=2, seeds=3, bits=(16, 32, 64, 128), ks=(8, 16, 48, 96)),
    "small": dict(steps=150, epochs=1, seeds=2, bits=(16, 64, 128), ks=(16, 48)),
}


def mean_std(values):
  import numpy as np  # pylint: disable=g-import-not-at-top
  values = np.asarray(values, dtype=float)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def aggregate(rows, key_fields=("model",)):
  """Groups rows by key_fields; mean ± std of auc, gauc, logloss; mean examples/s."""
  groups = {}
  for r in rows:
    groups.setdefault(tuple(r[k] for k in key_fields), []).append(r)
  out = []
  for key, group in groups.items():
    agg = dict(zip(key_fields, key))
    for metric in ("auc", "gauc", "logloss"):
      agg[metric], agg[metric + "_std"] = mean_std([g[metric] for g in group])
    agg["train_examples_per_second"] = mean_std(
        [g["train_examples_per_second"] or 0.0 for g in group])[0]
    agg["seeds"] = len(group)
    out.append(agg)
  return out


def accuracy_table(agg):
  lines = ["| model | AUC | GAUC | logloss | train examples/s | seeds |",
           "|---|---|---|---|---|---|"]
  for a in sorted(agg, key=lambda a: -a["auc"]):
    lines.append(f"| {a['model']} | {a['auc']:.4f} ± {a['auc_std']:.4f} | "
                 f"{a['gauc']:.4f} ± {a['gauc_std']:.4f} | {a['logloss']:.4f} ± "
                 f"{a['logloss_std']:.4f} | {a['train_examples_per_second']:.0f} | "
                 f"{a['seeds']} |")
  return "\n".join(lines)


def sweep_table(rows, field):
  lines = [f"| {field} | AUC | GAUC | overlap@k |", "|---|---|---|---|"]
  for r in sorted(rows, key=lambda r: r[field]):
    overlap = r.get("overlap_at_k")
    lines.append(f"| {r[field]} | {r['auc']:.4f} | {r['gauc']:.4f} | "
                 f"{overlap if overlap is None else f'{overlap:.3f}'} |")
  return "\n".join(lines)


def serving_table(records):
  rows = [r for r in records if "model" in r]
  lengths = sorted({r["L"] for r in rows})
  ns = sorted({r["N"] for r in rows})
  models = sorted({r["model"] for r in rows})
  lines = ["| L | N | " + " | ".join(f"{m} ms" for m in models) +
           " | din_long / eta |", "|---|---|" + "---|" * (len(models) + 1)]
  for length in lengths:
    for n in ns:
      cell = {r["model"]: r["median_ms"] for r in rows if r["L"] == length and r["N"] == n}
      if not cell:
        continue
      ratio = (cell.get("din_long", float("nan")) / cell["eta"]) if "eta" in cell else None
      lines.append(f"| {length} | {n} | " + " | ".join(
          f"{cell[m]:.2f}" if m in cell else "-" for m in models) +
          f" | {ratio:.2f}x |" if ratio else " | - |")
  kernels = [r for r in records if r.get("kernel") == "hamming_topk"]
  if kernels:
    lines += ["", "| Hamming top-k kernel | L | N | ns per pair |", "|---|---|---|---|"]
    for r in kernels:
      lines.append(f"| {r.get('variant', 'hamming_topk')} | {r['L']} | {r['N']} | "
                   f"{r['ns_per_pair']:.2f} |")
  return "\n".join(lines)


def plot_bars(agg, path, title):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  agg = sorted(agg, key=lambda a: -a["auc"])
  fig, ax = plt.subplots(figsize=(6, 3.5))
  ax.bar([a["model"] for a in agg], [a["auc"] for a in agg],
         yerr=[a["auc_std"] for a in agg], capsize=4)
  low = min(a["auc"] - a["auc_std"] for a in agg)
  ax.set_ylim(max(0.0, low - 0.02), max(a["auc"] + a["auc_std"] for a in agg) + 0.01)
  ax.set_ylabel("eval AUC")
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_sweep(rows, field, path, title):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = sorted(rows, key=lambda r: r[field])
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.plot([r[field] for r in rows], [r["auc"] for r in rows], marker="o")
  ax.set_xscale("log", base=2)
  ax.set_xlabel(field)
  ax.set_ylabel("eval AUC (eta)")
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data", default=None, help="your own Taobao-format behavior log "
                      "(glob, plain or .gz); replaces both synthetic settings")
  parser.add_argument("--budget", choices=sorted(BUDGETS), default="full")
  parser.add_argument("--full_serving", action="store_true",
                      help="all L and N in the serving benchmark (slower)")
  parser.add_argument("--skip_serving", action="store_true", help="do not rerun "
                      "bench/serving_cost.py; report the serving_cost.json already in "
                      "--output_dir (if any)")
  parser.add_argument("--max_len", type=int, default=256)
  parser.add_argument("--short_len", type=int, default=16)
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--eval_steps", type=int, default=60)
  parser.add_argument("--work_dir", default=os.path.join(HERE, "work"))
  parser.add_argument("--output_dir", default=RESULTS)
  args = parser.parse_args(argv)
  budget = BUDGETS[args.budget]
  os.makedirs(args.output_dir, exist_ok=True)
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

  if not args.skip_serving:
    cmd = [sys.executable, os.path.join(HERE, "serving_cost.py"),
           f"--output_dir={args.output_dir}"] + ([] if args.full_serving else ["--quick"])
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
  serving_json = os.path.join(args.output_dir, "serving_cost.json")
  if os.path.exists(serving_json):
    with open(serving_json) as f:
      results["serving"] = json.load(f)

  write_report(args, budget, results, time.time() - started)


def rerender(argv=None):
  """Re-writes REPORT.md and the plots from report.json (no training)."""
  parser = argparse.ArgumentParser()
  parser.add_argument("--output_dir", default=RESULTS)
  parser.add_argument("--budget", choices=sorted(BUDGETS), default="full")
  parser.add_argument("--skip_serving", action="store_true")
  parser.add_argument("--max_len", type=int, default=256)
  parser.add_argument("--short_len", type=int, default=16)
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--eval_steps", type=int, default=60)
  parser.add_argument("--minutes", type=float, default=0.0)
  parser.add_argument("--command", default=None, help="the command that produced "
                      "report.json, as it should appear in REPORT.md")
  args = parser.parse_args(argv)
  with open(os.path.join(args.output_dir, "report.json")) as f:
    results = json.load(f)
  write_report(args, BUDGETS[args.budget], results, args.minutes * 60)


def write_report(args, budget, results, seconds):
  out = args.output_dir
  with open(os.path.join(out, "report.json"), "w") as f:
    json.dump(results, f, indent=2)
  command = getattr(args, "command", None) or (
      "python bench/report.py " + " ".join(sys.argv[1:]))
  lines = [
      "# eta-tf benchmark report",
      "",
      f"Generated by `{command.strip()}` on {datetime.date.today().isoformat()}, "
      f"{platform.platform()}, {os.cpu_count()} CPU cores, Python "
      f"{platform.python_version()}; took {seconds / 60:.1f} min. Every number below was "
      "measured by that run on that machine.",
      "",
      f"Budget per model: {budget['epochs']} epoch(s) x {budget['steps']} steps x batch "
      f"{args.batch_size}, L={args.max_len}, S={args.short_len}, default ModelConfig "
      "otherwise; eval on the pipeline's eval split (latest 10% of the time range, "
      f"first {args.eval_steps} batches).",
      "",
  ]
  for name, setting in results["settings"].items():
    agg = aggregate(setting["rows"])
    slug = name.replace(" ", "_")
    plot_bars(agg, os.path.join(out, f"auc_{slug}.png"), f"AUC per model ({name})")
    lines += [f"## Accuracy: {name}", "",
              f"Data: `{setting['data_dir']}`"
              + (f" (pipelines.synthetic {' '.join(setting['synthetic_args'])})"
                 if setting["synthetic_args"] else ""), "",
              accuracy_table(agg), "", f"![AUC per model](auc_{slug}.png)", ""]
  if results["bits"]:
    plot_sweep(results["bits"], "hash_bits", os.path.join(out, "auc_vs_bits.png"),
               "ETA: AUC vs SimHash bits m")
    lines += ["## ETA: hash bits m", "", sweep_table(results["bits"], "hash_bits"), "",
              "![AUC vs m](auc_vs_bits.png)", ""]
  if results["ks"]:
    plot_sweep(results["ks"], "top_k", os.path.join(out, "auc_vs_k.png"),
               "ETA: AUC vs retrieved k")
    lines += ["## ETA: retrieved behaviors k", "", sweep_table(results["ks"], "top_k"), "",
              "![AUC vs k](auc_vs_k.png)", ""]
  if results["serving"]:
    source = ("measured by `python bench/serving_cost.py` run separately on the same "
              "machine (this report was run with --skip_serving and reused "
              "bench/results/serving_cost.json)" if args.skip_serving else
              "measured by this run (bench/serving_cost.py)")
    lines += ["## Serving cost (score_candidates, one user, N candidates)", "",
              "Median latency of the exported SavedModel's `score_candidates` signature "
              f"loaded through the TF1 session loader, {source}.", "",
              serving_table(results["serving"]), "",
              "![latency vs L](serving_cost.png)", ""]
  with open(os.path.join(out, "REPORT.md"), "w") as f:
    f.write("\n".join(lines))
  print(f"wrote {os.path.join(out, 'REPORT.md')}")


if __name__ == "__main__":
  if sys.argv[1:2] == ["--rerender"]:
    rerender(sys.argv[2:])
  else:
    main()
