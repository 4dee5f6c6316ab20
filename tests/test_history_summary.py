"""HistorySummary against its numpy definition; eta with a summary scores the same per
candidate batch and per request (the summary is computed once per user)."""
import numpy as np
import pytest
import tensorflow as tf

from eta_tf import features as F
from eta_tf import saved_model
from eta_tf.config import ModelConfig
from eta_tf.models import build_model
from eta_tf.models.history_summary import HistorySummary
from eta_tf.models.history_summary import history_summary_reference
from eta_tf.testing import random_samples


@pytest.mark.parametrize("mode", ["mean", "attention"])
def test_summary_matches_numpy_reference(mode):
  rng = np.random.default_rng(0)
  behavior = rng.normal(size=(3, 7, 5)).astype(np.float32)
  valid = rng.random((3, 7)) < 0.6
  valid[1] = False  # a user without history -> zeros
  layer = HistorySummary(5, mode, num_queries=2, head_dim=3)
  got = layer(tf.constant(behavior), tf.constant(valid)).numpy()
  weights = {} if mode == "mean" else dict(
      queries=layer.queries.numpy(), key_kernel=layer.key_kernel.numpy(),
      value_kernel=layer.value_kernel.numpy())
  want = history_summary_reference(behavior, valid, mode, **weights)
  assert got.shape == (3, layer.output_dim) == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(got[1], 0.0)
  assert HistorySummary.from_config(layer.get_config()).output_dim == layer.output_dim


def test_interest_readout_matches_numpy_reference():
  rng = np.random.default_rng(4)
  behavior = rng.normal(size=(3, 7, 5)).astype(np.float32)
  query = rng.normal(size=(3, 6)).astype(np.float32)
  valid = rng.random((3, 7)) < 0.6
  valid[1] = False  # a user without history -> zeros, readout included
  layer = HistorySummary(5, "interests", num_queries=3, head_dim=4, query_dim=6)
  layer.readout_kernel.assign(rng.normal(size=(6, 4)).astype(np.float32))
  summary = layer(tf.constant(behavior), tf.constant(valid))
  got = layer.with_readout(summary, tf.constant(query)).numpy()
  want = history_summary_reference(
      behavior, valid, "interests", queries=layer.queries.numpy(),
      key_kernel=layer.key_kernel.numpy(), value_kernel=layer.value_kernel.numpy(),
      query=query, readout_kernel=layer.readout_kernel.numpy())
  assert got.shape == (3, layer.output_dim) == want.shape == (3, 5 + 3 * 4 + 4)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(got[1], 0.0)
  # The readout depends on the candidate: another query, another readout.
  other = layer.with_readout(summary, tf.constant(query[::-1].copy())).numpy()
  assert np.abs(other[0, -4:] - got[0, -4:]).max() > 1e-4
  np.testing.assert_array_equal(other[:, :-4], got[:, :-4])
  assert HistorySummary.from_config(layer.get_config()).output_dim == layer.output_dim


def test_interest_readout_needs_the_candidate_width():
  with pytest.raises(ValueError, match="query_dim=0"):
    HistorySummary(5, "interests")


def test_unknown_mode_names_the_value():
  with pytest.raises(ValueError, match="mode='max'"):
    HistorySummary(5, "max")


@pytest.mark.parametrize("mode", ["attention", "interests"])
def test_eta_with_summary_scores_requests_as_samples(mode):
  config = ModelConfig(model="eta", max_len=12, short_len=4, top_k=4, item_buckets=64,
                       category_buckets=16, history_summary=mode)
  model = build_model(config)
  rng = np.random.default_rng(1)
  history = {F.HIST_ITEM_ID: rng.integers(1, 30, size=9),
             F.HIST_CATEGORY_ID: rng.integers(1, 8, size=9),
             F.HIST_BEHAVIOR_TYPE: rng.integers(1, 4, size=9),
             F.HIST_TIMESTAMP: np.sort(rng.integers(1, 90, size=9))}
  items = rng.integers(1, 30, size=5).astype(np.int64)
  categories = rng.integers(1, 8, size=5).astype(np.int64)
  per_request = model.score_candidates(history, 100, items, categories).numpy()
  batch = {k: np.repeat(v[None, :], 5, axis=0) for k, v in history.items()}
  batch.update({F.TARGET_ITEM_ID: items, F.TARGET_CATEGORY_ID: categories,
                F.TARGET_TIMESTAMP: np.full(5, 100, np.int64)})
  per_sample = model.predict_ctr(batch).numpy()
  np.testing.assert_allclose(per_request, per_sample, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["attention", "interests"])
def test_export_with_summary_scores_as_trained(tmp_path, mode):
  """The exported graph (TF1 session loader, both signatures) scores as the in-process
  model to saved_model.SCORE_TOLERANCE; the summary's weights are in it."""
  config = ModelConfig(model="eta", max_len=16, short_len=4, top_k=4, item_buckets=256,
                       category_buckets=32, history_summary=mode)
  model = build_model(config)
  features, labels = random_samples(64, config.max_len, seed=2, min_history=1)
  labels[:2] = [0.0, 1.0]
  facts = saved_model.save_validated(model, model, str(tmp_path / "export"),
                                     saved_model.warmup_requests(features, 2, 8, 20),
                                     features, labels)
  assert facts["max_abs_score_diff"] <= saved_model.SCORE_TOLERANCE
  summary_weights = {id(v) for v in model.history_summary.trainable_weights}
  assert len(summary_weights) == (4 if mode == "interests" else 3)
  assert summary_weights <= {id(v) for v in model.trainable_variables}
