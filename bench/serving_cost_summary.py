"""Reading of bench/results/serving_cost.json: the text tables (with issue 6's targets)
and the latency-vs-L plot. Also used by bench/report_tables.py (through bench.serving_cost).
"""
from bench import machine
from bench.serving_cost_grid import MODELS

# Targets of issue 6: (L, N) -> required din_long / eta latency ratio.
TARGETS = {(4096, 1000): 2.0, (16384, 1000): 3.0, (1024, 200): 1.0}
KERNEL_TARGETS = {(4096, 1000): 2.5, (16384, 1000): 1.5}  # ns per pair
NAIVE_QUIET = {4096: 4.4, 16384: 3.4}  # naive TopKV2 ns per pair when the targets were set


def kernel_variant(record) -> str:
  """Which top-k a "kernel" record timed: naive, xla, stock (unsorted, as ETA calls it) or
  stock_sorted. Records written before the "sort" field existed were sorted."""
  if record["kernel"] == "hamming_topk_naive":
    return "naive"
  if record.get("xla"):
    return "xla"
  return "stock_sorted" if record.get("sort", True) else "stock"


def machine_record(records):
  """The {"machine": ...} record of a run (None for files written before issue 16)."""
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
  for (length, n), limit in KERNEL_TARGETS.items():
    if (False, length, n) in kern:
      ref = naive[(length, n)]
      lines.append(f"top-k at L={length}, N={n}: {kern[(False, length, n)]:.3f} ns/pair, "
                   f"xla {kern[(True, length, n)]:.3f} (target <= {limit}); naive TopKV2 "
                   f"in this run {ref:.3f}: speed-up {ref / kern[(False, length, n)]:.2f}x, "
                   f"xla {ref / kern[(True, length, n)]:.2f}x (target "
                   f"{NAIVE_QUIET[length] / limit:.2f}x = {NAIVE_QUIET[length]}/{limit})")
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
                   f"{(topk + xla) / full:10.2f}")
  train = {(r["training"], r["L"]): r["examples_per_s"] for r in records if "training" in r}
  for length in sorted({k[1] for k in train}):
    eta, dl = train.get(("eta", length)), train.get(("din_long", length))
    if eta and dl:
      xla = train.get(("eta_xla", length))
      lines.append(f"training L={length}: eta {eta:.1f} ex/s, din_long {dl:.1f} ex/s, "
                   f"eta/din_long {eta / dl:.2f}" +
                   (f", eta_xla/din_long {xla / dl:.2f}" if xla else "") +
                   (" (target >= 1.3)" if length == 1024 else ""))
  return "\n".join(lines)


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
