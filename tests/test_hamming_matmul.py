"""The matrix-product Hamming top-k (eta_tf/ops/hamming_matmul.py) against the brute-force
numpy reference and hamming_top_k, bit for bit (unsorted: the same k, in any order): many ties, padding (inside blocks, whole
blocks, all of it), L < k, L = 0, keys folded into float32 and not, sorted and unsorted,
the size-chosen path, and a SavedModel run by the TF1 session loader.
"""
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from eta_tf import release
from eta_tf.ops import hamming
from eta_tf.ops import hamming_matmul
from test_export import _assert_session_matches_model
from test_export import _eval_inputs
from test_hamming_kernels import assert_matches_reference
from test_hamming_kernels import random_case
from test_hamming_kernels import run_in_tf1_session

CATEGORY_FIRST = (1, 65)

CASES = [  # batch, n, length, words, k, block_size, word_weights
    (2, 5, 300, 2, 48, 4, CATEGORY_FIRST),
    (1, 3, 301, 2, 8, 8, CATEGORY_FIRST),   # L not a multiple of b
    (2, 4, 50, 2, 8, 0, CATEGORY_FIRST),    # one selection over all L
    (1, 3, 20, 2, 48, 0, CATEGORY_FIRST),   # L < k
    (1, 3, 20, 2, 48, 4, CATEGORY_FIRST),   # L < k, blocks
    (2, 3, 0, 2, 5, 0, CATEGORY_FIRST),     # L = 0
    (1, 4, 90, 1, 6, 2, None),              # unweighted, one word
    (1, 3, 70, 3, 6, 4, (3, 1, 2)),
]


def run(query, keys, valid, k, block_size, word_weights, sort=True):
  return [t.numpy() for t in hamming_matmul.matmul_top_k(
      query, keys, valid, k, block_size=block_size, sort=sort, word_weights=word_weights)]


@pytest.mark.parametrize("batch,n,length,words,k,block_size,word_weights", CASES)
def test_matmul_top_k_equals_brute_force_and_hamming_top_k(batch, n, length, words, k,
                                                           block_size, word_weights):
  query, keys, valid = random_case(length + 7 * k + words, batch, n, length, words)
  if length:
    valid[0, :length // 2] = False          # left padding, whole blocks of it
    valid[-1, length // 3] = False          # padding inside a block
  result = run(query, keys, valid, k, block_size, word_weights)
  assert_matches_reference(result, query, keys, valid, k, word_weights)
  for sort in (True, False):
    fused = hamming.hamming_top_k(query, keys, valid, k, block_size=block_size or 0,
                                  sort=sort, word_weights=word_weights)
    got = run(query, keys, valid, k, block_size, word_weights, sort=sort)
    if sort:
      for a, b in zip(got, fused):
        np.testing.assert_array_equal(a, b.numpy())
    else:  # the same k, in an order of its own
      assert_same_triples(got, fused)


def test_all_padding_and_all_ties():
  query = np.zeros((1, 3, 2), np.int64)
  keys = np.zeros((1, 120, 2), np.int64)
  valid = np.ones((1, 120), bool)
  indices, distances, mask = run(query, keys, valid, 10, 4, CATEGORY_FIRST)
  np.testing.assert_array_equal(indices[0, 0], np.arange(119, 109, -1))  # most recent
  assert (distances == 0).all() and mask.all()
  _, _, mask = run(query, keys, np.zeros_like(valid), 10, 4, CATEGORY_FIRST)
  assert not mask.any()


def test_long_history_keys_not_folded_into_float32():
  """(D + 2) · L' > 2^24: the distance from the product, the rank added in int32."""
  length = 4001  # odd: L' / 2 is not an integer (L' = 4001, or 4008 with blocks of 8)
  assert not hamming_matmul.folds_rank(length, 2, CATEGORY_FIRST)
  assert hamming_matmul.folds_rank(1024, 2, CATEGORY_FIRST)
  query, keys, valid = random_case(3, 1, 2, length, 2, distinct=40)
  valid[0, :100] = False
  for block_size in (0, 8):
    result = run(query, keys, valid, 48, block_size, CATEGORY_FIRST)
    assert_matches_reference(result, query, keys, valid, 48, CATEGORY_FIRST)


def assert_same_triples(got, want):
  """Per (user, candidate), the same multiset of (index, distance, mask) triples."""
  def triples(result):
    stacked = np.stack([np.asarray(x).astype(np.int64) for x in result], axis=-1)
    return np.sort(stacked.view([("", np.int64)] * 3)[..., 0], axis=-1)
  np.testing.assert_array_equal(triples(got), triples(want))


def test_weighted_top_k_picks_the_product_by_size_with_the_same_result():
  length, n = hamming_matmul.MIN_MATMUL_LENGTH, hamming_matmul.MIN_MATMUL_CANDIDATES
  query, keys, valid = random_case(5, 1, n, length, 2, distinct=10)
  spec = [tf.TensorSpec([1, None, 2], tf.int64), tf.TensorSpec([1, length, 2], tf.int64),
          tf.TensorSpec([1, length], tf.bool)]
  fn = tf.function(lambda q, key, v: hamming_matmul.weighted_top_k(
      q, key, v, 48, sort=False, word_weights=CATEGORY_FIRST), input_signature=spec)
  ops = {node.op for f in fn.get_concrete_function().graph.as_graph_def().library.function
         for node in f.node_def}
  assert "Bitcast" in ops  # the product branch is in the graph (dynamic N: tf.cond)
  for m in (n, 3):  # product branch, and hamming_top_k's for few candidates
    got = fn(query[:, :m], keys, valid)
    want = hamming.hamming_top_k(query[:, :m], keys, valid, 48, sort=False,
                                 word_weights=CATEGORY_FIRST)
    # Unsorted: the same k (index, distance, mask) triples per candidate, in any order.
    assert_same_triples(got, want)


def test_saved_model_loads_in_tf1_session(tmp_path, monkeypatch):
  """The graph TF Serving runs: stock ops only, through tf.compat.v1's loader."""
  monkeypatch.setattr(hamming_matmul, "MIN_MATMUL_LENGTH", 300)  # toy sizes
  monkeypatch.setattr(hamming_matmul, "MIN_MATMUL_CANDIDATES", 32)
  query, keys, valid = random_case(21, 1, 40, 300, 2, distinct=30)
  module = tf.Module()
  module.fn = tf.function(
      lambda q, key, v: dict(zip(("indices", "distances", "mask"),
                                 hamming_matmul.weighted_top_k(
                                     q, key, v, 16, word_weights=CATEGORY_FIRST))),
      input_signature=[tf.TensorSpec([None, None, 2], tf.int64, name="q"),
                       tf.TensorSpec([None, 300, 2], tf.int64, name="keys"),
                       tf.TensorSpec([None, 300], tf.bool, name="valid")])
  path = str(tmp_path / "m")
  tf.saved_model.save(module, path, signatures=module.fn.get_concrete_function())
  out, graph_ops = run_in_tf1_session(path, query, keys, valid)
  assert_matches_reference(out, query, keys, valid, 16, CATEGORY_FIRST)
  assert "Bitcast" in graph_ops  # the product path was exported
  assert not graph_ops & {"PyFunc", "PyFuncStateless", "EagerPyFunc", "XlaLaunch"}


def test_export_through_the_product_equals_training_scores(trained_eta, small_data_dir,
                                                            tmp_path, monkeypatch):
  """The frozen-table export, its retrieval forced through the product (the toy L = 64
  is below the size rule), scores as the training-time model (1e-5) in the TF1 loader."""
  model_dir, model = trained_eta
  monkeypatch.setattr(hamming_matmul, "MIN_MATMUL_LENGTH", 0)
  monkeypatch.setattr(hamming_matmul, "MIN_MATMUL_CANDIDATES", 1)
  version_dir = release.export_trained(model_dir, str(tmp_path), "eta",
                                       data_dir=small_data_dir, trained_model=model)
  monkeypatch.undo()
  saved = saved_model_pb2.SavedModel()
  with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
    saved.ParseFromString(f.read())
  ops = {node.op for f in saved.meta_graphs[0].graph_def.library.function
         for node in f.node_def}
  assert "Bitcast" in ops
  _assert_session_matches_model(version_dir, model,
                                _eval_inputs(small_data_dir, model.config.max_len))
