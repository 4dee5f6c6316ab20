"""Experimental eta blocks (eta_tf/experimental): retrieval controls and category
treatments, each against a numpy reference; presets and saved configs that name them."""
import json

import numpy as np
import pytest
import tensorflow as tf

from eta_tf import features as F
from eta_tf import presets
from eta_tf.config import ConfigError
from eta_tf.config import ModelConfig
from eta_tf.experimental import category_attention
from eta_tf.layers import TargetAttention
from eta_tf.models import build_model
from test_target_stats import SMALL
from test_target_stats import _context
from test_target_stats import _popcount_distance
from test_target_stats import _samples


def _small_block(preset: str, seed: int):
  """(config, model, long block, request context, samples) of preset at SMALL shapes,
  random weights and the samples of `seed`."""
  tf.keras.utils.set_random_seed(seed)
  config = presets.model_config(preset, **SMALL)
  model = build_model(config)
  feats = _samples(seed=seed)
  return config, model, model.long_block, _context(model, feats), feats


def test_random_control_takes_exact_matches_first_and_is_fixed():
  tf.keras.utils.set_random_seed(2)
  feats = _samples(seed=2)
  model = build_model(presets.model_config("eta_random", **SMALL))
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


@pytest.mark.parametrize("preset", ["eta_oracle", "eta_oracle_default"])
def test_oracle_control_takes_top_k_of_full_attention(preset):
  tf.keras.utils.set_random_seed(3)
  feats = _samples(seed=3)
  model = build_model(presets.model_config(preset, **SMALL))
  context = _context(model, feats)
  scores = model.long_block.full_attention_scores(context).numpy()[:, 0]
  indices, _, mask = (t.numpy() for t in model.long_block.retrieve(context))
  valid = feats[F.HIST_ITEM_ID] > 0
  for b in range(len(scores)):
    real = np.flatnonzero(valid[b])
    want = real[np.argsort(-scores[b, real], kind="stable")[:SMALL["top_k"]]]
    assert set(indices[b, 0][mask[b, 0]].tolist()) == set(want.tolist())



@pytest.mark.parametrize("signature_distance", ["sum", "category_first"])
def test_category_bias_attention_equals_numpy_reference(signature_distance):
  """retrieve_with_categories' category distances are the XOR + popcount distances of the
  category words at the retrieved positions; the block's attention adds
  SCORE_PACE x weight[h] to the score of every retrieved at category distance 0,
  then the masked softmax (numpy below)."""
  from eta_tf.ops import bits as bits_ops  # pylint: disable=g-import-not-at-top
  tf.keras.utils.set_random_seed(10)
  feats = _samples(seed=10)
  config = presets.model_config("eta_category_bias", signature_distance=signature_distance,
                                **SMALL)
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
  scores += (want == 0)[..., None] * category_attention.SCORE_PACE * np.array([0.4, -0.3])
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
  """eta_category_split: the same scores, one masked softmax over the retrieved at category
  distance 0 and one over the rest, each through the output projection, concatenated
  (numpy below); an empty part is the output bias. Export scores equal training's."""
  config, model, block, context, feats = _small_block("eta_category_split", seed=13)
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


def test_large_category_bias_is_sim_hards_mask_with_a_fallback():
  """A large bias makes category_first attention SIM(hard)'s category mask (the
  category_only control's output) wherever the candidate's category was retrieved;
  where it was not, the block still attends over the other retrieved (not zeros)."""
  tf.keras.utils.set_random_seed(11)
  feats = _samples(seed=11)
  biased, only = (build_model(presets.model_config(name, **SMALL))
                  for name in ("eta_category_bias", "eta_category_only"))
  extra = biased.long_block.category_bias  # biased = only's weights plus the bias
  only.set_weights([w.numpy() for w in biased.weights if w is not extra])
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
  """eta_attention_hash: bit i of a signature is [x . R[:, i] > 0] for x the
  per-head unit projections concatenated over heads (numpy below), and the retrieved k
  are the real behaviors at the k smallest Hamming distances of those signatures."""
  from eta_tf.ops import bits as bits_ops  # pylint: disable=g-import-not-at-top
  tf.keras.utils.set_random_seed(12)
  feats = _samples(seed=12)
  config = presets.model_config("eta_attention_hash", signature_fields="item_category",
                                **SMALL)
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


def test_attention_hash_category_first_retrieval_equals_numpy_reference():
  """eta_attention_hash_category: the k real behaviors with the smallest category
  distance · (m + 1) + attention-signature distance, ties to the more recent (numpy
  below, from the two signatures' bits); distances returned as their sum."""
  from eta_tf.ops import bits as bits_ops  # pylint: disable=g-import-not-at-top
  config, model, block, context, feats = _small_block("eta_attention_hash_category",
                                                      seed=13)
  m = config.hash_bits
  assert block.distance_bits == 2 * m
  query_signatures, key_signatures = block.attention_signatures(block.project_all(context))
  history_category, candidate_category = block.category_signatures(context)
  unpack = lambda x: bits_ops.unpack_bits(x, m).numpy()  # noqa: E731
  attention = _popcount_distance(unpack(query_signatures), unpack(key_signatures))
  category = _popcount_distance(unpack(candidate_category), unpack(history_category))
  assert (category > 0).any() and (category == 0).any()  # both kinds in the fixture
  indices, distances, mask = (t.numpy() for t in block.retrieve(context))
  valid = context["valid"].numpy()
  length = valid.shape[1]
  for b in range(valid.shape[0]):
    for n in range(indices.shape[1]):
      real = np.flatnonzero(valid[b])
      key = category[b, n, real] * (m + 1) + attention[b, n, real]
      order = np.lexsort((-real, key))[:config.top_k]  # nearest, then the more recent
      assert set(indices[b, n][mask[b, n]].tolist()) == set(real[order].tolist())
      got = distances[b, n][mask[b, n]]
      picked = indices[b, n][mask[b, n]]
      np.testing.assert_array_equal(got, category[b, n, picked] + attention[b, n, picked])
      assert mask[b, n].sum() == min(config.top_k, len(real)) and length >= len(real)
  before = model.predict_ctr(feats).numpy()
  model.freeze_signatures()  # export: the category table frozen, same scores
  np.testing.assert_allclose(model.predict_ctr(feats).numpy(), before, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="signature_fields='item'"):
    build_model(presets.model_config("eta_attention_hash_category", signature_fields="item",
                                     **SMALL))


def test_linear_readout_equals_numpy_reference():
  """eta_linear_readout: per candidate and head, the phi(q) · phi(k)-weighted mean of the
  real behaviors' values (numpy below), appended to the default block's output; zeros for
  a user without history; frozen signatures leave the scores unchanged."""
  from eta_tf.experimental import linear_readout  # pylint: disable=g-import-not-at-top
  config, model, block, context, feats = _small_block("eta_linear_readout", seed=17)
  valid = context["valid"].numpy().copy()
  valid[0] = False  # one user without history
  state, norm = block.user_state(context["behavior"], tf.constant(valid))
  got = block.readout(context["query"], state, norm).numpy()
  expected = linear_readout.linear_readout_reference(
      context["behavior"].numpy(), valid, context["query"].numpy(),
      block.readout_query_kernel.numpy(), block.readout_key_kernel.numpy(),
      block.readout_value_kernel.numpy(), config.num_heads)
  assert got.shape == (valid.shape[0], 1, config.num_heads * config.head_dim)
  assert valid[1:].any(axis=1).all() and np.abs(expected[1:]).max() > 1e-3
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(got[0], 0.0)
  default = super(linear_readout.LinearReadoutBlock, block).call(context).numpy()
  out = block(context).numpy()
  np.testing.assert_array_equal(out[..., :default.shape[-1]], default)
  before = model.predict_ctr(feats).numpy()
  model.freeze_signatures()  # export: the signature tables frozen, same scores
  np.testing.assert_allclose(model.predict_ctr(feats).numpy(), before, rtol=1e-5, atol=1e-6)


def test_dropped_linear_readout_zeroes_whole_readouts_in_training_only():
  """eta_linear_readout_dropped: in training each sample's readout is either kept whole
  or zeroed (both occur at summary_dropout 0.5); the default block's part is untouched;
  the model's training call reaches the block; serving never drops."""
  config, model, block, context, feats = _small_block("eta_linear_readout_dropped",
                                                      seed=19)
  assert config.summary_dropout == 0.5
  width = config.num_heads * config.head_dim
  serving = block(context, training=False).numpy()
  np.testing.assert_array_equal(block(context, training=False).numpy(), serving)
  tf.random.set_seed(0)
  trained = block(context, training=True).numpy()
  np.testing.assert_array_equal(trained[..., :-width], serving[..., :-width])
  kept = np.all(trained[..., -width:] == serving[..., -width:], axis=-1)
  dropped = np.all(trained[..., -width:] == 0.0, axis=-1)
  assert np.all(kept | dropped) and kept.any() and dropped.any()
  seen = []
  call = block.call
  block.call = lambda context, training=False: seen.append(training) or call(context,
                                                                             training)
  model(feats, training=True)
  model(feats, training=False)
  assert seen == [True, False]


def test_user_bias_offset_equals_numpy_reference_and_keeps_each_users_order():
  """eta_user_bias: the offset is the numpy MLP of [masked mean ‖ log(1 + count)]; the
  model's logits are the default block's tower logits plus it (one value per user), so
  a user's candidates keep their order; frozen signatures leave the scores unchanged."""
  from eta_tf.experimental import user_bias  # pylint: disable=g-import-not-at-top
  config, model, block, context, feats = _small_block("eta_user_bias", seed=23)
  rng = np.random.default_rng(0)  # trained-like weights: the offset's output starts at 0
  block.bias_output.assign(rng.normal(size=block.bias_output.shape).astype(np.float32))
  block.bias_output_bias.assign([0.3])
  valid = context["valid"].numpy().copy()
  valid[0] = False  # one user without history
  got = block.user_logit_offset({**context, "valid": tf.constant(valid)}).numpy()
  expected = user_bias.user_offset_reference(
      context["behavior"].numpy(), valid, block.bias_hidden.numpy(),
      block.bias_hidden_bias.numpy(), block.bias_output.numpy(),
      block.bias_output_bias.numpy())
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  assert got.shape == (valid.shape[0], 1) and np.ptp(got) > 1e-3
  offset = block.user_logit_offset(context).numpy()
  block.user_logit_offset = None  # shadows the method: the tower's logits alone
  plain = model._logits(context).numpy()  # pylint: disable=protected-access
  del block.user_logit_offset
  np.testing.assert_allclose(model._logits(context).numpy(),  # pylint: disable=protected-access
                             plain + offset, rtol=1e-5, atol=1e-5)
  history = {name: feats[name][1] for name in F.HISTORY_FEATURES}
  items = np.arange(3, 40, dtype=np.int64)
  scores = model.score_candidates(history, feats[F.TARGET_TIMESTAMP][1], items,
                                  items % 5 + 1).numpy()
  block.bias_output_bias.assign([-2.0])  # another offset: the same order
  shifted = model.score_candidates(history, feats[F.TARGET_TIMESTAMP][1], items,
                                   items % 5 + 1).numpy()
  assert not np.allclose(scores, shifted)
  np.testing.assert_array_equal(np.argsort(scores, kind="stable"),
                                np.argsort(shifted, kind="stable"))
  before = model.predict_ctr(feats).numpy()
  model.freeze_signatures()
  np.testing.assert_allclose(model.predict_ctr(feats).numpy(), before, rtol=1e-5, atol=1e-6)


def test_score_bias_and_sink_equal_numpy_reference():
  """Per-query attention with a score bias [B, N, k, H] and a sink logit [H]: softmax over
  the k real keys plus one zero-valued key of score sink[h] (numpy below)."""
  rng = np.random.default_rng(6)
  heads, head_dim = 2, 4
  layer = TargetAttention(heads, head_dim, query_dim=6, key_dim=8, normalize_qk=True)
  query = layer.project_query(rng.standard_normal((3, 2, 6)).astype(np.float32))
  keys, values = layer.project_keys(rng.standard_normal((3, 2, 5, 8)).astype(np.float32))
  mask = rng.random((3, 2, 5)) < 0.7
  mask[0, 1] = False  # nothing retrieved: zero context with or without the sink
  bias = rng.standard_normal((3, 2, 5, heads)).astype(np.float32)
  sink = np.array([1.5, -2.0], np.float32)
  got = category_attention.attend_biased(layer, query, keys, values, mask, bias, sink).numpy()
  q, k, v = query.numpy(), keys.numpy(), values.numpy()
  scores = np.einsum("bnhd,bnthd->bnth", q, k) + bias
  exp = np.where(mask[..., None], np.exp(scores), 0.0)
  weights = exp / (exp.sum(axis=2, keepdims=True) + np.exp(sink))
  context = np.einsum("bnth,bnthd->bnhd", weights, v).reshape(3, 2, heads * head_dim)
  want = context @ layer.output_kernel.numpy() + layer.output_bias.numpy()
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got[0, 1], layer.output_bias.numpy(), atol=1e-7)
  # A very low sink is plain softmax attention.
  plain = category_attention.attend_biased(layer, query, keys, values, mask, bias).numpy()
  low = np.full(heads, -1e4, np.float32)
  np.testing.assert_allclose(category_attention.attend_biased(
      layer, query, keys, values, mask, bias, low).numpy(), plain, atol=1e-6)


def test_every_experiment_has_a_preset_and_a_block():
  from eta_tf import experimental  # pylint: disable=g-import-not-at-top
  named = {p.fields.get("experiment") for p in presets.PRESETS.values() if p.experimental}
  assert named - {""} == set(experimental.EXPERIMENTAL_BLOCKS)
  for name in experimental.EXPERIMENTAL_BLOCKS:
    block = build_model(presets.model_config(name, **SMALL)).long_block
    assert type(block) is experimental.EXPERIMENTAL_BLOCKS[name]
  assert presets.PRODUCT == ("eta", "eta_no_summary", "eta_paper", "eta_xla", "din",
                             "din_long", "sim_hard", "avg", "sdim")
  with pytest.raises(ConfigError, match="preset='nope'"):
    presets.model_config("nope")
  with pytest.raises(ConfigError, match="experiment='eta_oracle'"):
    ModelConfig(model="din_long", experiment="eta_oracle")


@pytest.mark.parametrize("saved,experiment", [
    ({"retrieval": "hamming", "category_bias": False, "attention_sink": False,
      "category_split": False}, ""),
    ({"retrieval": "oracle"}, "eta_oracle"),
    ({"retrieval": "random", "signature_fields": "item"}, "eta_random"),
    ({"signature_distance": "category_only"}, "eta_category_only"),
    ({"category_bias": True, "attention_sink": True}, "eta_category_sink"),
    ({"category_split": True}, "eta_category_split"),
    # Category options were not read with item signatures: the product block.
    ({"category_bias": True, "signature_fields": "item"}, ""),
])
def test_configs_saved_with_moved_options_load_as_what_they_were(saved, experiment, tmp_path):
  fields = {**ModelConfig().to_dict(), **saved}
  del fields["experiment"]  # a config from before the field existed
  (tmp_path / "model_config.json").write_text(json.dumps(fields))
  config = ModelConfig.load(str(tmp_path))
  assert config.experiment == experiment
  if saved.get("signature_distance") == "category_only":
    assert config.signature_distance == "category_first"


@pytest.mark.parametrize("saved,message", [
    ({"retrieval": "best"}, "retrieval='best'"),
    ({"retrieval": "oracle", "category_split": True}, "retrieval='oracle', category_split"),
    ({"attention_sink": True}, "attention_sink=True"),
])
def test_moved_options_without_a_block_fail_naming_field_and_value(saved, message):
  with pytest.raises(ConfigError, match=message):
    ModelConfig.from_dict({**ModelConfig().to_dict(), **saved, "experiment": ""})
