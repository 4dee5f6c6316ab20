"""Target-aware statistics, ETA's distance statistics, retrieval and its diagnostics:
each computed in-graph and checked against a numpy reference."""
import numpy as np
import pytest
import tensorflow as tf

from eta_tf import features as F
from eta_tf.config import ConfigError
from eta_tf.config import ModelConfig
from eta_tf.models import build_model
from eta_tf.models import long_history
from eta_tf.models import target_stats as ts
from eta_tf.testing import random_samples

SMALL = dict(max_len=32, short_len=4, top_k=6, item_buckets=512, category_buckets=32,
             item_dim=16, category_dim=8, num_heads=2, head_dim=8, mlp_units=(32,))


def _samples(n=16, seed=0):
  # 20 items over L = 32: many repeats; min_history=0 also gives empty histories.
  feats, _ = random_samples(n, SMALL["max_len"], num_items=20, seed=seed)
  return feats


def test_target_stats_equal_numpy_reference():
  feats = _samples()
  rng = np.random.default_rng(0)
  # N = 3 candidates per user: the target, an item from the history, a fresh one.
  candidates = np.stack([feats[F.TARGET_ITEM_ID], feats[F.HIST_ITEM_ID][:, -3],
                         rng.integers(100, 200, len(feats[F.TARGET_ITEM_ID]))], axis=1)
  categories = candidates % 10 + 1
  got = ts.target_stats(
      tf.constant(feats[F.HIST_ITEM_ID]), tf.constant(feats[F.HIST_CATEGORY_ID]),
      tf.constant(feats[F.HIST_TIMESTAMP]), tf.constant(feats[F.HIST_ITEM_ID] > 0),
      tf.constant(candidates), tf.constant(categories),
      tf.constant(feats[F.TARGET_TIMESTAMP])).numpy()
  want = ts.target_stats_reference(feats[F.HIST_ITEM_ID], feats[F.HIST_CATEGORY_ID],
                                   feats[F.HIST_TIMESTAMP], candidates, categories,
                                   feats[F.TARGET_TIMESTAMP])
  assert got.shape == (16, 3, ts.NUM_TARGET_STATS)
  np.testing.assert_allclose(got, want, atol=1e-6)
  assert (want[:, 1, 1] == 1).sum() > 0 and (want[:, 2, 1] == 0).all()  # both cases hit
  assert (got >= 0).all() and (got <= 1 + 1e-6).all()


def _direct(*args):
  """target_stats through its N x L comparisons (a known N below the sorted path's)."""
  hist_items, hist_cats, times, valid, items, cats, now = args
  out = [ts.target_stats(hist_items, hist_cats, times, valid, items[:, i:i + 1],
                         cats[:, i:i + 1], now) for i in range(items.shape[1])]
  return tf.concat(out, axis=1).numpy()


@pytest.mark.parametrize("dynamic", [False, True])
def test_many_candidates_take_the_sorted_path_with_the_same_values(dynamic):
  """N >= MIN_SORTED_CANDIDATES (or unknown N, as at serving): one sort of the history per
  field. Equal to the N x L path on hostile histories (timestamps out of order, padding
  inside the history with nonzero ids, category 0 on real behaviors, candidate ids 0 and
  never seen, all-padding and empty histories) and to the numpy reference on ordered ones."""
  rng = np.random.default_rng(3)
  batch, length, n = 5, 40, 24
  items = rng.integers(1, 12, (batch, length))
  cats = rng.integers(0, 4, (batch, length))
  times = np.sort(rng.integers(0, 10 ** 6, (batch, length)), axis=1)
  valid = items > 0
  items[1, :10] = 0                    # left padding
  valid = items > 0
  cand_items = rng.integers(0, 15, (batch, n))
  cand_items[:, 0] = 0                 # id 0: matches only padding, which never counts
  cand_cats = rng.integers(0, 5, (batch, n))
  now = times.max(axis=1) + rng.integers(0, 5000, batch)
  now[2] = times[2].min()              # gaps clipped at 0
  items[4] = 0                         # a user without history
  valid = items > 0
  args = [tf.constant(x, tf.int64) for x in (items, cats, times)] + [tf.constant(valid)] + \
         [tf.constant(x, tf.int64) for x in (cand_items, cand_cats, now)]
  assert n >= ts.MIN_SORTED_CANDIDATES

  def sorted_path(*a):
    return ts.target_stats(*a)
  if dynamic:
    spec = [tf.TensorSpec([None, length], tf.int64)] * 3 + [
        tf.TensorSpec([None, length], tf.bool)] + [tf.TensorSpec([None, None], tf.int64)] * 2 + [
            tf.TensorSpec([None], tf.int64)]
    sorted_path = tf.function(sorted_path, input_signature=spec)
  got = sorted_path(*args).numpy()
  np.testing.assert_allclose(got, _direct(*args), atol=1e-6)
  want = ts.target_stats_reference(items, cats, times, cand_items, cand_cats, now)
  np.testing.assert_allclose(got, want, atol=1e-6)
  assert (want[:, :, 1] == 1).any() and (want[:, :, 1] == 0).any()
  # Timestamps out of order and padding with nonzero ids: the same values as N x L.
  shuffled = times.copy()
  rng.shuffle(shuffled.T)
  hostile_valid = valid & (rng.random(valid.shape) < 0.8)
  args[2], args[3] = tf.constant(shuffled, tf.int64), tf.constant(hostile_valid)
  np.testing.assert_allclose(sorted_path(*args).numpy(), _direct(*args), atol=1e-6)
  # A zero-width history (L = 0): what the N x L path gives.
  empty = [tf.zeros([2, 0], tf.int64)] * 3 + [tf.zeros([2, 0], tf.bool)] + [
      tf.constant(rng.integers(0, 5, (2, n)), tf.int64)] * 2 + [tf.constant([5, 6], tf.int64)]
  np.testing.assert_allclose(ts.target_stats(*empty).numpy(), _direct(*empty), atol=1e-6)


def test_target_stats_hand_computed():
  # L = 4: items [0, 7, 5, 7] at t = [0, 60, 120, 180] s; candidate 7 at t = 3720 s.
  got = ts.target_stats(tf.constant([[0, 7, 5, 7]], tf.int64),
                        tf.constant([[0, 2, 2, 1]], tf.int64),
                        tf.constant([[0, 60, 120, 180]], tf.int64),
                        tf.constant([[False, True, True, True]]),
                        tf.constant([[7]], tf.int64), tf.constant([[2]], tf.int64),
                        tf.constant([3720], tf.int64)).numpy()[0, 0]
  log5 = np.log1p(4)
  expected = [np.log1p(2) / log5, 1, 1 - np.log1p(59) / 20, 1.0,  # last 7: index 3
              np.log1p(2) / log5, 1, 1 - np.log1p(60) / 20, 1 - np.log1p(1) / log5,
              np.log1p(3) / log5, 2 / 3]
  np.testing.assert_allclose(got, expected, atol=1e-6)


def test_distance_stats_equal_numpy_reference():
  rng = np.random.default_rng(1)
  distances = rng.integers(0, 20, (4, 3, 6)).astype(np.int32)
  mask = rng.random((4, 3, 6)) < 0.7
  mask[0, 0] = False  # nothing retrieved
  got = long_history.distance_stats(tf.constant(distances), tf.constant(mask), 6,
                                    64).numpy()
  for b in range(4):
    for n in range(3):
      d = distances[b, n][mask[b, n]]
      want = [np.log1p((d == 0).sum()) / np.log1p(6), np.log1p((d <= 8).sum()) /
              np.log1p(6), (d.min() if d.size else 64) / 64]
      np.testing.assert_allclose(got[b, n], want, atol=1e-6)


def _context(model, feats):
  return model._context(  # pylint: disable=protected-access
      model._history(feats), tf.constant(feats[F.TARGET_ITEM_ID])[:, None],  # pylint: disable=protected-access
      tf.constant(feats[F.TARGET_CATEGORY_ID])[:, None],
      tf.constant(feats[F.TARGET_TIMESTAMP]))


@pytest.mark.parametrize("experiment", ["", "eta_oracle"])
def test_retrieval_diagnostics_equal_numpy_reference(experiment):
  tf.keras.utils.set_random_seed(4)
  feats = _samples(seed=4)
  model = build_model(ModelConfig(model="eta", experiment=experiment, **SMALL))
  context = _context(model, feats)
  got = {k: v.numpy() for k, v in model.retrieval_diagnostics(feats).items()}
  indices, distances, mask = (t.numpy()[:, 0] for t in model.long_block.retrieve(context))
  scores = model.long_block.full_attention_scores(context).numpy()[:, 0]
  valid = feats[F.HIST_ITEM_ID] > 0
  buckets = context["history_category_bucket"].numpy()
  target_bucket = context["candidate_category_bucket"].numpy()[:, 0]
  for b in range(len(scores)):
    chosen = indices[b][mask[b]]
    assert got["has_history"][b] == (chosen.size > 0)
    if not chosen.size:
      continue
    weights = np.exp(scores[b][valid[b]] - scores[b][valid[b]].max())
    weights /= weights.sum()
    full = np.zeros(len(valid[b]))
    full[valid[b]] = weights
    np.testing.assert_allclose(got["attention_recall"][b], full[chosen].sum(), atol=1e-5)
    np.testing.assert_allclose(got["distance0_share"][b],
                               (distances[b][mask[b]] == 0).mean(), atol=1e-6)
    np.testing.assert_allclose(got["same_category_share"][b],
                               (buckets[b][chosen] == target_bucket[b]).mean(), atol=1e-6)
  if experiment == "eta_oracle":  # the top-k by the same scores holds the most mass
    assert got["attention_recall"][got["has_history"]].min() > 0.0


def test_din_has_no_target_stats_and_the_flag_turns_them_off():
  feats = _samples()
  for name, stats in (("din", False), ("din_long", True), ("sim_hard", True)):
    assert build_model(ModelConfig(model=name, **SMALL)).uses_target_stats is stats
  off = build_model(ModelConfig(model="eta", target_stats=False, **SMALL))
  assert not off.uses_target_stats and "target_stats" not in _context(off, feats)
  with pytest.raises(ConfigError, match="experiment='best'"):
    ModelConfig(experiment="best")


def test_item_category_signature_equals_numpy_reference_and_frozen_tables():
  """SimHash(item) ‖ SimHash(category): bits = sign of a fixed projection per field; the
  frozen export tables give the same signatures."""
  from eta_tf.layers.hashing import simhash_projection  # pylint: disable=g-import-not-at-top
  from eta_tf.ops import bits as bits_ops  # pylint: disable=g-import-not-at-top
  tf.keras.utils.set_random_seed(6)
  feats = _samples(seed=6)
  config = ModelConfig(model="eta", signature_fields="item_category", **SMALL)
  model = build_model(config)
  history, candidate = model.long_block._signatures(  # pylint: disable=protected-access
      _context(model, feats))
  assert history.shape[-1] == 2 * config.hash_words
  emb = model.embedding
  item_table = emb.item_embedding.embeddings.numpy()
  category_table = emb.category_embedding.embeddings.numpy()
  item_bits = item_table @ simhash_projection(config.item_dim, config.hash_bits,
                                              config.hash_seed) > 0
  category_bits = category_table @ simhash_projection(
      config.category_dim, config.hash_bits, config.hash_seed + 1) > 0
  item_buckets = emb.item_buckets(feats[F.HIST_ITEM_ID]).numpy()
  category_buckets = emb.category_buckets(feats[F.HIST_CATEGORY_ID]).numpy()
  got = bits_ops.unpack_bits(history, 2 * config.hash_bits).numpy()
  np.testing.assert_array_equal(got[..., :config.hash_bits], item_bits[item_buckets])
  np.testing.assert_array_equal(got[..., config.hash_bits:],
                                category_bits[category_buckets])
  got = bits_ops.unpack_bits(candidate, 2 * config.hash_bits).numpy()[:, 0]
  np.testing.assert_array_equal(
      got[:, config.hash_bits:],
      category_bits[emb.category_buckets(feats[F.TARGET_CATEGORY_ID]).numpy()])
  before = model.predict_ctr(feats).numpy()
  model.freeze_signatures()
  frozen = _context(model, feats)
  assert "history_category_signatures" in frozen
  frozen_history, _ = model.long_block._signatures(frozen)  # pylint: disable=protected-access
  np.testing.assert_array_equal(frozen_history.numpy(), history.numpy())
  np.testing.assert_allclose(model.predict_ctr(feats).numpy(), before, atol=1e-6)


def _popcount_distance(query_bits, key_bits):
  """Numpy Hamming distances of unpacked bits: [B, N, m] x [B, L, m] -> [B, N, L]."""
  return (query_bits[:, :, None, :] != key_bits[:, None, :, :]).sum(-1)


def test_category_first_distances_equal_numpy_reference():
  """category distance · (m + 1) + item distance, from XOR + popcount per field."""
  from eta_tf.ops import bits as bits_ops  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(7)
  m = 64
  # Few distinct rows so that equal and near signatures both occur.
  pool = rng.integers(-2 ** 63, 2 ** 63 - 1, (5, 2), dtype=np.int64)
  history = pool[rng.integers(0, 5, (3, 10))]  # [B, L, 2W] item word ‖ category word
  candidate = pool[rng.integers(0, 5, (3, 2))]
  from eta_tf.ops import hamming  # pylint: disable=g-import-not-at-top
  got = hamming.hamming_distance(tf.constant(candidate), tf.constant(history),
                                 long_history.category_first_weights(1, m)).numpy()
  bits = lambda s: bits_ops.unpack_bits(tf.constant(s), 2 * m).numpy()  # noqa: E731
  hb, cb = bits(history), bits(candidate)
  item = _popcount_distance(cb[..., :m], hb[..., :m])
  category = _popcount_distance(cb[..., m:], hb[..., m:])
  np.testing.assert_array_equal(got, category * (m + 1) + item)
  assert (category == 0).any() and (category > 0).any() and (item == 0).any()


@pytest.mark.parametrize("experiment", ["", "eta_category_only"])
def test_category_first_retrieval_equals_numpy_reference(experiment):
  """Top-k = the k smallest (category distance, item distance, more recent first) among
  the real behaviors (category_only: of those, the ones at category distance 0); the
  returned distances are the summed ones, as with "sum"."""
  from eta_tf.ops import bits as bits_ops  # pylint: disable=g-import-not-at-top
  tf.keras.utils.set_random_seed(8)
  feats = _samples(seed=8)
  config = ModelConfig(model="eta", signature_fields="item_category",
                       signature_distance="category_first", experiment=experiment, **SMALL)
  model = build_model(config)
  context = _context(model, feats)
  history, candidate = model.long_block._signatures(context)  # pylint: disable=protected-access
  indices, distances, mask = (t.numpy()[:, 0] for t in model.long_block.retrieve(context))
  m, k = config.hash_bits, config.top_k
  hb = bits_ops.unpack_bits(history, 2 * m).numpy()
  cb = bits_ops.unpack_bits(candidate, 2 * m).numpy()
  item = _popcount_distance(cb[..., :m], hb[..., :m])[:, 0]
  category = _popcount_distance(cb[..., m:], hb[..., m:])[:, 0]
  valid = context["valid"].numpy()
  buckets = context["history_category_bucket"].numpy()
  target_bucket = context["candidate_category_bucket"].numpy()[:, 0]
  checked_mixed = False
  for b in range(len(valid)):
    real = np.flatnonzero(valid[b])
    # lexsort: last key is primary; -position puts the more recent first among ties.
    order = real[np.lexsort((-real, item[b, real], category[b, real]))][:k]
    if experiment == "eta_category_only":
      order = order[category[b, order] == 0]
    chosen = indices[b][mask[b]]
    assert set(chosen.tolist()) == set(order.tolist())
    np.testing.assert_array_equal(np.sort(distances[b][mask[b]]),
                                  np.sort(item[b, order] + category[b, order]))
    same = real[buckets[b, real] == target_bucket[b]]
    if 0 < same.size < real.size:  # the candidate's category is retrieved first
      if same.size <= k:
        assert set(same.tolist()) <= set(chosen.tolist())
        if experiment == "eta_category_only":  # SIM(hard)'s set, up to collisions
          assert set(chosen.tolist()) == set(same.tolist())
      else:
        assert set(chosen.tolist()) <= set(same.tolist())
      checked_mixed = True
  assert checked_mixed
  before = model.predict_ctr(feats).numpy()  # training-time signatures
  model.freeze_signatures()  # export: frozen per-bucket tables
  np.testing.assert_allclose(model.predict_ctr(feats).numpy(), before, rtol=1e-5, atol=1e-6)


def test_item_signatures_rank_by_their_one_distance():
  """signature_distance is not read with item signatures (one field): category_first
  there retrieves exactly what sum does; an unknown distance is a ConfigError."""
  tf.keras.utils.set_random_seed(9)
  feats = _samples(seed=9)
  models = [build_model(ModelConfig(model="eta", signature_fields="item",
                                    signature_distance=d, **SMALL))
            for d in ("sum", "category_first")]
  models[1].set_weights(models[0].get_weights())
  got = [[t.numpy() for t in m.long_block.retrieve(_context(m, feats))] for m in models]
  for a, b in zip(*got):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ConfigError, match="signature_distance='nearest'"):
    ModelConfig(signature_fields="item_category", signature_distance="nearest")


