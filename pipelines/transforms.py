"""Composable Beam PTransforms: raw log lines -> labelled user sequences -> tf.train.Examples.

The chain used by pipelines.build_dataset:

  lines --ParseAndValidate--> (user, event) + rejected rows
        --GroupByUser--> (user, {source: [event, ...]})
        --BuildSequences--> UserSequence (sorted, deduplicated history; impression targets)
        --SelectPositiveTargets--> behaviors of the positive types become label-1 targets
        --FilterShortHistory--> drops (and counts) targets with < min_history prior behaviors
        --SampleNegatives--> seeded same-category negatives per positive
        --SplitByTime--> train / eval UserSequences
        --EncodeExamples--> serialised tf.train.Example

Per-event work happens only in ParseAndValidate and the shuffle of GroupByUser; everything
after it runs once per user on numpy matrices (records.UserSequence), which is what keeps
the Python SDK's per-element overhead down. Global facts (time range, item catalog) are
computed from the per-user sequences and fed back as side inputs.
"""
import collections
from typing import Dict, Iterable, Optional, Sequence

import apache_beam as beam
from apache_beam.transforms import window
from apache_beam.utils import windowed_value
import numpy as np

from eta_tf import features
from pipelines import parsing
from pipelines.parsing import CATEGORY_ID, ITEM_ID, KIND, TIMESTAMP
from pipelines.records import UserSequence, aggregate_rows, empty_events, encode_example
from pipelines.records import prior_counts, sort_unique

VALID = "valid"
REJECTED = "rejected"
COUNTS = "counts"
FILTERED = "filtered"


# ---------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------
class _ParseLineFn(beam.DoFn):
  """Parses one raw line; valid rows to the main output, rejected ones tagged REJECTED.

  Beam metric counters are bumped once per bundle (not per element) to keep the hot loop
  cheap; stats.json is computed from PCollections, the counters are for monitoring UIs.
  """

  def __init__(self, source: str, min_timestamp: int, max_timestamp: int):
    self._source = source
    self._min_timestamp = min_timestamp
    self._max_timestamp = max_timestamp

  def setup(self):
    self._parse = parsing.PARSERS[self._source]

  def start_bundle(self):
    self._rows = 0
    self._rejected = collections.Counter()

  def process(self, line):
    self._rows += 1
    try:
      parsed, reason = self._parse(line, self._min_timestamp, self._max_timestamp)
    except Exception:  # pylint: disable=broad-except
      # The parsers never raise on any input we could think of; should one still do, that
      # row goes to the dead letter (reason parse_error) instead of failing the whole job.
      parsed, reason = None, parsing.REASON_PARSE_ERROR
    if reason is None:
      yield parsed
    else:
      self._rejected[reason] += 1
      yield beam.pvalue.TaggedOutput(REJECTED, (self._source, reason, line))

  def finish_bundle(self):
    # The per-bundle input row count is also an output (summed into stats.json): it is
    # counted here, independently of the accepted/rejected rows that are counted later,
    # so the "input == accepted + rejected" check in stats means something.
    yield beam.pvalue.TaggedOutput(COUNTS, windowed_value.WindowedValue(
        {input_key(self._source): self._rows}, window.GlobalWindow().max_timestamp(),
        (window.GlobalWindow(),)))
    beam.metrics.Metrics.counter(self._source, "input_rows").inc(self._rows)
    beam.metrics.Metrics.counter(self._source, "accepted_rows").inc(
        self._rows - sum(self._rejected.values()))
    for reason, count in self._rejected.items():
      beam.metrics.Metrics.counter(self._source, f"rejected_{reason}").inc(count)


class ParseAndValidate(beam.PTransform):
  """bytes lines -> outputs `valid`: (user_id, event tuple), `rejected`: (source, reason, line)
  and `counts`: {"<source>_input": rows} per bundle (sum them with SumCounts).

  `source` is parsing.SOURCE_BEHAVIORS or parsing.SOURCE_IMPRESSIONS; event tuples are
  documented in pipelines.parsing. Never raises on bad input.
  """

  def __init__(self, source: str, min_timestamp: int = parsing.DEFAULT_MIN_TIMESTAMP,
               max_timestamp: int = parsing.DEFAULT_MAX_TIMESTAMP):
    super().__init__()
    if source not in parsing.PARSERS:
      raise ValueError(f"unknown source {source!r}; one of {sorted(parsing.PARSERS)}")
    self._fn = _ParseLineFn(source, min_timestamp, max_timestamp)

  def expand(self, lines):
    return lines | "Parse" >> beam.ParDo(self._fn).with_outputs(REJECTED, COUNTS,
                                                                 main=VALID)


class FormatDeadLetter(beam.PTransform):
  """(source, reason, raw line) -> one text line `source<TAB>reason<TAB>escaped line`."""

  def expand(self, rejected):
    return rejected | "Format" >> beam.MapTuple(parsing.dead_letter_line)


# ---------------------------------------------------------------------------------------
# Grouping and per-user sequences
# ---------------------------------------------------------------------------------------
class GroupByUser(beam.PTransform):
  """{source: PCollection[(user, event)]} -> (user, {source: [event, ...]}).

  One shuffle for all sources (CoGroupByKey); a single source uses a plain GroupByKey,
  which saves a tagging pass over every event.
  """

  def expand(self, events_by_source):
    if len(events_by_source) == 1:
      (source, events), = events_by_source.items()
      return (events
              | "GroupByKey" >> beam.GroupByKey()
              | "AsDict" >> beam.MapTuple(lambda user, evs: (user, {source: evs})))
    return events_by_source | "CoGroupByKey" >> beam.CoGroupByKey()


def input_key(source: str) -> str:
  return f"{source}_input"


def accepted_key(source: str) -> str:
  return f"{source}_accepted"


def duplicates_key(source: str) -> str:
  return f"{source}_duplicates_removed"


def _build_sequence(user_id, events_by_source):
  counts = {}
  matrices = {}
  for source in parsing.PARSERS:
    if source not in events_by_source:
      continue
    events = list(events_by_source[source])
    matrices[source], duplicates = sort_unique(events)
    counts[accepted_key(source)] = len(events)
    counts[duplicates_key(source)] = duplicates
    counts[f"users_with_{source}"] = int(len(events) > 0)
  empty = empty_events()
  yield UserSequence(user_id, matrices.get(parsing.SOURCE_BEHAVIORS, empty),
                     matrices.get(parsing.SOURCE_IMPRESSIONS, empty))
  yield beam.pvalue.TaggedOutput(COUNTS, counts)


class BuildSequences(beam.PTransform):
  """(user, {source: events}) -> UserSequence; also `counts` dicts (rows, duplicates) per user.

  History = the user's behaviors sorted by time with exact duplicate rows removed. Targets =
  the user's impressions (deduplicated the same way) or none (see SelectPositiveTargets).
  """

  def expand(self, grouped):
    return grouped | "Build" >> beam.FlatMapTuple(_build_sequence).with_outputs(
        COUNTS, main=VALID)


class SelectPositiveTargets(beam.PTransform):
  """Makes each distinct (timestamp, item, category) behavior of `positive_types` a target.

  Used when there is no impression log; labels are 1 (negatives come from SampleNegatives).
  """

  def __init__(self, positive_types: Sequence[int]):
    super().__init__()
    self._positive_types = np.asarray(sorted(set(positive_types)), np.int64)

  def expand(self, sequences):
    positive_types = self._positive_types

    def select(sequence: UserSequence) -> UserSequence:
      history = sequence.history
      rows = history[np.isin(history[:, KIND], positive_types)].copy()
      rows[:, KIND] = 1
      targets, _ = sort_unique(rows)  # pv and buy of one item at one second -> one target
      return sequence._replace(targets=targets)

    return sequences | "Select" >> beam.Map(select)


def _split_of(timestamps: np.ndarray, eval_start: Optional[int]) -> np.ndarray:
  """True where a target timestamp belongs to the eval split."""
  if eval_start is None:
    return np.zeros(len(timestamps), bool)
  return timestamps >= eval_start


def eval_start_of(sequence: UserSequence, time_split: dict) -> Optional[int]:
  """The split start that applies to this user's targets: its own (user_last) or global."""
  if sequence.eval_start is not None:
    return sequence.eval_start
  return time_split["eval_start"]


def user_last_eval_start(target_timestamps: np.ndarray, eval_targets: int) -> Optional[int]:
  """Leave-last-out split start of one user: the time of its `eval_targets`-th last target.

  Targets at or after it are eval (ties with it included, so more than `eval_targets` can
  land in eval, never fewer unless the user has fewer targets: then all are eval).
  `target_timestamps` must be sorted. None for a user without targets.
  """
  if not len(target_timestamps):
    return None
  return int(target_timestamps[max(len(target_timestamps) - eval_targets, 0)])


class AssignUserLastSplit(beam.PTransform):
  """Sets each UserSequence's own `eval_start` = user_last_eval_start of its targets.

  Runs on the candidate targets (before min_history filtering and negative sampling;
  negatives share their positive's timestamp, so the split of each row is unchanged).
  """

  def __init__(self, eval_targets_per_user: int):
    super().__init__()
    self._eval_targets = eval_targets_per_user

  def expand(self, sequences):
    eval_targets = self._eval_targets

    # Annotated (not a lambda): Beam's type inference of the lambda got the output wrong.
    def assign(sequence: UserSequence) -> UserSequence:
      return sequence._replace(eval_start=user_last_eval_start(
          sequence.targets[:, TIMESTAMP], eval_targets))

    return sequences | "Assign" >> beam.Map(assign)


class FilterShortHistory(beam.PTransform):
  """Drops targets whose user has fewer than `min_history` behaviors strictly before them.

  Dropped targets are not lost silently: output `filtered` carries (split, count) pairs,
  the split decided by the same time-split side input (ComputeTimeSplit) SplitByTime uses.
  """

  def __init__(self, min_history: int, time_split):
    super().__init__()
    self._min_history = min_history
    self._time_split = time_split

  def expand(self, sequences):
    min_history = self._min_history

    def filter_targets(sequence: UserSequence, time_split):
      keep = prior_counts(sequence) >= min_history
      if keep.all():
        yield sequence
        return
      dropped_eval = _split_of(sequence.targets[~keep, TIMESTAMP],
                               eval_start_of(sequence, time_split))
      for split, count in ((features.EVAL_SPLIT, int(dropped_eval.sum())),
                           (features.TRAIN_SPLIT, int((~dropped_eval).sum()))):
        if count:
          yield beam.pvalue.TaggedOutput(FILTERED, (split, count))
      yield sequence._replace(targets=sequence.targets[keep])

    return sequences | "Filter" >> beam.FlatMap(
        filter_targets, time_split=self._time_split).with_outputs(FILTERED, main=VALID)


# ---------------------------------------------------------------------------------------
# Global facts: time range / eval_start and the item catalog
# ---------------------------------------------------------------------------------------
class CompactingCombineFn(beam.CombineFn):
  """Global combine of per-element numpy row blocks, merged in amortised O(n log n).

  Subclasses give `block(element)` (int64 rows or None), `merge_blocks(blocks)` (one merged
  block) and `finish(block or None)`. Blocks are merged once the pending rows outnumber
  the merged ones (and _MIN_PENDING): each row is re-merged O(log n) times, never once
  per element (checking a running total, not re-summing the pending list). (Not named
  `compact`: that is Beam's own CombineFn hook for accumulators.)
  """
  _MIN_PENDING = 1 << 20

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
    pairs = np.unique(np.asarray(pairs, np.int64).reshape(-1, 2), axis=0)  # (cat, item)
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


class _CatalogFn(beam.CombineFn):
  """Distinct (category, item) pairs of all histories -> Catalog."""

  def create_accumulator(self):
    return set()

  def add_input(self, acc, sequence):
    acc.update(zip(sequence.history[:, CATEGORY_ID].tolist(),
                   sequence.history[:, ITEM_ID].tolist()))
    return acc

  def merge_accumulators(self, accumulators):
    merged = set()
    for acc in accumulators:
      merged |= acc
    return merged

  def extract_output(self, acc):
    return Catalog(np.asarray(sorted(acc), np.int64))


class BuildCatalog(beam.PTransform):
  """UserSequences -> singleton Catalog of the (category, item) pairs in their histories."""

  def expand(self, sequences):
    return sequences | "Catalog" >> beam.CombineGlobally(_CatalogFn())


# ---------------------------------------------------------------------------------------
# Negatives
# ---------------------------------------------------------------------------------------
def sample_negatives(positives: np.ndarray, catalog: Catalog, num_negatives: int,
                     rng: np.random.Generator) -> np.ndarray:
  """Draws `num_negatives` items per positive target row, never the positive item itself.

  Same category as the positive when that category has another item in the catalog, else
  uniformly from all items (with that item's own category). A negative gets the positive's
  timestamp and label 0. Returns int64 [P * num_negatives, 4] rows, negatives of positive i
  at rows i*num_negatives ...; where no other item exists at all the row's item is 0
  (callers drop those rows and count them).
  """
  num_pos = len(positives)
  out = np.zeros((num_pos * num_negatives, 4), np.int64)
  out[:, TIMESTAMP] = np.repeat(positives[:, TIMESTAMP], num_negatives)
  if not len(out) or not catalog.num_items:
    return out
  pos_items = np.repeat(positives[:, ITEM_ID], num_negatives)
  pos_cats = np.repeat(positives[:, CATEGORY_ID], num_negatives)
  slot = np.minimum(np.searchsorted(catalog.category_ids, pos_cats),
                    catalog.num_categories - 1)
  known = catalog.category_ids[slot] == pos_cats
  starts = np.where(known, catalog.category_starts[slot], 0)
  sizes = np.where(known, catalog.category_sizes[slot], 0)
  # A category holding only the positive item (or an unknown one) falls back to all items.
  in_category = known & ((sizes > 1) | (catalog.category_items[starts] != pos_items))
  drawable = in_category | (catalog.num_items > 1) | (catalog.item_ids[0] != pos_items)

  items = np.zeros(len(out), np.int64)
  cats = np.zeros(len(out), np.int64)
  pending = np.flatnonzero(drawable)
  # Rejection sampling: redraw only the draws that hit the positive item. Every pending
  # draw has at least one other item to hit, so this ends (expected < 2 rounds).
  while len(pending):
    use_cat = in_category[pending]
    u = rng.random(len(pending))
    cat_pick = starts[pending] + (u * sizes[pending]).astype(np.int64)
    all_pick = (u * catalog.num_items).astype(np.int64)
    drawn = np.where(use_cat, catalog.category_items[cat_pick], catalog.item_ids[all_pick])
    items[pending] = drawn
    cats[pending] = np.where(use_cat, pos_cats[pending], catalog.item_categories[all_pick])
    pending = pending[drawn == pos_items[pending]]

  out[:, ITEM_ID] = np.where(drawable, items, 0)
  out[:, CATEGORY_ID] = np.where(drawable, cats, 0)
  out[:, KIND] = 0
  return out


def sample_uniform_negatives(positives, catalog: Catalog, num_negatives: int, rng):
  """sample_negatives in the sampler interface: (rows, extra counts {})."""
  return sample_negatives(positives, catalog, num_negatives, rng), {}


class SampleNegatives(beam.PTransform):
  """Adds `negatives_per_positive` seeded negatives after each positive target.

  `sampler(positives [P, 4], catalog, num_negatives, rng)` -> (rows [P * n, 4], counts):
  sample_uniform_negatives (default, with a Catalog) or
  negatives.sample_matched_negatives (with a MatchedCatalog). The random stream of a user
  is seeded by (seed, user_id) only, so the result does not depend on bundling, worker
  count or runner. Output `counts` carries {'negatives_unavailable': n} when the catalog
  has no other item to offer, plus the sampler's counts.
  """

  def __init__(self, catalog, negatives_per_positive: int, seed: int,
               sampler=sample_uniform_negatives):
    super().__init__()
    self._catalog = catalog
    self._num_negatives = negatives_per_positive
    self._seed = seed
    self._sampler = sampler

  def expand(self, sequences):
    num_negatives, seed, sampler = self._num_negatives, self._seed, self._sampler

    def add_negatives(sequence: UserSequence, catalog):  # Catalog or MatchedCatalog
      positives = sequence.targets
      if not len(positives) or not num_negatives:
        yield sequence
        return
      rng = np.random.default_rng([seed, sequence.user_id])
      negatives, counts = sampler(positives, catalog, num_negatives, rng)
      rows = np.concatenate([positives[:, None, :],
                             negatives.reshape(len(positives), num_negatives, 4)], axis=1)
      rows = rows.reshape(-1, 4)
      available = rows[:, ITEM_ID] > 0
      counts = {k: v for k, v in counts.items() if v}
      if not available.all():
        counts["negatives_unavailable"] = int((~available).sum())
      if counts:
        yield beam.pvalue.TaggedOutput(COUNTS, counts)
      yield sequence._replace(targets=rows[available])

    return sequences | "Sample" >> beam.FlatMap(
        add_negatives, catalog=self._catalog).with_outputs(COUNTS, main=VALID)


# ---------------------------------------------------------------------------------------
# Split and encode
# ---------------------------------------------------------------------------------------
class SplitByTime(beam.PTransform):
  """UserSequence -> outputs `train` and `eval` by target time (eval: ts >= eval_start).

  eval_start is the sequence's own (user_last split) or the global one (time split).
  Train record: history restricted to behaviors before eval_start (all any train target
  can see), train targets. Eval record: full history, eval targets. A user without targets
  in a split gets no record in it. Output `counts`: {'users_with_targets': 1} per user.
  """

  def __init__(self, time_split):
    super().__init__()
    self._time_split = time_split

  def expand(self, sequences):
    def split(sequence: UserSequence, time_split):
      eval_start = eval_start_of(sequence, time_split)
      is_eval = _split_of(sequence.targets[:, TIMESTAMP], eval_start)
      if len(sequence.targets):
        yield beam.pvalue.TaggedOutput(COUNTS, {"users_with_targets": 1})
      if (~is_eval).any():
        history = sequence.history
        if eval_start is not None:
          end = np.searchsorted(history[:, TIMESTAMP], eval_start, side="left")
          history = history[:end]
        yield beam.pvalue.TaggedOutput(features.TRAIN_SPLIT, UserSequence(
            sequence.user_id, history, sequence.targets[~is_eval]))
      if is_eval.any():
        yield beam.pvalue.TaggedOutput(features.EVAL_SPLIT, sequence._replace(
            targets=sequence.targets[is_eval]))

    return sequences | "Split" >> beam.FlatMap(
        split, time_split=self._time_split).with_outputs(*features.SPLITS, COUNTS)


class EncodeExamples(beam.PTransform):
  """UserSequence -> serialised tf.train.Example (features.RECORD_FEATURES keys)."""

  def expand(self, sequences):
    return sequences | "Encode" >> beam.Map(encode_example)


# ---------------------------------------------------------------------------------------
# Stats
# ---------------------------------------------------------------------------------------
def percentiles(histogram: Dict[int, int]) -> dict:
  """Nearest-rank p50/p90/p99/max (and mean) of values given as {value: count}."""
  total = sum(histogram.values())
  if not total:
    return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
  values = np.asarray(sorted(histogram), np.int64)
  cumulative = np.cumsum([histogram[v] for v in values])
  out = {"count": int(total),
         "mean": float(sum(v * c for v, c in histogram.items()) / total)}
  for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
    rank = int(np.ceil(q / 100 * total))  # smallest value with >= q% of values <= it
    out[name] = int(values[np.searchsorted(cumulative, rank)])
  out["max"] = int(values[-1])
  return out


class _SplitStatsFn(beam.CombineFn):
  """Counts and length histograms of one split's UserSequences."""

  def create_accumulator(self):
    return {"records": 0, "positives": 0, "negatives": 0,
            "record_history": collections.Counter(), "sample_history": collections.Counter()}

  def add_input(self, acc, sequence):
    labels = sequence.targets[:, KIND]
    acc["records"] += 1
    acc["positives"] += int((labels == 1).sum())
    acc["negatives"] += int((labels == 0).sum())
    acc["record_history"][len(sequence.history)] += 1
    acc["sample_history"].update(prior_counts(sequence).tolist())
    return acc

  def merge_accumulators(self, accumulators):
    accumulators = iter(accumulators)
    merged = next(accumulators)
    for acc in accumulators:
      for key, value in acc.items():
        merged[key] += value
    return merged

  def extract_output(self, acc):
    targets = acc["positives"] + acc["negatives"]
    return {
        "records": acc["records"],
        "targets": targets,
        "positives": acc["positives"],
        "negatives": acc["negatives"],
        "positive_rate": acc["positives"] / targets if targets else None,
        # Behaviors stored per record (the user's history in this split).
        "record_history_length": percentiles(acc["record_history"]),
        # Behaviors strictly before each target, before truncation to max_len.
        "sample_history_length": percentiles(acc["sample_history"]),
    }


class SplitStats(beam.PTransform):
  """One split's UserSequences -> singleton stats dict (records, targets, lengths ...)."""

  def expand(self, sequences):
    return sequences | "Stats" >> beam.CombineGlobally(_SplitStatsFn())


class _SumDictsFn(beam.CombineFn):
  """Key-wise sum of {name: int} dicts."""

  def create_accumulator(self):
    return collections.Counter()

  def add_input(self, acc, counts):
    acc.update(counts)
    return acc

  def merge_accumulators(self, accumulators):
    merged = collections.Counter()
    for acc in accumulators:
      merged.update(acc)
    return merged

  def extract_output(self, acc):
    return dict(acc)


class SumCounts(beam.PTransform):
  """{name: int} dicts -> one dict of key-wise sums ({} for an empty input)."""

  def expand(self, counts):
    return counts | "Sum" >> beam.CombineGlobally(_SumDictsFn())


def nest(entries: Iterable) -> dict:
  """[((key, subkey, ...), value), ...] -> nested dict."""
  out = {}
  for path, value in entries:
    node = out
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return out
