"""Each named PTransform of pipelines.transforms, on tiny inputs, against hand references."""
import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
import numpy as np

from eta_tf import features
from pipelines import parsing as P
from pipelines import records as R
from pipelines import transforms as T
from pipelines import global_facts
from pipelines import negative_sampling
from pipelines import split_stats
from pipelines import tags
from pipelines.build_dataset import LOCAL_RUNNER

PV, CART, BUY = (features.BEHAVIOR_TYPES[n] for n in ("pv", "cart", "buy"))


def _pipeline():
  # The FnApiRunner directly: DirectRunner would first try to download the Prism binary.
  return TestPipeline(runner=LOCAL_RUNNER)


def seq(user, history, targets=()):
  return R.UserSequence(user, np.asarray(history, np.int64).reshape(-1, 4),
                        np.asarray(targets, np.int64).reshape(-1, 4))


def as_lists(sequence):
  """Hashable, comparable view of a UserSequence for equal_to."""
  return (sequence.user_id, sequence.history.tolist(), sequence.targets.tolist())


def test_parse_and_validate_routes_every_row():
  lines = [b"1,10,100,pv,1511568000", b"", b"2,20,200,nope,1511568000",
           b"\xef\xbb\xbf3,30,300,buy,1511568001\r", b"4,40"]
  with _pipeline() as p:
    out = p | beam.Create(lines) | T.ParseAndValidate(P.SOURCE_BEHAVIORS)
    assert_that(out[tags.VALID], equal_to([(1, (1511568000, 10, 100, PV)),
                                        (3, (1511568001, 30, 300, BUY))]), label="valid")
    assert_that(out[tags.REJECTED], equal_to([
        (P.SOURCE_BEHAVIORS, P.REASON_EMPTY_LINE, b""),
        (P.SOURCE_BEHAVIORS, P.REASON_UNKNOWN_BEHAVIOR_TYPE, b"2,20,200,nope,1511568000"),
        (P.SOURCE_BEHAVIORS, P.REASON_WRONG_COLUMN_COUNT, b"4,40")]), label="rejected")
    total = out[tags.COUNTS] | split_stats.SumCounts()
    assert_that(total, equal_to([{T.input_key(P.SOURCE_BEHAVIORS): 5}]), label="counts")
    dead = out[tags.REJECTED] | T.FormatDeadLetter()
    assert_that(dead, equal_to(["behaviors\tempty_line\t",
                                "behaviors\tunknown_behavior_type\t2,20,200,nope,1511568000",
                                "behaviors\twrong_column_count\t4,40"]), label="dead")


def test_group_build_sequences_sorts_dedups_and_counts():
  behaviors = [(1, (30, 5, 50, PV)), (1, (10, 6, 60, PV)), (1, (30, 5, 50, PV)),
               (1, (20, 7, 70, CART)), (2, (5, 8, 80, PV))]
  impressions = [(1, (40, 9, 90, 1)), (1, (40, 9, 90, 1)), (3, (50, 9, 90, 0))]
  with _pipeline() as p:
    grouped = {P.SOURCE_BEHAVIORS: p | "B" >> beam.Create(behaviors),
                P.SOURCE_IMPRESSIONS: p | "I" >> beam.Create(impressions)} | T.GroupByUser()
    built = grouped | T.BuildSequences()
    assert_that(built[tags.VALID] | beam.Map(as_lists), equal_to([
        (1, [[10, 6, 60, PV], [20, 7, 70, CART], [30, 5, 50, PV]], [[40, 9, 90, 1]]),
        (2, [[5, 8, 80, PV]], []),
        (3, [], [[50, 9, 90, 0]]),
    ]))
    assert_that(built[tags.COUNTS] | split_stats.SumCounts(), equal_to([{
        "behaviors_accepted": 5, "behaviors_duplicates_removed": 1,
        "users_with_behaviors": 2, "impressions_accepted": 3,
        "impressions_duplicates_removed": 1, "users_with_impressions": 2}]), label="counts")
    # One source: plain GroupByKey, same output shape.
    single = ({P.SOURCE_BEHAVIORS: p | "B2" >> beam.Create(behaviors[:2])}
              | "G2" >> T.GroupByUser()
              | beam.MapTuple(lambda u, d: (u, sorted(d[P.SOURCE_BEHAVIORS]))))
    assert_that(single, equal_to([(1, [(10, 6, 60, PV), (30, 5, 50, PV)])]), label="single")


def test_select_positive_targets_and_filter_short_history():
  history = [[10, 1, 100, PV], [10, 1, 100, BUY], [20, 2, 200, CART], [30, 3, 300, PV],
             [40, 4, 400, PV]]
  time_split = {"eval_start": 40}
  with _pipeline() as p:
    positives = p | beam.Create([seq(7, history)]) | T.SelectPositiveTargets([PV, BUY])
    assert_that(positives | "L1" >> beam.Map(as_lists), equal_to([(7, history, [
        [10, 1, 100, 1], [30, 3, 300, 1], [40, 4, 400, 1]])]), label="positives")
    # min_history=2: the ts-10 target has 0 prior behaviors (train), ts 30 has 3, ts 40 has
    # 4 (eval) -> one train target filtered.
    kept = positives | T.FilterShortHistory(2, beam.pvalue.AsSingleton(
        p | "TS" >> beam.Create([time_split])))
    assert_that(kept[tags.VALID] | "L2" >> beam.Map(lambda s: s.targets[:, 0].tolist()),
                equal_to([[30, 40]]), label="kept")
    assert_that(kept[tags.FILTERED], equal_to([(features.TRAIN_SPLIT, 1)]), label="filtered")


def test_quantile_eval_start():
  def start(timestamps, fraction):
    times, counts = np.unique(np.asarray(timestamps, np.int64), return_counts=True)
    return global_facts.quantile_eval_start(times, counts, fraction)

  # 10 targets at 100..109: the latest 10% is the one at 109, 30% from 107 on.
  assert start(range(100, 110), 0.1) == 109
  assert start(range(100, 110), 0.3) == 107
  # Outliers far in the past do not move it (the old min..max rule put 95% in eval).
  assert start([1, 2] + list(range(1000, 1098)), 0.1) == 1088
  # Ties stay on one side: 6 targets at 50 -> eval is the 4 at 60 (40%) or all 10.
  assert start([50] * 6 + [60] * 4, 0.1) == 60
  assert start([50] * 6 + [60] * 4, 0.9) == 60  # train is never left empty
  assert start([7, 7], 0.5) == 8  # one distinct second: all train (the job reports it)
  assert start([], 0.1) is None


def test_user_last_eval_start():
  ts = np.asarray([10, 20, 20, 30], np.int64)
  assert T.user_last_eval_start(ts, 1) == 30
  assert T.user_last_eval_start(ts, 2) == 20  # tie with the 2nd last: 3 eval targets
  assert T.user_last_eval_start(ts, 9) == 10  # fewer targets than asked: all eval
  assert T.user_last_eval_start(ts[:0], 1) is None


def test_compute_time_split_and_split_by_time():
  a = seq(1, [[5, 1, 1, PV], [15, 2, 1, PV], [25, 3, 1, PV]],
          [[10, 9, 1, 1], [10, 8, 1, 0], [30, 9, 1, 1]])
  b = seq(2, [[5, 1, 1, PV]], [[20, 4, 1, 1]])  # only train targets
  with _pipeline() as p:
    sequences = p | beam.Create([a, b])
    time_split = sequences | global_facts.ComputeTimeSplit(eval_fraction=0.5)
    assert_that(time_split, equal_to([{"target_timestamp_min": 10, "method": "target_quantile",
                                       "target_timestamp_max": 30, "eval_start": 20}]),
                label="time")
    splits = sequences | T.SplitByTime(beam.pvalue.AsSingleton(time_split))
    assert_that(splits[features.TRAIN_SPLIT] | "LT" >> beam.Map(as_lists), equal_to([
        (1, [[5, 1, 1, PV], [15, 2, 1, PV]], [[10, 9, 1, 1], [10, 8, 1, 0]])]),
        label="train")
    assert_that(splits[features.EVAL_SPLIT] | "LE" >> beam.Map(as_lists), equal_to([
        (1, a.history.tolist(), [[30, 9, 1, 1]]),
        (2, [[5, 1, 1, PV]], [[20, 4, 1, 1]])]), label="eval")


def _catalog(pairs):
  return global_facts.Catalog(np.asarray(pairs, np.int64))


def test_sample_negatives_rules():
  rng = np.random.default_rng(0)
  catalog = _catalog([(1, 10), (1, 11), (1, 12), (2, 20), (3, 30), (3, 31)])
  positives = np.asarray([[100, 10, 1, 1], [200, 20, 2, 1], [300, 99, 7, 1]], np.int64)
  neg = negative_sampling.sample_negatives(positives, catalog, 50, rng).reshape(3, 50, 4)
  assert (neg[..., 3] == 0).all()
  assert (neg[:, :, 0] == positives[:, None, 0]).all()  # positive's timestamp
  # Category 1 has other items: same category, never the positive item.
  assert set(neg[0, :, 1]) == {11, 12} and (neg[0, :, 2] == 1).all()
  # Category 2 holds only the positive: any other item, with that item's category.
  assert 20 not in set(neg[1, :, 1]) and set(neg[1, :, 1]) <= {10, 11, 12, 30, 31}
  owner = dict(zip(catalog.item_ids.tolist(), catalog.item_categories.tolist()))
  assert all(owner[i] == c for i, c in neg[1, :, 1:3].tolist())
  # Unknown category: any item.
  assert set(neg[2, :, 1]) <= set(owner)
  # No other item anywhere: item 0 (unavailable).
  lonely = negative_sampling.sample_negatives(positives[:1], _catalog([(1, 10)]), 2, rng)
  assert (lonely[:, 1] == 0).all()
  # Seeded: same stream, same negatives.
  again = negative_sampling.sample_negatives(positives, catalog, 50, np.random.default_rng(0))
  assert np.array_equal(again.reshape(3, 50, 4), neg)


def test_build_catalog_and_sample_negatives_transform():
  a = seq(1, [[1, 10, 1, PV], [2, 11, 1, PV], [3, 20, 2, PV]], [[5, 10, 1, 1]])
  b = seq(2, [[1, 12, 1, PV]], [[6, 20, 2, 1]])
  with _pipeline() as p:
    sequences = p | beam.Create([a, b])
    catalog = sequences | global_facts.BuildCatalog()
    assert_that(catalog | beam.Map(lambda c: (c.item_ids.tolist(), c.category_ids.tolist())),
                equal_to([([10, 11, 12, 20], [1, 2])]), label="catalog")
    out = sequences | negative_sampling.SampleNegatives(beam.pvalue.AsSingleton(catalog), 2, seed=3)

    def check(s):
      t = s.targets
      assert len(t) == 3 and t[0, 3] == 1 and (t[1:, 3] == 0).all()
      assert (t[1:, 1] != t[0, 1]).all() and (t[:, 0] == t[0, 0]).all()
      return s.user_id, s.targets[1:, 1].tolist()

    assert_that(out[tags.VALID] | beam.Map(check) | beam.Map(lambda r: r[0]),
                equal_to([1, 2]), label="negatives")
  # Same seed twice -> same negatives (seeded per user, not per bundle).
  rng = np.random.default_rng([3, 1])
  expected = negative_sampling.sample_negatives(a.targets, global_facts.Catalog(np.asarray(
      [(1, 10), (1, 11), (2, 20), (1, 12)])), 2, rng)
  assert set(expected[:, 1]) <= {11, 12}


def test_encode_examples_matches_tensorflow_protobuf():
  sequences = [seq(5, [[1, 2, 3, 1], [4, 5, 6, 2]], [[7, 8, 9, 1]]), seq(6, [], [[1, 1, 1, 0]])]
  with _pipeline() as p:
    encoded = p | beam.Create(sequences) | T.EncodeExamples()
    assert_that(encoded, equal_to([R.encode_example_with_protobuf(s) for s in sequences]))
  decoded = R.decode_example(R.encode_example(sequences[0]))
  assert as_lists(decoded) == as_lists(sequences[0])


def test_split_stats_against_numpy():
  a = seq(1, [[1, 1, 1, 1], [2, 2, 2, 1], [3, 3, 3, 1]],
          [[2, 9, 9, 1], [2, 8, 9, 0], [9, 9, 9, 1]])
  b = seq(2, [[1, 1, 1, 1]], [[1, 5, 5, 0]])
  with _pipeline() as p:
    stats = p | beam.Create([a, b]) | split_stats.SplitStats()
    prior = [1, 1, 3, 0]  # behaviors strictly before each target

    def check(s):
      assert (s["records"], s["targets"], s["positives"], s["negatives"]) == (2, 4, 2, 2)
      assert s["positive_rate"] == 0.5
      assert s["record_history_length"]["max"] == 3
      assert s["sample_history_length"]["mean"] == np.mean(prior)
      assert s["sample_history_length"]["p50"] == 1 and s["sample_history_length"]["max"] == 3
      return True

    assert_that(stats | beam.Map(check), equal_to([True]))


def test_percentiles_nearest_rank():
  values = np.random.default_rng(1).integers(0, 50, 1001)
  hist = dict(zip(*np.unique(values, return_counts=True)))
  out = split_stats.percentiles({int(k): int(v) for k, v in hist.items()})
  s = np.sort(values)
  for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
    assert out[name] == s[int(np.ceil(q / 100 * len(s))) - 1]
  assert out["max"] == s[-1] and out["count"] == 1001
  assert split_stats.percentiles({})["p50"] is None


def test_compacting_combine_merges_often_and_exactly():
  class KeyCounts(global_facts.CompactingCombineFn):
    _MIN_PENDING = 3  # merge every few elements

    def block(self, keys):
      return np.stack(np.unique(np.asarray(keys, np.int64), return_counts=True), axis=1)

    def merge_blocks(self, blocks):
      rows = np.concatenate(blocks)
      return R.aggregate_rows(rows[:, :1], rows[:, 1])

    def finish(self, block):
      return {} if block is None else dict(block.tolist())

  fn = KeyCounts()
  rng = np.random.default_rng(0)
  elements = [rng.integers(0, 9, rng.integers(0, 5)).tolist() for _ in range(60)]
  halves = []
  for part in (elements[:30], elements[30:]):
    acc = fn.create_accumulator()
    for element in part:
      acc = fn.add_input(acc, element)
    assert len(acc[1]) <= 4  # pending blocks are merged, not piled up
    halves.append(acc)
  got = fn.extract_output(fn.merge_accumulators(halves))
  keys, counts = np.unique(np.concatenate([np.asarray(e, np.int64) for e in elements]),
                           return_counts=True)
  assert got == dict(zip(keys.tolist(), counts.tolist()))
  assert fn.extract_output(fn.create_accumulator()) == {}
