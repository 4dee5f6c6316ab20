"""Attention over the retrieved k, as two batched products per query or elementwise.

    python -m bench.gathered_attention_ab [--sizes 1024:200,4096:1000] [--repeats 30]

eta and sim_hard attend each candidate over its own k retrieved behaviors
(eta_tf.layers.attention.per_query_attention: the query heads as a block-diagonal matrix,
two batched matrix products per candidate). This exports each of them twice with the same
(untrained) weights, once as the product computes it and once with the elementwise
formulation it replaced (broadcast products and sums over [N, k, H, dh]:
per_query_scores / per_query_context), plus din_long; loads all with the TF1 session
loader and times score_candidates in interleaved rounds (median). Writes
bench/results/<output_name>.json with the machine, its load average before / after and
the largest score difference between the two formulations.
"""
import os
from unittest import mock

import eta_tf  # noqa: F401  (tf-keras env before TensorFlow)
import numpy as np
import tensorflow as tf

from bench import export_ab
from bench.serving_cost_grid import export
from eta_tf.layers import attention as attention_lib
MODELS = ("eta", "sim_hard")


def elementwise_attention(query_heads, key_heads, value_heads, mask):
  """The elementwise formulation: scores and context as broadcast products and sums."""
  scores = attention_lib.per_query_scores(query_heads, key_heads)
  return attention_lib.per_query_context(scores, mask, value_heads)


def export_pairs(length: int, directory: str) -> dict:
  """{name: export path}: <model> and <model>_elementwise for MODELS, and din_long."""
  paths = {}
  for name in MODELS:
    tf.keras.utils.set_random_seed(length)  # the same weights in both exports
    paths[name] = export(name, length, directory)
    tf.keras.utils.set_random_seed(length)
    with mock.patch.object(attention_lib, "per_query_attention", elementwise_attention):
      paths[name + "_elementwise"] = export(name, length,
                                            os.path.join(directory, "elementwise"))
  paths["din_long"] = export("din_long", length, directory)
  return paths


def describe(med: dict, scores: dict) -> dict:
  record = {}
  for name in MODELS:
    record[f"{name}_elementwise_over_{name}"] = med[name + "_elementwise"] / med[name]
    record[f"max_abs_score_diff_{name}"] = float(
        np.max(np.abs(scores[name] - scores[name + "_elementwise"])))
  record["din_long_over_eta"] = med["din_long"] / med["eta"]
  record["din_long_over_eta_elementwise"] = med["din_long"] / med["eta_elementwise"]
  return record


def main(argv=None):
  export_ab.run(__doc__, argv, "bench.gathered_attention_ab", export_pairs, describe, "gathered_attention_ab")


if __name__ == "__main__":
  main()
