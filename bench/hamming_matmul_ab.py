"""The default eta served with and without the matrix-product retrieval, in one process.

    python -m bench.hamming_matmul_ab [--sizes 1024:200,4096:1000] [--repeats 30]

Exports (untrained weights, as bench/serving_cost does) the default eta twice at every L:
`eta` as the product chooses it (eta_tf/ops/hamming_matmul.weighted_top_k) and `eta_xor`
with the product disabled (hamming_top_k's XOR + popcount path, what eta served before),
plus din_long; loads them with the TF1 session loader and times score_candidates in
interleaved rounds (median). Writes bench/results/<output_name>.json with the machine
and its load average before / after.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import eta_tf  # noqa: F401  (tf-keras env before TensorFlow)
import numpy as np
import tensorflow as tf
from unittest import mock

from bench import machine
from bench.interleaved_timing import time_rounds
from bench.serving_cost_grid import export, request
from eta_tf import features as F
from eta_tf.ops import hamming_matmul
from eta_tf.savedmodel_session import SavedModelSession

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def export_variants(length: int, directory: str) -> dict:
  """{name: export path}: eta (product by size), eta_xor (product disabled), din_long."""
  # The same seed before each eta export: the same (untrained) weights in both.
  tf.keras.utils.set_random_seed(length)
  paths = {"eta": export("eta", length, directory)}
  tf.keras.utils.set_random_seed(length)
  with mock.patch.object(hamming_matmul, "MIN_MATMUL_LENGTH", 1 << 40):
    paths["eta_xor"] = export("eta", length, os.path.join(directory, "xor"))
  paths["din_long"] = export("din_long", length, directory)
  return paths


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="1024:200,1024:1000,4096:200,4096:1000",
                      help="L:N pairs")
  parser.add_argument("--repeats", type=int, default=30, help="interleaved rounds")
  parser.add_argument("--output_name", default="hamming_matmul_ab",
                      help="results file bench/results/<name>.json ('' = none)")
  args = parser.parse_args(argv)
  sizes = [tuple(int(v) for v in s.split(":")) for s in args.sizes.split(",")]
  load_before = machine.load_average()
  records = []
  with tempfile.TemporaryDirectory() as work:
    for length in sorted({L for L, _ in sizes}):
      t0 = time.time()
      runners = {name: SavedModelSession(path)
                 for name, path in export_variants(length, work).items()}
      print(f"-- L={length}: exported and loaded ({time.time() - t0:.0f} s)", flush=True)
      for n in [n for L, n in sizes if L == length]:
        inputs = request(length, n, seed=length + n)
        outs = {name: r.run(F.SCORE_CANDIDATES, inputs) for name, r in runners.items()}
        max_diff = float(np.max(np.abs(outs["eta"] - outs["eta_xor"])))
        fns = {name: (lambda r=r: r.run(F.SCORE_CANDIDATES, inputs))
               for name, r in runners.items()}
        times = time_rounds(fns, args.repeats, warmup=3)
        med = {name: float(np.median(v)) * 1e3 for name, v in times.items()}
        record = {"L": length, "N": n, "repeats": args.repeats, "median_ms": med,
                  "eta_xor_over_eta": med["eta_xor"] / med["eta"],
                  "din_long_over_eta": med["din_long"] / med["eta"],
                  "din_long_over_eta_xor": med["din_long"] / med["eta_xor"],
                  "max_abs_score_diff_eta_vs_eta_xor": max_diff}
        records.append(record)
        print(f"L={length:5d} N={n:5d} eta {med['eta']:.2f} eta_xor {med['eta_xor']:.2f} "
              f"din_long {med['din_long']:.2f} ms | xor/eta {record['eta_xor_over_eta']:.2f} "
              f"dl/eta {record['din_long_over_eta']:.2f} dl/xor "
              f"{record['din_long_over_eta_xor']:.2f} | max score diff {max_diff:.1e} "
              f"| load {machine.load_average()}", flush=True)
      for r in runners.values():
        r.close()
  if args.output_name:
    out = os.path.join(RESULTS_DIR, args.output_name + ".json")
    with open(out, "w") as f:
      json.dump({"command": "python -m bench.hamming_matmul_ab " + " ".join(
                     sys.argv[1:] if argv is None else argv),
                 "machine": dict(machine.describe(), load_before=load_before,
                                 load_after=machine.load_average()),
                 "records": records}, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
  main()
