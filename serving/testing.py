"""A tiny stand-in SavedModel with the production signatures, for serving tests.

Until the real exporter's models are at hand, tests serve this: a tf.Module with the two
signatures of docs/DESIGN.md §3 and the input names / dtypes of `eta_tf.features`:

* `serving_default`: the batched `sample_features(max_len)` inputs -> `ctr` [B]
* `score_candidates`: `score_candidates_features()` -> `ctr` [N]

    ctr = sigmoid(bias + 0.05 * (# non-padding behaviors) + 0.01 * (item id % 10))

`bias` is a variable, so each version can carry its own constant and a version switch is
visible in the scores; `toy_ctr` computes the same numbers with numpy. Both signatures
enforce the exporter's input contract in the graph (eta_tf.signatures).
"""
import os
import shutil
from typing import Optional

import numpy as np

from eta_tf import features
from eta_tf import signatures
from serving import publish as publish_lib
from serving import warmup as warmup_lib

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order


def toy_ctr(bias: float, num_behaviors, item_id) -> np.ndarray:
  logit = bias + 0.05 * np.asarray(num_behaviors, np.float64) + 0.01 * (
      np.asarray(item_id) % 10)
  return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)


def _specs(signature_name, max_len):
  return {f.name: tf.TensorSpec(f.shape, tf.as_dtype(f.dtype), name=f.name)
          for f in features.signature_input_features(signature_name, max_len)}


class ToyModel(tf.Module):
  """Both production signatures over a trivially checkable formula."""

  def __init__(self, bias: float, max_len: int):
    super().__init__()
    self.bias = tf.Variable(float(bias), dtype=tf.float32, name="bias")
    self.max_len = int(max_len)
    self.serving_default = tf.function(
        self._serving_default, input_signature=[_specs(features.SERVING_DEFAULT, max_len)])
    self.score_candidates = tf.function(
        self._score_candidates, input_signature=[_specs(features.SCORE_CANDIDATES, None)])

  def _logit(self, num_behaviors, item_id):
    return (self.bias + 0.05 * tf.cast(num_behaviors, tf.float32)
            + 0.01 * tf.cast(item_id % 10, tf.float32))

  def _serving_default(self, inputs):
    inputs = signatures.checked_sample_inputs(inputs)  # the exporter's input contract
    n = tf.math.count_nonzero(inputs[features.HIST_ITEM_ID], axis=-1)
    return {features.OUTPUT_CTR: tf.sigmoid(self._logit(n, inputs[features.TARGET_ITEM_ID]))}

  def _score_candidates(self, inputs):
    inputs = signatures.checked_request_inputs(inputs)
    hist = inputs[features.HIST_ITEM_ID][-self.max_len:]  # the most recent L
    n = tf.math.count_nonzero(hist)
    ctr = tf.sigmoid(self._logit(n, inputs[features.CANDIDATE_ITEM_ID]))
    return {features.OUTPUT_CTR: ctr}


def save_toy_model(export_dir: str, bias: float, max_len: int = 8, warmup: bool = True,
                   model_name: str = "") -> str:
  """Saves the toy SavedModel (plus a warmup file) into `export_dir`; returns it."""
  model = ToyModel(bias, max_len)
  tf.saved_model.save(model, export_dir, signatures={
      features.SERVING_DEFAULT: model.serving_default.get_concrete_function(),
      features.SCORE_CANDIDATES: model.score_candidates.get_concrete_function(),
  })
  if warmup:
    warmup_lib.write_warmup_requests(
        export_dir, warmup_lib.example_requests(max_len, (1, 2), (1, 3)), model_name)
  return export_dir


def publish_copy(src_dir: str, base: str, version: Optional[int] = None) -> str:
  """Copies a saved model into a temp dir under `base` and publishes it atomically."""
  version = publish_lib.next_version(base) if version is None else int(version)
  tmp = publish_lib.temp_version_dir(base, version)
  os.rmdir(tmp)
  shutil.copytree(src_dir, tmp)
  return publish_lib.publish(tmp, base, version)
