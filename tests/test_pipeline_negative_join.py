"""Matched negatives by keyed joins: grouping-independent draws, the join back to each
user's sequence, and the Beam form against the numpy pieces."""
import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
import numpy as np

from pipelines import negative_fallbacks as B
from pipelines import negative_join as J
from pipelines import negatives as N
from pipelines.build_dataset import LOCAL_RUNNER
from pipelines.records import UserSequence
from pipelines.tags import VALID


def _sequences(seed=0, users=40, categories=9):
  """Random users whose targets revisit their history about 40% of the time (an item's
  category is fixed: item % categories + 1)."""
  rng = np.random.default_rng(seed)
  out = []
  for user in range(1, users + 1):
    items = rng.integers(1, 60, rng.integers(1, 15))
    history = np.stack([np.sort(rng.integers(0, 1000, len(items))), items,
                        items % categories + 1, np.ones(len(items))], axis=1)
    n = rng.integers(1, 12)
    targets = np.where(rng.random(n) < 0.4, rng.choice(items, n), rng.integers(1, 60, n))
    targets = np.stack([np.sort(rng.integers(0, 1000, n)), targets,
                        targets % categories + 1, np.ones(n)], axis=1)
    out.append(UserSequence(user, history.astype(np.int64), targets.astype(np.int64)))
  return out


def _queries(seed=0, users=40, categories=9, history_length=8):
  """Query rows (with their history rows) of random users (query_blocks of _sequences)."""
  return np.concatenate([b for s in _sequences(seed, users, categories)
                         for _, b in J.query_blocks(s, 1, 1, history_length, 3, 5)])


def _pad(rows):
  """Query rows [n, 6] (category, user, target, time, item, needs) with no history."""
  return np.concatenate([rows, np.zeros((len(rows), J.QUERY_COLUMNS - 6), np.int64)], axis=1)


def _draws(groups, edges, totals, num_negatives=3, seed=5):
  out = {}
  for blocks in groups:
    by_user, _, _ = J.draw_group(blocks, edges, totals, num_negatives, seed)
    for user, rows in by_user:
      for row in rows:
        out.setdefault((user, int(row[0])), []).append(tuple(row[1:].tolist()))
  return out


def test_draws_do_not_depend_on_how_categories_are_grouped(monkeypatch):
  rows = _queries()
  edges = np.asarray([250, 500, 750])
  everything = N.ItemWeights(np.stack([rows[:, 4], rows[:, 0], np.ones(len(rows))], axis=1))
  everything = everything.shard_totals()
  one_group = _draws([[rows]], edges, everything)
  assert sum(len(v) for v in one_group.values()) == 3 * rows[:, J.Q_NEEDS].sum()
  assert (rows[:, J.Q_OCCURRENCES] > 0).any() and (rows[:, J.Q_KIND] == J.HISTORY_ROW).any()
  assert (rows[:, J.Q_KIND] == J.REVISIT_ROW).any()
  for num_shards in (2, 5, 64):
    keys = J.category_shard(rows[:, 0], num_shards)
    # Blocks in another order too: the result must not depend on arrival order.
    groups = [[rows[keys == k][::-1]] for k in np.unique(keys)]
    assert _draws(groups, edges, everything) == one_group
  # Never the positive item. A revisit's negative is another item of its history (last 8
  # behaviors before it) if there is one; any other's is of the positive's category and
  # not in its history.
  by_key = {(r[1], r[2]): r for r in rows[rows[:, J.Q_KIND] == J.QUERY_ROW]}
  sequences = {s.user_id: s for s in _sequences()}
  for (user, target), negatives in one_group.items():
    query, sequence = by_key[(user, target)], sequences[user]
    history = set(sequence.history[query[J.Q_LO]:query[J.Q_HI], 1].tolist())
    for negative in negatives:
      assert negative[1] != query[J.Q_ITEM]
      if query[J.Q_OCCURRENCES] and history - {query[J.Q_ITEM]}:
        assert negative[1] in history
      else:
        assert negative[2] == query[J.Q_CATEGORY] and negative[1] not in history
  assert _draws([[rows]], edges, everything, seed=6) != one_group
  monkeypatch.setattr(J, "DRAW_CHUNK", 7)  # drawn a few positives at a time: the same
  assert _draws([[rows]], edges, everything) == one_group


def test_category_shard_is_a_fixed_hash():
  categories = np.arange(1, 2001)
  keys = J.category_shard(categories, 16)
  assert keys.min() >= 0 and keys.max() < 16
  assert np.array_equal(keys, J.category_shard(categories[::-1], 16)[::-1])
  assert np.bincount(keys, minlength=16).min() > 2000 / 16 / 2  # spread, not one key


def test_uniforms_are_per_row_functions_of_the_keys():
  a, b = np.arange(1000), np.arange(1000) % 7
  u = N.uniforms(3, a, b)
  assert ((u >= 0) & (u < 1)).all() and abs(u.mean() - 0.5) < 0.05
  assert all(N.uniforms(3, a[i:i + 1], b[i:i + 1])[0] == u[i] for i in (0, 17, 999))
  assert not np.array_equal(u, N.uniforms(4, a, b))


def _attach_reference(targets, drawn):
  """Python loop: each target row, then its drawn rows (item > 0) in draw order."""
  out = []
  for index, target in enumerate(targets.tolist()):
    out.append(target)
    out += [row[1:] for row in drawn.tolist() if row[0] == index and row[2] > 0]
  return np.asarray(out, np.int64).reshape(-1, 4)


def test_attach_negatives_puts_each_after_its_positive():
  targets = np.asarray([[10, 1, 1, 1], [20, 2, 1, 1], [30, 3, 2, 1]], np.int64)
  # Two blocks (two category groups), draws of target 2 before those of target 0.
  drawn = [np.asarray([[2, 30, 8, 2, 0], [2, 30, 0, 0, 0]], np.int64),
           np.asarray([[0, 10, 5, 1, 0], [0, 10, 6, 1, 0]], np.int64)]
  sequence = UserSequence(7, np.zeros((0, 4), np.int64), targets)
  attached, counts = B.attach_negatives(sequence, drawn)
  got = attached.targets
  assert np.array_equal(got, _attach_reference(targets, np.concatenate(drawn)))
  assert got[:, 3].tolist() == [1, 0, 0, 1, 1, 0]  # the unavailable draw (item 0) dropped
  assert counts == {"negatives_unavailable": 1}
  assert B.attach_negatives(sequence, []) == (sequence, {})
  # A fallback for draw 1 of target 2 (rounds 3 and 1 acceptable: round 1 taken).
  fallbacks = [np.asarray([[2, 1, 3, 40, 4], [2, 1, 1, 41, 5]], np.int64)]
  attached, counts = B.attach_negatives(sequence, drawn, fallbacks)
  assert attached.targets[-1].tolist() == [30, 41, 5, 0]
  assert counts == {"negatives_fallback_any": 1}


def test_keyed_matched_negatives_transform_equals_the_numpy_pieces():
  history = np.asarray([[1, 9, 1, 1], [2, 8, 1, 1]], np.int64)
  sequences = []
  for user in range(1, 9):
    targets = np.asarray([[5 + user, user % 4 + 1, 1 + user % 2, 1],
                          [50 + user, user % 3 + 4, 1, 1]], np.int64)
    sequences.append(UserSequence(user, history, targets))
  edges = np.asarray([30])
  everything = N.ItemWeights(np.concatenate(
      [np.stack([s.targets[:, 1], s.targets[:, 2], np.ones(2)], axis=1) for s in sequences]))
  blocks = [b for s in sequences for _, b in J.query_blocks(s, 1, 1, 1024, 2, 11)]
  by_user, candidates, counts = J.draw_group(blocks, edges, everything.shard_totals(), 2, 11)
  assert not candidates  # every category has another item here
  drawn = dict(by_user)
  expected = {s.user_id: B.attach_negatives(s, [drawn[s.user_id]])[0].targets.tolist()
              for s in sequences}
  with beam.Pipeline(runner=LOCAL_RUNNER) as p:
    side = lambda value, label: beam.pvalue.AsSingleton(p | label >> beam.Create([value]))
    sequences_in = p | beam.Create(sequences)
    out = sequences_in | J.KeyedMatchedNegatives(
        side(edges, "edges"), sequences_in | N.KeyedItemWeights(), 2, 11, min_history=1,
        num_shards=3)

    def check(actual):
      assert {s.user_id: s.targets.tolist() for s in actual} == expected

    assert_that(out[VALID], check)
  assert all(len(expected[u]) == 6 for u in expected) and not any(counts.values())


def test_streaming_draw_equals_the_grouped_draw(monkeypatch):
  """The sharded job's StreamingDrawNegatives (catalog combined, queries drawn in batches
  as they stream) writes the draws, fallback candidates and counts of draw_group."""
  rows = _queries(seed=3)
  # A category with a single item: its draws leave the category (fallback candidates).
  lonely = _pad(np.asarray([[99, 7, 0, 400, 77, 1], [99, 8, 0, 420, 77, 1]], np.int64))
  # Two items of one category in different windows: draws leave their window.
  apart = _pad(np.asarray([[98, 9, 0, 100, 55, 1], [98, 10, 0, 900, 56, 1]], np.int64))
  rows = np.concatenate([rows, lonely, apart])
  edges = np.asarray([250, 500, 750])
  totals = N.ItemWeights(np.stack([rows[:, 4], rows[:, 0], np.ones(len(rows))],
                                  axis=1)).shard_totals()
  by_user, candidates, counts = J.draw_group([rows], edges, totals, 3, 5)
  assert candidates and sum(counts.values())
  expected = {u: r.tolist() for u, r in by_user}
  expected_candidates = sorted(r for _, c in candidates for r in c.tolist())
  pairs = [(0, rows[rows[:, 1] == user]) for user in np.unique(rows[:, 1])]
  monkeypatch.setattr(J, "DRAW_BATCH_ROWS", 7)  # several batches
  with beam.Pipeline(runner=LOCAL_RUNNER) as p:
    out = p | J.StreamingDrawNegatives(lambda: beam.Create(pairs), edges, totals, 3, 5)

    def check_draws(actual):
      got = {}
      for user, r in actual:
        got.setdefault(user, []).extend(r.tolist())
      assert got == expected

    def check_candidates(actual):
      assert sorted(r for _, c in actual for r in c.tolist()) == expected_candidates

    def check_counts(actual):
      summed = {}
      for c in actual:
        for k, v in c.items():
          summed[k] = summed.get(k, 0) + v
      assert summed == {k: v for k, v in counts.items() if v}

    assert_that(out[VALID], check_draws, label="draws")
    assert_that(out[J.FALLBACKS], check_candidates, label="candidates")
    assert_that(out["counts"], check_counts, label="counts")


def test_batch_files_round_trip_every_row_per_key(tmp_path):
  """shard_files.WriteBatchesByKey writes each key's batches under its own prefix (one
  transform for all keys); ReadBatches gives back every row once; no match -> nothing."""
  from pipelines import shard_files as F  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(5)
  pairs = [(int(rng.integers(0, 4)), rng.integers(0, 50, (int(rng.integers(1, 6)), 3)))
           for _ in range(80)]
  prefix = lambda k: F.shard_name(str(tmp_path), "rows", k)
  with beam.Pipeline(runner=LOCAL_RUNNER) as p:
    _ = p | beam.Create(pairs) | F.WriteBatchesByKey(prefix, max_pending_rows=25)
  for key in range(4):
    with beam.Pipeline(runner=LOCAL_RUNNER) as p:
      out = p | F.ReadBatches(prefix(key) + "-*")

      def check(actual, key=key):
        assert len(actual) > 1 and all(k == key for k, _ in actual)  # several files
        got = sorted(r for _, rows in actual for r in rows.tolist())
        assert got == sorted(r for k, rows in pairs if k == key for r in rows.tolist())

      assert_that(out, check)
  with beam.Pipeline(runner=LOCAL_RUNNER) as p:
    assert_that(p | F.ReadBatches(prefix(9) + "-*"), equal_to([]))


def test_concatenated_batches_keep_every_row_and_split_back_by_user():
  """The sharded job's stored batches (shard_files.ConcatenateRowsByKey over
  with_user_column rows) hold every row once, per key, and split_by_user gives each
  user's rows back in their order."""
  from pipelines import shard_files as F  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(2)
  pairs = [(int(rng.integers(0, 3)), B.with_user_column(
      user, rng.integers(0, 100, (int(rng.integers(1, 5)), 2)))) for user in range(60)]
  with beam.Pipeline(runner=LOCAL_RUNNER) as p:
    out = p | beam.Create(pairs) | F.ConcatenateRowsByKey(max_pending_rows=10)

    def check(actual):
      assert len(actual) < len(pairs)  # batched
      assert all(len(rows) <= 10 + 4 for _, rows in actual)  # flushed at the bound
      for key in range(3):
        got = [r for k, rows in actual if k == key for r in rows.tolist()]
        want = [r for k, rows in pairs if k == key for r in rows.tolist()]
        assert sorted(got) == sorted(want)
        users = dict(B.split_by_user(np.concatenate(
            [rows for k, rows in actual if k == key])))
        for _, rows in [kv for kv in pairs if kv[0] == key]:
          assert users[int(rows[0, 0])].tolist() == rows[:, 1:].tolist()

    assert_that(out, check)
