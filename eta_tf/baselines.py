"""Training-free baselines: the floor any learned model must clear (numpy only).

Each heuristic scores an eval sample from the same features the model sees (its last L
behaviors and the candidate), or from the train split:

  item_count      occurrences of the candidate item in the sample's history
  category_count  occurrences of the candidate's category in the sample's history
  item_recency    how recently the candidate item occurred: -(seconds since its last
                  occurrence); samples without an occurrence rank below every sample with one
  item_popularity occurrences of the candidate item in the train split's behaviors
  item_action_count occurrences of the candidate item in the sample's history as a cart,
                  fav or buy (any behavior type but pv): on a log of views and purchases,
                  "the user put it in the cart" is a count too

A heuristic has no sign of its own (on some logs fresh items are the positives), so each is
read in the direction with the higher AUC; the same direction is used for its GAUC, and
`direction` (+1 / -1) records which one it was.
"""
from typing import Dict, Mapping

import numpy as np

from eta_tf import features as F
from eta_tf import metrics

HEURISTICS = ("item_count", "category_count", "item_recency", "item_popularity",
              "item_action_count")
# item_recency of "never occurred": below any real -(gap in seconds). Finite, so that the
# tie-aware AUC sees these samples as one tie (np.diff of two -inf is NaN, not 0).
_NO_OCCURRENCE = -1e18


def history_scores(batch: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """item_count, category_count, item_recency and item_action_count of a batch of samples.

  Args:
    batch: HIST_ITEM_ID / HIST_CATEGORY_ID / HIST_BEHAVIOR_TYPE / HIST_TIMESTAMP int64
      [B, L] (0 = padding), TARGET_ITEM_ID / TARGET_CATEGORY_ID / TARGET_TIMESTAMP int64
      [B]. Without HIST_BEHAVIOR_TYPE, no item_action_count.
  Returns:
    {name: float64 [B]}.
  """
  items = np.asarray(batch[F.HIST_ITEM_ID])
  valid = items > 0
  item_match = valid & (items == np.asarray(batch[F.TARGET_ITEM_ID])[:, None])
  category_match = valid & (np.asarray(batch[F.HIST_CATEGORY_ID]) ==
                            np.asarray(batch[F.TARGET_CATEGORY_ID])[:, None])
  gaps = (np.asarray(batch[F.TARGET_TIMESTAMP])[:, None] -
          np.asarray(batch[F.HIST_TIMESTAMP])).astype(np.float64)
  smallest_gap = np.where(item_match, gaps, np.inf).min(axis=1)
  scores = {
      "item_count": item_match.sum(axis=1).astype(np.float64),
      "category_count": category_match.sum(axis=1).astype(np.float64),
      "item_recency": np.where(np.isfinite(smallest_gap), -smallest_gap, _NO_OCCURRENCE),
  }
  if F.HIST_BEHAVIOR_TYPE in batch:
    action = np.asarray(batch[F.HIST_BEHAVIOR_TYPE]) > F.BEHAVIOR_TYPES["pv"]
    scores["item_action_count"] = (item_match & action).sum(axis=1).astype(np.float64)
  return scores


def item_counts(item_ids: np.ndarray) -> Dict[int, int]:
  """{item id: occurrences} of a flat array of item ids; 0 (padding) is skipped."""
  ids, counts = np.unique(np.asarray(item_ids).ravel(), return_counts=True)
  return {int(i): int(c) for i, c in zip(ids, counts) if i != 0}


def train_item_counts(data_dir: str) -> Dict[int, int]:
  """Occurrences of every item in the train split's behaviors (each stored once).

  The train records hold each user's behaviors before the eval period, so this is the
  popularity a model could have learned from the train period.
  """
  # TensorFlow only for this reader: the scores above are numpy and used without it.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from eta_tf import data  # pylint: disable=g-import-not-at-top
  spec = {F.HIST_ITEM_ID: tf.io.RaggedFeature(tf.int64)}
  ds = tf.data.TFRecordDataset(data.record_files(data_dir, F.TRAIN_SPLIT),
                               compression_type="GZIP")
  ds = ds.map(lambda s: tf.io.parse_single_example(s, spec)[F.HIST_ITEM_ID],
              num_parallel_calls=tf.data.AUTOTUNE)
  chunks = [items.numpy() for items in ds]
  return item_counts(np.concatenate(chunks)) if chunks else {}


def popularity_scores(target_items: np.ndarray, counts: Mapping[int, int]) -> np.ndarray:
  """float64 [B]: train occurrences of each candidate item (0 for unseen items)."""
  return np.asarray([counts.get(int(i), 0) for i in np.asarray(target_items).ravel()],
                    np.float64)


def directed_metrics(user_ids, labels, scores) -> Dict[str, float]:
  """AUC and GAUC of `scores` read in the direction with the higher AUC."""
  forward = metrics.auc(labels, scores)
  direction = -1 if forward < 0.5 else 1
  return {"auc": max(forward, 1.0 - forward) if forward == forward else forward,
          "gauc": metrics.gauc(user_ids, labels, direction * np.asarray(scores)),
          "direction": direction}


def evaluate_heuristics(user_ids, labels, scores: Mapping[str, np.ndarray]) -> dict:
  """{name: {auc, gauc, direction}} for every heuristic in `scores` (HEURISTICS order)."""
  return {name: directed_metrics(user_ids, labels, scores[name])
          for name in HEURISTICS if name in scores}
