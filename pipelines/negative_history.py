"""The user's own history, as the matched sampler and the leakage check read it.

A sample's history is its user's last L behaviors strictly before the target's time (what
the reader and the model see, L = --history_length). "Occurrences of the candidate in its
own history" is a score that needs no training: if negatives are items the user already
had while positives never are (a log without revisits), or the other way round, a model
learns it instead of the user's interests. The sampler matches each negative to its
positive on it (pipelines.negatives, pipelines.negative_join): a positive that revisits an
item of its history gets a negative drawn from that history (revisit_draws: another item,
as many occurrences, about the same count in the user's log); any other positive gets a
negative that is not in its history (HistoryMatch). So, user by user, the negatives in
their own history follow the positives that revisit. The leakage check reports the
score's AUC per split (pipelines.leakage).

HistoryIndex holds history rows (user, category, item, rank: position in the user's
behaviors) and answers, vectorised over many (user, ...) queries, how often an item occurs
in ranks [lo, hi).
"""
from typing import Tuple

import numpy as np

from pipelines.parsing import CATEGORY_ID, ITEM_ID
from pipelines.records import UserSequence, prior_counts

# The model's default long history length (ModelConfig.max_len).
DEFAULT_HISTORY_LENGTH = 1024


class DenseKeys:
  """Dense ids of tuples of int64 columns (no arithmetic overflow: one column at a time)."""

  def __init__(self, columns):
    self._steps = []
    ids = np.zeros(len(columns[0]), np.int64)
    for column in columns:
      values = np.unique(column)
      pairs = ids * (len(values) + 1) + np.searchsorted(values, column)
      uniques, ids = np.unique(pairs, return_inverse=True)
      self._steps.append((values, uniques))
      ids = ids.astype(np.int64)
    self.ids = ids

  def lookup(self, columns):
    """(id [N], known [N]) of query tuples."""
    ids, known = np.zeros(len(columns[0]), np.int64), np.ones(len(columns[0]), bool)
    for (values, uniques), column in zip(self._steps, columns):
      if not len(uniques):
        return ids, np.zeros(len(ids), bool)
      slot = np.minimum(np.searchsorted(values, column), len(values) - 1)
      known &= values[slot] == column
      pairs = ids * (len(values) + 1) + slot
      ids = np.minimum(np.searchsorted(uniques, pairs), len(uniques) - 1)
      known &= uniques[ids] == pairs
    return ids, known


class RankedRows:
  """Rows grouped by key columns, sorted by rank inside each group, so the rows of one
  group with rank in [lo, hi) are one contiguous range.

  keys: tuple of int64 [R] columns; ranks: int64 [R] (>= 0).
  """

  def __init__(self, keys, ranks):
    self._groups = DenseKeys(keys)
    self._span = int(ranks.max()) + 2 if len(ranks) else 1
    self._keys = np.sort(self._groups.ids * self._span + ranks)

  def ranges(self, keys, lo, hi) -> Tuple[np.ndarray, np.ndarray]:
    """(starts [N], ends [N]) of the rows of each query's group with lo <= rank < hi."""
    group, known = self._groups.lookup(keys)
    base = group * self._span
    lo = np.clip(lo, 0, self._span - 1)
    hi = np.clip(hi, lo, self._span - 1)
    starts = np.searchsorted(self._keys, base + lo, side="left")
    ends = np.searchsorted(self._keys, base + hi, side="left")
    return starts, np.where(known, ends, starts)


class HistoryIndex:
  """History rows of some users: int64 [R] users, categories, items, ranks.

  Occurrences count the rows of the same (user, category, item), or of the same (user,
  item) with by_item_only (the leakage score); on a log where an item has one category
  the two are equal. The draws from the catalog count by (category, item): they read only
  the history rows of their own category.
  """

  def __init__(self, users, categories, items, ranks, by_item_only: bool = False):
    self._by_item_only = by_item_only
    keys = (users, items) if by_item_only else (users, categories, items)
    self._by_item = RankedRows(keys, ranks)

  def occurrences(self, users, categories, items, lo, hi) -> np.ndarray:
    """int64 [N]: the history rows of each query's item with lo <= rank < hi."""
    keys = (users, items) if self._by_item_only else (users, categories, items)
    starts, ends = self._by_item.ranges(keys, lo, hi)
    return ends - starts


def history_ranges(sequence: UserSequence, history_length: int):
  """(lo [T], hi [T]): each target's history is behaviors lo..hi-1 (strictly before its
  time, at most the last history_length)."""
  hi = prior_counts(sequence).astype(np.int64)
  return np.maximum(hi - history_length, 0), hi


def sequence_index(sequence: UserSequence, by_item_only: bool = False) -> HistoryIndex:
  """HistoryIndex of one user's behaviors (rank = position in sequence.history)."""
  history = sequence.history
  return HistoryIndex(np.full(len(history), sequence.user_id, np.int64),
                      history[:, CATEGORY_ID], history[:, ITEM_ID],
                      np.arange(len(history), dtype=np.int64), by_item_only)


def target_occurrences(sequence: UserSequence, history_length: int,
                       by_item_only: bool = False) -> np.ndarray:
  """int64 [T]: occurrences of each target's item in its own history (by_item_only: the
  per-user leakage score; else as the sampler counts them, HistoryIndex)."""
  targets = sequence.targets
  if not len(targets) or not len(sequence.history):
    return np.zeros(len(targets), np.int64)
  lo, hi = history_ranges(sequence, history_length)
  return sequence_index(sequence, by_item_only).occurrences(
      np.full(len(targets), sequence.user_id, np.int64), targets[:, CATEGORY_ID],
      targets[:, ITEM_ID], lo, hi)


class HistoryMatch:
  """The positives' histories, for the draws that must not take an item of them.

  index: HistoryIndex of the positives' users' behaviors (those of the positives'
  categories at least); users, categories, lo, hi: int64 [P] per positive (its history
  ranks [lo, hi)).
  """

  def __init__(self, index: HistoryIndex, users, categories, lo, hi):
    self.index, self.users, self.categories, self.lo, self.hi = (
        index, users, categories, lo, hi)

  def repeat(self, num: int) -> "HistoryMatch":
    """The same for each positive repeated num times (one row per draw)."""
    return HistoryMatch(self.index, *(np.repeat(x, num) for x in (
        self.users, self.categories, self.lo, self.hi)))

  def candidate_occurrences(self, rows, items) -> np.ndarray:
    """Occurrences of items [N] (of their row's category) in the histories of rows [N]
    (indices of this match)."""
    return self.index.occurrences(self.users[rows], self.categories[rows], items,
                                  self.lo[rows], self.hi[rows])


def revisit_draws(sequence: UserSequence, targets, lo, hi, occurrences, num_negatives: int,
                  seed: int, uniforms) -> np.ndarray:
  """int64 [k, 5] (target index, draw, item, category, same occurrences: 0/1) of the
  negatives of the revisits among one user's positive targets (int64 [R] indices, their
  history ranks [lo, hi) and occurrences > 0 there).

  A revisit's negative is an item of its history other than the positive's, chosen among
  the best by, in order: as many occurrences in the history as the positive's item; the
  nearest count of the item in the user's whole log (the positive's includes its own
  behavior and later revisits: what an item's popularity counts); the positive's
  category. Each draw picks uniformly among the best (uniforms(seed, user, target, draw,
  -1, 0), `uniforms` being negatives.uniforms). None where the history holds no other item.
  """
  history = sequence.history
  out = []
  if not len(targets):
    return np.zeros((0, 5), np.int64)
  distinct, totals = np.unique(history[:, ITEM_ID], return_counts=True)
  draws = np.arange(num_negatives)
  every = np.full(len(targets) * num_negatives, 1)
  u_all = uniforms(seed, every * sequence.user_id, np.repeat(targets, num_negatives),
                   np.tile(draws, len(targets)), -every, every * 0).reshape(-1, num_negatives)
  for target, start, end, count, u in zip(targets.tolist(), lo.tolist(), hi.tolist(),
                                          occurrences.tolist(), u_all):
    item, category = sequence.targets[target, ITEM_ID], sequence.targets[target, CATEGORY_ID]
    items, first, counts = np.unique(history[start:end, ITEM_ID], return_index=True,
                                     return_counts=True)
    other = items != item
    if not other.any():
      continue
    items, counts, first = items[other], counts[other], first[other]
    categories = history[start + first, CATEGORY_ID]
    gaps = np.abs(totals[np.searchsorted(distinct, items)]
                  - totals[np.searchsorted(distinct, item)])
    key = ((np.abs(counts - count) + 2 * gaps) * 2 + (categories != category))
    best = np.flatnonzero(key == key.min())
    pick = best[np.minimum((u * len(best)).astype(np.int64), len(best) - 1)]
    out.append(np.stack([np.full(num_negatives, target), draws, items[pick],
                         categories[pick], np.full(num_negatives, counts[pick[0]] == count)],
                        axis=1))
  return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 5), np.int64)
