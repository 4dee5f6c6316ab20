"""AUC/GAUC/logloss against brute-force definitions."""
import numpy as np

from eta_tf import metrics


def brute_auc(labels, scores):
  pos = [s for l, s in zip(labels, scores) if l]
  neg = [s for l, s in zip(labels, scores) if not l]
  wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
  return wins / (len(pos) * len(neg))


def test_auc_matches_pairwise_definition_with_ties():
  rng = np.random.default_rng(0)
  for _ in range(20):
    n = rng.integers(2, 60)
    labels = rng.random(n) < 0.4
    labels[0], labels[1] = True, False
    scores = rng.integers(0, 5, n).astype(float)  # many ties
    assert abs(metrics.auc(labels, scores) - brute_auc(labels, scores)) < 1e-12


def test_auc_one_class_is_nan():
  assert np.isnan(metrics.auc([1, 1], [0.1, 0.2]))


def test_gauc_weights_users_and_skips_one_class():
  users = [1, 1, 1, 2, 2, 3, 3, 3, 3]
  labels = [1, 0, 0, 1, 1, 0, 1, 1, 0]
  scores = [.9, .1, .5, .3, .2, .8, .7, .1, .2]
  expected = (3 * brute_auc(labels[:3], scores[:3]) +
              4 * brute_auc(labels[5:], scores[5:])) / 7  # user 2 has one class
  assert abs(metrics.gauc(users, labels, scores) - expected) < 1e-12


def test_logloss():
  assert abs(metrics.logloss([1, 0], [0.8, 0.3]) -
             -(np.log(0.8) + np.log(0.7)) / 2) < 1e-12
