"""Beam pipeline: parsing (property-based) and PTransforms,
and the tf.data reader's expansion (no history at or after a target's time)."""

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import tensorflow as tf

from eta_tf import data
from eta_tf import features as F
from pipelines import parsing
from pipelines import transforms as T
from pipelines import global_facts
from pipelines import negative_sampling
from pipelines import tags


# ----------------------------------------------------------------------------- parsing
@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=80), st.text(max_size=80),
                 st.lists(st.one_of(st.integers(-10, 2 ** 64), st.sampled_from(
                     ["pv", "buy", "cart", "fav", "PV", "", " 1", "1.5", "\ufeff1"])),
                          max_size=7).map(lambda xs: ",".join(map(str, xs)))))
def test_parser_never_raises_and_returns_a_record_or_a_reason(line):
  parsed, reason = parsing.parse_behavior_line(line)
  assert (parsed is None) != (reason is None)
  if reason is not None:
    assert reason in parsing.REASONS
  else:
    user, (ts, item, category, code) = parsed
    assert user > 0 and item > 0 and category > 0
    assert parsing.DEFAULT_MIN_TIMESTAMP <= ts < parsing.DEFAULT_MAX_TIMESTAMP
    assert code in F.BEHAVIOR_TYPES.values()


def test_parser_reasons_and_tolerated_forms():
  ok = parsing.parse_behavior_line
  assert ok(b"1,2,3,pv,1511539200") == ((1, (1511539200, 2, 3, 1)), None)
  assert ok(b"\xef\xbb\xbf1,2,3,buy,1511539200")[0] == (1, (1511539200, 2, 3, 4))  # BOM
  assert ok(b"1,2,3,cart,1511539200\r")[0] == (1, (1511539200, 2, 3, 2))  # CRLF
  cases = {
      b"": parsing.REASON_EMPTY_LINE,
      b"1,2,3,pv": parsing.REASON_WRONG_COLUMN_COUNT,
      b"1,2,3,pv,1511539200,9": parsing.REASON_WRONG_COLUMN_COUNT,
      b"x,2,3,pv,1511539200": parsing.REASON_NON_INTEGER,
      b"1,0,3,pv,1511539200": parsing.REASON_NON_POSITIVE_ID,
      b"1,-2,3,pv,1511539200": parsing.REASON_NON_POSITIVE_ID,
      b"1,2,3,click,1511539200": parsing.REASON_UNKNOWN_BEHAVIOR_TYPE,
      b"1,2,3,pv,-5": parsing.REASON_TIMESTAMP_OUT_OF_RANGE,
      b"1,2,3,pv,99999999999": parsing.REASON_TIMESTAMP_OUT_OF_RANGE,
  }
  for line, reason in cases.items():
    assert ok(line) == (None, reason), line


def test_parse_and_validate_ptransform_splits_valid_and_rejected():
  lines = [b"1,2,3,pv,1511539200", b"", b"1,2,3,pv", b"4,5,6,fav,1511539300"]
  with TestPipeline() as p:
    out = (p | beam.Create(lines)
           | T.ParseAndValidate(parsing.SOURCE_BEHAVIORS))
    assert_that(out[tags.VALID], equal_to([(1, (1511539200, 2, 3, 1)),
                                        (4, (1511539300, 5, 6, 3))]), label="valid")
    assert_that(out[tags.REJECTED] | beam.MapTuple(lambda s, r, l: (s, r)),
                equal_to([(parsing.SOURCE_BEHAVIORS, parsing.REASON_EMPTY_LINE),
                          (parsing.SOURCE_BEHAVIORS,
                           parsing.REASON_WRONG_COLUMN_COUNT)]), label="rejected")


# ----------------------------------------------------------------------------- the reader
# (job-level counts, dead letter and rerun determinism: tests/test_pipeline_end_to_end.py)
def test_reader_matches_reference_and_history_is_strictly_before_target(small_data_dir):
  max_len = 64
  records = data.read_records(small_data_dir, F.EVAL_SPLIT)
  expected = data.reference_samples(records, max_len)
  dataset = data.make_dataset(small_data_dir, F.EVAL_SPLIT, max_len, 128, shuffle=False)
  got = []
  for batch, labels in dataset:
    batch = {k: v.numpy() for k, v in batch.items()}
    for i, label in enumerate(labels.numpy()):
      got.append(({k: v[i] for k, v in batch.items()}, float(label)))
  assert len(got) == len(expected) > 0

  def key(sample):
    feats, label = sample
    return (int(feats[F.USER_ID]), int(feats[F.TARGET_TIMESTAMP]),
            int(feats[F.TARGET_ITEM_ID]), label)

  for (g, gl), (e, el) in zip(sorted(got, key=key), sorted(expected, key=key)):
    assert gl == el
    for name in F.HISTORY_FEATURES:
      np.testing.assert_array_equal(g[name], e[name])
    real = g[F.HIST_ITEM_ID] > 0
    assert (g[F.HIST_TIMESTAMP][real] < g[F.TARGET_TIMESTAMP]).all()
    # Left-padded: real behaviors are a suffix, oldest first.
    assert not real.any() or real[real.argmax():].all()
    assert (np.diff(g[F.HIST_TIMESTAMP][real]) >= 0).all()


# ------------------------------------------------------------------ one PTransform each
def _plain(sequence):
  """UserSequence -> comparable tuples (numpy arrays do not compare as values)."""
  return (sequence.user_id, tuple(map(tuple, sequence.history.tolist())),
          tuple(map(tuple, sequence.targets.tolist())))


def _seq(user, history, targets=()):
  from pipelines.records import UserSequence  # pylint: disable=g-import-not-at-top
  return UserSequence(user, np.asarray(history, np.int64).reshape(-1, 4),
                      np.asarray(targets, np.int64).reshape(-1, 4))


def test_group_and_build_sequences_sort_and_deduplicate():
  events = [(7, (30, 1, 2, 1)), (7, (10, 3, 4, 1)), (7, (30, 1, 2, 1)), (8, (5, 9, 9, 4))]
  with TestPipeline() as p:
    grouped = ({parsing.SOURCE_BEHAVIORS: p | beam.Create(events)} | T.GroupByUser())
    built = grouped | T.BuildSequences()
    assert_that(built[tags.VALID] | beam.Map(_plain), equal_to([
        (7, ((10, 3, 4, 1), (30, 1, 2, 1)), ()), (8, ((5, 9, 9, 4),), ())]))


def test_select_positive_targets_and_filter_short_history():
  history = [(10, 1, 1, 1), (20, 2, 1, 4), (30, 3, 2, 1), (30, 3, 2, 4)]
  with TestPipeline() as p:
    seqs = p | beam.Create([_seq(1, history)]) | T.SelectPositiveTargets([1])
    assert_that(seqs | "plain1" >> beam.Map(_plain), equal_to([
        (1, tuple(history), ((10, 1, 1, 1), (30, 3, 2, 1)))]), label="select")
    split = beam.pvalue.AsSingleton(p | "split" >> beam.Create([{"eval_start": 25}]))
    filtered = seqs | T.FilterShortHistory(1, split)
    # The first pv has no earlier behavior: dropped and counted as a train target.
    assert_that(filtered[tags.VALID] | "plain2" >> beam.Map(_plain), equal_to([
        (1, tuple(history), ((30, 3, 2, 1),))]), label="kept")
    assert_that(filtered[tags.FILTERED], equal_to([(F.TRAIN_SPLIT, 1)]), label="counted")


def test_split_by_time_truncates_train_history():
  history = [(10, 1, 1, 1), (20, 2, 1, 1), (30, 3, 1, 1)]
  targets = [(15, 5, 1, 1), (35, 6, 1, 0)]
  with TestPipeline() as p:
    split = beam.pvalue.AsSingleton(p | "split" >> beam.Create([{"eval_start": 30}]))
    out = p | beam.Create([_seq(4, history, targets)]) | T.SplitByTime(split)
    assert_that(out[F.TRAIN_SPLIT] | "t" >> beam.Map(_plain), equal_to([
        (4, ((10, 1, 1, 1), (20, 2, 1, 1)), ((15, 5, 1, 1),))]), label="train")
    assert_that(out[F.EVAL_SPLIT] | "e" >> beam.Map(_plain), equal_to([
        (4, tuple(history), ((35, 6, 1, 0),))]), label="eval")


def _check_negatives(actual):
  (_, _, targets), = actual
  assert [t[3] for t in targets] == [1, 0, 1, 0]  # each positive followed by a negative
  first_negative, second_negative = targets[1], targets[3]
  assert first_negative[2] == 1 and first_negative[1] in (12, 13)  # same category, not 11
  assert first_negative[0] == 40  # the positive's timestamp
  # Category 2 has no other item: the negative comes from elsewhere, never the positive.
  assert second_negative[1] != 21 and second_negative[0] == 50


def test_sample_negatives_same_category():
  catalog = global_facts.Catalog(np.array([[1, 11], [1, 12], [1, 13], [2, 21]]))  # (category, item)
  positives = [(40, 11, 1, 1), (50, 21, 2, 1)]
  with TestPipeline() as p:
    side = beam.pvalue.AsSingleton(p | "cat" >> beam.Create([catalog]))
    out = (p | beam.Create([_seq(3, [(1, 11, 1, 1)], positives)])
           | negative_sampling.SampleNegatives(side, 1, seed=9))
    assert_that(out[tags.VALID] | beam.Map(_plain), _check_negatives)
