"""Target-aware statistics, ETA's distance statistics, retrieval controls and diagnostics:
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


def test_random_control_takes_exact_matches_first_and_is_fixed():
  tf.keras.utils.set_random_seed(2)
  feats = _samples(seed=2)
  model = build_model(ModelConfig(model="eta", retrieval="random", **SMALL))
  indices, distances, mask = (t.numpy() for t in model.long_block.retrieve(
      _context(model, feats)))
  again = model.long_block.retrieve(_context(model, feats))[0].numpy()
  np.testing.assert_array_equal(indices, again)
  items, k = feats[F.HIST_ITEM_ID], SMALL["top_k"]
  for b in range(len(items)):
    real = np.flatnonzero(items[b] > 0)
    matches = set(np.flatnonzero(items[b] == feats[F.TARGET_ITEM_ID][b]).tolist())
    chosen = set(indices[b, 0][mask[b, 0]].tolist())
    assert len(chosen) == min(k, real.size)
    assert chosen <= set(real.tolist())
    # Every exact match is retrieved when they fit, else only exact matches are.
    assert (matches <= chosen) if len(matches) <= k else (chosen <= matches)


def test_oracle_control_takes_top_k_of_full_attention():
  tf.keras.utils.set_random_seed(3)
  feats = _samples(seed=3)
  model = build_model(ModelConfig(model="eta", retrieval="oracle", **SMALL))
  context = _context(model, feats)
  scores = model.long_block.full_attention_scores(context).numpy()[:, 0]
  indices, _, mask = (t.numpy() for t in model.long_block.retrieve(context))
  valid = feats[F.HIST_ITEM_ID] > 0
  for b in range(len(scores)):
    real = np.flatnonzero(valid[b])
    want = real[np.argsort(-scores[b, real], kind="stable")[:SMALL["top_k"]]]
    assert set(indices[b, 0][mask[b, 0]].tolist()) == set(want.tolist())


@pytest.mark.parametrize("retrieval", ["hamming", "oracle"])
def test_retrieval_diagnostics_equal_numpy_reference(retrieval):
  tf.keras.utils.set_random_seed(4)
  feats = _samples(seed=4)
  model = build_model(ModelConfig(model="eta", retrieval=retrieval, **SMALL))
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
  if retrieval == "oracle":  # the top-k by the same scores holds the most mass
    assert got["attention_recall"][got["has_history"]].min() > 0.0


def test_din_has_no_target_stats_and_the_flag_turns_them_off():
  feats = _samples()
  for name, stats in (("din", False), ("din_long", True), ("sim_hard", True)):
    assert build_model(ModelConfig(model=name, **SMALL)).uses_target_stats is stats
  off = build_model(ModelConfig(model="eta", target_stats=False, **SMALL))
  assert not off.uses_target_stats and "target_stats" not in _context(off, feats)
  with pytest.raises(ConfigError, match="retrieval='best'"):
    ModelConfig(retrieval="best")


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


@pytest.mark.parametrize("signature_distance", ["category_first", "category_only"])
def test_category_first_retrieval_equals_numpy_reference(signature_distance):
  """Top-k = the k smallest (category distance, item distance, more recent first) among
  the real behaviors (category_only: of those, the ones at category distance 0); the
  returned distances are the summed ones, as with "sum"."""
  from eta_tf.ops import bits as bits_ops  # pylint: disable=g-import-not-at-top
  tf.keras.utils.set_random_seed(8)
  feats = _samples(seed=8)
  config = ModelConfig(model="eta", signature_fields="item_category",
                       signature_distance=signature_distance, **SMALL)
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
    if signature_distance == "category_only":
      order = order[category[b, order] == 0]
    chosen = indices[b][mask[b]]
    assert set(chosen.tolist()) == set(order.tolist())
    np.testing.assert_array_equal(np.sort(distances[b][mask[b]]),
                                  np.sort(item[b, order] + category[b, order]))
    same = real[buckets[b, real] == target_bucket[b]]
    if 0 < same.size < real.size:  # the candidate's category is retrieved first
      if same.size <= k:
        assert set(same.tolist()) <= set(chosen.tolist())
        if signature_distance == "category_only":  # SIM(hard)'s set, up to collisions
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


@pytest.mark.parametrize("signature_distance", ["sum", "category_first"])
def test_category_bias_attention_equals_numpy_reference(signature_distance):
  """retrieve_with_categories' category distances are the XOR + popcount distances of the
  category words at the retrieved positions; the block's attention adds
  SCORE_PACE x weight[h] to the score of every retrieved at category distance 0,
  then the masked softmax (numpy below)."""
  from eta_tf.ops import bits as bits_ops  # pylint: disable=g-import-not-at-top
  tf.keras.utils.set_random_seed(10)
  feats = _samples(seed=10)
  config = ModelConfig(model="eta", signature_fields="item_category",
                       signature_distance=signature_distance, category_bias=True, **SMALL)
  model = build_model(config)
  block = model.long_block
  block.category_bias.assign([0.4, -0.3])
  context = _context(model, feats)
  indices, _, mask, categories = (t.numpy() for t in block.retrieve_with_categories(context))
  history, candidate = block._signatures(context)  # pylint: disable=protected-access
  m = config.hash_bits
  hb = bits_ops.unpack_bits(history, 2 * m).numpy()
  cb = bits_ops.unpack_bits(candidate, 2 * m).numpy()
  category = _popcount_distance(cb[..., m:], hb[..., m:])  # [B, 1, L]
  want = np.where(mask, np.take_along_axis(category, indices, axis=-1), 0)
  np.testing.assert_array_equal(categories, want)
  assert (want[mask] == 0).any() and (want[mask] > 0).any()
  # Attention with the bias, in numpy, on the block's own projections.
  att = block.attention
  keys, values = (t.numpy() for t in att.project_gathered_keys(context["behavior"], indices))
  query = att.project_query(context["query"]).numpy()  # [B, 1, H, dh]
  scores = (query[:, :, None] * keys).sum(-1)  # [B, 1, k, H]
  scores += (want == 0)[..., None] * long_history.SCORE_PACE * np.array([0.4, -0.3])
  scores = np.where(mask[..., None], scores, -np.inf)
  weights = np.exp(scores - scores.max(axis=2, keepdims=True))
  weights = np.nan_to_num(weights / weights.sum(axis=2, keepdims=True))
  heads = (weights[..., None] * values).sum(axis=2)  # [B, 1, H, dh]
  expected = heads.reshape(heads.shape[:2] + (-1,)) @ att.output_kernel.numpy() + \
      att.output_bias.numpy()
  got = block(context).numpy()[..., :att.output_dim]
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
  before = model.predict_ctr(feats).numpy()
  model.freeze_signatures()  # export: frozen per-bucket tables, same scores
  np.testing.assert_allclose(model.predict_ctr(feats).numpy(), before, rtol=1e-5, atol=1e-6)


def test_category_split_attention_equals_numpy_reference():
  """category_split: the same scores, one masked softmax over the retrieved at category
  distance 0 and one over the rest, each through the output projection, concatenated
  (numpy below); an empty part is the output bias. Export scores equal training's."""
  tf.keras.utils.set_random_seed(13)
  feats = _samples(seed=13)
  config = ModelConfig(model="eta", signature_fields="item_category",
                       signature_distance="category_first", category_split=True, **SMALL)
  model = build_model(config)
  block = model.long_block
  context = _context(model, feats)
  indices, _, mask, categories = (t.numpy() for t in block.retrieve_with_categories(context))
  same = mask & (categories == 0)
  other = mask & (categories > 0)
  assert same.any() and other.any()
  att = block.attention
  keys, values = (t.numpy() for t in att.project_gathered_keys(context["behavior"], indices))
  query = att.project_query(context["query"]).numpy()  # [B, 1, H, dh]
  scores = (query[:, :, None] * keys).sum(-1)  # [B, 1, k, H]

  def attend(part):
    masked = np.where(part[..., None], scores, -np.inf)
    with np.errstate(invalid="ignore"):  # an empty part: its weights are 0 (nan_to_num)
      weights = np.exp(masked - masked.max(axis=2, keepdims=True))
      weights = np.nan_to_num(weights / weights.sum(axis=2, keepdims=True))
    heads = (weights[..., None] * values).sum(axis=2)  # [B, 1, H, dh]
    return heads.reshape(heads.shape[:2] + (-1,)) @ att.output_kernel.numpy() + \
        att.output_bias.numpy()

  expected = np.concatenate([attend(same), attend(other)], axis=-1)
  got = block(context).numpy()[..., :2 * att.output_dim]
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
  empty = ~same.any(axis=-1)  # [B, 1]: no retrieved of the candidate's category
  assert empty.any()
  np.testing.assert_allclose(got[empty][:, :att.output_dim],
                             np.broadcast_to(att.output_bias.numpy(),
                                             (empty.sum(), att.output_dim)), atol=1e-6)
  before = model.predict_ctr(feats).numpy()
  model.freeze_signatures()  # export: frozen per-bucket tables, same scores
  np.testing.assert_allclose(model.predict_ctr(feats).numpy(), before, rtol=1e-5, atol=1e-6)
  with pytest.raises(ConfigError, match="category_split=True"):
    ModelConfig(category_split=True, category_bias=True)


def test_large_category_bias_is_sim_hards_mask_with_a_fallback():
  """A large bias makes category_first attention SIM(hard)'s category mask (the
  category_only control's output) wherever the candidate's category was retrieved;
  where it was not, the block still attends over the other retrieved (not zeros)."""
  tf.keras.utils.set_random_seed(11)
  feats = _samples(seed=11)
  biased, only = (build_model(ModelConfig(model="eta", signature_fields="item_category",
                                          signature_distance=d, category_bias=True,
                                          **SMALL))
                  for d in ("category_first", "category_only"))
  only.set_weights(biased.get_weights())
  biased.long_block.category_bias.assign([100.0, 100.0])
  context = _context(biased, feats)
  _, _, mask, categories = (t.numpy()[:, 0] for t in
                            biased.long_block.retrieve_with_categories(context))
  dim = biased.long_block.attention.output_dim
  got = biased.long_block(context).numpy()[:, 0, :dim]
  want = only.long_block(context).numpy()[:, 0, :dim]
  matched = (mask & (categories == 0)).any(-1)
  fallback = mask.any(-1) & ~matched
  assert matched.any() and fallback.any()
  np.testing.assert_allclose(got[matched], want[matched], rtol=1e-5, atol=1e-6)
  # category_only has no behavior left there: its context is zero, the output its bias.
  bias = only.long_block.attention.output_bias.numpy()
  np.testing.assert_allclose(want[fallback], np.broadcast_to(bias, want[fallback].shape))
  assert np.abs(got[fallback] - want[fallback]).max() > 1e-3


def test_attention_hash_retrieval_equals_numpy_reference():
  """retrieval=attention_hash: bit i of a signature is [x . R[:, i] > 0] for x the
  per-head unit projections concatenated over heads (numpy below), and the retrieved k
  are the real behaviors at the k smallest Hamming distances of those signatures."""
  from eta_tf.ops import bits as bits_ops  # pylint: disable=g-import-not-at-top
  tf.keras.utils.set_random_seed(12)
  feats = _samples(seed=12)
  config = ModelConfig(model="eta", retrieval="attention_hash", **SMALL)
  model = build_model(config)
  block = model.long_block
  context = _context(model, feats)
  att = block.attention
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
  heads = (config.num_heads, config.head_dim)
  q = context["query"].numpy() @ att.query_kernel.numpy()
  k = context["behavior"].numpy() @ att.key_kernel.numpy()
  q = unit(q.reshape(q.shape[:-1] + heads)).reshape(q.shape)
  k = unit(k.reshape(k.shape[:-1] + heads)).reshape(k.shape)
  projection = block.attention_simhash.projection.numpy()
  query_signatures, key_signatures = block.attention_signatures(block.project_all(context))
  m = config.hash_bits
  # Its distances count over m bits, whatever the item signature's fields (two here).
  assert config.signature_fields == "item_category" and block.distance_bits == m
  qb = bits_ops.unpack_bits(query_signatures, m).numpy()
  kb = bits_ops.unpack_bits(key_signatures, m).numpy()
  np.testing.assert_array_equal(qb, q @ projection > 0)
  np.testing.assert_array_equal(kb, k @ projection > 0)
  indices, distances, mask = (t.numpy()[:, 0] for t in block.retrieve(context))
  hamming = _popcount_distance(qb, kb)[:, 0]  # [B, L]
  valid = context["valid"].numpy()
  for b in range(len(valid)):
    real = np.flatnonzero(valid[b])
    want = np.sort(hamming[b, real])[:config.top_k]
    np.testing.assert_array_equal(np.sort(distances[b][mask[b]]), want)
    np.testing.assert_array_equal(hamming[b, indices[b][mask[b]]], distances[b][mask[b]])
  # The block gathers the k from keys it projected once for the signatures: the same
  # attention as projecting the gathered behaviors (the other retrievals' path).
  index_t, _, mask_t = block.retrieve(context)
  keys, values = att.project_gathered_keys(context["behavior"], index_t)
  want = att.attend(att.project_query(context["query"]), keys, values, mask_t).numpy()
  got = block(context).numpy()
  np.testing.assert_allclose(got[..., :want.shape[-1]], want, rtol=1e-5, atol=1e-6)
