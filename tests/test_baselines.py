"""Training-free baselines (eta_tf.baselines) against hand-computed and loop references."""
import collections
import json
import os

import numpy as np

from eta_tf import baselines
from eta_tf import features as F
from eta_tf import metrics


def _batch():
  # Two samples, L = 4, oldest first, 0 = padding.
  return {
      F.HIST_ITEM_ID: np.array([[0, 7, 5, 7], [3, 4, 4, 9]]),
      F.HIST_CATEGORY_ID: np.array([[0, 2, 2, 1], [1, 2, 2, 1]]),
      F.HIST_BEHAVIOR_TYPE: np.array([[0, 1, 2, 4], [1, 3, 1, 1]]),
      F.HIST_TIMESTAMP: np.array([[0, 100, 200, 300], [10, 20, 30, 40]]),
      F.TARGET_ITEM_ID: np.array([7, 8]),
      F.TARGET_CATEGORY_ID: np.array([2, 1]),
      F.TARGET_TIMESTAMP: np.array([1000, 50]),
  }


def test_history_scores_hand_computed():
  scores = baselines.history_scores(_batch())
  np.testing.assert_array_equal(scores["item_count"], [2, 0])
  np.testing.assert_array_equal(scores["category_count"], [2, 2])
  # Sample 0: the last 7 is at t=300, target at 1000 -> -700; sample 1: no 8 at all.
  np.testing.assert_array_equal(scores["item_recency"], [-700, -1e18])
  # Sample 0: item 7 as a pv (1) and a buy (4) -> one action; sample 1: no 8.
  np.testing.assert_array_equal(scores["item_action_count"], [1, 0])


def test_padding_never_matches_id_zero():
  batch = _batch()
  batch[F.TARGET_ITEM_ID] = np.array([0, 0])
  batch[F.TARGET_CATEGORY_ID] = np.array([0, 0])
  scores = baselines.history_scores(batch)
  np.testing.assert_array_equal(scores["item_count"], [0, 0])
  np.testing.assert_array_equal(scores["category_count"], [0, 0])


def test_popularity_and_direction():
  counts = baselines.item_counts(np.array([0, 5, 5, 9, 0, 5]))
  assert counts == {5: 3, 9: 1}
  np.testing.assert_array_equal(baselines.popularity_scores(np.array([5, 9, 4]), counts),
                                [3, 1, 0])
  users, labels = [1, 1, 2, 2], [1, 0, 1, 0]
  # Anti-predictive score: read reversed, AUC 1 and direction -1.
  out = baselines.directed_metrics(users, labels, [0.1, 0.9, 0.2, 0.8])
  assert out == {"auc": 1.0, "gauc": 1.0, "direction": -1}
  out = baselines.directed_metrics(users, labels, [0.9, 0.1, 0.2, 0.8])
  assert out == {"auc": 0.75, "gauc": 0.5, "direction": 1}


def _loop_reference(samples, train_counts):
  """Per-sample Python loops: the definitions, written out."""
  rows = collections.defaultdict(list)
  for feats, _ in samples:
    hist = list(zip(feats[F.HIST_ITEM_ID], feats[F.HIST_CATEGORY_ID],
                    feats[F.HIST_TIMESTAMP]))
    hits = [t for i, _, t in hist if i > 0 and i == feats[F.TARGET_ITEM_ID]]
    rows["item_count"].append(len(hits))
    rows["category_count"].append(sum(1 for i, c, _ in hist
                                      if i > 0 and c == feats[F.TARGET_CATEGORY_ID]))
    rows["item_recency"].append(-(feats[F.TARGET_TIMESTAMP] - max(hits)) if hits else -1e18)
    rows["item_popularity"].append(train_counts[feats[F.TARGET_ITEM_ID]])
    rows["item_action_count"].append(sum(
        1 for i, b in zip(feats[F.HIST_ITEM_ID], feats[F.HIST_BEHAVIOR_TYPE])
        if i > 0 and i == feats[F.TARGET_ITEM_ID] and b > F.BEHAVIOR_TYPES["pv"]))
  return rows


def test_eval_metrics_heuristics_equal_loop_reference(trained_eta, small_data_dir):
  """eval_metrics.json's heuristics are computed on exactly the model's eval samples."""
  from eta_tf import data  # pylint: disable=g-import-not-at-top
  model_dir, model = trained_eta
  with open(os.path.join(model_dir, "eval_metrics.json")) as f:
    written = json.load(f)["heuristics"]
  train_counts = collections.Counter()
  for record in data.read_records(small_data_dir, F.TRAIN_SPLIT):
    train_counts.update(int(i) for i in record[F.HIST_ITEM_ID])
  # conftest.train_small evaluates 2 eval batches of 64.
  ds = data.make_dataset(small_data_dir, F.EVAL_SPLIT, model.config.max_len, 64,
                         shuffle=False, include_user_id=True)
  samples = data.unbatch_numpy(ds.take(2))
  assert len(samples) == 128
  users = [s[F.USER_ID] for s, _ in samples]
  labels = [label for _, label in samples]
  reference = _loop_reference(samples, train_counts)
  assert sum(reference["item_count"]) > 0  # the fixture log has revisits
  assert set(written) == set(baselines.HEURISTICS)
  for name, scores in reference.items():
    forward = metrics.auc(labels, scores)
    sign = 1 if forward >= 0.5 else -1
    assert written[name]["direction"] == sign, name
    assert abs(written[name]["auc"] - max(forward, 1 - forward)) < 1e-12, name
    assert abs(written[name]["gauc"] -
               metrics.gauc(users, labels, sign * np.asarray(scores, float))) < 1e-12, name
