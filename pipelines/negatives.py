"""Negatives matched to their positive in time and popularity (issue 12, item 5).

A uniform draw over a category's distinct items over the whole log gives the answer away
on real logs: positives are popular or fresh items, uniform negatives obscure or old ones,
so "how popular is the item" or "was it seen before" scores well without any history.
The matched sampler draws a positive's negative from the items of its category that are
positive targets in the same *time window*, in proportion to how often they are there: an
item-only score then has the same distribution on both labels (up to the exclusion of the
positive item itself).

Time windows have equal numbers of candidate targets (quantiles of target timestamps, the
histogram the time split also uses), so busy periods get short windows and a log spanning
decades (MovieLens) still has enough items per window. Where the (category, window) cell
has no item other than the positive, the draw falls back to the same category in ever
wider windows (pairs of adjacent windows, then fours, ... up to the whole log), then to all
items (all frequency-weighted), and is counted by how far it went.

Memory: the cell table is O(distinct (category, window, item) triples) -- at most the number
of positive targets, ~24 bytes each; it is a side input, broadcast to every worker.
"""
from typing import Dict, Tuple

import apache_beam as beam
import numpy as np

from pipelines.global_facts import CompactingCombineFn
from pipelines.parsing import CATEGORY_ID, ITEM_ID, KIND, TIMESTAMP
from pipelines.records import UserSequence, aggregate_rows

DEFAULT_TIME_WINDOWS = 100
# stats.json counters: draws that left their (category, window) cell, by how far.
FALLBACK_COUNTS = ("negatives_fallback_wider_window", "negatives_fallback_category",
                   "negatives_fallback_any")
# Candidates per draw (rejection sampling) before a draw that keeps hitting the positive
# item, or the wrong freshness, falls back to the next level.
_MAX_ROUNDS = 16


def window_edges(times: np.ndarray, counts: np.ndarray, num_windows: int) -> np.ndarray:
  """Start times of windows 1.. of `num_windows` equal-count windows of target times.

  Args: times sorted distinct target timestamps [D], counts [D] targets at each.
  Returns sorted distinct int64 edges [<= num_windows - 1]; window of t =
  searchsorted(edges, t, 'right'). Targets of one second share a window.
  """
  if not len(times) or num_windows <= 1:
    return np.zeros(0, np.int64)
  cumulative = np.cumsum(counts)
  ranks = cumulative[-1] * np.arange(1, num_windows) / num_windows
  # First distinct time at which more than rank targets have been seen, i.e. whose
  # window starts there.
  idx = np.searchsorted(cumulative, ranks, side="right")
  idx = idx[idx < len(times)]
  return np.unique(times[idx]).astype(np.int64)


def window_of(timestamps: np.ndarray, edges: np.ndarray) -> np.ndarray:
  """Window index of each timestamp [N] (0 .. len(edges))."""
  return np.searchsorted(edges, timestamps, side="right")


def window_start(windows: np.ndarray, edges: np.ndarray) -> np.ndarray:
  """First second of each window [N]; window 0 starts at -inf (int64 min)."""
  padded = np.concatenate([[np.iinfo(np.int64).min], edges])
  return padded[windows]


class _WeightedRows:
  """Rows sorted by an int64 key, with cumulative weights, for vectorised weighted draws
  inside key ranges: a draw in rows [start, end) picks row i with probability
  weight_i / sum of the range's weights.

  keys [N] sorted (None: no range queries); items [N]; categories [N], or None when the key
  encodes it (category of a row = category_ids[key // keys_per_category]); base [N + 1] =
  weight before each row (base[N] = the total).
  """

  def __init__(self, keys, items, weights, categories=None, category_ids=None,
               keys_per_category=1):
    self.keys, self.items, self.categories = keys, items, categories
    self._category_ids, self._keys_per_category = category_ids, keys_per_category
    self.base = np.concatenate([[0.0], np.cumsum(weights, dtype=np.float64)])

  def ranges(self, low: np.ndarray, high: np.ndarray):
    """(starts, ends) of the rows with low <= key < high, per query."""
    return (np.searchsorted(self.keys, low, side="left"),
            np.searchsorted(self.keys, high, side="left"))

  def draw(self, starts: np.ndarray, ends: np.ndarray, rng: np.random.Generator):
    """One weighted row per non-empty range: (items, categories)."""
    low, high = self.base[starts], self.base[ends]
    u = low + rng.random(len(starts)) * (high - low)
    rows = np.clip(np.searchsorted(self.base, u, side="right") - 1, starts, ends - 1)
    categories = (self.categories[rows] if self.categories is not None else
                  self._category_ids[self.keys[rows] // self._keys_per_category])
    return self.items[rows], categories


class MatchedCatalog:
  """Positive-target item frequencies by (category, window) at every window resolution.

  Built from `counts`: int64 [M, 4] rows (category, window, item, count), any order.
  One table serves every resolution: the rows, sorted by (category, window, item), are
  keyed by category_index * num_windows + window, so the cell (category, windows
  [w << k, (w + 1) << k)) of level k -- level 0 the finest windows, each next level pairs
  of adjacent windows (equal-count windows, so still equal-count), the last one window per
  category -- is one contiguous key range, and a weighted draw in that range picks an item
  in proportion to its count over the whole cell. `everything` is all items,
  frequency-weighted. Memory: ~24 bytes per (category, window, item) row + ~32 per
  distinct (item, category); a table per level would cost ~8x the first (issue 12 scale).
  """

  def __init__(self, counts: np.ndarray, edges: np.ndarray):
    counts = np.asarray(counts, np.int64).reshape(-1, 4)
    self.edges = np.asarray(edges, np.int64)
    self.num_windows = len(self.edges) + 1
    self.num_levels = int(np.ceil(np.log2(self.num_windows))) + 1
    self.category_ids = np.unique(counts[:, 0])
    cells = aggregate_rows(np.stack([
        np.searchsorted(self.category_ids, counts[:, 0]) * self.num_windows + counts[:, 1],
        counts[:, 2]], axis=1), counts[:, 3])  # sorted (cell key, item), count
    self.cells = _WeightedRows(cells[:, 0], cells[:, 1], cells[:, 2],
                               category_ids=self.category_ids,
                               keys_per_category=self.num_windows)
    by_item = aggregate_rows(counts[:, [2, 0]], counts[:, 3])  # (item, cat, n), sorted
    # No keys: draws from `everything` always span all its rows (never a key range).
    self.everything = _WeightedRows(None, by_item[:, 0], by_item[:, 2],
                                    categories=by_item[:, 1])
    # First window in which each item is a target (freshness of fallback draws).
    order = np.lexsort((counts[:, 1], counts[:, 2]))
    self._items, first = np.unique(counts[order, 2], return_index=True)
    self._first_windows = counts[order, 1][first]

  def __len__(self):
    return len(self.everything.items)

  def level_ranges(self, category_slots: np.ndarray, windows: np.ndarray, level: int):
    """(starts, ends) of each query's level-`level` cell in `cells`."""
    low_window = (windows >> level) << level
    high_window = np.minimum(low_window + (1 << level), self.num_windows)
    base = category_slots * self.num_windows
    return self.cells.ranges(base + low_window, base + high_window)

  def first_window(self, items: np.ndarray) -> np.ndarray:
    """First window in which each item is a positive target (num_windows if never)."""
    if not len(self._items):
      return np.full(len(items), self.num_windows)
    slot = np.minimum(np.searchsorted(self._items, items), len(self._items) - 1)
    return np.where(self._items[slot] == items, self._first_windows[slot], self.num_windows)


def sample_matched_negatives(positives: np.ndarray, catalog: MatchedCatalog,
                             num_negatives: int, rng: np.random.Generator
                             ) -> Tuple[np.ndarray, Dict[str, int]]:
  """`num_negatives` negatives per positive row, matched in time window and category.

  Returns (int64 [P * num_negatives, 4] rows (positive's timestamp, item, category,
  label 0), negatives of positive i at rows i*num_negatives...; item 0 where no other item
  exists at all) and FALLBACK_COUNTS (each draw counted once, at the level it ended in).

  A draw whose (category, window) cell holds no other item moves to the same category in
  the next wider window (pairs of windows, ... the whole log), then to all items. Outside
  its own window a draw must also match the positive's freshness -- whether the item was
  a target before the positive's window -- or a wider window would mostly offer items
  older than a fresh positive (the leakage check's "seen before the window"); where the
  category has no item of matching freshness, any other item of the category is taken
  before leaving the category.
  """
  n = len(positives) * num_negatives
  out = np.zeros((n, 4), np.int64)
  out[:, TIMESTAMP] = np.repeat(positives[:, TIMESTAMP], num_negatives)
  counts = dict.fromkeys(FALLBACK_COUNTS, 0)
  if not n or not len(catalog):
    return out, counts
  pos_items = np.repeat(positives[:, ITEM_ID], num_negatives)
  pos_cats = np.repeat(positives[:, CATEGORY_ID], num_negatives)
  cat_slot = np.minimum(np.searchsorted(catalog.category_ids, pos_cats),
                        len(catalog.category_ids) - 1)
  cat_known = catalog.category_ids[cat_slot] == pos_cats
  windows = window_of(out[:, TIMESTAMP], catalog.edges)
  pos_seen = catalog.first_window(pos_items) < windows
  last = catalog.num_levels - 1

  def cell_ranges(level):  # computed only for the draws still pending at that level
    return lambda idx: catalog.level_ranges(cat_slot[idx], windows[idx], level)

  def whole(idx):
    return np.zeros(len(idx), np.int64), np.full(len(idx), len(catalog.everything.items))

  # (table, ranges of draws, usable, match freshness, counter) in the order tried.
  levels = [(catalog.cells, cell_ranges(level), cat_known, level > 0,
             None if level == 0 else "negatives_fallback_category" if level == last
             else "negatives_fallback_wider_window") for level in range(last + 1)]
  # Freshness gives way before the category does: the whole category, any item.
  levels.append(levels[-1][:3] + (False, "negatives_fallback_category"))
  everything = (catalog.everything, whole, np.ones(n, bool))
  levels += [everything + (True, "negatives_fallback_any"),
             everything + (False, "negatives_fallback_any")]  # last resort: any other item
  pending = np.arange(n)
  for table, ranges_of, usable, match_freshness, counter in levels:
    if not len(pending):
      break
    pending = pending[usable[pending]]
    starts, ends = ranges_of(pending)
    nonempty = ends > starts
    todo, starts, ends = pending[nonempty], starts[nonempty], ends[nonempty]
    if len(todo):
      # Rejection sampling, all _MAX_ROUNDS candidates of a draw at once: the first
      # acceptable one is taken (the same law as redrawing one at a time, in one numpy
      # pass instead of a Python loop per round).
      rows = np.repeat(todo, _MAX_ROUNDS)
      items, cats = table.draw(np.repeat(starts, _MAX_ROUNDS), np.repeat(ends, _MAX_ROUNDS),
                               rng)
      accept = items != pos_items[rows]
      if match_freshness:
        accept &= (catalog.first_window(items) < windows[rows]) == pos_seen[rows]
      accept = accept.reshape(-1, _MAX_ROUNDS)
      found = accept.any(axis=1)
      pick = np.flatnonzero(found) * _MAX_ROUNDS + accept[found].argmax(axis=1)
      done = todo[found]
      out[done, ITEM_ID], out[done, CATEGORY_ID] = items[pick], cats[pick]
      if counter:
        counts[counter] += len(done)
    pending = np.flatnonzero(out[:, ITEM_ID] == 0)
  out[:, KIND] = 0
  out[pending, CATEGORY_ID] = 0
  return out, counts


# ---------------------------------------------------------------------------------------
# Beam: the cell table from the candidate positive targets
# ---------------------------------------------------------------------------------------
def _cell_counts(sequence: UserSequence, edges: np.ndarray) -> np.ndarray:
  """int64 [m, 4] (category, window, item, count) of one user's positive targets."""
  targets = sequence.targets[sequence.targets[:, KIND] == 1]
  if not len(targets):
    return np.zeros((0, 4), np.int64)
  keys = np.stack([targets[:, CATEGORY_ID], window_of(targets[:, TIMESTAMP], edges),
                   targets[:, ITEM_ID]], axis=1)
  return aggregate_rows(keys, np.ones(len(keys)))


class _CellCountsFn(CompactingCombineFn):
  """Sum of per-user (category, window, item, count) tables."""

  def block(self, rows):
    return rows

  def merge_blocks(self, blocks):
    rows = np.concatenate(blocks)
    return aggregate_rows(rows[:, :3], rows[:, 3])

  def finish(self, block):
    return np.zeros((0, 4), np.int64) if block is None else block


class BuildMatchedCatalog(beam.PTransform):
  """UserSequences (candidate positive targets) + window edges side input -> MatchedCatalog."""

  def __init__(self, edges):
    super().__init__()
    self._edges = edges

  def expand(self, sequences):
    edges = self._edges
    counts = (sequences
              | "CellCounts" >> beam.Map(_cell_counts, edges=edges)
              | "SumCells" >> beam.CombineGlobally(_CellCountsFn()))
    return counts | "Catalog" >> beam.Map(MatchedCatalog, edges=edges)
