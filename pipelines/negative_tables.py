"""The tables and keys the matched draws read: equal-count time windows of target time,
counter-based uniforms, item shards, weighted rows, and the "any item" fallback's
frequency table (ItemWeights) with its Beam form keyed by item shard.

The "any item" table's rows are held in ITEM_SHARDS shards by a hash of the item
(`item_shard`), ordered shard by shard; a fallback candidate's uniform picks a weight
offset in [0, total), the shard totals (ITEM_SHARDS numbers, the only broadcast) say which
shard holds that offset, and the shard's own rows resolve it (negative_join.ResolveFallbacks).
That is the same draw as one over the concatenated table, so the in-memory ItemWeights is
its exact reference.
"""
import apache_beam as beam
import numpy as np

from pipelines.global_facts import CompactingCombineFn
from pipelines.parsing import CATEGORY_ID, ITEM_ID, KIND
from pipelines.records import UserSequence, aggregate_rows

# Item shards of the keyed per-item tables ("any item" fallback, leakage facts). Fixed: the
# fallback's draws depend on how its rows are ordered (shard by shard).
ITEM_SHARDS = 16

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

  def pick(self, starts: np.ndarray, ends: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One weighted row [N] per non-empty range, chosen by uniforms u [N]."""
    low, high = self.base[starts], self.base[ends]
    offset = np.minimum((u * (high - low)).astype(np.int64), high - low - 1)
    return np.clip(np.searchsorted(self.base, low + offset, side="right") - 1, starts,
                   ends - 1)

  def draw(self, starts: np.ndarray, ends: np.ndarray, u: np.ndarray):
    """One weighted row per non-empty range, chosen by uniforms u [N]: (items, categories)."""
    return self.at(self.pick(starts, ends, u))

  def at(self, rows: np.ndarray):
    """(items, categories) of rows [N]."""
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
