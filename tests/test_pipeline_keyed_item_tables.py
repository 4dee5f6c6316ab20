"""The per-item tables keyed by item shard: the "any item" negative fallback and the
leakage check's item facts equal their one-global-table references."""
import collections

import apache_beam as beam
from apache_beam.testing.util import assert_that
import numpy as np

from pipelines import leakage as L
from pipelines import negative_fallbacks as B
from pipelines import negative_join as J
from pipelines import negative_history as H
from pipelines import negative_tables as T
from pipelines import negatives as N
from pipelines.build_dataset import LOCAL_RUNNER
from pipelines.records import UserSequence, prior_counts
from pipelines.tags import COUNTS, VALID

EDGES = np.asarray([300, 600])


def _sequences(seed=0, users=30):
  """Users with histories and positive targets; categories 1-3 have many items, 4-9 one
  item each (their draws must leave the category: the "any item" fallback)."""
  rng = np.random.default_rng(seed)
  out = []
  for user in range(1, users + 1):
    n = int(rng.integers(2, 8))
    history = np.stack([np.sort(rng.integers(0, 900, n)), rng.integers(1, 40, n),
                        rng.integers(1, 4, n), np.ones(n)], axis=1).astype(np.int64)
    t = int(rng.integers(1, 6))
    categories = rng.integers(1, 10, t)
    items = np.where(categories >= 4, 100 + categories, rng.integers(1, 40, t))
    targets = np.stack([np.sort(rng.integers(0, 900, t)), items, categories, np.ones(t)],
                       axis=1).astype(np.int64)
    out.append(UserSequence(user, history, targets))
  return out


def _reference_negatives(sequences, num_negatives, seed, edges=EDGES):
  """One global MatchedCatalog of the positives that are not revisits (its ItemWeights
  over all positives), drawn per user; revisits' negatives from their histories."""
  length = H.DEFAULT_HISTORY_LENGTH
  occurrences = {s.user_id: H.target_occurrences(s, length, by_item_only=True)
                 for s in sequences}
  rows = np.concatenate([s.targets for s in sequences])
  first = np.concatenate([occurrences[s.user_id] == 0 for s in sequences])
  cells = np.stack([rows[:, 2], N.window_of(rows[:, 0], edges), rows[:, 1],
                    np.ones(len(rows))], axis=1)[first]
  everything = N.ItemWeights(np.stack([rows[:, 1], rows[:, 2], np.ones(len(rows))], axis=1))
  catalog = N.MatchedCatalog(cells, edges, everything)
  out, totals = {}, collections.Counter()
  for s in sequences:
    keys = np.stack([np.full(len(s.targets), s.user_id), np.arange(len(s.targets))], axis=1)
    lo, hi = H.history_ranges(s, length)
    revisits = np.flatnonzero(occurrences[s.user_id] > 0)
    predrawn = H.revisit_draws(s, revisits, lo[revisits], hi[revisits],
                               occurrences[s.user_id][revisits], num_negatives, seed,
                               N.uniforms)
    skip = np.zeros(len(s.targets) * num_negatives, bool)
    skip[predrawn[:, 0] * num_negatives + predrawn[:, 1]] = True
    match = H.HistoryMatch(H.sequence_index(s), keys[:, 0], s.targets[:, 2], lo, hi)
    drawn, counts = N.sample_matched_negatives(s.targets, catalog, num_negatives, seed, keys,
                                               history=match, skip=skip)
    drawn[skip, 1], drawn[skip, 2] = predrawn[:, 2], predrawn[:, 3]
    totals.update(counts)
    drawn = np.concatenate([np.repeat(keys[:, 1], num_negatives)[:, None], drawn], axis=1)
    out[s.user_id] = B.attach_negatives(s, [drawn])[0].targets.tolist()
  return out, totals


def test_keyed_any_item_fallback_equals_the_global_table_draws():
  sequences = _sequences()
  expected, reference_counts = _reference_negatives(sequences, 3, seed=7)
  assert reference_counts["negatives_fallback_any"] > 20  # the keyed path is exercised
  with beam.Pipeline(runner=LOCAL_RUNNER) as p:
    seqs = p | beam.Create(sequences)
    edges = beam.pvalue.AsSingleton(p | "Edges" >> beam.Create([EDGES]))
    out = seqs | J.KeyedMatchedNegatives(edges, seqs | N.KeyedItemWeights(), 3, 7,
                                         min_history=0, num_shards=4)

    def check_records(actual):
      assert {s.user_id: s.targets.tolist() for s in actual} == expected

    def check_counts(actual):
      summed = collections.Counter()
      for counts in actual:
        summed.update(counts)
      assert summed["negatives_fallback_any"] == reference_counts["negatives_fallback_any"]
      assert summed["negatives_fallback_category"] == reference_counts[
          "negatives_fallback_category"]

    assert_that(out[VALID], check_records, label="records")
    assert_that(out[COUNTS], check_counts, label="counts")


def test_sharded_negative_steps_equal_the_global_table_draws(tmp_path):
  """pipelines.sharded_negatives (item counts summed per item shard in step c, queries
  drawn streaming in step b) writes the draws of one global catalog and ItemWeights."""
  import types  # pylint: disable=g-import-not-at-top
  from pipelines import shard_files as F  # pylint: disable=g-import-not-at-top
  from pipelines import sharded_negatives as SN  # pylint: disable=g-import-not-at-top
  sequences, work, num_shards = _sequences(seed=5, users=40), str(tmp_path), 2
  with beam.Pipeline(runner=LOCAL_RUNNER) as p:
    parts = p | beam.Create(sequences) | beam.Partition(
        lambda s, n: F.shard_of_user(s.user_id, n), num_shards)
    for shard in range(num_shards):
      _ = parts[shard] | f"Write{shard}" >> F.WritePickled(
          F.shard_name(work, "sequences", shard))
  args = types.SimpleNamespace(negative_time_windows=3, min_history=0,
                               negatives_per_positive=3, seed=7,
                               history_length=H.DEFAULT_HISTORY_LENGTH)
  counts = SN.run(args, lambda: beam.options.pipeline_options.PipelineOptions(
      runner=LOCAL_RUNNER), work, "sequences", num_shards)
  edges, totals = F.read_pickle_file(SN._facts_path(work))  # pylint: disable=protected-access
  # The reference with the job's own window edges (target time quantiles).
  expected, reference_counts = _reference_negatives(sequences, 3, seed=7, edges=edges)
  assert reference_counts["negatives_fallback_any"] > 20  # the keyed path is exercised
  assert totals.sum() == sum(int(s.targets[:, 3].sum()) for s in sequences)
  summed = collections.Counter()
  for c in counts:
    summed.update(c)
  assert summed["negatives_fallback_any"] == reference_counts["negatives_fallback_any"]
  with beam.Pipeline(runner=LOCAL_RUNNER) as p:
    attached = p | F.ReadPickled(F.all_shards(work, SN.ATTACHED))

    def check(actual):
      assert {s.user_id: s.targets.tolist() for s in actual} == expected

    assert_that(attached, check)


def test_fallback_offsets_locate_the_global_draw():
  rng = np.random.default_rng(1)
  rows = np.stack([rng.integers(1, 500, 300), rng.integers(1, 9, 300),
                   rng.integers(1, 5, 300)], axis=1)
  table = N.ItemWeights(rows)
  u = N.uniforms(3, np.arange(5000))
  whole = table.draw(np.zeros(5000, np.int64), np.full(5000, len(table)), u)
  shards, offsets = N.fallback_offsets(u, table.shard_totals())
  got_items = np.zeros(5000, np.int64)
  for shard in np.unique(shards):
    part = N.ItemWeights(rows[N.item_shard(rows[:, 0]) == shard])  # one shard's rows only
    got_items[shards == shard] = part.draw_at(offsets[shards == shard])[0]
  assert np.array_equal(got_items, whole[0])


def _reference_leakage(sequences):
  """Plain Python: item counts and first times over all histories, pairwise AUCs."""
  count, first = collections.Counter(), {}
  for s in sequences:
    for t, item, _, _ in s.history.tolist():
      count[item] += 1
      first[item] = min(first.get(item, t), t)
  out = {}
  for split in ("train", "eval"):
    scores = {name: {0: [], 1: []} for name in L.SCORES}
    for s in sequences:
      for t, item, _, label in s.targets.tolist():
        if (t >= 600) != (split == "eval"):
          continue
        start = max([e for e in EDGES.tolist() if e <= t], default=-(1 << 63))
        scores["popularity"][label].append(count[item])
        scores["seen_before_window"][label].append(int(first.get(item, 1 << 62) < start))
        before = [h for h in s.history.tolist() if h[0] < t][-H.DEFAULT_HISTORY_LENGTH:]
        scores["history_occurrences"][label].append(sum(h[1] == item for h in before))
    out[split] = {}
    for name, by_label in scores.items():
      pairs = [(p > n) + 0.5 * (p == n) for p in by_label[1] for n in by_label[0]]
      out[split][f"{name}_auc"] = sum(pairs) / len(pairs)
  return out


def test_keyed_leakage_check_equals_the_global_item_facts():
  sequences = []
  for s in _sequences(seed=2, users=40):  # half the targets negatives
    labels = (np.arange(len(s.targets)) % 2).astype(np.int64)
    sequences.append(s._replace(targets=np.concatenate(
        [s.targets[:, :3], labels[:, None]], axis=1)))
  reference = _reference_leakage(sequences)
  facts = L.item_facts([L._item_rows(s) for s in sequences])  # pylint: disable=protected-access
  results = {}
  with beam.Pipeline(runner=LOCAL_RUNNER) as p:
    seqs = p | beam.Create(sequences)
    edges = beam.pvalue.AsSingleton(p | "Edges" >> beam.Create([EDGES]))
    keyed_facts = seqs | L.KeyedItemFacts(5)
    for split in ("train", "eval"):
      part = [s._replace(targets=s.targets[(s.targets[:, 0] >= 600) == (split == "eval")])
              for s in sequences]
      global_table = collections.Counter()
      for s in part:
        global_table.update(L.score_histograms(s, facts, EDGES))
        global_table.update(L.user_histogram(s, H.DEFAULT_HISTORY_LENGTH))
      results[split] = L.summarize(global_table)
      keyed = (p | f"{split}Seqs" >> beam.Create(part)
               | f"{split}Check" >> L.KeyedLeakageCheck(keyed_facts, edges, 5))

      def check(actual, split=split):
        assert actual == [results[split]]  # bit-identical to the global table's AUCs

      assert_that(keyed, check, label=f"{split}Equal")
  for split, aucs in reference.items():
    for name, value in aucs.items():
      assert abs(results[split][name] - value) < 1e-12, (split, name)
  assert prior_counts(sequences[0]).dtype.kind == "i"


def test_keyed_combines_merge_instead_of_holding_every_block():
  """A per-key accumulator merges its pending blocks at KEYED_MIN_PENDING rows, not 2^20:
  one that held every user's block until the end would grow with the log."""
  rng = np.random.default_rng(4)
  fn = T._ItemCountsFn()  # pylint: disable=protected-access
  acc, blocks = fn.create_accumulator(), []
  for _ in range(8000):  # 160k rows, > KEYED_MIN_PENDING
    blocks.append(np.stack([rng.integers(1, 3000, 20), rng.integers(1, 9, 20),
                            np.ones(20, np.int64)], axis=1))
    acc = fn.add_input(acc, blocks[-1])
  assert acc[0] is not None and len(acc[1]) < 8000 / 2
  merged = fn.extract_output(acc)
  reference = collections.Counter()
  for block in blocks:
    reference.update((int(i), int(c)) for i, c, _ in block)
  assert {(i, c): n for i, c, n in merged.tolist()} == reference
