"""count_floor's results: paired gaps over seeds, target verdicts, COUNT_FLOOR.md.

Row names are preset names (eta_tf/presets.py); rows written before presets existed
(no "preset" key) named the item-signature eta `eta` and the default `eta_category_first`:
`load` reads them under today's names (LEGACY_ROW_NAMES).
"""
import json
import os

import numpy as np

from eta_tf import config as config_lib
from eta_tf import presets

HERE = os.path.dirname(os.path.abspath(__file__))
# Old row name -> preset name, for rows without a "preset" key.
LEGACY_ROW_NAMES = {"eta": "eta_paper", "eta_category_first": "eta_no_summary"}


def migrate_rows(rows) -> list:
  """Rows under today's preset names: a row with its config is named by the preset that
  config is (presets.preset_of: a preset's meaning is pinned, a row's name when it ran may
  have meant another config); legacy rows (no "preset", no config) by LEGACY_ROW_NAMES."""
  out = []
  for row in rows:
    name = None
    if "config" in row:
      name = presets.preset_of(config_lib.ModelConfig.from_dict(row["config"]))
    elif "preset" not in row:
      name = LEGACY_ROW_NAMES.get(row["model"])
    out.append({**row, "model": name} if name and name != row["model"] else row)
  return out


def load(path: str) -> dict:
  """A count_floor output with its rows under preset names (migrate_rows)."""
  with open(path) as f:
    result = json.load(f)
  result["rows"] = migrate_rows(result["rows"])
  return result


def paired(rows, a: str, b: str, key="auc"):
  """Mean and standard error over seeds of rows[a] - rows[b] (same seed); None if none."""
  by = {(r["model"], r["seed"]): r[key] for r in rows}
  diffs = [by[(a, s)] - by[(b, s)] for (m, s) in by if m == a and (b, s) in by]
  if not diffs:
    return None
  diffs = np.asarray(diffs)
  se = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else None
  return {"mean": float(diffs.mean()), "se": se, "seeds": len(diffs)}


def _heuristic_gap(rows, model: str):
  """Mean and standard error of a model's AUC minus the best heuristic's (None if no row)."""
  diffs = np.asarray([r["auc"] - r["best_heuristic_auc"] for r in rows
                      if r["model"] == model])
  if not diffs.size:
    return None
  return {"mean": float(diffs.mean()), "seeds": len(diffs),
          "se": float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else None}


def summarize(rows):
  """Per-model means, the best heuristic, eta's paired gaps against every other model and
  each other eta preset's against the targets' references and eta: of AUC (and against
  the best heuristic) in "paired_auc_gaps", of GAUC in "paired_gauc_gaps"."""
  models = sorted({r["model"] for r in rows})
  means = {m: {k: float(np.mean([r[k] for r in rows if r["model"] == m]))
               for k in ("auc", "gauc")} for m in models}
  heuristics = rows[0]["heuristics"]
  best_name = max(heuristics, key=lambda h: heuristics[h]["auc"])
  for r in rows:  # the heuristic as a pseudo-model with the same value for every seed
    r["best_heuristic_auc"] = heuristics[best_name]["auc"]
  # Pairs in print order; None: the model against the best heuristic (AUC only).
  pairs = [("eta", m) for m in models if m != "eta"] + [("eta", None)]
  for variant in ETA_VARIANTS:
    if variant == PRODUCT_VARIANT or variant not in models:
      continue
    pairs += [(variant, reference) for reference in (*TARGET_REFERENCES, PRODUCT_VARIANT)
              if reference in models and reference != variant] + [(variant, None)]
  gaps, gauc_gaps = {}, {}
  for a, b in pairs:
    if b is None:
      gaps[f"{a} - best heuristic"] = _heuristic_gap(rows, a)
      continue
    gaps[f"{a} - {b}"] = paired(rows, a, b)
    # GAUC (each user's AUC, weighted by samples) is what ranking one user's candidates
    # needs; AUC also rewards telling users apart (who rates or clicks more).
    gauc_gaps[f"{a} - {b}"] = paired(rows, a, b, key="gauc")
  return {"means": means, "heuristics": heuristics, "best_heuristic": best_name,
          "paired_auc_gaps": {k: v for k, v in gaps.items() if v},
          "paired_gauc_gaps": {k: v for k, v in gauc_gaps.items() if v}}


# Targets on paired means: (reference, least gap): eta - din_long >= -0.002,
# eta - sim_hard >= 0, eta - best heuristic >= +0.02.
TARGETS = (("din_long", -0.002), ("sim_hard", -0.002), ("best heuristic", 0.02))
TARGET_REFERENCES = ("din_long", "sim_hard")
# The default eta preset; every other eta preset is also compared with it.
PRODUCT_VARIANT = "eta"
ETA_VARIANTS = tuple(name for name in presets.PRESETS if name.startswith("eta"))
MIN_TARGET_SEEDS = 5


def target_lines(summary) -> list:
  """One line per eta variant: each target met / not met from the paired mean (± its
  standard error; fewer than MIN_TARGET_SEEDS seeds is reported as such, never as met)."""
  lines = []
  for variant in ETA_VARIANTS:
    checks = []
    for reference, least in TARGETS:
      gap = summary["paired_auc_gaps"].get(f"{variant} - {reference}")
      if gap is None:
        continue
      verdict = ("met" if gap["mean"] >= least else "not met") if (
          gap["seeds"] >= MIN_TARGET_SEEDS) else f"{gap['seeds']} seeds < {MIN_TARGET_SEEDS}"
      se = f" ± {gap['se']:.4f}" if gap.get("se") is not None else ""
      checks.append(f"− {reference} {gap['mean']:+.4f}{se} (≥ {least:+.3f}: {verdict})")
    if checks:
      lines.append(f"* {variant}: " + "; ".join(checks))
  return lines


DIAGNOSTICS = ("overlap_at_48", "attention_recall", "distance0_share",
               "same_category_share")


def render(paths) -> str:
  """Markdown tables of several count_floor outputs (one section per setting)."""
  lines = []
  for path in paths:
    result = load(path)
    rows = result["rows"]
    summary = summarize(rows)
    commands = result.get("commands") or [result["command"]]
    lines += [f"#### {result['setting']}", "", *[f"`{c}`  " for c in commands], "",
              "| model | AUC | GAUC | seeds | best epoch | overlap@48 | attention recall | "
              "distance 0 | same category |", "|---|---|---|---|---|---|---|---|---|"]
    models = sorted({r["model"] for r in rows},
                    key=lambda m: -summary["means"][m]["auc"])
    for m in models:
      group = [r for r in rows if r["model"] == m]
      cell = lambda k: (f"{np.mean([r[k] for r in group]):.4f} ± "  # noqa: E731
                        f"{np.std([r[k] for r in group], ddof=1):.4f}"
                        if len(group) > 1 else f"{group[0][k]:.4f}")
      diag = [f"{np.mean([r[k] for r in group]):.3f}" if group[0].get(k) is not None
              else "-" for k in DIAGNOSTICS]
      lines.append(f"| {m} | {cell('auc')} | {cell('gauc')} | {len(group)} | "
                   f"{np.mean([r['best_epoch'] for r in group]):.1f} | " +
                   " | ".join(diag) + " |")
    for name, h in sorted(summary["heuristics"].items(), key=lambda kv: -kv[1]["auc"]):
      sign = "" if h["direction"] > 0 else " (reversed)"
      lines.append(f"| heuristic: {name}{sign} | {h['auc']:.4f} | {h['gauc']:.4f} | - | - "
                   "| - | - | - | - |")
    lines += ["", "Paired AUC differences (mean ± standard error over seeds): " + "; ".join(
        f"{name} {g['mean']:+.4f}" + (f" ± {g['se']:.4f}" if g.get("se") else "") +
        f" ({g['seeds']})" for name, g in summary["paired_auc_gaps"].items() if g), "",
        "Paired GAUC differences (each user's AUC, weighted by samples: the ranking of one "
        "user's candidates): " + "; ".join(
            f"{name} {g['mean']:+.4f}" + (f" ± {g['se']:.4f}" if g.get("se") else "") +
            f" ({g['seeds']})" for name, g in summary["paired_gauc_gaps"].items()), "",
        "Targets (paired means over seeds):", "", *target_lines(summary), ""]
  return "\n".join(lines)


def _gap_cell(gap, least=None) -> str:
  """'+0.0123 ± 0.0045' (+ ' met' / ' not met' against a target's least gap; '(n)' after
  the interval when the pair has fewer than MIN_TARGET_SEEDS seeds, never 'met')."""
  if gap is None:
    return "-"
  cell = f"{gap['mean']:+.4f}" + (f" ± {gap['se']:.4f}" if gap.get("se") is not None else "")
  if gap["seeds"] < MIN_TARGET_SEEDS:
    return cell + f" ({gap['seeds']} seed{'' if gap['seeds'] == 1 else 's'})"
  if least is None:
    return cell
  return cell + (" met" if gap["mean"] >= least else " not met")


# Columns of default_table beside the targets: (header, minuend, subtrahend).
# The oracle's gaps (the default eta with the top-k of its own full attention) say whether
# a target is within reach of any k-behavior retrieval in the default model; the controls
# are their *_default presets, so each column changes one thing against the default.
DEFAULT_TABLE_EXTRA = (("− eta_paper (item-only)", PRODUCT_VARIANT, "eta_paper"),
                       ("− eta_no_summary", PRODUCT_VARIANT, "eta_no_summary"),
                       ("− eta_summary_always", PRODUCT_VARIANT, "eta_summary_always"),
                       ("mean summary − default", "eta_mean_summary", PRODUCT_VARIANT),
                       ("oracle − default", "eta_oracle_default", PRODUCT_VARIANT),
                       ("oracle − din_long", "eta_oracle_default", "din_long"),
                       ("oracle − sim_hard", "eta_oracle_default", "sim_hard"),
                       ("attention_hash − default", "eta_attention_hash_default",
                        PRODUCT_VARIANT))


def default_table(paths) -> str:
  """The default eta (PRODUCT_VARIANT) on every setting: its paired gaps against the
  targets, its paired GAUC gaps against the targets' references (within-user ranking),
  the item-only signature, the oracle ceiling (against the default and the
  targets' references) and attention_hash (markdown; one row per count_floor output that
  has the default)."""
  header = ["data (default eta AUC, seed sd, seeds)", *(f"− {ref}" for ref, _ in TARGETS),
            *(f"GAUC − {ref}" for ref in TARGET_REFERENCES),
            *(h for h, _, _ in DEFAULT_TABLE_EXTRA)]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for path in paths:
    result = load(path)
    rows = result["rows"]
    own = [r["auc"] for r in rows if r["model"] == PRODUCT_VARIANT]
    if not own:
      continue
    summarize(rows)  # sets each row's best_heuristic_auc
    targets = [_gap_cell(_heuristic_gap(rows, PRODUCT_VARIANT) if ref == "best heuristic"
                         else paired(rows, PRODUCT_VARIANT, ref), least)
               for ref, least in TARGETS]
    within_user = [_gap_cell(paired(rows, PRODUCT_VARIANT, ref, key="gauc"))
                   for ref in TARGET_REFERENCES]
    extra = [_gap_cell(paired(rows, a, b)) for _, a, b in DEFAULT_TABLE_EXTRA]
    sd = f"{np.std(own, ddof=1):.4f}" if len(own) > 1 else "-"
    lines.append(f"| {result['setting']} ({np.mean(own):.4f}, sd {sd}, {len(own)}) | " +
                 " | ".join(targets + within_user + extra) + " |")
  return "\n".join(lines)


RESULTS = os.path.join(HERE, "results")
# The settings of COUNT_FLOOR.md, in order (files under bench/results/).
RENDERED = ("count_floor_movielens_user_last.json",
            "count_floor_movielens_user_last_val_all.json",
            "count_floor_synthetic_default_weight_average.json",
            "count_floor_synthetic_default_converged.json",
            "count_floor_synthetic_harder_weight_average.json",
            "count_floor_taobao_calibrated_weight_average.json",
            "count_floor_taobao_calibrated_converged.json",
            "count_floor_synthetic_harder_converged.json",
            "count_floor_synthetic_harder_action_revisits.json",
            "count_floor_taobao_action_revisits.json",
            "count_floor_movielens_weight_average.json",
            "count_floor_movielens_val_all.json",
            "count_floor_synthetic_default.json", "count_floor_synthetic_harder.json",
            "count_floor_taobao_calibrated.json", "count_floor_movielens.json",
            "count_floor_taobao_calibrated_uniform.json",
            "count_floor_synthetic_default_without_target_stats.json")
MODEL_LEGEND = "Model names are presets (eta_tf/presets.py):\n\n" + presets.legend(
    ETA_VARIANTS + ("din_long", "sim_hard")) + """

Rows of results files written before presets existed are read with their names then:
""" + ", ".join(f"`{old}` as `{new}`" for old, new in LEGACY_ROW_NAMES.items()) + """;
the commands name today's presets (rows whose preset was renamed since are listed under
the preset their config is now).
Diagnostics of the retrieved k: overlap with the exact inner-product top-k, attention
recall (share of the model's full attention mass on the k), share at distance 0, share
of the candidate's category.
"""
RENDER_HEADER = """# Learned models vs what a count knows

Generated by `python -m bench.count_floor --render` from bench/results/count_floor_*.json
(each section lists the commands that produced its rows). Rows: eval AUC / GAUC mean ±
standard deviation over seeds, training with early stopping on a validation split of the
training data (held-out users); heuristic rows are training-free scores on the same eval
samples. Rows record their `weight_average`: the harness default (0.99, as the trainer's)
validates and keeps the moving average of the weights (eta_tf/models/weight_average.py);
rows without the key kept the last step's weights. The first twelve sections are the
current protocol and data (movielens_user_last, the *_weight_average and
*_action_revisits ones: up to 4 epochs, patience 1, 20 validation batches;
movielens_user_last_val_all, movielens_val_all and the *_converged ones: the whole
validation split or up to 10 epochs, patience 2, as each section's commands say); the
sections after them were measured earlier (last-step weights; the matched-negative logs
on an earlier sampler) and are kept for the comparisons they hold.
""" + MODEL_LEGEND + """
Data (bench/work/, not committed; MovieLens from ml-latest-small, see the README):

```bash
# synthetic default (uniform same-category negatives, as when its first rows were measured)
python -m pipelines.synthetic --output=bench/work/log_synthetic_s0.csv.gz --seed=0
python -m pipelines.build_dataset --input=bench/work/log_synthetic_s0.csv.gz \\
    --output_dir=bench/work/data_synthetic_s0 --seed=0 --negative_sampler=uniform
# synthetic harder (bench.report's HARDER_SYNTHETIC; matched negatives, the default)
python -m pipelines.synthetic --output=bench/work/log_synthetic_harder_s0.csv.gz --seed=0 \\
    --late_long_term_rate=0.1 --recent_categories=5
python -m pipelines.build_dataset --input=bench/work/log_synthetic_harder_s0.csv.gz \\
    --output_dir=bench/work/data_synthetic_harder_s0 --seed=0
# Taobao-calibrated (matched negatives)
python -m pipelines.synthetic --preset=taobao --num_users=600 --seed=0 \\
    --output=bench/work/log_taobao_s0.csv.gz
python -m pipelines.build_dataset --input=bench/work/log_taobao_s0.csv.gz \\
    --output_dir=bench/work/data_taobao_matched_s0 --seed=0
# the same two matched logs where revisits favour carted / faved / bought items
# (--revisit_behavior_weight=8: what a matched negative leaves to learn)
python -m pipelines.synthetic --preset=taobao --num_users=600 --seed=0 \\
    --revisit_behavior_weight=8 --output=bench/work/log_taobao_bw8_s0.csv.gz
python -m pipelines.build_dataset --input=bench/work/log_taobao_bw8_s0.csv.gz \\
    --output_dir=bench/work/data_taobao_bw8_s0 --seed=0
python -m pipelines.synthetic --output=bench/work/log_synthetic_harder_bw8_s0.csv.gz \\
    --seed=0 --late_long_term_rate=0.1 --recent_categories=5 --revisit_behavior_weight=8
python -m pipelines.build_dataset --input=bench/work/log_synthetic_harder_bw8_s0.csv.gz \\
    --output_dir=bench/work/data_synthetic_harder_bw8_s0 --seed=0
# MovieLens latest-small: the README's split (each user's last 10 ratings are its eval
# targets: 610 eval users) -> movielens_user_last; build_dataset's default time split
# (74 eval users, one of them a quarter of the samples) -> movielens*
python -m pipelines.movielens --input_dir=ml-latest-small --output_dir=bench/work/ml_logs
python -m pipelines.build_dataset --input=bench/work/ml_logs/behaviors.csv \\
    --impressions=bench/work/ml_logs/impressions.csv \\
    --output_dir=bench/work/data_movielens_user_last --split=user_last \\
    --eval_targets_per_user=10
python -m pipelines.build_dataset --input=bench/work/ml_logs/behaviors.csv \\
    --impressions=bench/work/ml_logs/impressions.csv --output_dir=bench/work/data_movielens
```

The matched-negative rows (synthetic harder, Taobao-calibrated) were measured on an
earlier version of the matched sampler (same statistics, other negatives): rows added
later are paired with them only if the eval samples' heuristic AUCs, printed in every
row, are the same (they tell whether two runs saw the same data).
Uniform negatives (synthetic default) and MovieLens impressions are unchanged.
"""


def rendered_paths() -> list:
  """The committed results of RENDERED that exist, in order."""
  return [os.path.join(RESULTS, name) for name in RENDERED
          if os.path.exists(os.path.join(RESULTS, name))]


def write_rendered(output: str, paths=None) -> str:
  """COUNT_FLOOR.md from the committed results (rendered_paths(), or `paths`)."""
  if paths is None:
    paths = rendered_paths()
  text = (RENDER_HEADER + "\n## The default eta on every setting\n\n" +
          default_table(paths) + "\n\n## Every model\n\n" + render(paths))
  with open(output, "w") as f:
    f.write(text)
  return text


