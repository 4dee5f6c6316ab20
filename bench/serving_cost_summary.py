"""Reading of bench/results/serving_cost.json: the text tables (with the latency targets),
the per-stage breakdown and the latency-vs-L plot. Also used by bench/report_tables.py
(through bench.serving_cost).
"""
from bench import machine
from bench.serving_cost_grid import MODELS
from bench.serving_cost_stages import STAGES

# (L, N) -> required din_long / eta latency ratio (the paper's ratio at its setting).
TARGETS = {(1024, 200): 1.84, (4096, 1000): 5.0}
KERNEL_TARGETS = {(1024, 200): 3.0, (4096, 1000): 1.5}  # Hamming top-k ns per pair
ATTENTION_TARGET = 0.2  # attention over k / attention over L at (1024, 200)
# Short stage names for the breakdown table's columns.
STAGE_COLUMNS = {"embedding": "embed", "signature_lookup": "sig", "target_stats": "stats",
                 "history_projection": "proj", "hamming_distances": "dist",
                 "top_k_selection": "top-k", "gather": "gather", "attention": "attn",
                 "history_summary": "summary", "tower": "tower"}


def kernel_variant(record) -> str:
  """Which top-k a "kernel" record timed: naive, xla, stock (item-only, unsorted, as ETA
  calls it), stock_sorted, category_first (the default eta's item ‖ category words) or
  floor (XOR + popcount alone). Records without a "sort" field were sorted."""
  if record["kernel"] == "hamming_topk_naive":
    return "naive"
  if record["kernel"] in ("hamming_topk_category_first", "xor_popcount_floor"):
    return {"hamming_topk_category_first": "category_first",
            "xor_popcount_floor": "floor"}[record["kernel"]]
  if record.get("xla"):
    return "xla"
  return "stock_sorted" if record.get("sort", True) else "stock"


def machine_record(records):
  """The {"machine": ...} record of a run (None for files written before runs recorded it)."""
  return next((r for r in records if "machine" in r), None)


def summarize(records):
  lat = {(r["model"], r["L"], r["N"]): r["median_ms"] for r in records if "model" in r}
  p99 = {(r["model"], r["L"], r["N"]): r["p99_ms"] for r in records if "p99_ms" in r}
  models = [m for m in MODELS if any(k[0] == m for k in lat)]
  # The kernel as ETA calls it: (xla, L, N) -> record.
  kernels = {(kernel_variant(r) == "xla", r["L"], r["N"]): r for r in records
             if "kernel" in r and kernel_variant(r) in ("stock", "xla")}
  kern = {key: r["ns_per_pair"] for key, r in kernels.items()}
  kern_ms = {key: r["median_ms"] for key, r in kernels.items()}
  parts = {(r["component"], r["L"], r["N"]): r["median_ms"] for r in records
           if "component" in r}
  naive = {(r["L"], r["N"]): r["ns_per_pair"] for r in records
           if r.get("kernel") == "hamming_topk_naive"}
  run = machine_record(records)
  lines = [""]
  if run:
    lines += [f"machine: {run['machine']['summary']}",
              machine.load_line(run["load_before"], run["load_after"])]
  lines += ["score_candidates median ms (SavedModel, TF1 session loader)",
            f"{'L':>6s} {'N':>5s} " + "".join(f"{m:>10s}" for m in models) +
            f"{'dl/eta':>8s}{'dl/xla':>8s}{'target':>8s}{'topk ns':>9s}{'xla ns':>8s}"]
  for length, n in sorted({(k[1], k[2]) for k in lat}):
    row = [lat[(m, length, n)] for m in models]
    ratios = [lat[("din_long", length, n)] / lat[(m, length, n)]
              if ("din_long", length, n) in lat and (m, length, n) in lat else float("nan")
              for m in ("eta", "eta_xla")]
    target = TARGETS.get((length, n))
    lines.append(f"{length:6d} {n:5d} " + "".join(f"{v:10.2f}" for v in row) +
                 "".join(f"{v:8.2f}" for v in ratios) +
                 (f"{'>=' + format(target, 'g'):>8s}" if target else f"{'':8s}") +
                 f"{kern[(False, length, n)]:9.3f}{kern[(True, length, n)]:8.3f}")
  if p99:
    lines += ["", "score_candidates p99 ms",
              f"{'L':>6s} {'N':>5s} " + "".join(f"{m:>10s}" for m in models)]
    for length, n in sorted({(k[1], k[2]) for k in p99}):
      lines.append(f"{length:6d} {n:5d} " + "".join(
          f"{p99[(m, length, n)]:10.2f}" for m in models))
  other = {(kernel_variant(r), r["L"], r["N"]): r["ns_per_pair"] for r in records
           if "kernel" in r}
  for (length, n), limit in KERNEL_TARGETS.items():
    if (False, length, n) in kern:
      ref = naive[(length, n)]
      cat = other.get(("category_first", length, n), float("nan"))
      floor = other.get(("floor", length, n), float("nan"))
      lines.append(f"top-k at L={length}, N={n} (target <= {limit} ns/pair): item-only "
                   f"{kern[(False, length, n)]:.3f}, xla {kern[(True, length, n)]:.3f}, "
                   f"category_first (default eta) {cat:.3f}; XOR + popcount alone "
                   f"{floor:.3f}; naive TopKV2 {ref:.3f}")
  for length, n in sorted({k[1:] for k in lat}):
    if ("eta", length, n) in lat and ("sim_hard", length, n) in lat and length >= 1024:
      ratio = lat[("sim_hard", length, n)] / lat[("eta", length, n)]
      lines.append(f"sim_hard/eta at L={length}, N={n}: {ratio:.2f} (target >= 1)")
  lines += stage_lines(records)
  if parts:
    lines += ["", "attention components and top-k alone (ms, one harness): ETA's long block "
              "costs at least attn k + top-k, din_long's about attn L",
              f"{'L':>6s} {'N':>5s} {'attn L':>8s} {'attn k':>8s} {'top-k':>8s} "
              f"{'xla':>8s} {'k/L':>6s} {'(k+topk)/L':>11s} {'(k+xla)/L':>10s}"]
    for length, n in sorted({k[1:] for k in parts}):
      full, topk = parts[("attention_full", length, n)], parts[("attention_topk", length, n)]
      stock, xla = kern_ms[(False, length, n)], kern_ms[(True, length, n)]
      lines.append(f"{length:6d} {n:5d} {full:8.2f} {topk:8.2f} {stock:8.2f} {xla:8.2f} "
                   f"{topk / full:6.2f} {(topk + stock) / full:11.2f} "
                   f"{(topk + xla) / full:10.2f}" +
                   (f"  (k/L target <= {ATTENTION_TARGET})" if (length, n) == (1024, 200)
                    else ""))
  train = {(r["training"], r["L"]): r["examples_per_s"] for r in records if "training" in r}
  for length in sorted({k[1] for k in train}):
    eta, dl = train.get(("eta", length)), train.get(("din_long", length))
    if eta and dl:
      xla = train.get(("eta_xla", length))
      lines.append(f"training L={length}: eta {eta:.1f} ex/s, din_long {dl:.1f} ex/s, "
                   f"eta/din_long {eta / dl:.2f}" +
                   (f", eta_xla/din_long {xla / dl:.2f}" if xla else ""))
  return "\n".join(lines)


def stage_lines(records) -> list:
  """The per-stage breakdown: one row per (L, N, model), median ms of every stage (each
  less the harness's call overhead), their sum and the model's latency in its session."""
  rows = [r for r in records if "stages" in r]
  if not rows:
    return []
  lines = ["", "score_candidates by stage, median ms (bench/serving_cost_stages.py; '-': "
           "the model has no such stage; session = model latency - sum of stages)",
           f"{'L':>6s} {'N':>5s} {'model':>18s} " +
           "".join(f"{STAGE_COLUMNS[s]:>8s}" for s in STAGES) +
           f"{'sum':>8s}{'model':>8s}{'session':>8s}"]
  for r in sorted(rows, key=lambda r: (r["L"], r["N"], MODELS.index(r["stages"])
                                       if r["stages"] in MODELS else 99)):
    cells = "".join(f"{r['stage_ms'][s]:8.2f}" if s in r["stage_ms"] else f"{'-':>8s}"
                    for s in STAGES)
    lines.append(f"{r['L']:6d} {r['N']:5d} {r['stages']:>18s} {cells}"
                 f"{r['stage_sum_ms']:8.2f}{r['model_ms']:8.2f}"
                 f"{r['model_ms'] - r['stage_sum_ms']:8.2f}")
  return lines


def plot(records, path):
  # Plotting only: the measurements run without matplotlib loaded.
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  ns = sorted({r["N"] for r in records if "model" in r})
  fig, axes = plt.subplots(1, len(ns), figsize=(5 * len(ns), 4), squeeze=False)
  for ax, n in zip(axes[0], ns):
    for model in MODELS:
      pts = sorted((r["L"], r["median_ms"]) for r in records
                   if r.get("model") == model and r["N"] == n)
      if pts:
        ax.plot(*zip(*pts), marker="o", label=model)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("history length L")
    ax.set_ylabel("score_candidates median ms")
    ax.set_title(f"N = {n} candidates")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def stage_markdown(records, models=("eta", "din_long", "sim_hard")) -> str:
  """The per-stage breakdown as a markdown table (README / docs): one row per (L, N,
  model) of `models`, median ms per stage, their sum and the model's latency."""
  rows = sorted((r for r in records if r.get("stages") in models),
                key=lambda r: (r["L"], r["N"], models.index(r["stages"])))
  lines = ["| L | N | model | " + " | ".join(STAGE_COLUMNS[s] for s in STAGES) +
           " | sum | model |", "|" + "---|" * (len(STAGES) + 5)]
  for r in rows:
    cells = [f"{r['stage_ms'][s]:.2f}" if s in r["stage_ms"] else "-" for s in STAGES]
    lines.append(f"| {r['L']} | {r['N']} | {r['stages']} | " + " | ".join(cells) +
                 f" | {r['stage_sum_ms']:.2f} | {r['model_ms']:.2f} |")
  return "\n".join(lines)
