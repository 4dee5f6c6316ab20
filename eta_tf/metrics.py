"""Offline ranking metrics in numpy: AUC, GAUC, logloss (exact, tie-aware)."""
import numpy as np


def auc(labels, scores) -> float:
  """ROC AUC by the rank-sum (Mann-Whitney) formula; tied scores get average ranks.

  Returns NaN when only one class is present.
  """
  labels = np.asarray(labels, dtype=np.float64).ravel() > 0.5
  scores = np.asarray(scores, dtype=np.float64).ravel()
  positives = int(labels.sum())
  negatives = labels.size - positives
  if positives == 0 or negatives == 0:
    return float("nan")
  order = np.argsort(scores, kind="mergesort")
  sorted_scores = scores[order]
  ranks = np.empty(labels.size, dtype=np.float64)
  # Average rank (1-based) of each run of equal scores.
  boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
  starts = np.concatenate([[0], boundaries])
  ends = np.concatenate([boundaries, [labels.size]])
  run_rank = (starts + ends + 1) / 2.0
  ranks[order] = np.repeat(run_rank, ends - starts)
  rank_sum = ranks[labels].sum()
  return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def gauc(user_ids, labels, scores) -> float:
  """Per-user AUC weighted by the user's sample count; one-class users are skipped."""
  user_ids = np.asarray(user_ids).ravel()
  labels = np.asarray(labels).ravel()
  scores = np.asarray(scores).ravel()
  order = np.argsort(user_ids, kind="mergesort")
  user_ids, labels, scores = user_ids[order], labels[order], scores[order]
  boundaries = np.flatnonzero(np.diff(user_ids)) + 1
  total, weight = 0.0, 0
  for lab, sco in zip(np.split(labels, boundaries), np.split(scores, boundaries)):
    value = auc(lab, sco)
    if not np.isnan(value):
      total += value * lab.size
      weight += lab.size
  return float(total / weight) if weight else float("nan")


def logloss(labels, probabilities, eps: float = 1e-7) -> float:
  labels = np.asarray(labels, dtype=np.float64).ravel()
  p = np.clip(np.asarray(probabilities, dtype=np.float64).ravel(), eps, 1 - eps)
  return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
