"""Hamming kernels (eta_tf/ops/hamming.py) against a brute-force numpy reference.

Every code path is forced through its parameters: direct TopKV2 (block_size=0), blockwise
with several block sizes (L a multiple of b or not, L < k, L = 0, all padding, padding in
the middle of blocks), W = 1..4 words, N = 1, many ties, XLA on and off, unknown static
shapes, and a SavedModel loaded by the TF1 session loader (what TF Serving runs).
"""
import numpy as np
import pytest
import tensorflow as tf

from eta_tf.ops import hamming

MASK64 = (1 << 64) - 1


def np_distances(query, keys, word_weights=None):
  """int64 [B, N, W], [B, L, W] -> int [B, N, L] via bin(x ^ y).count('1') (word w
  counted word_weights[w] times)."""
  b, n, words = query.shape
  weights = word_weights or (1,) * words
  length = keys.shape[1]
  out = np.zeros((b, n, length), np.int64)
  for i in range(b):
    for j in range(n):
      for m in range(length):
        out[i, j, m] = sum(w * bin((int(x) & MASK64) ^ (int(y) & MASK64)).count("1")
                           for x, y, w in zip(query[i, j], keys[i, m], weights))
  return out


def np_select(distances, valid, k):
  """Reference: real behaviors ordered by (distance, -index), first k; 0/0/False padding."""
  b, n, _ = distances.shape
  idx = np.zeros((b, n, k), np.int64)
  dist = np.zeros((b, n, k), np.int64)
  mask = np.zeros((b, n, k), bool)
  for i in range(b):
    for j in range(n):
      order = sorted((int(d), -m) for m, d in enumerate(distances[i, j]) if valid[i, m])
      for s, (d, neg_m) in enumerate(order[:k]):
        idx[i, j, s], dist[i, j, s], mask[i, j, s] = -neg_m, d, True
  return idx, dist, mask


def random_case(seed, batch, n, length, words, distinct=6, valid_rate=0.8):
  """Signatures from a small pool (so distances tie a lot), queries near pool members."""
  rng = np.random.default_rng(seed)
  pool = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max,
                      size=(distinct, words), dtype=np.int64, endpoint=True)
  keys = pool[rng.integers(0, distinct, (batch, length))].reshape(batch, length, words)
  flips = rng.integers(0, 8, (batch, n, words))
  query = pool[rng.integers(0, distinct, (batch, n))].reshape(batch, n, words) ^ flips
  valid = rng.random((batch, length)) < valid_rate
  return query.astype(np.int64), keys.astype(np.int64), valid


def assert_matches_reference(result, query, keys, valid, k, word_weights=None):
  expected = np_select(np_distances(query, keys, word_weights), valid, k)
  for got, want, name in zip(result, expected, ("indices", "distances", "mask")):
    got = np.asarray(got)
    assert got.shape == want.shape, name
    np.testing.assert_array_equal(got, want, err_msg=name)


# ------------------------------------------------------------------ hamming_distance
@pytest.mark.parametrize("words", [1, 2, 3, 4])
def test_hamming_distance_equals_popcount_reference(words):
  query, keys, _ = random_case(words, 2, 3, 9, words, distinct=50)
  keys[0, 0] = -1  # all 64 bits set in every word
  query[0, 0] = 0
  got = hamming.hamming_distance(query, keys).numpy()
  assert got.dtype == np.int32
  np.testing.assert_array_equal(got, np_distances(query, keys))
  assert got[0, 0, 0] == 64 * words


# ------------------------------------------------------------------ fused hamming_top_k
CASES = [
    # (batch, n, length, words, k, block_size)
    (2, 3, 50, 1, 4, 4),      # L not a multiple of b
    (2, 3, 48, 1, 4, 8),      # L a multiple of b
    (1, 1, 37, 1, 5, 2),      # N = 1, smallest blocks
    (3, 2, 100, 2, 6, 8),     # 2 words
    (2, 2, 61, 3, 7, 4),      # 3 words (uint8 sums)
    (2, 2, 45, 4, 5, 4),      # 4 words (int16 sums, distance up to 256)
    (2, 3, 7, 1, 8, 4),       # L < k
    (2, 2, 1, 4, 4, 2),       # L = 1 < k
    (2, 2, 0, 1, 3, 4),       # L = 0
    (2, 4, 300, 1, 48, 8),    # default k
    (2, 2, 64, 1, 64, 8),     # k = L
]


@pytest.mark.parametrize("use_xla", [False, True])
@pytest.mark.parametrize("batch,n,length,words,k,block_size", CASES)
def test_hamming_top_k_equals_brute_force(batch, n, length, words, k, block_size, use_xla):
  query, keys, valid = random_case(length * 7 + k + words, batch, n, length, words)
  if length:
    valid[0] = False  # one user with only padding
  result = hamming.hamming_top_k(query, keys, valid, k=k, block_size=block_size,
                                 use_xla=use_xla)
  assert_matches_reference(result, query, keys, valid, k)


# (batch, n, length, words, k, block_size, word_weights): category_first's weights (item
# word 1, category word m + 1 = 65: int16 block sums up to 4224), and uneven ones.
WEIGHTED_CASES = [
    (2, 3, 50, 2, 4, 4, (1, 65)),
    (2, 40, 300, 2, 48, 8, (1, 65)),   # the automatic path's shape (N >= 32) forced
    (1, 2, 37, 4, 5, 2, (1, 1, 65, 65)),
    (2, 2, 45, 3, 5, 0, (3, 1, 2)),     # direct path
]


@pytest.mark.parametrize("use_xla", [False, True])
@pytest.mark.parametrize("batch,n,length,words,k,block_size,word_weights", WEIGHTED_CASES)
def test_weighted_hamming_top_k_equals_brute_force(batch, n, length, words, k, block_size,
                                                   word_weights, use_xla):
  """Weighted words (ETA's category-first order): the same exact rule on the weighted
  distance, through the fused blockwise path, XLA or not, and the direct one."""
  query, keys, valid = random_case(length + k + words, batch, n, length, words)
  valid[0, :length // 2] = False
  result = hamming.hamming_top_k(query, keys, valid, k=k, block_size=block_size,
                                 use_xla=use_xla, word_weights=word_weights)
  assert_matches_reference(result, query, keys, valid, k, word_weights)
  np.testing.assert_array_equal(
      hamming.hamming_distance(query, keys, word_weights).numpy(),
      np_distances(query, keys, word_weights))
  with pytest.raises(ValueError, match="word_weights"):
    hamming.hamming_top_k(query, keys, valid, k=k, word_weights=(1,) * (words + 1))


def nearest_first(indices, distances, mask):
  """Reorders each row of an unsorted result nearest first (ties: more recent first)."""
  indices, distances, mask = (np.asarray(t) for t in (indices, distances, mask))
  order = np.lexsort((-indices, distances, ~mask), axis=-1)
  return tuple(np.take_along_axis(t, order, axis=-1) for t in (indices, distances, mask))


@pytest.mark.parametrize("batch,n,length,words,k,block_size",
                         [c[:5] + (b,) for c in CASES[::2] for b in (0, c[5])])
def test_unsorted_hamming_top_k_is_the_same_set(batch, n, length, words, k, block_size):
  query, keys, valid = random_case(length * 5 + k + words, batch, n, length, words)
  result = hamming.hamming_top_k(query, keys, valid, k=k, block_size=block_size,
                                 sort=False)
  assert_matches_reference(nearest_first(*result), query, keys, valid, k)


@pytest.mark.parametrize("block_size", [0, 4, 16])
def test_hamming_top_k_all_ties_go_to_most_recent(block_size):
  keys = np.full((1, 70, 1), 5, np.int64)
  query = np.full((1, 2, 1), 5, np.int64)
  valid = np.ones((1, 70), bool)
  valid[0, 69] = False
  idx, dist, mask = hamming.hamming_top_k(query, keys, valid, k=6, block_size=block_size)
  assert idx.numpy().tolist() == [[[68, 67, 66, 65, 64, 63]] * 2]
  assert not dist.numpy().any() and mask.numpy().all()


@pytest.mark.parametrize("block_size", [4, 8])
def test_padding_inside_blocks_never_wins(block_size):
  """Padding holding the query's exact signature must lose to any real behavior."""
  length, k = 64, 5
  keys = np.full((1, length, 1), 0b1111, np.int64)  # real: distance 4
  query = np.zeros((1, 1, 1), np.int64)
  valid = np.ones((1, length), bool)
  padding = np.arange(length) % 3 == 0
  keys[0, padding, 0] = 0  # distance 0 but padding
  valid[0, padding] = False
  result = hamming.hamming_top_k(query, keys, valid, k=k, block_size=block_size)
  assert_matches_reference(result, query, keys, valid, k)
  assert (result[1].numpy() == 4).all()


def test_left_padded_histories_as_the_model_feeds_them():
  rng = np.random.default_rng(3)
  batch, length, k = 5, 200, 12
  query, keys, _ = random_case(11, batch, 3, length, 1, distinct=4)
  lengths = np.array([0, 1, 11, 150, 200])
  valid = np.arange(length)[None, :] >= (length - lengths)[:, None]
  keys[~valid] = 0
  rng.shuffle(query)
  for block_size in (0, 4, 8):
    result = hamming.hamming_top_k(query, keys, valid, k=k, block_size=block_size)
    assert_matches_reference(result, query, keys, valid, k)


@pytest.mark.parametrize("use_xla", [False, True])
def test_default_block_size_and_unknown_static_shapes(use_xla):
  """Inside a tf.function with [None, None, 1] inputs (the serving graph's shapes)."""
  query, keys, valid = random_case(5, 1, 37, 700, 1, distinct=40)
  spec = [tf.TensorSpec([None, None, 1], tf.int64), tf.TensorSpec([None, None, 1], tf.int64),
          tf.TensorSpec([None, None], tf.bool)]

  @tf.function(input_signature=spec)
  def fn(q, key, v):
    return hamming.hamming_top_k(q, key, v, k=48, use_xla=use_xla)

  assert_matches_reference(fn(query, keys, valid), query, keys, valid, 48)
  # Another N reuses the function (and, under XLA, a bucketed compiled shape).
  assert_matches_reference(fn(query[:, :5], keys, valid), query[:, :5], keys, valid, 48)


@pytest.mark.parametrize("n", [1, 31, 32, 40])
def test_automatic_path_with_static_shapes(n):
  """Eager (static N): direct below 32 candidates per user, blockwise from 32 on."""
  query, keys, valid = random_case(n, 2, n, 800, 1, distinct=25)
  assert_matches_reference(hamming.hamming_top_k(query, keys, valid, k=48), query, keys,
                           valid, 48)


def test_block_sizes_by_length():
  assert hamming._resolve_block_size(100, 48, None) == 0
  assert hamming._resolve_block_size(1024, 48, None) == hamming.default_block_size(1024)
  assert hamming._resolve_block_size(None, 48, None) == hamming.default_block_size(None)
  assert hamming._resolve_block_size(10, 48, 4) == 4
  assert hamming._resolve_block_size(10000, 48, 0) == 0
  for length in (1024, 4096, 16384, 65536):
    assert hamming.default_block_size(length) > 1


def test_bucket_sizes_bound_padding_and_shape_count():
  n = np.arange(1, 5000)
  buckets = hamming.bucket_size(tf.constant(n, tf.int32)).numpy()
  assert (buckets >= n).all() and (buckets <= np.maximum(n * 1.25, 8)).all()
  assert len(np.unique(buckets[n <= 1000])) <= 40


# ------------------------------------------------------------------ select_nearest
@pytest.mark.parametrize("block_size", [0, 2, 8])
@pytest.mark.parametrize("length,k,max_distance", [
    (0, 3, 5), (5, 8, 3), (40, 6, 1), (97, 10, 64), (128, 16, 256)])
def test_select_nearest_equals_brute_force(length, k, max_distance, block_size):
  rng = np.random.default_rng(length + k + max_distance + block_size)
  distances = rng.integers(0, max_distance + 1, (3, 4, length)).astype(np.int32)
  valid = rng.random((3, length)) < 0.7
  if length:
    valid[1] = False
  result = hamming.select_nearest(distances, valid, k, block_size=block_size)
  expected = np_select(distances, valid, k)
  for got, want in zip(result, expected):
    np.testing.assert_array_equal(got.numpy(), want)


def test_select_nearest_default_path_on_long_history():
  rng = np.random.default_rng(9)
  distances = rng.integers(0, 3, (1, 3, 1500)).astype(np.int32)  # heavy ties
  valid = rng.random((1, 1500)) < 0.5
  result = hamming.select_nearest(distances, valid, 48)
  for got, want in zip(result, np_select(distances, valid, 48)):
    np.testing.assert_array_equal(got.numpy(), want)


# ------------------------------------------------------------------ export
def run_in_tf1_session(path, query, keys, valid):
  """Runs a saved (q, keys, valid) -> (indices, distances, mask) signature through
  tf.compat.v1's SavedModel loader: the outputs and the set of op types in its graph."""
  graph_ops = set()
  with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
    sig = meta.signature_def["serving_default"]
    feeds = {sig.inputs[name].name: value
             for name, value in (("q", query), ("keys", keys), ("valid", valid))}
    names = ("indices", "distances", "mask")
    out = sess.run([sig.outputs[name].name for name in names], feed_dict=feeds)
    for fn in graph.as_graph_def().library.function:
      graph_ops.update(node.op for node in fn.node_def)
  return out, graph_ops


@pytest.mark.parametrize("use_xla", [False, True])
def test_saved_model_loads_in_tf1_session(tmp_path, use_xla):
  """The graph TF Serving runs: SavedModel -> tf.compat.v1 loader -> Session.run."""
  query, keys, valid = random_case(21, 1, 9, 500, 1, distinct=30)
  module = tf.Module()
  spec = [tf.TensorSpec([None, None, 1], tf.int64, name="q"),
          tf.TensorSpec([None, None, 1], tf.int64, name="keys"),
          tf.TensorSpec([None, None], tf.bool, name="valid")]
  module.fn = tf.function(
      lambda q, key, v: dict(zip(("indices", "distances", "mask"),
                                 hamming.hamming_top_k(q, key, v, k=16, block_size=8,
                                                       use_xla=use_xla))),
      input_signature=spec)
  path = str(tmp_path / "m")
  tf.saved_model.save(module, path, signatures=module.fn.get_concrete_function())
  out, graph_ops = run_in_tf1_session(path, query, keys, valid)
  assert_matches_reference(out, query, keys, valid, 16)
  assert not graph_ops & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
