"""Leakage check: can a score that needs no training tell a split's positives from its
negatives?

Three scores per target row:
  * popularity: the item's number of behaviors in the whole log (accepted, deduplicated);
  * seen_before_window: 1 if the item has a behavior before the start of the target's time
    window (CHECK_WINDOWS equal-count windows of target time, pipelines.negatives), else 0;
  * history_occurrences: how often the item occurs in the sample's own history (its
    user's last --history_length behaviors strictly before the target's time).
Their AUC between positives and negatives (ties count one half) is written per split to
stats.json. Near 0.5 means negatives do not give the answer away; far from it
(MAX_DEVIATION), a model can score well without learning the user's interests, and the
job warns (or refuses, --refuse_leaky_negatives).

The item facts are a per-item table (O(distinct items)), so they are never broadcast: both
the facts and the target rows that need them are keyed by a hash of the item
(`item_shard`), and each shard's histogram is computed from that shard's facts alone
(KeyedLeakageCheck: CombinePerKey + CoGroupByKey; the user-sharded job runs the same
pieces one item shard per pipeline, pipelines.sharded_leakage). Histograms are sums, so
the AUCs do not depend on the number of shards: they equal those of the one global table
(ItemFacts + score_histograms, kept as the reference). The history score needs only the
sample's own sequence (user_histogram).
"""
import collections
from typing import Dict, List, Optional, Tuple

import apache_beam as beam
import numpy as np

from pipelines.global_facts import CompactingCombineFn
from pipelines.negative_history import DEFAULT_HISTORY_LENGTH, target_occurrences
from pipelines.negatives import item_shard, window_of, window_start
from pipelines.parsing import ITEM_ID, KIND, TIMESTAMP
from pipelines.records import UserSequence, aggregate_rows
from pipelines.split_stats import SumCounts

SCORES = ("popularity", "seen_before_window", "history_occurrences")
# A leakage AUC further than this from 0.5 is reported (leaky_statistics).
MAX_DEVIATION = 0.03
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


def item_facts(fact_rows) -> ItemFacts:
  """ItemFacts of int64 [m, 3] (item, count, first time) rows (any order, repeats merged)."""
  fn = _ItemFactsFn()
  rows = [r for r in fact_rows if len(r)]
  return fn.finish(fn.merge_blocks(rows) if rows else None)


def _histogram(rows: np.ndarray, facts: ItemFacts) -> Dict[tuple, int]:
  """{(score name, label, value): count} of query rows [N, 3] (item, label, window start)
  or [N, 4] (+ how many targets each row stands for)."""
  counts, first_seen = facts.lookup(rows[:, 0])
  weights = rows[:, 3] if rows.shape[1] > 3 else np.ones(len(rows), np.int64)
  values = {"popularity": counts,
            "seen_before_window": (first_seen < rows[:, 2]).astype(np.int64)}
  out = collections.Counter()
  for name, value in values.items():
    summed = aggregate_rows(np.stack([rows[:, 1], value], axis=1), weights)
    out.update({(name, int(label), int(v)): int(c) for label, v, c in summed})
  return out


def score_histograms(sequence: UserSequence, facts: ItemFacts, edges: np.ndarray
                     ) -> Dict[tuple, int]:
  """{(score name, label, value): count} over one sequence's target rows, from the global
  ItemFacts (the reference the keyed check equals)."""
  rows = query_rows(sequence, edges)
  return _histogram(rows, facts) if len(rows) else {}


def user_histogram(sequence: UserSequence, history_length: int) -> Dict[tuple, int]:
  """{('history_occurrences', label, value): count} over one sequence's target rows."""
  targets = sequence.targets
  if not len(targets):
    return {}
  values = target_occurrences(sequence, history_length, by_item_only=True)
  summed = aggregate_rows(np.stack([targets[:, KIND], values], axis=1),
                          np.ones(len(targets), np.int64))
  return {("history_occurrences", int(label), int(v)): int(c) for label, v, c in summed}


class UserHistograms(beam.PTransform):
  """One split's UserSequences -> singleton summed user_histogram."""

  def __init__(self, history_length: int):
    super().__init__()
    self._history_length = history_length

  def expand(self, sequences):
    return (sequences | "UserHistogram" >> beam.Map(user_histogram, self._history_length)
            | "SumUserHistograms" >> SumCounts())


# ---------------------------------------------------------------------------------------
# Keyed by item shard: no step holds more than one shard's facts
# ---------------------------------------------------------------------------------------
def query_rows(sequence: UserSequence, edges: np.ndarray) -> np.ndarray:
  """int64 [T, 3] (item, label, start of its check window) of one sequence's targets."""
  targets = sequence.targets
  starts = window_start(window_of(targets[:, TIMESTAMP], edges), edges)
  return np.stack([targets[:, ITEM_ID], targets[:, KIND], starts], axis=1).astype(np.int64)


def by_item_shard(rows: np.ndarray, num_shards: int):
  """Yields (item shard, rows of that shard) of int64 rows whose column 0 is the item."""
  if not len(rows):
    return
  shards = item_shard(rows[:, 0], num_shards)
  for shard in np.unique(shards):
    yield int(shard), rows[shards == shard]


def fact_blocks(sequence: UserSequence, num_shards: int):
  """(item shard, int64 [m, 3] (item, count, first time)) of one user's behaviors."""
  return by_item_shard(_item_rows(sequence), num_shards)


def query_blocks(sequence: UserSequence, edges: np.ndarray, num_shards: int):
  """(item shard, int64 [t, 3] query_rows) of one sequence's targets."""
  return by_item_shard(query_rows(sequence, edges), num_shards)


def shard_histogram(facts: ItemFacts, queries) -> Dict[tuple, int]:
  """One item shard's histogram: its ItemFacts and its query row blocks ([t, 3] or, with
  counts, [t, 4])."""
  queries = [q for q in queries if len(q)]
  if not queries:
    return {}
  return _histogram(np.concatenate(queries), facts)


class _RowsFn(_ItemFactsFn):
  """_ItemFactsFn over (item, count, first time) row blocks, output the merged rows (per
  item shard)."""
  _MIN_PENDING = CompactingCombineFn.KEYED_MIN_PENDING

  def block(self, rows):
    return rows

  def finish(self, block):
    return np.zeros((0, 3), np.int64) if block is None else block


class _QueryCountsFn(CompactingCombineFn):
  """Query row blocks [t, 3] -> distinct (item, label, window start, targets) rows: what a
  split's targets are, aggregated, so the join holds no per-target row."""
  _MIN_PENDING = CompactingCombineFn.KEYED_MIN_PENDING

  def block(self, rows):
    return aggregate_rows(rows, np.ones(len(rows), np.int64))

  def merge_blocks(self, blocks):
    rows = np.concatenate(blocks)
    return aggregate_rows(rows[:, :3], rows[:, 3])

  def finish(self, block):
    return np.zeros((0, 4), np.int64) if block is None else block


class KeyedItemFacts(beam.PTransform):
  """UserSequences -> (item shard, int64 [m, 3] (item, count, first time) of the shard)."""

  def __init__(self, num_shards: int):
    super().__init__()
    self._num_shards = num_shards

  def expand(self, sequences):
    return (sequences
            | "FactBlocks" >> beam.FlatMap(fact_blocks, self._num_shards)
            | "SumPerShard" >> beam.CombinePerKey(_RowsFn()))


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


def leaky_statistics(stats: dict) -> List[Tuple[str, str, float]]:
  """[(split, '<score>_auc', value)] of stats.json's leakage AUCs further than
  MAX_DEVIATION from 0.5."""
  out = []
  for split, split_stats in sorted(stats.get("splits", {}).items()):
    for name, value in sorted(split_stats.get("leakage", {}).items()):
      if value is not None and abs(value - 0.5) > MAX_DEVIATION:
        out.append((split, name, value))
  return out


class KeyedLeakageCheck(beam.PTransform):
  """One split's UserSequences -> singleton {'<score>_auc' for SCORES}.

  `facts`: KeyedItemFacts' (item shard, rows) PCollection; `edges`: the check windows (a
  small side input). The split's target rows are keyed by item shard and joined with the
  facts of their shard (CoGroupByKey), so no step needs the whole item table; the history
  score is summed per sequence.
  """

  def __init__(self, facts, edges, num_shards: int,
               history_length: int = DEFAULT_HISTORY_LENGTH):
    super().__init__()
    self._facts, self._edges, self._num_shards = facts, edges, num_shards
    self._history_length = history_length

  def expand(self, sequences):
    queries = (sequences
               | "QueryBlocks" >> beam.FlatMap(query_blocks, self._edges, self._num_shards)
               | "CountQueries" >> beam.CombinePerKey(_QueryCountsFn()))
    items = ({"facts": self._facts, "queries": queries}
             | "JoinByItemShard" >> beam.CoGroupByKey()
             | "Scores" >> beam.MapTuple(
                 lambda _, g: shard_histogram(item_facts(g["facts"]), g["queries"])))
    users = sequences | "UserHistograms" >> UserHistograms(self._history_length)
    return ((items, users) | "AllHistograms" >> beam.Flatten()
            | "Sum" >> SumCounts()
            | "Auc" >> beam.Map(summarize))
