"""Global facts of the dataset, computed from the per-user sequences and fed back as side
inputs: the eval_start of the time split (a histogram of target times) and the item
catalog. CompactingCombineFn is the shared base of the numpy combines (also used by
pipelines.negatives and pipelines.leakage).
"""
from typing import Optional

import apache_beam as beam
import numpy as np

from pipelines.parsing import CATEGORY_ID, ITEM_ID, TIMESTAMP
from pipelines.records import aggregate_rows, unique_rows


class CompactingCombineFn(beam.CombineFn):
  """Global combine of per-element numpy row blocks, merged in amortised O(n log n).

  Subclasses give `block(element)` (int64 rows or None), `merge_blocks(blocks)` (one merged
  block) and `finish(block or None)`. Blocks are merged once the pending rows outnumber
  the merged ones (and _MIN_PENDING): each row is re-merged O(log n) times, never once
  per element (checking a running total, not re-summing the pending list). (Not named
  `compact`: that is Beam's own CombineFn hook for accumulators.)

  Per-key combines (CombinePerKey over item shards) use KEYED_MIN_PENDING: each key has
  its own accumulator, and one whose rows never reach 2^20 would hold every element's
  small block (tens of thousands of numpy arrays per key, ~100 B of overhead each) until
  the end -- memory growing with the log, not with the merged table.
  """
  _MIN_PENDING = 1 << 20
  KEYED_MIN_PENDING = 1 << 16

  def block(self, element):
    raise NotImplementedError

  def merge_blocks(self, blocks):
    raise NotImplementedError

  def finish(self, block):
    raise NotImplementedError

  def create_accumulator(self):
    return [None, [], 0]  # merged block, pending blocks, pending rows

  def _merge(self, blocks):
    blocks = [b for b in blocks if b is not None]
    return [self.merge_blocks(blocks) if blocks else None, [], 0]

  def add_input(self, acc, element):
    block = self.block(element)
    if block is not None and len(block):
      acc[1].append(block)
      acc[2] += len(block)
      if acc[2] > max(self._MIN_PENDING, 0 if acc[0] is None else len(acc[0])):
        acc = self._merge([acc[0]] + acc[1])
    return acc

  def merge_accumulators(self, accumulators):
    return self._merge([b for acc in accumulators for b in [acc[0]] + acc[1]])

  def extract_output(self, acc):
    return self.finish(self._merge([acc[0]] + acc[1])[0])


class _TargetTimesFn(CompactingCombineFn):
  """Exact histogram of target timestamps: (sorted distinct seconds [D], counts [D]).

  Memory is O(distinct target seconds) (≤ 777,600 for Taobao's 9 days).
  """

  def block(self, sequence):
    if not len(sequence.targets):
      return None
    return np.stack(np.unique(sequence.targets[:, TIMESTAMP], return_counts=True), axis=1)

  def merge_blocks(self, blocks):
    rows = np.concatenate(blocks)
    return aggregate_rows(rows[:, :1], rows[:, 1])

  def finish(self, block):
    if block is None:
      return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return block[:, 0], block[:, 1]


def quantile_eval_start(times: np.ndarray, counts: np.ndarray, eval_fraction: float):
  """Eval split start such that targets with timestamp >= it are ~the latest fraction.

  Args:
    times: sorted distinct target timestamps [D]; counts: targets at each [D].
  Returns the distinct timestamp whose suffix (targets at or after it) is closest to
  `eval_fraction` of all targets while leaving both splits non-empty; all targets of one
  second stay on one side. With a single distinct second: times[0] + 1 (all train; the
  job's split check then reports the empty eval split). None without targets.
  """
  if not len(times):
    return None
  if len(times) == 1:
    return int(times[0]) + 1
  at_or_after = np.cumsum(counts[::-1])[::-1]  # [D] targets with timestamp >= times[i]
  share = at_or_after[1:] / at_or_after[0]  # candidates times[1:]: train never empty
  return int(times[1 + int(np.argmin(np.abs(share - eval_fraction)))])


class TargetTimeHistogram(beam.PTransform):
  """UserSequences -> singleton (sorted distinct target timestamps [D], counts [D])."""

  def expand(self, sequences):
    return sequences | "TargetTimes" >> beam.CombineGlobally(_TargetTimesFn())


class DescribeTimeSplit(beam.PTransform):
  """TargetTimeHistogram -> singleton time-split dict.

  {'method', 'target_timestamp_min', 'target_timestamp_max', 'eval_start'}: method
  'target_quantile' (eval_start from quantile_eval_start over every candidate target's
  timestamp, so a few outlier timestamps cannot move it), 'explicit' (--eval_start) or
  'user_last' (eval_start None: each sequence carries its own).
  """

  def __init__(self, eval_fraction: float, eval_start: Optional[int] = None,
               user_last: bool = False):
    super().__init__()
    self._eval_fraction = eval_fraction
    self._eval_start = eval_start
    self._user_last = user_last

  def expand(self, histogram):
    def describe(histogram):
      times, counts = histogram
      out = {"target_timestamp_min": int(times[0]) if len(times) else None,
             "target_timestamp_max": int(times[-1]) if len(times) else None}
      if self._user_last:
        return dict(out, method="user_last", eval_start=None)
      if self._eval_start is not None:
        return dict(out, method="explicit", eval_start=int(self._eval_start))
      return dict(out, method="target_quantile",
                  eval_start=quantile_eval_start(times, counts, self._eval_fraction))

    return histogram | "Describe" >> beam.Map(describe)


class ComputeTimeSplit(beam.PTransform):
  """UserSequences with candidate targets -> singleton time-split dict (DescribeTimeSplit)."""

  def __init__(self, eval_fraction: float, eval_start: Optional[int] = None,
               user_last: bool = False):
    super().__init__()
    self._describe = DescribeTimeSplit(eval_fraction, eval_start, user_last)

  def expand(self, sequences):
    return sequences | "Histogram" >> TargetTimeHistogram() | "Split" >> self._describe


class Catalog:
  """Items seen in accepted behaviors, grouped by category, as sorted numpy arrays.

  Attributes:
    category_ids: sorted distinct category ids [C].
    category_starts / category_sizes: [C], the block of `category_items` of each category.
    category_items: item ids grouped by category, sorted inside each block [N].
    item_ids: sorted distinct item ids [I]; item_categories: [I], the smallest category an
      item was seen with (used when a negative is drawn outside the positive's category).
  """

  def __init__(self, pairs: np.ndarray):
    pairs = unique_rows(np.asarray(pairs, np.int64).reshape(-1, 2))  # (cat, item)
    self.category_ids, self.category_starts, self.category_sizes = np.unique(
        pairs[:, 0], return_index=True, return_counts=True)
    self.category_items = pairs[:, 1].copy()
    by_item = pairs[np.lexsort((pairs[:, 0], pairs[:, 1]))]  # item-major, smallest cat first
    self.item_ids, first = np.unique(by_item[:, 1], return_index=True)
    self.item_categories = by_item[first, 0]

  @property
  def num_items(self) -> int:
    return len(self.item_ids)

  @property
  def num_categories(self) -> int:
    return len(self.category_ids)


class _CatalogFn(CompactingCombineFn):
  """Distinct (category, item) pairs of all histories -> Catalog (int64 rows, not a Python
  set of tuples: ~16 bytes per pair instead of ~150)."""

  def block(self, sequence):
    if not len(sequence.history):
      return None
    return unique_rows(sequence.history[:, [CATEGORY_ID, ITEM_ID]])

  def merge_blocks(self, blocks):
    return unique_rows(np.concatenate(blocks))

  def finish(self, block):
    return Catalog(np.zeros((0, 2), np.int64) if block is None else block)


class BuildCatalog(beam.PTransform):
  """UserSequences -> singleton Catalog of the (category, item) pairs in their histories."""

  def expand(self, sequences):
    return sequences | "Catalog" >> beam.CombineGlobally(_CatalogFn())


class _CategoriesFn(CompactingCombineFn):
  """Distinct category ids of all histories -> their number."""

  def block(self, sequence):
    if not len(sequence.history):
      return None
    return np.unique(sequence.history[:, CATEGORY_ID])[:, None]

  def merge_blocks(self, blocks):
    return np.unique(np.concatenate(blocks))[:, None]

  def finish(self, block):
    return 0 if block is None else len(block)


class CountCategories(beam.PTransform):
  """UserSequences -> singleton number of distinct categories in their histories (what
  Catalog.num_categories counts, without the per-item table)."""

  def expand(self, sequences):
    return sequences | "Categories" >> beam.CombineGlobally(_CategoriesFn())
