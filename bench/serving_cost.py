"""Serving and training cost of every model (issues 6, 16), side by side in one process.

    python -m bench.serving_cost            # L in {256, 1024, 4096, 16384}, N in {1, 200, 1000}
                                            # (~25 min on 2 cores; writes after each L)
    python -m bench.serving_cost --quick    # L in {1024, 4096}, N in {200, 1000}, < 5 min

For every L, the models are built from the default ModelConfig (only `model` and `max_len`
differ), exported with tf.saved_model.save + the production signatures (eta_tf.signatures;
ETA with its frozen item-signature table), loaded with the TF1 session loader the way TF
Serving loads them, and the `score_candidates` signature is timed for one user with a full
history of L behaviors and N candidates. Models are interleaved round by round (so their
ratios share the machine's state); median and p99 over --repeats rounds.

  eta       ETA, stock TF Serving graph (no XLA)
  eta_xla   ETA with ModelConfig(hamming_xla=True): the Hamming distance pass
            jit-compiled (TF Serving needs --xla_cpu_compilation_enabled=true)
  din_long  target attention over all L (keys/values projected once per request)
  din       short history only: the floor
  sim_hard  attention over the k behaviors of the candidate's category
  avg       mean pooling of the long history
  sdim      SimHash bucket sampling (no attention over L)

The CPU (model, AVX2 / AVX-512 / AMX from /proc/cpuinfo) and the load average before and
after are recorded in the JSON (a {"machine": ...} record) and printed with the results.

Also, on the same shapes in the same rounds:
  - ns per (candidate, behavior) pair of the Hamming top-k alone (eta_tf.ops.hamming.
    hamming_top_k as ETA calls it, sort=False; with and without XLA; sorted; and the naive
    one-TopKV2 formulation the targets were set against);
  - the attention components: din_long's attention over all L behaviors, and ETA's
    attention over its k gathered behaviors (after retrieval). ETA's long-history block
    costs at least top-k + attention over k, din_long's about the attention over L: where
    that sum exceeds it, no selection kernel can make ETA faster at that (L, N).
  - training examples/s of eta vs din_long.
The kernels and components run in their own interleaved rounds (--component_repeats).
Writes bench/results/serving_cost.json (a list of records) and serving_cost.png.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time


import eta_tf  # noqa: E402,F401  (tf-keras env before TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import machine  # noqa: E402
from bench.compare_models import int_list  # noqa: E402
from eta_tf import features as F  # noqa: E402
from eta_tf.config import MODEL_NAMES, ModelConfig  # noqa: E402
from eta_tf.savedmodel_session import SavedModelSession  # noqa: E402
from eta_tf.models import build_model  # noqa: E402
from eta_tf.models.long_history import make_attention  # noqa: E402
from eta_tf.ops import hamming  # noqa: E402
from eta_tf.signatures import serving_signatures  # noqa: E402
from eta_tf.testing import random_samples  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, "results")
# Every model of eta_tf.config.MODEL_NAMES, and eta_xla; the ratio columns' models first.
MODELS = ("eta", "eta_xla", "din_long", "din") + tuple(
    m for m in MODEL_NAMES if m not in ("eta", "din_long", "din"))
# Targets of issue 6: (L, N) -> required din_long / eta latency ratio.
TARGETS = {(4096, 1000): 2.0, (16384, 1000): 3.0, (1024, 200): 1.0}
KERNEL_TARGETS = {(4096, 1000): 2.5, (16384, 1000): 1.5}  # ns per pair
NAIVE_QUIET = {4096: 4.4, 16384: 3.4}  # naive TopKV2 ns per pair when the targets were set


def model_config(name: str, length: int) -> ModelConfig:
  if name == "eta_xla":
    return ModelConfig(model="eta", max_len=length, hamming_xla=True)
  return ModelConfig(model=name, max_len=length)


def make_model(name: str, length: int):
  return build_model(model_config(name, length))


def export(name: str, length: int, directory: str) -> str:
  """`directory`/<name>_L<length>: the model (untrained weights) as served; an export
  already there (--export_dir of an earlier run) is reused."""
  path = os.path.join(directory, f"{name}_L{length}")
  if os.path.exists(os.path.join(path, "saved_model.pb")):
    return path
  model = make_model(name, length)
  model.freeze_signatures()
  tf.saved_model.save(model, path, signatures=serving_signatures(model))
  return path


def request(length: int, n: int, seed: int) -> dict:
  """One user with a full history of `length` behaviors and n candidates."""
  rng = np.random.default_rng(seed)
  now = 1_700_000_000
  items = rng.integers(1, 10_000_000, length)
  return {
      F.HIST_ITEM_ID: items,
      F.HIST_CATEGORY_ID: items % 5000 + 1,
      F.HIST_BEHAVIOR_TYPE: rng.integers(1, 5, length),
      F.HIST_TIMESTAMP: now - np.sort(rng.integers(60, 90 * 86400, length))[::-1],
      F.REQUEST_TIMESTAMP: np.int64(now),
      F.CANDIDATE_ITEM_ID: rng.integers(1, 10_000_000, n),
      F.CANDIDATE_CATEGORY_ID: rng.integers(1, 5000, n),
  }


def time_rounds(fns: dict, repeats: int, warmup: int = 2, budget_s: float = 0.0,
                min_rounds: int = 3) -> dict:
  """{name: [seconds per round]}; one call of every fn per round, in turn.

  budget_s > 0: stop after the first round that ends past budget_s seconds (counted from
  the first timed round), once min_rounds are done; the lists then hold fewer than
  `repeats` rounds (the records say how many).
  """
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in fns}
  started = time.perf_counter()
  for i in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
    if budget_s > 0 and i + 1 >= min_rounds and time.perf_counter() - started > budget_s:
      break
  return times


def time_interleaved(fns: dict, repeats: int, warmup: int = 2, budget_s: float = 0.0) -> dict:
  """{name: median seconds}; one call of every fn per round."""
  return {name: float(np.median(v))
          for name, v in time_rounds(fns, repeats, warmup, budget_s).items()}


def kernel_fn(length: int, n: int, use_xla: bool, naive: bool = False, sort: bool = False):
  """hamming_top_k alone on the production shapes (B = 1, static L, W = 1, k = 48).

  sort=False is how ETA calls it (attention does not depend on the order of the k).

  naive=True: the original formulation (bench/hamming_kernels.py `naive`, one TopKV2 over
  L) as the same-run reference for the targets, which were set against it (4.4 ns/pair at
  L=4096 and 3.4 at L=16384 on a quiet machine).
  """
  rng = np.random.default_rng(length + n)
  lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
  query = tf.constant(rng.integers(lo, hi, (1, n, 1), dtype=np.int64, endpoint=True))
  keys = tf.constant(rng.integers(lo, hi, (1, length, 1), dtype=np.int64, endpoint=True))
  valid = tf.ones((1, length), tf.bool)
  spec = [tf.TensorSpec([1, None, 1], tf.int64), tf.TensorSpec([1, length, 1], tf.int64),
          tf.TensorSpec([1, length], tf.bool)]
  if naive:
    # Only for the naive-kernel records: the other runs need none of hamming_kernels.
    from bench.hamming_kernels import naive as naive_kernel  # pylint: disable=g-import-not-at-top
    fn = tf.function(naive_kernel, input_signature=spec)
  else:
    fn = tf.function(lambda q, k, v: hamming.hamming_top_k(q, k, v, 48, use_xla=use_xla,
                                                           sort=sort),
                     input_signature=spec)
  return lambda: [t.numpy() for t in fn(query, keys, valid)]


def attention_fns(length: int, n: int):
  """din_long's attention over all L, and ETA's over k gathered behaviors (default config).

  The same TargetAttention layer the models use, weights random; B = 1, N candidates.
  """
  config = ModelConfig(model="eta", max_len=length)
  attention = make_attention(config, "attention")
  rng = np.random.default_rng(length * 7 + n)
  query = tf.constant(rng.normal(size=(1, n, attention.query_dim)), tf.float32)
  behavior = tf.constant(rng.normal(size=(1, length, attention.key_dim)), tf.float32)
  valid = tf.ones((1, length), tf.bool)
  k = config.top_k
  indices = tf.constant(np.stack([rng.choice(length, k, replace=False)
                                  for _ in range(n)])[None], tf.int32)
  mask = tf.ones((1, n, k), tf.bool)
  dims = attention.query_dim, attention.key_dim

  @tf.function(input_signature=[tf.TensorSpec([1, None, dims[0]], tf.float32),
                                tf.TensorSpec([1, length, dims[1]], tf.float32),
                                tf.TensorSpec([1, length], tf.bool)])
  def full(q, b, v):
    return attention(q, b, v)

  @tf.function(input_signature=[tf.TensorSpec([1, None, dims[0]], tf.float32),
                                tf.TensorSpec([1, length, dims[1]], tf.float32),
                                tf.TensorSpec([1, None, k], tf.int32),
                                tf.TensorSpec([1, None, k], tf.bool)])
  def top_k(q, b, i, m):
    key_heads, value_heads = attention.project_gathered_keys(b, i)
    return attention.attend(attention.project_query(q), key_heads, value_heads, m)

  return {"attention_full": lambda: full(query, behavior, valid).numpy(),
          "attention_topk": lambda: top_k(query, behavior, indices, mask).numpy()}


def bench_serving(lengths, ns, repeats, component_repeats, work_dir, models=MODELS,
                  keep_exports=False, cell_seconds=0.0, on_length_done=None):
  """Latency records of every model at every (L, N), then of the kernels and components.

  The models run `repeats` interleaved rounds (median and p99); the top-k kernels and the
  attention components `component_repeats` rounds of their own (medians). cell_seconds > 0
  caps each (L, N) cell's model rounds at about that long (at least 10 rounds) and its
  component rounds at a third of it (at least 3), so that the slowest cells cannot hold up
  the grid; each record's "repeats" says how many rounds it got.
  on_length_done(records so far) is called after each L (the caller saves partial grids).
  """
  records = []
  for length in lengths:
    t0 = time.time()
    runners = {name: SavedModelSession(export(name, length, work_dir)) for name in models}
    print(f"-- L={length}: exported and loaded {', '.join(models)} "
          f"({time.time() - t0:.0f} s)", flush=True)
    for n in ns:
      inputs = request(length, n, seed=length + n)
      fns = {name: (lambda r=runner: r.run(F.SCORE_CANDIDATES, inputs))
             for name, runner in runners.items()}
      # XLA compiles per shape bucket: warm up enough to leave compilation out.
      times = time_rounds(fns, repeats, warmup=3, budget_s=cell_seconds, min_rounds=10)
      for name in models:
        records.append({"model": name, "L": length, "N": n, "repeats": len(times[name]),
                        "median_ms": float(np.median(times[name])) * 1e3,
                        "p99_ms": float(np.percentile(times[name], 99)) * 1e3})
      parts = {"kernel": kernel_fn(length, n, use_xla=False),
               "kernel_xla": kernel_fn(length, n, use_xla=True),
               "kernel_sorted": kernel_fn(length, n, use_xla=False, sort=True),
               "kernel_naive": kernel_fn(length, n, use_xla=False, naive=True),
               **attention_fns(length, n)}
      medians = time_interleaved(parts, component_repeats, warmup=3,
                                 budget_s=cell_seconds / 3)
      for name, kernel, xla, sort in (("kernel", "hamming_topk", False, False),
                                      ("kernel_xla", "hamming_topk", True, False),
                                      ("kernel_sorted", "hamming_topk", False, True),
                                      ("kernel_naive", "hamming_topk_naive", False, True)):
        records.append({"kernel": kernel, "xla": xla, "sort": sort, "L": length, "N": n,
                        "ns_per_pair": medians[name] * 1e9 / (length * n),
                        "median_ms": medians[name] * 1e3})
      for name in ("attention_full", "attention_topk"):
        records.append({"component": name, "L": length, "N": n,
                        "median_ms": medians[name] * 1e3})
      row = "  ".join(f"{name} {np.median(times[name]) * 1e3:.2f}" for name in models)
      print(f"L={length:6d} N={n:5d} median ms: {row}  | top-k ns/pair "
            f"{medians['kernel'] * 1e9 / (length * n):.3f} "
            f"(xla {medians['kernel_xla'] * 1e9 / (length * n):.3f}, naive "
            f"{medians['kernel_naive'] * 1e9 / (length * n):.3f})", flush=True)
    for runner in runners.values():
      runner.close()
    if not keep_exports:
      for name in models:
        shutil.rmtree(os.path.join(work_dir, f"{name}_L{length}"), ignore_errors=True)
    if on_length_done:
      on_length_done(records)
  return records


def bench_training(lengths, batch_size, steps, models=("eta", "eta_xla", "din_long")):
  records = []
  for length in lengths:
    feats, labels = random_samples(batch_size, length, num_items=100_000, seed=length,
                                   min_history=length // 2)
    trainers = {}
    for name in models:
      model = make_model(name, length)
      model.compile(optimizer=tf.keras.optimizers.Adam(1e-3))
      trainers[name] = (lambda m=model: m.train_on_batch(feats, labels))
    medians = time_interleaved(trainers, steps, warmup=3)
    for name in models:
      records.append({"training": name, "L": length, "batch_size": batch_size,
                      "examples_per_s": batch_size / medians[name],
                      "median_step_ms": medians[name] * 1e3})
    row = "  ".join(f"{name} {batch_size / medians[name]:8.1f}" for name in models)
    print(f"train L={length:6d} batch={batch_size} examples/s: {row}", flush=True)
  return records


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


def model_list(text: str):
  """--models: comma-separated names out of MODELS (argparse error naming the bad one)."""
  names = [t.strip() for t in text.split(",") if t.strip()]
  unknown = [n for n in names if n not in MODELS]
  if unknown or not names:
    raise argparse.ArgumentTypeError(f"{text!r}: unknown model {', '.join(unknown)!r}; "
                                     f"choose from {', '.join(MODELS)}")
  return names


def build_parser():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="L in {1024, 4096}, N in {200, 1000}, fewer repeats")
  parser.add_argument("--lengths", type=int_list, default=None,
                      help="comma-separated L (overrides)")
  parser.add_argument("--ns", type=int_list, default=None,
                      help="comma-separated N (overrides)")
  parser.add_argument("--models", type=model_list, default=list(MODELS),
                      help=f"comma-separated, out of {','.join(MODELS)} (default: all)")
  parser.add_argument("--repeats", type=int, default=None,
                      help="interleaved rounds of the models (median, p99; default 100, "
                           "--quick 20)")
  parser.add_argument("--component_repeats", type=int, default=None,
                      help="rounds of the top-k kernels and attention components "
                           "(default 15, --quick 5)")
  parser.add_argument("--cell_seconds", type=float, default=None,
                      help="cap each (L, N) cell's model rounds at about this long (at "
                           "least 10 rounds; components a third of it); 0 = no cap "
                           "(default 60, --quick 0)")
  parser.add_argument("--train_lengths", type=lambda t: int_list(t) if t else [],
                      default=[1024, 4096], help="comma-separated L ('' = no training)")
  parser.add_argument("--train_batch", type=int, default=None)
  parser.add_argument("--train_steps", type=int, default=None)
  parser.add_argument("--output_dir", default=RESULTS_DIR)
  parser.add_argument("--export_dir", default=None,
                      help="keep the exports here (<model>_L<L>/), reusing any already "
                           "there (default: a temporary directory, removed)")
  return parser


def main(argv=None):
  args = build_parser().parse_args(argv)
  # The trade-off's L (1024, 4096) first and the slowest last: a run cut short (see
  # save_partial) has the cells that matter most.
  lengths = [1024, 4096] if args.quick else [1024, 4096, 256, 16384]
  ns = [200, 1000] if args.quick else [1, 200, 1000]
  lengths = args.lengths or lengths
  ns = args.ns or ns
  repeats = args.repeats or (20 if args.quick else 100)
  component_repeats = args.component_repeats or (5 if args.quick else 15)
  if args.cell_seconds is None:
    args.cell_seconds = 0.0 if args.quick else 60.0
  train_steps = args.train_steps or (4 if args.quick else 10)
  train_batch = args.train_batch or (64 if args.quick else 128)

  start = time.time()
  run = machine.start_run("python -m bench.serving_cost", argv)
  print(f"machine: {run['machine']['summary']}; load average {run['load_before']}",
        flush=True)
  # Training first, in a fresh process: measured after the serving section (20 loaded
  # sessions, XLA compilations), eta's steps were 1.4x slower than in a fresh process
  # (403 vs 553-560 examples/s at L=1024, batch 128) while din_long's did not change.
  training = bench_training(args.train_lengths, train_batch, train_steps)

  def save_partial(serving_records):  # a grid cut short still leaves its finished L
    machine.write_json([machine.finish_run(run, complete=False)] + serving_records + training,
                       args.output_dir, "serving_cost.json")

  work_dir = args.export_dir or tempfile.mkdtemp(prefix="serving_cost_")
  try:
    records = bench_serving(lengths, ns, repeats, component_repeats, work_dir,
                            args.models, keep_exports=bool(args.export_dir),
                            cell_seconds=args.cell_seconds,
                            on_length_done=save_partial) + training
  finally:
    if not args.export_dir:
      shutil.rmtree(work_dir, ignore_errors=True)
  records = [machine.finish_run(run)] + records
  print(summarize(records))
  machine.write_json(records, args.output_dir, "serving_cost.json")
  plot(records, os.path.join(args.output_dir, "serving_cost.png"))
  print(f"wrote {args.output_dir}/serving_cost.json and serving_cost.png "
        f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
  main()
