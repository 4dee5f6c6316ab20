"""Negatives matched to their positive in time, popularity and the user's own history.

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

The user's own history is matched too (pipelines.negative_history): a positive that
revisits an item of its history gets a negative from the same user's history of its
category with as many occurrences; any other positive a negative that is not in its
history. So the share of negatives already in the history follows the share of positives
that are revisits, user by user (none on a log without revisits).

Draws are made per category group by a keyed join (pipelines.negative_join), not from a
broadcast table: a group holds the cells of its own categories only, so no worker needs
the whole (category, window, item) table, which grows with the log. The "any item"
fallback is keyed by item shard (pipelines.negative_tables).
"""
from typing import Dict, Tuple

import numpy as np

from pipelines.negative_history import DenseKeys, HistoryMatch
from pipelines.negative_tables import (  # the job and the sharded steps read these here
    ITEM_SHARDS, ItemShardTotals, ItemWeights, KeyedItemWeights, SumItemCounts,
    _WeightedRows, fallback_offsets, item_count_blocks, item_shard, uniforms, window_edges,
    window_of, window_start)
from pipelines.parsing import CATEGORY_ID, ITEM_ID, KIND, TIMESTAMP
from pipelines.records import aggregate_rows

DEFAULT_TIME_WINDOWS = 100
# stats.json counters: draws that left their (category, window) cell, by how far.
FALLBACK_COUNTS = ("negatives_fallback_wider_window", "negatives_fallback_category",
                   "negatives_fallback_any")
# stats.json counters of the history match (pipelines.negative_history): negatives of
# positives that revisit an item of their history; of those, drawn from the history with
# another number of occurrences, or in another category; not from the history (nothing
# else there); a non-revisit's negative from its history (its category had no other item).
HISTORY_COUNTS = ("negatives_of_revisits", "negatives_revisit_other_count",
                  "negatives_revisit_other_category", "negatives_revisit_unmatched",
                  "negatives_in_history")
DRAW_COUNTS = FALLBACK_COUNTS + HISTORY_COUNTS
# Candidates per draw (rejection sampling) before a draw that keeps hitting the positive
# item, the wrong freshness or its history falls back to the next level: _MAX_ROUNDS
# weighted picks over all items; in a cell, _CELL_ROUNDS picks and each pick's
# neighbours in popularity order (offsets _NEIGHBOURS).
_MAX_ROUNDS = 16
_CELL_ROUNDS = 8
_NEIGHBOURS = np.asarray([0, 1, -1, 2, -2, 3, -3, 4, -4])


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
    # Inside a cell, items in order of their count in the whole category (ties by item):
    # a rejected candidate's neighbours are items of about its popularity.
    totals = aggregate_rows(np.stack([slots, counts[:, 2]], axis=1), counts[:, 3])
    pairs = DenseKeys((totals[:, 0], totals[:, 1]))  # sorted rows: ids in row order
    popularity = totals[pairs.lookup((cells[:, 0] // self.num_windows, cells[:, 1]))[0], 2]
    cells = cells[np.lexsort((cells[:, 1], popularity, cells[:, 0]))]
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
  return catalog.num_levels + 2


def sample_matched_negatives(positives: np.ndarray, catalog: MatchedCatalog,
                             num_negatives: int, seed: int, draw_keys: np.ndarray,
                             any_item: bool = True, history: HistoryMatch = None,
                             skip: np.ndarray = None) -> Tuple[np.ndarray, Dict[str, int]]:
  """`num_negatives` negatives per positive row, matched in time window and category, and
  on the user's history when `history` is given.

  Args:
    positives: int64 [P, 4] (timestamp, item, category, label) rows.
    catalog: the MatchedCatalog of (at least) the positives' categories.
    seed, draw_keys: int64 [P, 2] (user id, target index) per positive: the uniforms of
      a draw are uniforms(seed, user, target index, draw, level, candidate).
    history: the positives' histories (negative_history.HistoryMatch), or None.
  Returns (int64 [P * num_negatives, 4] rows (positive's timestamp, item, category,
  label 0), negatives of positive i at rows i*num_negatives...; item 0 where no other item
  exists at all) and DRAW_COUNTS (each draw counted once, at the level it ended in).

  With a history, draws only take items that are not in the positive's history (the
  negatives of revisits are drawn from the history beforehand: negative_history).
  `skip` (bool [P * num_negatives]) marks draws made already (left at item 0).
  A draw whose (category, window) cell holds no acceptable item moves to the same category
  in the next wider window (pairs of windows, ... the whole log), then to all items.
  Outside its own window a draw must also match the positive's freshness -- whether the
  (category, item) was a target before the positive's window -- or a wider window would
  mostly offer items older than a fresh positive (the leakage check's "seen before the
  window"); where the category has no item of matching freshness, any other item of the
  category is taken, then (with a history) an item of the history, before leaving the
  category. Outside the category (all items, frequency-weighted) neither freshness nor
  history is matched: that needs a global per-item table, and these draws are rare
  (categories with a single item). any_item=False stops before that level and leaves
  those draws at item 0 for the keyed fallback (negative_join), which draws them exactly
  as this function does from catalog.everything.
  """
  n = len(positives) * num_negatives
  out = np.zeros((n, 4), np.int64)
  out[:, TIMESTAMP] = np.repeat(positives[:, TIMESTAMP], num_negatives)
  counts = dict.fromkeys(DRAW_COUNTS, 0)
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
  match = None if history is None else history.repeat(num_negatives)
  todo_draws = np.ones(n, bool) if skip is None else ~skip

  def cell_ranges(level):  # computed only for the draws still pending at that level
    return lambda idx: catalog.level_ranges(cat_slot[idx], windows[idx], level)

  def whole(idx):
    return np.zeros(len(idx), np.int64), np.full(len(idx), len(catalog.everything.items))

  # (uniform key, table, ranges of draws, usable, match freshness, not in the history,
  # counter) in the order tried.
  absent = match is not None
  levels = [(level, catalog.cells, cell_ranges(level), cat_known, level > 0, absent,
              None if level == 0 else "negatives_fallback_category" if level == last
              else "negatives_fallback_wider_window") for level in range(last + 1)]
  # Freshness gives way before the history, the history before the category.
  levels.append((last + 1, catalog.cells, cell_ranges(last), cat_known, False, absent,
                 "negatives_fallback_category"))
  if match is not None:
    levels.append((last + 2, catalog.cells, cell_ranges(last), cat_known, False, False,
                   "negatives_in_history"))
  if any_item:
    levels.append((any_item_level(catalog), catalog.everything, whole, np.ones(n, bool),
                   False, False, "negatives_fallback_any"))
  pending = np.flatnonzero(todo_draws)
  for key, table, ranges_of, usable, match_freshness, not_in_history, counter in levels:
    if not len(pending):
      break
    pending = pending[usable[pending]]
    starts, ends = ranges_of(pending)
    nonempty = ends > starts
    todo, starts, ends = pending[nonempty], starts[nonempty], ends[nonempty]
    if len(todo):
      # Rejection sampling, all candidates of a draw at once (the first acceptable one is
      # taken: the law of redrawing one at a time, in one numpy pass). In a cell, each
      # round's weighted pick is followed by its neighbours in popularity order, so a
      # rejected item's weight goes to an item of about its popularity.
      neighbours = _NEIGHBOURS if table is catalog.cells else _NEIGHBOURS[:1]
      rounds = _CELL_ROUNDS if table is catalog.cells else _MAX_ROUNDS
      per_draw = rounds * len(neighbours)
      u = uniforms(seed, np.repeat(users[todo], rounds), np.repeat(targets[todo], rounds),
                   np.repeat(draws[todo], rounds), np.full(len(todo) * rounds, key),
                   np.tile(np.arange(rounds), len(todo)))
      picked = table.pick(np.repeat(starts, rounds), np.repeat(ends, rounds), u)
      rows = np.repeat(todo, per_draw)
      cand = (picked[:, None] + neighbours).reshape(-1)
      inside = (cand >= np.repeat(starts, per_draw)) & (cand < np.repeat(ends, per_draw))
      items, cats = table.at(np.where(inside, cand, np.repeat(starts, per_draw)))
      accept = inside & (items != pos_items[rows])
      if match_freshness:
        accept &= (catalog.first_window(cat_slot[rows], items) < windows[rows]) == pos_seen[rows]
      if not_in_history:
        accept &= match.candidate_occurrences(rows, items) == 0
      accept = accept.reshape(-1, per_draw)
      found = accept.any(axis=1)
      pick = np.flatnonzero(found) * per_draw + accept[found].argmax(axis=1)
      done = todo[found]
      out[done, ITEM_ID], out[done, CATEGORY_ID] = items[pick], cats[pick]
      if counter:
        counts[counter] += len(done)
    pending = np.flatnonzero((out[:, ITEM_ID] == 0) & todo_draws)
  out[:, KIND] = 0
  out[pending, CATEGORY_ID] = 0
  return out, counts
