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

Draws are made per category group by a keyed join (pipelines.negative_join), not from a
broadcast table: a group holds the cells of its own categories only, so no worker needs
the whole (category, window, item) table, which grows with the log. The "any item"
fallback (ItemWeights over all positive-target items) is keyed too: its rows are held in
ITEM_SHARDS shards by a hash of the item (`item_shard`), ordered shard by shard; a
fallback candidate's uniform picks a weight offset in [0, total), the shard totals (ITEM_SHARDS
numbers, the only broadcast) say which shard holds that offset, and the shard's own rows
resolve it (negative_join.ResolveFallbacks). That is the same draw as one over the
concatenated table, so the in-memory ItemWeights here is its exact reference.
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
# Item shards of the keyed per-item tables ("any item" fallback, leakage facts). Fixed: the
# fallback's draws depend on how its rows are ordered (shard by shard).
ITEM_SHARDS = 16
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


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
  """splitmix64's finaliser on uint64 [N] (wrapping arithmetic)."""
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def uniforms(seed: int, *keys: np.ndarray) -> np.ndarray:
  """float64 [N] in [0, 1), a pure function of (seed, keys...) per row.

  Each draw is seeded by what it is (seed, user, target index, draw, level, candidate),
  never by processing order, so draws are the same on any runner, bundling or grouping
  (counter-based: a hash chain of the keys, no generator state).
  """
  with np.errstate(over="ignore"):
    h = _mix(np.asarray(seed, np.int64).astype(np.uint64) + _GOLDEN)
    for key in keys:
      h = _mix(h + _GOLDEN + np.asarray(key, np.int64).astype(np.uint64))
  return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def item_shard(items: np.ndarray, num_shards: int = ITEM_SHARDS) -> np.ndarray:
  """Item shard [N] in [0, num_shards) of each item: a fixed hash, the same on every worker."""
  return np.minimum((uniforms(1, items) * num_shards).astype(np.int64), num_shards - 1)


class _WeightedRows:
  """Rows sorted by an int64 key, with cumulative integer weights, for vectorised weighted
  draws inside key ranges: a draw in rows [start, end) picks row i with probability
  weight_i / sum of the range's weights.

  keys [N] sorted (None: no range queries); items [N]; categories [N], or None when the key
  encodes it (category of a row = category_ids[key // keys_per_category]); base int64
  [N + 1] = weight before each row (base[N] = the total). Integer arithmetic: a draw
  depends only on its uniform and its own range's weights, not on the rows around it.
  """

  def __init__(self, keys, items, weights, categories=None, category_ids=None,
               keys_per_category=1):
    self.keys, self.items, self.categories = keys, items, categories
    self._category_ids, self._keys_per_category = category_ids, keys_per_category
    self.base = np.concatenate([[0], np.cumsum(weights, dtype=np.int64)])

  def ranges(self, low: np.ndarray, high: np.ndarray):
    """(starts, ends) of the rows with low <= key < high, per query."""
    return (np.searchsorted(self.keys, low, side="left"),
            np.searchsorted(self.keys, high, side="left"))

  def draw(self, starts: np.ndarray, ends: np.ndarray, u: np.ndarray):
    """One weighted row per non-empty range, chosen by uniforms u [N]: (items, categories)."""
    low, high = self.base[starts], self.base[ends]
    offset = np.minimum((u * (high - low)).astype(np.int64), high - low - 1)
    rows = np.clip(np.searchsorted(self.base, low + offset, side="right") - 1, starts,
                   ends - 1)
    categories = (self.categories[rows] if self.categories is not None else
                  self._category_ids[self.keys[rows] // self._keys_per_category])
    return self.items[rows], categories


class ItemWeights(_WeightedRows):
  """Positive-target items with their target counts: the "any item" fallback.

  Built from int64 [M, 3] rows (item, category, count), any order, duplicates summed;
  rows ordered by (item_shard(item), item, category), so the rows of one item shard are
  contiguous and a table built from one shard's rows is that slice of the whole table.
  24 bytes per (item, category).
  """

  def __init__(self, rows: np.ndarray):
    rows = np.asarray(rows, np.int64).reshape(-1, 3)
    by_item = aggregate_rows(np.stack([item_shard(rows[:, 0]), rows[:, 0], rows[:, 1]],
                                      axis=1), rows[:, 2])
    super().__init__(None, by_item[:, 1], by_item[:, 3], categories=by_item[:, 2])
    self.shards = by_item[:, 0]

  def __len__(self):
    return len(self.items)

  def shard_totals(self) -> np.ndarray:
    """int64 [ITEM_SHARDS]: summed weight of each item shard's rows."""
    return np.bincount(self.shards, weights=np.diff(self.base),
                       minlength=ITEM_SHARDS).astype(np.int64)

  def draw_at(self, offsets: np.ndarray):
    """(items, categories) [N] of the rows holding weight offsets [N] in [0, total)."""
    rows = np.clip(np.searchsorted(self.base, offsets, side="right") - 1, 0,
                   len(self.items) - 1)
    return self.items[rows], self.categories[rows]


def fallback_offsets(u: np.ndarray, shard_totals: np.ndarray):
  """(item shard [N], offset [N] inside the shard) of uniforms u [N] over all items.

  The weight offset min(floor(u * total), total - 1) of _WeightedRows.draw over the whole
  ItemWeights, located in the shard whose rows hold it (empty shards are skipped).
  """
  cumulative = np.concatenate([[0], np.cumsum(shard_totals, dtype=np.int64)])
  total = cumulative[-1]
  offset = np.minimum((u * total).astype(np.int64), total - 1)
  shard = np.searchsorted(cumulative, offset, side="right") - 1
  return shard, offset - cumulative[shard]


class MatchedCatalog:
  """Positive-target item frequencies by (category, window) at every window resolution.

  Built from `counts`: int64 [M, 4] rows (category, window, item, count), any order, of
  some set of categories (one key group of the keyed draw: pipelines.negative_join).
  One table serves every resolution: the rows, sorted by (category, window, item), are
  keyed by category_index * num_windows + window, so the cell (category, windows
  [w << k, (w + 1) << k)) of level k -- level 0 the finest windows, each next level pairs
  of adjacent windows (equal-count windows, so still equal-count), the last one window per
  category -- is one contiguous key range, and a weighted draw in that range picks an item
  in proportion to its count over the whole cell. `everything` (ItemWeights over all
  categories; default: built from `counts`) serves draws that leave the category.
  Everything a draw reads is per category, so the draws of a category do not depend on
  which other categories share its group. Memory: ~24 bytes per (category, window, item)
  row + ~24 per (category, item).
  """

  def __init__(self, counts: np.ndarray, edges: np.ndarray,
               everything: ItemWeights = None):
    counts = np.asarray(counts, np.int64).reshape(-1, 4)
    self.edges = np.asarray(edges, np.int64)
    self.num_windows = len(self.edges) + 1
    self.num_levels = int(np.ceil(np.log2(self.num_windows))) + 1
    self.category_ids = np.unique(counts[:, 0])
    slots = np.searchsorted(self.category_ids, counts[:, 0])
    cells = aggregate_rows(np.stack([slots * self.num_windows + counts[:, 1], counts[:, 2]],
                                    axis=1), counts[:, 3])  # sorted (cell key, item), count
    self.cells = _WeightedRows(cells[:, 0], cells[:, 1], cells[:, 2],
                               category_ids=self.category_ids,
                               keys_per_category=self.num_windows)
    self.everything = (ItemWeights(counts[:, [2, 0, 3]]) if everything is None
                       else everything)
    # First window in which each (category, item) is a target (freshness of fallback
    # draws), under one int64 key: category slot * (distinct items + 1) + item rank.
    self._item_ids = np.unique(counts[:, 2])
    first = aggregate_rows(np.stack([self._pair_keys(slots, counts[:, 2]), counts[:, 1]],
                                    axis=1), np.zeros(len(counts)))
    keys, starts = np.unique(first[:, 0], return_index=True)
    self._pair_first = keys, first[starts, 1]

  def _pair_keys(self, category_slots, items):
    rank = np.minimum(np.searchsorted(self._item_ids, items), len(self._item_ids) - 1)
    known = self._item_ids[rank] == items if len(self._item_ids) else np.zeros(len(items), bool)
    return np.where(known, category_slots * (len(self._item_ids) + 1) + rank, -1)

  def __len__(self):
    return len(self.cells.items)

  def category_slots(self, categories: np.ndarray):
    """(slot [N] in category_ids, known [N]) of each category."""
    if not len(self.category_ids):
      return np.zeros(len(categories), np.int64), np.zeros(len(categories), bool)
    slot = np.minimum(np.searchsorted(self.category_ids, categories),
                      len(self.category_ids) - 1)
    return slot, self.category_ids[slot] == categories

  def level_ranges(self, category_slots: np.ndarray, windows: np.ndarray, level: int):
    """(starts, ends) of each query's level-`level` cell in `cells`."""
    low_window = (windows >> level) << level
    high_window = np.minimum(low_window + (1 << level), self.num_windows)
    base = category_slots * self.num_windows
    return self.cells.ranges(base + low_window, base + high_window)

  def first_window(self, category_slots: np.ndarray, items: np.ndarray) -> np.ndarray:
    """First window in which each (category, item) is a positive target (num_windows if
    never)."""
    keys, first = self._pair_first
    if not len(keys):
      return np.full(len(items), self.num_windows)
    query = self._pair_keys(category_slots, items)
    slot = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where((keys[slot] == query) & (query >= 0), first[slot], self.num_windows)


def any_item_level(catalog: MatchedCatalog) -> int:
  """The level key of the "any item" fallback's uniforms (after every category level)."""
  return catalog.num_levels + 1


def sample_matched_negatives(positives: np.ndarray, catalog: MatchedCatalog,
                             num_negatives: int, seed: int, draw_keys: np.ndarray,
                             any_item: bool = True) -> Tuple[np.ndarray, Dict[str, int]]:
  """`num_negatives` negatives per positive row, matched in time window and category.

  Args:
    positives: int64 [P, 4] (timestamp, item, category, label) rows.
    catalog: the MatchedCatalog of (at least) the positives' categories.
    seed, draw_keys: int64 [P, 2] (user id, target index) per positive: the uniforms of
      a draw are uniforms(seed, user, target index, draw, level, candidate).
  Returns (int64 [P * num_negatives, 4] rows (positive's timestamp, item, category,
  label 0), negatives of positive i at rows i*num_negatives...; item 0 where no other item
  exists at all) and FALLBACK_COUNTS (each draw counted once, at the level it ended in).

  A draw whose (category, window) cell holds no other item moves to the same category in
  the next wider window (pairs of windows, ... the whole log), then to all items. Outside
  its own window a draw must also match the positive's freshness -- whether the (category,
  item) was a target before the positive's window -- or a wider window would mostly offer
  items older than a fresh positive (the leakage check's "seen before the window"); where
  the category has no item of matching freshness, any other item of the category is taken
  before leaving the category. Outside the category (all items, frequency-weighted) the
  freshness is not matched: that needs a global per-item table, and these draws are rare
  (categories with a single item). any_item=False stops before that level and leaves
  those draws at item 0 for the keyed fallback (negative_join), which draws them exactly
  as this function does from catalog.everything.
  """
  n = len(positives) * num_negatives
  out = np.zeros((n, 4), np.int64)
  out[:, TIMESTAMP] = np.repeat(positives[:, TIMESTAMP], num_negatives)
  counts = dict.fromkeys(FALLBACK_COUNTS, 0)
  if not n or not len(catalog):
    return out, counts
  pos_items = np.repeat(positives[:, ITEM_ID], num_negatives)
  users = np.repeat(draw_keys[:, 0], num_negatives)
  targets = np.repeat(draw_keys[:, 1], num_negatives)
  draws = np.tile(np.arange(num_negatives), len(positives))
  cat_slot, cat_known = catalog.category_slots(np.repeat(positives[:, CATEGORY_ID],
                                                         num_negatives))
  windows = window_of(out[:, TIMESTAMP], catalog.edges)
  pos_seen = catalog.first_window(cat_slot, pos_items) < windows
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
  if any_item:
    levels.append((catalog.everything, whole, np.ones(n, bool), False,
                   "negatives_fallback_any"))
  assert not any_item or len(levels) - 1 == any_item_level(catalog)
  rounds = np.arange(_MAX_ROUNDS)
  pending = np.arange(n)
  for level, (table, ranges_of, usable, match_freshness, counter) in enumerate(levels):
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
      u = uniforms(seed, users[rows], targets[rows], draws[rows], np.full(len(rows), level),
                   np.tile(rounds, len(todo)))
      items, cats = table.draw(np.repeat(starts, _MAX_ROUNDS), np.repeat(ends, _MAX_ROUNDS),
                               u)
      accept = items != pos_items[rows]
      if match_freshness:
        accept &= (catalog.first_window(cat_slot[rows], items) < windows[rows]) == pos_seen[rows]
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
# Beam: the "any item" table from the candidate positive targets, keyed by item shard
# ---------------------------------------------------------------------------------------
def _item_counts(sequence: UserSequence) -> np.ndarray:
  """int64 [m, 3] (item, category, count) of one user's positive targets."""
  targets = sequence.targets[sequence.targets[:, KIND] == 1]
  return aggregate_rows(targets[:, [ITEM_ID, CATEGORY_ID]], np.ones(len(targets)))


def item_count_blocks(sequence: UserSequence):
  """(item shard, int64 [m, 3] (item, category, count)) of one user's positive targets."""
  rows = _item_counts(sequence)
  shards = item_shard(rows[:, 0])
  for shard in np.unique(shards):
    yield int(shard), rows[shards == shard]


class _ItemCountsFn(CompactingCombineFn):
  """Sum of (item, category, count) row blocks -> the summed rows (per item shard)."""
  _MIN_PENDING = CompactingCombineFn.KEYED_MIN_PENDING

  def block(self, rows):
    return rows

  def merge_blocks(self, blocks):
    rows = np.concatenate(blocks)
    return aggregate_rows(rows[:, :2], rows[:, 2])

  def finish(self, block):
    return np.zeros((0, 3), np.int64) if block is None else block


def totals_of(shard_totals) -> np.ndarray:
  """int64 [ITEM_SHARDS] from [(item shard, summed count)] pairs (any order)."""
  totals = np.zeros(ITEM_SHARDS, np.int64)
  for shard, total in shard_totals:
    totals[shard] += total
  return totals


def item_shard_totals(sequence: UserSequence) -> np.ndarray:
  """int64 [ITEM_SHARDS]: one user's positive targets per item shard (summed over users,
  the shard totals of the whole ItemWeights)."""
  items = sequence.targets[sequence.targets[:, KIND] == 1, ITEM_ID]
  return np.bincount(item_shard(items), minlength=ITEM_SHARDS).astype(np.int64)


class SumItemCounts(beam.PTransform):
  """(item shard, int64 [m, 3] (item, category, count)) blocks -> one summed block per item
  shard: that shard's ItemWeights rows."""

  def expand(self, blocks):
    return blocks | "SumPerShard" >> beam.CombinePerKey(_ItemCountsFn())


class ItemShardTotals(beam.PTransform):
  """UserSequences -> singleton int64 [ITEM_SHARDS], without building the per-item rows
  (16 numbers per user summed: the sharded job's step that reads the whole log)."""

  def expand(self, sequences):
    return (sequences | "PerUser" >> beam.Map(item_shard_totals)
            | "Sum" >> beam.CombineGlobally(_sum_arrays))


def _sum_arrays(arrays) -> np.ndarray:
  total = np.zeros(ITEM_SHARDS, np.int64)
  for array in arrays:
    total += array
  return total


class KeyedItemWeights(beam.PTransform):
  """UserSequences -> {'rows': (item shard, int64 [m, 3] (item, category, count) of the
  shard), 'totals': singleton int64 [ITEM_SHARDS]} (ItemWeights, keyed by item shard)."""

  def expand(self, sequences):
    rows = (sequences
            | "CountBlocks" >> beam.FlatMap(item_count_blocks)
            | "SumItemCounts" >> SumItemCounts())
    totals = (rows
              | "ShardTotal" >> beam.MapTuple(lambda shard, r: (shard, int(r[:, 2].sum())))
              | "AllTotals" >> beam.combiners.ToList()
              | "Totals" >> beam.Map(totals_of))
    return {"rows": rows, "totals": totals}
