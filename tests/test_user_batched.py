"""The user-batched path equals the per-sample path: same weights, same logits per target.

Records are hand-made to hit the edges: a user longer than L with many targets (several
chunks, windows that slide), ties in time (behaviors sharing a timestamp with each other
and with targets: 'strictly before' must exclude them), repeated items (equal Hamming
distances: ties must go to the more recent behavior in both layouts), targets before
the first behavior and a user without any history (empty windows).
"""
import json

import numpy as np
import pytest
import tensorflow as tf

from eta_tf import data
from eta_tf import features as F
from eta_tf.config import MODEL_NAMES
from eta_tf.config import ModelConfig
from eta_tf.models import build_model
from pipelines import records

SMALL = dict(max_len=12, short_len=4, top_k=5, item_buckets=64, category_buckets=8,
             item_dim=8, category_dim=4, num_heads=2, head_dim=4, mlp_units=(16,),
             time_buckets=12)


def _sequence(user, rng, num_behaviors, num_targets, item_pool=15):
  """UserSequence with ties in time and repeated items/categories."""
  times = np.sort(rng.integers(0, 400, num_behaviors)) * 60  # minutes apart: gap buckets
  items = rng.integers(1, item_pool, num_behaviors)
  history = np.stack([times, items, items % 4 + 1, rng.integers(1, 5, num_behaviors)],
                     axis=1).reshape(-1, 4)
  target_times = rng.choice(np.concatenate([times, rng.integers(0, 420, 8) * 60]),
                            num_targets) if num_behaviors else rng.integers(0, 99, num_targets)
  target_items = rng.integers(1, item_pool, num_targets)
  targets = np.stack([target_times, target_items, target_items % 4 + 1,
                      rng.integers(0, 2, num_targets)], axis=1)
  return records.UserSequence(user, history.astype(np.int64), targets.astype(np.int64))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  rng = np.random.default_rng(5)
  sequences = [_sequence(1, rng, 60, 45),  # > L behaviors, > one chunk of targets
               _sequence(2, rng, 5, 7),
               _sequence(3, rng, 0, 3),  # no history at all
               _sequence(4, rng, 20, 1),
               _sequence(5, rng, 13, 9)]
  root = tmp_path_factory.mktemp("user_batched")
  (root / "train").mkdir()
  with tf.io.TFRecordWriter(str(root / "train" / "part-00000-of-00001.tfrecord.gz"),
                            options="GZIP") as writer:
    for sequence in sequences:
      writer.write(records.encode_example(sequence))
  (root / F.SCHEMA_FILE).write_text(json.dumps(F.schema_dict()))
  return str(root)


def _keyed(rows):
  """Rows (user, time, item, category, label, logit) sorted by all but the logit."""
  rows = sorted(rows)
  return np.array([r[:5] for r in rows]), np.array([r[5] for r in rows])


def per_sample_logits(model, data_dir, max_len, training=False):
  ds = data.make_dataset(data_dir, "train", max_len, batch_size=16, shuffle=False)
  rows = []
  for features, labels in ds:
    logits = model(features, training=training).numpy()
    for i, logit in enumerate(logits):
      rows.append((int(features[F.USER_ID][i]), int(features[F.TARGET_TIMESTAMP][i]),
                   int(features[F.TARGET_ITEM_ID][i]), int(features[F.TARGET_CATEGORY_ID][i]),
                   float(labels[i]), float(logit)))
  return _keyed(rows)


def user_batched_logits(model, data_dir, max_len, targets_per_chunk=7, batch_size=21,
                        training=False):
  ds = data.make_user_dataset(data_dir, "train", max_len, batch_size=batch_size,
                              shuffle=False, targets_per_chunk=targets_per_chunk)
  rows = []
  for features, labels in ds:
    logits = model(features, training=training).numpy()
    assert logits.shape == labels.shape
    for g, c in zip(*np.nonzero(features[F.TARGET_WEIGHT].numpy())):
      rows.append((int(features[F.USER_ID][g]), int(features[F.TARGET_TIMESTAMP][g, c]),
                   int(features[F.TARGET_ITEM_ID][g, c]),
                   int(features[F.TARGET_CATEGORY_ID][g, c]), float(labels[g, c]),
                   float(logits[g, c])))
  return _keyed(rows)


def _perturbed_model(config, seed):
  """A model with random non-default weights (biases and scales away from init)."""
  tf.keras.utils.set_random_seed(seed)
  model = build_model(config)
  rng = np.random.default_rng(seed)
  for variable in model.trainable_variables:
    variable.assign(variable + rng.normal(0, 0.3, variable.shape).astype(np.float32))
  return model


MODEL_CONFIGS = [(name, {}) for name in MODEL_NAMES] + [
    ("eta", {"signature_fields": "item"}),
    ("eta", {"signature_distance": "sum"}),
    ("eta", {"target_stats": False}),
    ("din_long", {"target_stats": False}),
    ("eta", {"history_summary": "none"}),
    ("eta", {"history_summary": "mean"}),
    ("eta", {"history_summary": "interests"}),
]


@pytest.mark.parametrize("model_name,overrides", MODEL_CONFIGS, ids=[
    "-".join([name] + [f"{k}={v}" for k, v in o.items()]) for name, o in MODEL_CONFIGS])
def test_user_batched_logits_equal_per_sample_logits(data_dir, model_name, overrides):
  config = ModelConfig(model=model_name, **{**SMALL, **overrides})
  model = _perturbed_model(config, seed=3)
  keys, expected = per_sample_logits(model, data_dir, config.max_len)
  got_keys, got = user_batched_logits(model, data_dir, config.max_len)
  np.testing.assert_array_equal(got_keys, keys)  # every target once, same labels
  assert len(keys) == 65 and np.std(expected) > 0.1
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_chunking_does_not_change_logits(data_dir):
  """One target per row, or all of a user's targets in one row: same logits."""
  config = ModelConfig(model="eta", **SMALL)
  model = _perturbed_model(config, seed=4)
  _, one = user_batched_logits(model, data_dir, config.max_len, 1, 8)
  _, many = user_batched_logits(model, data_dir, config.max_len, 64, 64)
  np.testing.assert_allclose(one, many, atol=1e-5, rtol=0)


def test_eta_ties_go_to_the_more_recent_behavior():
  """Identical behaviors (one item, one time gap bucket): the top-k must be the most
  recent k of them in both layouts, so the retrieved time gaps decide the logit."""
  config = ModelConfig(model="eta", **{**SMALL, "top_k": 2, "target_stats": False})
  model = _perturbed_model(config, seed=6)
  minutes = np.array([1, 2, 3, 1000, 2000, 5000, 5001, 5002, 5003, 5004], np.int64)
  times = minutes * 60
  n = len(times)
  history = {F.HIST_ITEM_ID: np.full(n, 7), F.HIST_CATEGORY_ID: np.full(n, 3),
             F.HIST_BEHAVIOR_TYPE: np.ones(n, np.int64), F.HIST_TIMESTAMP: times}
  target_times = np.array([5004 * 60 + 1, 1001 * 60, 3 * 60])
  per_sample = {name: np.stack([np.concatenate(
      [np.zeros(config.max_len, np.int64), v[times < t]])[-config.max_len:]
      for t in target_times]) for name, v in history.items()}
  per_sample.update({F.TARGET_ITEM_ID: np.full(3, 7), F.TARGET_CATEGORY_ID: np.full(3, 3),
                     F.TARGET_TIMESTAMP: target_times})
  user = {name: v[None, :] for name, v in history.items()}
  user.update({F.TARGET_ITEM_ID: np.full([1, 3], 7), F.TARGET_CATEGORY_ID: np.full([1, 3], 3),
               F.TARGET_TIMESTAMP: target_times[None, :],
               F.TARGET_HISTORY_END: np.searchsorted(times, target_times)[None, :],
               F.TARGET_WEIGHT: np.ones([1, 3], np.float32)})
  expected = model(per_sample).numpy()
  np.testing.assert_allclose(model(user).numpy()[0], expected, atol=1e-5, rtol=0)
  # The control: the oldest two instead of the most recent two give another logit.
  oldest = dict(per_sample)
  for name in F.HISTORY_FEATURES:
    oldest[name] = per_sample[name].copy()
    oldest[name][0, -2:] = history[name][:2]
  assert abs(model(oldest).numpy()[0] - expected[0]) > 1e-4


def test_loss_is_the_mean_over_real_targets(data_dir):
  config = ModelConfig(model="din_long", **SMALL)
  model = _perturbed_model(config, seed=8)
  batch = next(iter(data.make_user_dataset(data_dir, "train", config.max_len, 70,
                                           shuffle=False, targets_per_chunk=7)))
  features, labels = batch
  weight = features[F.TARGET_WEIGHT].numpy()
  assert (weight == 0).any()  # padding targets exist and must not count
  logits = model(features).numpy()[weight > 0]
  y = labels.numpy()[weight > 0]
  expected = np.mean(np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits))))
  np.testing.assert_allclose(model.compute_loss(batch).numpy(), expected, rtol=1e-5)


def test_experimental_blocks_train_per_sample(data_dir, capsys):
  """An experimental eta block has no user-batched path: the model refuses such a batch
  naming the experiment, and training falls back to per-sample batches, saying so."""
  from eta_tf import config as config_lib  # pylint: disable=g-import-not-at-top
  from eta_tf import training  # pylint: disable=g-import-not-at-top
  config = ModelConfig(model="eta", experiment="eta_random", **SMALL)
  model = build_model(config)
  features, _ = next(iter(data.make_user_dataset(data_dir, "train", config.max_len, 14,
                                                 shuffle=False, targets_per_chunk=7)))
  with pytest.raises(ValueError, match="experiment='eta_random'.*--batching=sample"):
    model(features)
  ds = training.train_dataset(config, config_lib.TrainConfig(batch_size=8), data_dir)
  assert F.TARGET_HISTORY_END not in ds.element_spec[0]
  assert "eta_random" in capsys.readouterr().out


def test_count_samples_counts_user_batched_rows(data_dir):
  ds = data.make_user_dataset(data_dir, "train", 12, batch_size=7, shuffle=False,
                              targets_per_chunk=7)
  rows = sum(int(features[F.TARGET_WEIGHT].shape[0]) for features, _ in ds)
  assert rows == data.count_samples(data_dir, "train", targets_per_chunk=7) == 7 + 1 + 1 + 1 + 2
  assert data.count_samples(data_dir, "train") == 65
