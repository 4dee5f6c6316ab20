"""The model grid of bench/serving_cost.py: every served model exported, loaded the way TF
Serving loads it, and timed at every (L, N); then training examples/s.

MODELS, export and request are shared with bench/serving_load.py and bench/serving_memory.py
(through bench.serving_cost).
"""
import os
import shutil
import time

import eta_tf  # noqa: F401  (tf-keras env before TensorFlow)
import numpy as np
import tensorflow as tf

from bench.interleaved_timing import time_interleaved, time_rounds
from bench.serving_cost_components import attention_fns, kernel_fn
from bench.serving_cost_stages import stage_fns, stage_medians
from eta_tf import features as F
from eta_tf import presets
from eta_tf.config import ModelConfig
from eta_tf.models import build_model
from eta_tf.savedmodel_session import SavedModelSession
from eta_tf.signatures import serving_signatures
from eta_tf.testing import random_samples

# Preset names (eta_tf/presets.py): the product's models, then the ETA variants timed
# beside the default eta (eta_xla its distance pass under XLA, eta_paper the item-only
# signature, eta_attention_hash the experiment hashing the attention's projections,
# eta_attention_hash_default that retrieval inside the default eta,
# eta_attention_hash_category it ranked category first, eta_linear_readout the default
# plus a linear-attention readout of the whole history, eta_user_bias the default plus
# one logit per user).
MODELS = ("eta", "eta_xla", "din_long", "din", "sim_hard", "avg", "sdim", "eta_paper",
          "eta_attention_hash", "eta_no_summary", "eta_attention_hash_default",
          "eta_attention_hash_category", "eta_linear_readout", "eta_user_bias")


def model_config(name: str, length: int) -> ModelConfig:
  """ModelConfig of preset `name` with max_len = `length`."""
  return presets.model_config(name, max_len=length)


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
        records.append({"model": name, "preset": name,
                        "config": model_config(name, length).to_dict(),
                        "L": length, "N": n, "repeats": len(times[name]),
                        "median_ms": float(np.median(times[name])) * 1e3,
                        "p99_ms": float(np.percentile(times[name], 99)) * 1e3})
      parts = {"kernel": kernel_fn(length, n, use_xla=False),
               "kernel_xla": kernel_fn(length, n, use_xla=True),
               "kernel_sorted": kernel_fn(length, n, use_xla=False, sort=True),
               "kernel_naive": kernel_fn(length, n, use_xla=False, naive=True),
               "kernel_category_first": kernel_fn(length, n, use_xla=False,
                                                  category_first=True),
               "kernel_floor": kernel_fn(length, n, use_xla=False, floor=True),
               **attention_fns(length, n)}
      medians = time_interleaved(parts, component_repeats, warmup=3,
                                 budget_s=cell_seconds / 3)
      for name, kernel, xla, sort in (("kernel", "hamming_topk", False, False),
                                      ("kernel_xla", "hamming_topk", True, False),
                                      ("kernel_sorted", "hamming_topk", False, True),
                                      ("kernel_naive", "hamming_topk_naive", False, True),
                                      ("kernel_category_first", "hamming_topk_category_first",
                                       False, False),
                                      ("kernel_floor", "xor_popcount_floor", False, False)):
        records.append({"kernel": kernel, "xla": xla, "sort": sort, "L": length, "N": n,
                        "ns_per_pair": medians[name] * 1e9 / (length * n),
                        "median_ms": medians[name] * 1e3})
      for name in ("attention_full", "attention_topk"):
        records.append({"component": name, "L": length, "N": n,
                        "median_ms": medians[name] * 1e3})
      records += bench_stages(fns, length, n, inputs, max(component_repeats, 10),
                              cell_seconds)
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


def bench_stages(model_fns, length, n, inputs, repeats, cell_seconds):
  """One {"stages": model, ...} record per model: the median ms of every stage of its
  score_candidates (bench/serving_cost_stages.py), their sum and the model's latency
  through its session, all timed in the same interleaved rounds."""
  records = []
  for name, model_fn in model_fns.items():
    fns = {**stage_fns(name, length, n, inputs), "_model": model_fn}
    medians = time_interleaved(fns, repeats, warmup=2, budget_s=cell_seconds / 3)
    stages = stage_medians(medians)
    total = sum(v for k, v in stages.items() if k != "call_overhead")
    records.append({"stages": name, "L": length, "N": n, "repeats": repeats,
                    "stage_ms": stages, "stage_sum_ms": total,
                    "model_ms": medians["_model"] * 1e3})
  print(f"L={length:6d} N={n:5d} stage ms: " + "; ".join(
      f"{r['stages']} " + " ".join(f"{k} {v:.2f}" for k, v in r["stage_ms"].items()
                                   if k != "call_overhead") for r in records), flush=True)
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
      records.append({"training": name, "preset": name, "L": length, "batch_size": batch_size,
                      "examples_per_s": batch_size / medians[name],
                      "median_step_ms": medians[name] * 1e3})
    row = "  ".join(f"{name} {batch_size / medians[name]:8.1f}" for name in models)
    print(f"train L={length:6d} batch={batch_size} examples/s: {row}", flush=True)
  return records
