"""Composable Beam PTransforms: raw log lines -> labelled user sequences -> tf.train.Examples.

The chain used by pipelines.build_dataset:

  lines --ParseAndValidate--> (user, event) + rejected rows
        --GroupByUser--> (user, {source: [event, ...]})
        --BuildSequences--> UserSequence (sorted, deduplicated history; impression targets)
        --SelectPositiveTargets--> behaviors of the positive types become label-1 targets
        --negative_join.KeyedMatchedNegatives--> matched negatives per positive (default)
        --FilterShortHistory--> drops (and counts) targets with < min_history prior behaviors
        --SampleNegatives--> seeded uniform same-category negatives (--negative_sampler=uniform)
        --SplitByTime--> train / eval UserSequences
        --EncodeExamples--> serialised tf.train.Example

Per-event work happens only in ParseAndValidate and the shuffle of GroupByUser; everything
after it runs once per user on numpy matrices (records.UserSequence), which is what keeps
the Python SDK's per-element overhead down. Global facts (time range, item catalog) are
computed from the per-user sequences and fed back as side inputs.

This module holds parsing, grouping, per-user sequences and targets, split and encode;
pipelines.global_facts (time split, catalog), pipelines.negative_sampling and
pipelines.split_stats hold the rest, pipelines.tags the output tags; import those names
from there.
"""
import collections
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.transforms import window
from apache_beam.utils import windowed_value
import numpy as np

from eta_tf import features
from pipelines import parsing
from pipelines.parsing import KIND, TIMESTAMP
from pipelines.records import UserSequence, empty_events, encode_example
from pipelines.records import prior_counts, sort_unique

from pipelines.tags import COUNTS, FILTERED, REJECTED, VALID


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


