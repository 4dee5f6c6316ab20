"""Matched negatives and the leakage check."""
import os

import numpy as np
import pytest

from pipelines import build_dataset, leakage as L, movielens, negatives as N, synthetic

ML_SMALL = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                        "movielens-latest-small")


def test_window_edges_equal_counts_ties_together():
  times = np.arange(100, 200, dtype=np.int64)
  edges = N.window_edges(times, np.ones(100, np.int64), 4)
  assert edges.tolist() == [125, 150, 175]
  assert np.bincount(N.window_of(times, edges)).tolist() == [25, 25, 25, 25]
  # 60 targets in one second: that second is one window, never split.
  edges = N.window_edges(np.asarray([1, 2, 3]), np.asarray([20, 60, 20]), 4)
  assert edges.tolist() == [2]  # windows {1} (20 targets) and {2, 3} (80)
  assert N.window_start(np.asarray([0, 1]), edges).tolist() == [np.iinfo(np.int64).min, 2]


def _catalog(rows, edges, everything=None):
  return N.MatchedCatalog(np.asarray(rows, np.int64), np.asarray(edges, np.int64),
                          everything)


def _keys(positives, user=1):
  """Draw keys (user, target index) of positives [P, 4]: one user, targets 0..P-1."""
  return np.stack([np.full(len(positives), user), np.arange(len(positives))], axis=1)


def _sample(positives, catalog, num_negatives, seed, user=1):
  return N.sample_matched_negatives(positives, catalog, num_negatives, seed,
                                    _keys(positives, user))


def test_matched_draws_follow_window_frequencies():
  # Category 7: window 0 has items 1 (x3) and 2 (x1); window 1 has items 3 and 4 (x1 each).
  catalog = _catalog([(7, 0, 1, 3), (7, 0, 2, 1), (7, 1, 3, 1), (7, 1, 4, 1),
                      (7, 1, 5, 2)], edges=[1000])
  positives = np.asarray([[500, 9, 7, 1], [1500, 5, 7, 1]], np.int64)
  rows, counts = _sample(positives, catalog, 4000, seed=0)
  first, second = rows[:4000], rows[4000:]
  assert (rows[:, 3] == 0).all() and (rows[:, 2] == 7).all()
  assert (first[:, 0] == 500).all() and (second[:, 0] == 1500).all()
  # Window 0, positive item 9 not in it: items 1 and 2 in proportion 3:1.
  share = (first[:, 1] == 1).mean()
  assert set(first[:, 1].tolist()) == {1, 2} and abs(share - 0.75) < 0.03
  # Window 1, positive item 5 excluded: its weight (2 of 4) goes to its neighbour in order
  # of popularity in the category (3 and 4 once each, 5 twice: 4 is next to 5).
  assert set(second[:, 1].tolist()) == {3, 4} and abs((second[:, 1] == 3).mean() - 0.25) < 0.03
  assert not any(counts.values())
  # Seeded: the same rng seed gives the same draws.
  again, _ = _sample(positives, catalog, 4000, seed=0)
  assert np.array_equal(rows, again)
  # Keyed by (seed, user, target), not by order: the second positive alone draws the same.
  alone, _ = N.sample_matched_negatives(positives[1:], catalog, 4000, 0,
                                        _keys(positives)[1:])
  assert np.array_equal(alone, second)
  assert not np.array_equal(_sample(positives, catalog, 4000, seed=0, user=2)[0], rows)


def test_fallback_wider_window_matches_freshness_then_any_item():
  # Category 1: item 10 first a target in window 0 (old for window 2), item 11 first in
  # window 3 (fresh for window 2); the positive, item 12, is alone in its cell (window 2)
  # and fresh (first seen there).
  catalog = _catalog([(1, 0, 10, 5), (1, 3, 11, 1), (1, 2, 12, 1), (2, 0, 20, 1)],
                     edges=[100, 200, 300])
  positives = np.asarray([[250, 12, 1, 1]], np.int64)
  rows, counts = _sample(positives, catalog, 200, seed=1)
  # The wider window (2-3) offers item 11, fresh like the positive; old item 10 never.
  assert set(rows[:, 1].tolist()) == {11} and (rows[:, 2] == 1).all()
  assert counts["negatives_fallback_wider_window"] == 200
  # Category 2 holds only the positive: another category's item, counted.
  rows, counts = _sample(np.asarray([[50, 20, 2, 1]], np.int64), catalog, 5, seed=2)
  assert set(rows[:, 1].tolist()) <= {10, 11, 12} and counts["negatives_fallback_any"] == 5
  assert set(zip(rows[:, 1].tolist(), rows[:, 2].tolist())) <= {(10, 1), (11, 1), (12, 1)}
  # A catalog of one item: nothing to draw (item 0, counted by SampleNegatives).
  lone = _catalog([(1, 0, 10, 1)], edges=[])
  rows, _ = _sample(np.asarray([[5, 10, 1, 1]], np.int64), lone, 2, seed=0)
  assert rows[:, 1].tolist() == [0, 0]


def test_auc_matches_pairwise_reference():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 300)
  scores = rng.integers(0, 6, 300) + labels  # ties on purpose
  histogram = {}
  for label, score in zip(labels.tolist(), scores.tolist()):
    histogram[(label, score)] = histogram.get((label, score), 0) + 1
  pos, neg = scores[labels == 1], scores[labels == 0]
  reference = ((pos[:, None] > neg[None, :]).mean() +
               0.5 * (pos[:, None] == neg[None, :]).mean())
  assert L.auc(histogram) == pytest.approx(reference)
  assert L.auc({(1, 3): 4}) is None


def _leakage(stats):
  return {split: stats["splits"][split]["leakage"] for split in ("train", "eval")}


def _assert_balanced_leakage(stats, tolerance=0.03):
  for split, leak in _leakage(stats).items():
    for name in L.SCORES:
      assert abs(leak[f"{name}_auc"] - 0.5) <= tolerance, (split, leak)


@pytest.fixture(scope="module")
def taobao_log(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("negatives")
  # The Taobao preset with 200 instead of 1000 categories: the per-category density of a
  # ~3x larger sample at 600 users; at 400 users x 1000 categories most
  # (category, window) cells hold one item and both AUCs drift to ~0.55 / 0.45.
  params = dict(synthetic.TAOBAO_PRESET, num_categories=200)
  cfg = synthetic.SyntheticConfig(num_users=600, seed=0, **params)
  return tmp, synthetic.write_lines(str(tmp / "taobao.csv"), synthetic.generate_log(cfg).lines)


def test_default_negatives_do_not_leak_on_taobao_calibrated_log(taobao_log):
  tmp, path = taobao_log
  stats = build_dataset.run([f"--input={path}", f"--output_dir={tmp / 'matched'}"])
  assert stats["params"]["negative_sampler"] == "matched"
  _assert_balanced_leakage(stats)
  # Most draws stay in their own (category, window) cell.
  fallbacks = sum(stats[k] for k in N.FALLBACK_COUNTS)
  assert fallbacks < 0.15 * sum(stats["splits"][s]["negatives"] for s in ("train", "eval"))


@pytest.mark.skipif(not os.path.isdir(ML_SMALL), reason="MovieLens latest-small not present")
def test_movielens_behaviors_matched_negatives_do_not_leak(tmp_path):
  movielens.convert(ML_SMALL, str(tmp_path / "ml"), progress_every=0)
  stats = build_dataset.run([f"--input={tmp_path / 'ml' / movielens.BEHAVIORS_FILE}",
                             f"--output_dir={tmp_path / 'data'}"])
  _assert_balanced_leakage(stats)
