"""The default eta served with and without the matrix-product retrieval, in one process.

    python -m bench.hamming_matmul_ab [--sizes 1024:200,4096:1000] [--repeats 30]

Exports (untrained weights, as bench/serving_cost does) the default eta twice at every L:
`eta` as the product chooses it (eta_tf/ops/hamming_matmul.weighted_top_k) and `eta_xor`
with the product disabled (hamming_top_k's XOR + popcount path, what eta served before),
plus din_long; loads them with the TF1 session loader and times score_candidates in
interleaved rounds (median). Writes bench/results/<output_name>.json with the machine
and its load average before / after.
"""
import os

import eta_tf  # noqa: F401  (tf-keras env before TensorFlow)
import numpy as np
import tensorflow as tf
from unittest import mock

from bench import export_ab
from bench.serving_cost_grid import export
from eta_tf.ops import hamming_matmul


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


def describe(med: dict, scores: dict) -> dict:
  return {"eta_xor_over_eta": med["eta_xor"] / med["eta"],
          "din_long_over_eta": med["din_long"] / med["eta"],
          "din_long_over_eta_xor": med["din_long"] / med["eta_xor"],
          "max_abs_score_diff_eta_vs_eta_xor": float(
              np.max(np.abs(scores["eta"] - scores["eta_xor"])))}


def main(argv=None):
  export_ab.run(__doc__, argv, "bench.hamming_matmul_ab", export_variants, describe, "hamming_matmul_ab")


if __name__ == "__main__":
  main()
