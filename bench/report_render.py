"""Writes bench/results/REPORT.md (and report.json) from a run's results and regenerates
the README's Results summary (bench/report.py runs; tables in bench/report_tables.py, the
README summary in bench/report_summary.py).
"""
import datetime
import json
import os
import platform
import sys

from bench import count_floor
from bench import real_data
from bench import report_summary
from bench.report_tables import (HERE, _shown_path, accuracy_table, aggregate, gap_summary,
                                 heuristic_rows, plot_bars, plot_sweep, real_data_lines,
                                 serving_table, sweep_table)
from eta_tf.config import ModelConfig

README = os.path.join(os.path.dirname(HERE), "README.md")
README_BEGIN = report_summary.README_BEGIN
README_END = report_summary.README_END


def split_sentence(data_dir: str) -> str:
  """' Split: ...' from the data dir's stats.json (method, eval share of targets), or ''
  when it is gone (a re-render on another machine)."""
  path = os.path.join(data_dir, "stats.json")
  if not os.path.exists(path):
    return ""
  with open(path) as f:
    stats = json.load(f)
  method = stats.get("time", {}).get("method")
  share = stats.get("splits", {}).get("eval", {}).get("target_share")
  described = {"target_quantile": "the latest targets by time (a quantile of target "
                                  "timestamps)",
               "explicit": f"targets at/after eval_start={stats['time'].get('eval_start')}",
               "user_last": "each user's last targets (leave-last-out)"}.get(method)
  if described is None:  # a stats.json from before split methods were recorded
    return " Split: see its stats.json."
  return f" Split: {described}" + (f", eval {share:.1%} of targets." if share is not None
                                   else ".")


def eta_signature() -> str:
  """The default eta's retrieval key, as ModelConfig builds it today."""
  config = ModelConfig()
  if config.experiment:
    return f"experiment={config.experiment}"
  if config.signature_fields == "item":
    return "signature_fields=item"
  return (f"signature_fields={config.signature_fields}, "
          f"signature_distance={config.signature_distance}")


def summary_words() -> str:
  """The default eta's per-user summary, as ModelConfig builds it today."""
  config = ModelConfig()
  if config.history_summary == "none":
    return "no per-user summary"
  return (f"history_summary={config.history_summary}, "
          f"summary_dropout={config.summary_dropout}")


def converged_lines() -> list:
  """The converged comparison of the default eta (bench/count_floor.py's committed
  results), first in the report: the numbers the targets are judged on."""
  paths = count_floor.rendered_paths()
  if not paths:
    return []
  return ["## Converged comparison: the default eta, the count floor and the controls", "",
          f"The default eta ({eta_signature()}; {summary_words()}) trained with early "
          "stopping on a validation split of train (never on eval) on every data set, paired "
          "AUC gaps (mean ± standard error over seeds) against the targets ("
          + report_summary.TARGETS + "), the item-only signature, the summary ablations, "
          "the oracle at the default (eta_oracle_default: its top-k chosen by its own full "
          "attention, the selection the Hamming top-k stands in for) and the attention_hash "
          "experiment. Measured by `python -m bench.count_floor` (each command is in "
          "bench/results/count_floor_*.json), re-rendered here; every model, heuristic "
          "row and diagnostic per data set below, also in [COUNT_FLOOR.md](COUNT_FLOOR.md) "
          "with the data commands (`python -m bench.count_floor --render`).", "",
          count_floor.default_table(paths), "", count_floor.MODEL_LEGEND,
          count_floor.render(paths), ""]


def write_report(args, budget, results, seconds):
  out = args.output_dir
  command = getattr(args, "command", None) or (
      "python -m bench.report " + " ".join(sys.argv[1:]))
  # What the header states, kept so that a later re-render (or --movielens_only) says it:
  # a re-render keeps the measuring run's date and eta signature.
  measured = results.get("run", {}) if getattr(args, "rerendered", None) else {}
  results["run"] = {"command": command.strip(), "minutes": seconds / 60,
                    "budget": args.budget, "skip_serving": bool(args.skip_serving),
                    "date": measured.get("date", datetime.date.today().isoformat()),
                    "eta_signature": measured.get("eta_signature", eta_signature())}
  if not getattr(args, "rerendered", None):  # the split as measured, not today's data dir's
    for setting in results["settings"].values():
      setting["split_sentence"] = split_sentence(setting["data_dir"])
  with open(os.path.join(out, "report.json"), "w") as f:
    json.dump(results, f, indent=2)
  lines = [
      "# eta-tf benchmark report",
      "",
      f"Generated by `{command.strip()}` on {results['run']['date']}, "
      f"{platform.platform()}, {os.cpu_count()} CPU cores, Python "
      f"{platform.python_version()}; took {seconds / 60:.1f} min. Every number below was "
      "measured on that machine, by that run unless a section says otherwise" + (
          f" (tables re-rendered from its report.json by `{args.rerendered.strip()}`)."
          if getattr(args, "rerendered", None) else "."),
      "",
  ]
  lines += converged_lines()
  if results["settings"]:
    lines += [
        f"Budget per model: {budget['epochs']} epoch(s) x {budget['steps']} steps x batch "
        f"{args.batch_size}, L={args.max_len}, S={args.short_len}, default ModelConfig "
        "otherwise; eval on the pipeline's eval split (first "
        f"{args.eval_steps} batches; each setting names its split below).", ""]
    if results["run"]["eta_signature"] != eta_signature():
      lines += [f"In the sections below `eta` is the default of the run that measured "
                f"them ({results['run']['eta_signature']}), not today's default "
                f"({eta_signature()}): the converged comparison above has today's.", ""]
  for name, setting in results["settings"].items():
    agg = aggregate(setting["rows"])
    slug = name.replace(" ", "_")
    plot_bars(agg, os.path.join(out, f"auc_{slug}.png"), f"AUC per model ({name})")
    lines += [f"## Accuracy: {name}", "",
              f"Data: `{_shown_path(setting['data_dir'])}`"
              + (f" (pipelines.synthetic {' '.join(setting['synthetic_args'])})"
                 if setting["synthetic_args"] else "") + setting.get("split_sentence", ""),
              "",
              accuracy_table(agg, heuristic_rows(setting["rows"])), "", gap_summary(agg),
              "",
              f"![AUC per model](auc_{slug}.png)", ""]
  lines += real_data_lines(results.get("movielens_skipped"), real_data.load(out))
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
    source = ("measured by a separate run of `python -m bench.serving_cost` on the same "
              "machine (all L and N), taken from bench/results/serving_cost.json with "
              "--skip_serving" if args.skip_serving else
              "measured by this run (bench/serving_cost.py)")
    lines += ["## Serving cost (score_candidates, one user, N candidates)", "",
              "Median latency of the exported SavedModel's `score_candidates` signature "
              f"loaded through the TF1 session loader, {source}.", "",
              serving_table(results["serving"]), "",
              "![latency vs L](serving_cost.png)", ""]
  report_text = "\n".join(lines)
  with open(os.path.join(out, "REPORT.md"), "w") as f:
    f.write(report_text)
  print(f"wrote {os.path.join(out, 'REPORT.md')}")
  readme = args.readme if args.readme is not None else (
      None if getattr(args, "data", None) else README)
  if readme:
    report_summary.update_readme(readme, results, budget, args.max_len, real_data.load(out),
                                 out)
