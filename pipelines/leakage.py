"""Leakage check: can an item-only score tell a split's positives from its negatives?

Two scores per target row, from facts about the item alone (no user history):
  * popularity: the item's number of behaviors in the whole log (accepted, deduplicated);
  * seen_before_window: 1 if the item has a behavior before the start of the target's time
    window (CHECK_WINDOWS equal-count windows of target time, pipelines.negatives), else 0.
Their AUC between positives and negatives (ties count one half) is written per split to
stats.json. Near 0.5 means negatives do not give the answer away; far from it, a model can
score well without reading any history (issue 12: uniform negatives gave 0.30 on a Taobao
sample and 0.74 on MovieLens).
"""
import collections
from typing import Dict, Optional

import apache_beam as beam
import numpy as np

from pipelines.global_facts import CompactingCombineFn
from pipelines.negatives import window_of, window_start
from pipelines.parsing import ITEM_ID, KIND, TIMESTAMP
from pipelines.records import UserSequence
from pipelines.split_stats import SumCounts

SCORES = ("popularity", "seen_before_window")
# Equal-count windows of target time for "seen before the window" (fixed, independent of
# the sampler's --negative_time_windows).
CHECK_WINDOWS = 100


class ItemFacts:
  """Sorted item ids [I] with their behavior count [I] and first behavior time [I]."""

  def __init__(self, items: np.ndarray, counts: np.ndarray, first_seen: np.ndarray):
    self.items, self.counts, self.first_seen = items, counts, first_seen

  def lookup(self, items: np.ndarray):
    """(counts [N], first_seen [N]) of items; unknown items: 0 and int64 max."""
    if not len(self.items):
      return np.zeros(len(items), np.int64), np.full(len(items), np.iinfo(np.int64).max)
    slot = np.minimum(np.searchsorted(self.items, items), len(self.items) - 1)
    known = self.items[slot] == items
    return (np.where(known, self.counts[slot], 0),
            np.where(known, self.first_seen[slot], np.iinfo(np.int64).max))


def _item_rows(sequence: UserSequence) -> np.ndarray:
  """int64 [m, 3] (item, count, first time) of one user's behaviors."""
  history = sequence.history
  if not len(history):
    return np.zeros((0, 3), np.int64)
  order = np.lexsort((history[:, TIMESTAMP], history[:, ITEM_ID]))
  items, times = history[order, ITEM_ID], history[order, TIMESTAMP]
  distinct, starts, counts = np.unique(items, return_index=True, return_counts=True)
  return np.stack([distinct, counts, times[starts]], axis=1)


class _ItemFactsFn(CompactingCombineFn):
  """Per-user (item, count, first time) rows -> ItemFacts over all users."""

  def block(self, sequence):
    return _item_rows(sequence)

  def merge_blocks(self, blocks):
    rows = np.concatenate(blocks)
    items, inverse = np.unique(rows[:, 0], return_inverse=True)
    counts = np.bincount(inverse, weights=rows[:, 1]).astype(np.int64)
    first = np.full(len(items), np.iinfo(np.int64).max)
    np.minimum.at(first, inverse, rows[:, 2])
    return np.stack([items, counts, first], axis=1)

  def finish(self, block):
    rows = np.zeros((0, 3), np.int64) if block is None else block
    return ItemFacts(rows[:, 0], rows[:, 1], rows[:, 2])


class BuildItemFacts(beam.PTransform):
  """UserSequences -> singleton ItemFacts of their histories."""

  def expand(self, sequences):
    return sequences | "ItemFacts" >> beam.CombineGlobally(_ItemFactsFn())


def score_histograms(sequence: UserSequence, facts: ItemFacts, edges: np.ndarray
                     ) -> Dict[tuple, int]:
  """{(score name, label, value): count} over one sequence's target rows."""
  targets = sequence.targets
  if not len(targets):
    return {}
  counts, first_seen = facts.lookup(targets[:, ITEM_ID])
  starts = window_start(window_of(targets[:, TIMESTAMP], edges), edges)
  values = {"popularity": counts, "seen_before_window": (first_seen < starts).astype(np.int64)}
  out = collections.Counter()
  for name, value in values.items():
    pairs, n = np.unique(np.stack([targets[:, KIND], value], axis=1), axis=0,
                         return_counts=True)
    out.update({(name, int(label), int(v)): int(c) for (label, v), c in zip(pairs, n)})
  return out


def auc(histogram: Dict[tuple, int]) -> Optional[float]:
  """P(score of a positive > score of a negative) + P(equal) / 2, from {(label, value): n}.

  None when one label is missing.
  """
  values = sorted({v for _, v in histogram})
  pos = np.asarray([histogram.get((1, v), 0) for v in values], np.float64)
  neg = np.asarray([histogram.get((0, v), 0) for v in values], np.float64)
  if not pos.sum() or not neg.sum():
    return None
  neg_below = np.cumsum(neg) - neg  # negatives with a smaller value
  return float(((pos * neg_below).sum() + 0.5 * (pos * neg).sum()) / (pos.sum() * neg.sum()))


def summarize(histograms: Dict[tuple, int]) -> dict:
  """{'<score>_auc': AUC or None, ...} from the summed (score, label, value) counts."""
  by_score = collections.defaultdict(dict)
  for (name, label, value), n in histograms.items():
    by_score[name][(label, value)] = n
  return {f"{name}_auc": auc(by_score.get(name, {})) for name in SCORES}


class LeakageCheck(beam.PTransform):
  """One split's UserSequences -> singleton {'popularity_auc', 'seen_before_window_auc'}."""

  def __init__(self, facts, edges):
    super().__init__()
    self._facts, self._edges = facts, edges

  def expand(self, sequences):
    return (sequences
            | "Scores" >> beam.Map(score_histograms, facts=self._facts, edges=self._edges)
            | "Sum" >> SumCounts()
            | "Auc" >> beam.Map(summarize))
