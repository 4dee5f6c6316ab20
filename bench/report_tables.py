"""REPORT.md's pieces: aggregated rows, the accuracy/sweep/serving/split tables, the
real-data section and the PNG plots (bench/report.py runs, bench/report_render.py assembles).

Rows are compare_models / real_data result dicts (model, auc, gauc, logloss, ...); each
table is GitHub markdown, one line per model or sweep value.
"""
import os

import matplotlib
import numpy as np

from bench import serving_cost_summary

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-position

HERE = os.path.dirname(os.path.abspath(__file__))


def mean_std(values):
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


def heuristic_rows(rows):
  """Training-free baselines (eta_tf.baselines) of a setting: [{model, auc, gauc}].

  They depend only on the eval samples, the same for every model and seed of a setting,
  so the first row that carries them is used.
  """
  for r in rows:
    if r.get("heuristics"):
      return [{"model": f"heuristic: {name}", "auc": h["auc"], "gauc": h["gauc"]}
              for name, h in r["heuristics"].items()]
  return []


def accuracy_table(agg, heuristics=()):
  lines = ["| model | AUC | GAUC | logloss | train examples/s | seeds |",
           "|---|---|---|---|---|---|"]
  for a in sorted(agg, key=lambda a: -a["auc"]):
    cell = lambda m: (f"{a[m]:.4f} ± {a[m + '_std']:.4f}" if a["seeds"] > 1  # noqa: E731
                      else f"{a[m]:.4f}")
    lines.append(f"| {a['model']} | {cell('auc')} | {cell('gauc')} | {cell('logloss')} | "
                 f"{a['train_examples_per_second']:.0f} | {a['seeds']} |")
  for h in sorted(heuristics, key=lambda h: -h["auc"]):
    lines.append(f"| {h['model']} | {h['auc']:.4f} | {h['gauc']:.4f} | - | - | - |")
  return "\n".join(lines)


def sweep_table(rows, field):
  lines = [f"| {field} | AUC | GAUC | overlap@k |", "|---|---|---|---|"]
  for r in sorted(rows, key=lambda r: r[field]):
    overlap = r.get("overlap_at_k")
    lines.append(f"| {r[field]} | {r['auc']:.4f} | {r['gauc']:.4f} | "
                 f"{overlap if overlap is None else f'{overlap:.3f}'} |")
  return "\n".join(lines)


def serving_table(records):
  run = serving_cost_summary.machine_record(records)  # absolute times only with the machine named
  head = [] if run is None else [
      f"Machine: {run['machine']['summary']}; `{run['command']}`, {run['date']}, "
      f"{run['seconds'] / 60:.0f} min; load average (1/5/15 min) before "
      f"{'/'.join(f'{x:.2f}' for x in run['load_before'])}, after "
      f"{'/'.join(f'{x:.2f}' for x in run['load_after'])} (a shared machine). Ratios "
      "within one row come from interleaved rounds; p99 in bench/results/serving_cost.json.",
      ""]
  rows = [r for r in records if "model" in r]
  ms = {(r["model"], r["L"], r["N"]): r["median_ms"] for r in rows}
  models = [m for m in ("din", "din_long", "eta", "eta_xla") if any(k[0] == m for k in ms)]
  models += sorted({k[0] for k in ms} - set(models))
  ratios = [m for m in ("eta", "eta_xla") if m in models and "din_long" in models]
  lines = head + ["| L | N | " + " | ".join(f"{m} ms" for m in models) + "".join(
      f" | din_long / {m}" for m in ratios) + " |",
           "|---|---|" + "---|" * (len(models) + len(ratios))]
  for length, n in sorted({k[1:] for k in ms}):
    lines.append(f"| {length} | {n} | " + " | ".join(
        f"{ms[(m, length, n)]:.2f}" if (m, length, n) in ms else "-" for m in models) +
        "".join(f" | {ms[('din_long', length, n)] / ms[(m, length, n)]:.2f}x"
                if (m, length, n) in ms and ("din_long", length, n) in ms else " | -"
                for m in ratios) + " |")
  kernel_records = {(serving_cost_summary.kernel_variant(r), r["L"], r["N"]): r
                    for r in records if str(r.get("kernel", "")).startswith("hamming_topk")}
  kernel = {key: r["ns_per_pair"] for key, r in kernel_records.items()}
  kernel_ms = {key: r["median_ms"] for key, r in kernel_records.items()}
  variants = [v for v in ("stock", "stock_sorted", "xla", "naive")
              if any(k[0] == v for k in kernel)]
  headers = {"stock": "eta_tf, stock TF ops (as ETA calls it: unsorted)",
             "stock_sorted": "eta_tf, stock, sorted", "xla": "eta_tf, XLA distance pass",
             "naive": "naive (one TopKV2 over L)"}
  if kernel:
    lines += ["", "Hamming top-k alone, ns per (candidate, behavior) pair (one user, "
              "k = 48, m = 64):", "",
              "| L | N | " + " | ".join(headers[v] for v in variants) + " |",
              "|---|---|" + "---|" * len(variants)]
    for length, n in sorted({k[1:] for k in kernel}):
      lines.append(f"| {length} | {n} | " + " | ".join(
          f"{kernel[(v, length, n)]:.2f}" if (v, length, n) in kernel else "-"
          for v in variants) + " |")
  parts = {(r["component"], r["L"], r["N"]): r["median_ms"] for r in records
           if "component" in r}
  if parts:
    lines += ["", "Where the time goes (ms, all timed in one harness, B = 1): attention over "
              "all L (din_long's block), attention over the k = 48 gathered behaviors "
              "(ETA's block after retrieval) and the top-k. ETA's block costs at least "
              "attention over k + top-k; below 1 in the last columns is room for ETA to win.",
              "", "| L | N | attention over L | attention over k | top-k stock | top-k XLA | "
              "(k + top-k) / L | (k + XLA top-k) / L |", "|---|---|---|---|---|---|---|---|"]
    for length, n in sorted({k[1:] for k in parts}):
      full = parts.get(("attention_full", length, n))
      topk = parts.get(("attention_topk", length, n))
      stock = kernel_ms.get(("stock", length, n))
      xla = kernel_ms.get(("xla", length, n))
      if None in (full, topk, stock, xla):
        continue
      lines.append(f"| {length} | {n} | {full:.2f} | {topk:.2f} | {stock:.2f} | {xla:.2f} | "
                   f"{(topk + stock) / full:.2f} | {(topk + xla) / full:.2f} |")
  training = [r for r in records if "training" in r]
  if training:
    trained = sorted({r["training"] for r in training})
    lines += ["", "| training, L | batch | " + " | ".join(trained) + " (examples/s) |",
              "|---|---|" + "---|" * len(trained)]
    for length in sorted({r["L"] for r in training}):
      cell = {r["training"]: r for r in training if r["L"] == length}
      batch = next(iter(cell.values()))["batch_size"]
      lines.append(f"| {length} | {batch} | " + " | ".join(
          f"{cell[m]['examples_per_s']:.0f}" if m in cell else "-" for m in trained) + " |")
  return "\n".join(lines)


def gap_summary(agg):
  """One line: how eta compares with din (short only) and din_long (full attention)."""
  by_model = {a["model"]: a for a in agg}
  if not {"eta", "din", "din_long"} <= set(by_model):
    return ""
  eta, din, din_long = by_model["eta"], by_model["din"], by_model["din_long"]
  return (f"eta − din: {eta['auc'] - din['auc']:+.4f} AUC; eta − din_long: "
          f"{eta['auc'] - din_long['auc']:+.4f} AUC (means over {eta['seeds']} seed(s)).")


def plot_bars(agg, path, title):
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


def _shown_path(path: str) -> str:
  """A path relative to the checkout when it is inside it (REPORT.md is committed); a
  default work dir of another checkout (a re-render elsewhere) shown as bench/work/..."""
  root = os.path.dirname(HERE)
  absolute = os.path.abspath(path)
  work = os.sep + os.path.join("bench", "work") + os.sep
  if not absolute.startswith(root + os.sep) and work in absolute:
    return "bench/work/" + absolute.split(work, 1)[1]
  return os.path.relpath(absolute, root) if absolute.startswith(root + os.sep) else path


def split_table(split: dict) -> str:
  """The pipeline's split as its stats.json records it (bench/real_data.split_summary)."""
  lines = ["| split | users (records) | user share | targets | target share | positive rate |",
           "|---|---|---|---|---|---|"]
  for name, s in split["splits"].items():
    lines.append(f"| {name} | {s['records']} | {s['user_share']:.1%} | {s['targets']} | "
                 f"{s['target_share']:.1%} | {s['positive_rate']:.3f} |")
  return "\n".join(lines)


def _split_flags(split: dict) -> str:
  if split["method"] == "user_last":
    return f"--split=user_last --eval_targets_per_user={split['eval_targets_per_user']}"
  return f"--split={split['method']} --eval_fraction={split['eval_fraction']}"


def _validation_words(budget: dict) -> str:
  steps = budget["val_steps"]
  return "the whole validation split" if not steps else f"{steps} validation batches"


def _kept_weights_words(budget: dict) -> str:
  decay = budget.get("weight_average", 0.0)
  return (f"the best epoch's moving average of the weights (decay {decay})" if decay
          else "the best epoch's weights")


def real_data_lines(skipped, section) -> list:
  """REPORT.md's real-data section: why it was skipped, or the run in movielens.json."""
  title = "## Accuracy: real data (MovieLens)"
  if skipped:
    return [title, "", f"Skipped by this run: {skipped}.", ""]
  if not section:
    return []
  budget, split, ratings = section["budget"], section["split"], section["ratings"]
  agg = aggregate(section["rows"])
  summary = section["summary"]
  reversed_names = [n for n, h in summary["heuristics"].items() if h["direction"] < 0]
  gaps = "; ".join(f"{name} {g['mean']:+.4f}" + (f" ± {g['se']:.4f}" if g.get("se") else "")
                   for name, g in summary["paired_auc_gaps"].items() if g)
  best_epochs = ", ".join(
      f"{a['model']} {sum(r['best_epoch'] for r in section['rows'] if r['model'] == a['model']) / a['seeds']:.1f}"  # noqa: E501
      for a in sorted(agg, key=lambda a: -a["auc"]))
  machine_line = section["machine"]["summary"]
  load = section["load_before"], section["load_after"]
  return [
      title, "",
      f"Measured by `{section['command']}` on {section['date']}, {machine_line} "
      f"(shared with other jobs: load average {load[0][0]:.1f} before, {load[1][0]:.1f} "
      f"after); took {section['seconds'] / 60:.1f} min. Data: `{section['movielens_dir']}` "
      f"({section['format']} layout, {ratings['converted']} ratings, "
      f"{ratings['positives']} of them >= 4 = positive) through `pipelines.movielens` and "
      f"`pipelines.build_dataset --impressions=... {_split_flags(split)}`: "
      f"{split['users']} users, {split['items']} items, {split['categories']} categories "
      "(first genre). The split, from the pipeline's stats.json:", "",
      split_table(split), "",
      f"Budget per model and seed: up to {budget['max_epochs']} epoch(s) x "
      f"{budget['steps']} steps x batch {budget['batch_size']}, early stopping (patience "
      f"{budget['patience']}) on the AUC of {_validation_words(budget)} of train (the "
      f"train records of 1 in {budget['val_every']} users, held out from fitting; never "
      f"eval), {_kept_weights_words(budget)} evaluated on the whole eval split; "
      f"L={budget['max_len']}, S={budget['short_len']}; models are presets "
      "(eta_tf/presets.py; eta_oracle_default is the default eta with the top-k chosen by "
      "its own full attention, the selection the Hamming top-k stands in for). Examples/s "
      "include the validation passes. Heuristics are training-free scores on the same eval samples"
      + (f" ({', '.join(reversed_names)} read reversed: higher AUC that way)"
         if reversed_names else "") + ".", "",
      accuracy_table(agg, heuristic_rows(section["rows"])), "",
      f"Paired AUC differences (mean ± standard error over seeds): {gaps}.", "",
      f"Best epoch (mean over seeds): {best_epochs}.", ""]
