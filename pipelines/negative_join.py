"""Matched negatives by keyed joins, not broadcast tables (issue 12, item 6).

The matched sampler (pipelines.negatives) needs, for each positive target, the item
frequencies of its category around its time. Broadcasting that (category, window, item)
table to every worker made the job's memory grow with the log. Here the draw is two
keyed joins:

  1. CategoryQueries: each user's candidate positive targets, as rows keyed by a hash of
     their category (`category_shard`, S keys), one element per (user, key);
     GroupByKey; DrawNegatives builds, inside each group, the MatchedCatalog of that
     group's categories from the group's own rows (every candidate positive counts in the
     cells; only those kept by --min_history get negatives) and draws -> (user, negatives).
  2. AttachNegatives: CoGroupByKey of the sequences and the drawn negatives by user; each
     negative goes right after its positive, as SampleNegatives did.

Every draw is seeded by (seed, user, target index, draw, level, candidate)
(negatives.uniforms) and reads only its own category's rows, so the result does not
depend on S, on which categories share a group, on bundling or on the runner: the
one-pipeline job (S = ONE_PIPELINE_CATEGORY_SHARDS) and the user-sharded job (S = its
shard count, one pipeline per key) write the same records. The "any item" fallback is a
third join, by item shard: draws that leave their category become candidates keyed by
the item shard their weight offset falls in (only ITEM_SHARDS totals are broadcast),
resolved against that shard's ItemWeights rows (ResolveFallbacks) and joined back by user
with the rest (AttachNegatives).
"""
import apache_beam as beam
import numpy as np

from pipelines import negatives as N
from pipelines.global_facts import CompactingCombineFn
from pipelines.parsing import CATEGORY_ID, ITEM_ID, KIND, TIMESTAMP
from pipelines.records import UserSequence, aggregate_rows, prior_counts
from pipelines.tags import COUNTS, VALID

# Columns of a query row (int64): one candidate positive target of one user.
Q_CATEGORY, Q_USER, Q_TARGET, Q_TIMESTAMP, Q_ITEM, Q_NEEDS = range(6)
# Columns of a drawn-negative row: target index in its user's targets, then the target row.
D_TARGET = 0
ONE_PIPELINE_CATEGORY_SHARDS = 16
DRAW_CHUNK = 1 << 14  # positives drawn at once in a group (bounds the draw's temporaries)


def category_shard(categories: np.ndarray, num_shards: int) -> np.ndarray:
  """Key [N] in [0, num_shards) of each category: a fixed hash, the same on every worker."""
  return np.minimum((N.uniforms(0, categories) * num_shards).astype(np.int64),
                    num_shards - 1)


def query_blocks(sequence: UserSequence, num_shards: int, min_history: int):
  """Yields (category shard, int64 [m, 6] query rows) of one user's positive targets.

  Q_NEEDS is 1 where the target has >= min_history prior behaviors (it gets negatives);
  the others still count in the cells, as every candidate positive target did before.
  """
  targets = sequence.targets
  index = np.flatnonzero(targets[:, KIND] == 1)
  if not len(index):
    return
  rows = np.stack([targets[index, CATEGORY_ID], np.full(len(index), sequence.user_id),
                   index, targets[index, TIMESTAMP], targets[index, ITEM_ID],
                   prior_counts(sequence)[index] >= min_history], axis=1).astype(np.int64)
  shards = category_shard(rows[:, Q_CATEGORY], num_shards)
  for shard in np.unique(shards):
    yield int(shard), rows[shards == shard]


class CategoryQueries(beam.PTransform):
  """UserSequences -> (category shard, query rows [m, 6]) per user and shard."""

  def __init__(self, num_shards: int, min_history: int):
    super().__init__()
    self._num_shards, self._min_history = num_shards, min_history

  def expand(self, sequences):
    return sequences | "Queries" >> beam.FlatMap(query_blocks, self._num_shards,
                                                 self._min_history)


# Columns of a fallback candidate row ("any item" level), keyed by the item shard its
# weight offset falls in, and of a resolved (acceptable) candidate, keyed by user.
C_USER, C_TARGET, C_DRAW, C_ROUND, C_POSITIVE, C_OFFSET = range(6)
F_TARGET, F_DRAW, F_ROUND, F_ITEM, F_CATEGORY = range(5)
_NO_ITEMS = N.ItemWeights(np.zeros((0, 3), np.int64))


def fallback_candidates(users, targets, draws, positive_items, level: int,
                        totals: np.ndarray, seed: int):
  """Yields (item shard, int64 [c, 6] candidate rows) of draws [N] left for "any item".

  Each draw's _MAX_ROUNDS candidates, seeded as in negatives.sample_matched_negatives
  (seed, user, target, draw, level, round); the shard and offset inside it come from the
  shard totals (negatives.fallback_offsets). None when no item exists at all.
  """
  if not len(users) or not totals.sum():
    return
  rounds = N._MAX_ROUNDS  # pylint: disable=protected-access  (the same rejection law)
  rows = np.stack([np.repeat(users, rounds), np.repeat(targets, rounds),
                   np.repeat(draws, rounds), np.tile(np.arange(rounds), len(users)),
                   np.repeat(positive_items, rounds)], axis=1).astype(np.int64)
  u = N.uniforms(seed, rows[:, C_USER], rows[:, C_TARGET], rows[:, C_DRAW],
                 np.full(len(rows), level), rows[:, C_ROUND])
  shards, offsets = N.fallback_offsets(u, totals)
  rows = np.concatenate([rows, offsets[:, None]], axis=1)
  for shard in np.unique(shards):
    yield int(shard), rows[shards == shard]


def resolve_fallbacks(weight_rows, candidate_blocks):
  """One item shard: its ItemWeights rows and candidates -> [(user, int64 [f, 5]
  (target, draw, round, item, category))] of the acceptable candidates (not the positive
  item), which attach_negatives picks from (the first round of each draw)."""
  blocks = [b for b in candidate_blocks if len(b)]
  if not blocks:
    return []
  rows = np.concatenate(blocks)
  weights = [w for w in weight_rows if len(w)]
  table = N.ItemWeights(np.concatenate(weights))  # rows of this shard: its slice
  items, categories = table.draw_at(rows[:, C_OFFSET])
  keep = items != rows[:, C_POSITIVE]
  rows, items, categories = rows[keep], items[keep], categories[keep]
  out = np.stack([rows[:, C_TARGET], rows[:, C_DRAW], rows[:, C_ROUND], items, categories],
                 axis=1)
  order = np.argsort(rows[:, C_USER], kind="stable")  # blocks of several category groups
  return _by_user(rows[order, C_USER], out[order])


def _by_user(users: np.ndarray, rows: np.ndarray):
  """[(user, rows of that user)] of rows [n, k] sorted by users [n]."""
  starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else []
  ends = list(starts[1:]) + [len(users)]
  return [(int(users[a]), rows[a:b]) for a, b in zip(starts, ends)]


def with_user_column(user: int, rows: np.ndarray) -> np.ndarray:
  """(user, rows [m, k]) -> [m, 1 + k], the user id first: several users' negative or
  fallback rows in one stored batch (the sharded job)."""
  return np.concatenate([np.full((len(rows), 1), user, np.int64), rows], axis=1)


def split_by_user(batch: np.ndarray):
  """with_user_column's batch -> [(user, rows [m, k])] (stable: each user's rows keep
  their order)."""
  batch = batch[np.argsort(batch[:, 0], kind="stable")]
  return _by_user(batch[:, 0], batch[:, 1:])


def _cell_rows(rows: np.ndarray, edges: np.ndarray) -> np.ndarray:
  """int64 [n, 4] (category, window, item, 1) of query rows [n, 6], unsummed."""
  return np.stack([rows[:, Q_CATEGORY], N.window_of(rows[:, Q_TIMESTAMP], edges),
                   rows[:, Q_ITEM], np.ones(len(rows), np.int64)], axis=1)


def _sum_cells(cells: np.ndarray) -> np.ndarray:
  return aggregate_rows(cells[:, :3], cells[:, 3])


def cell_counts(rows: np.ndarray, edges: np.ndarray) -> np.ndarray:
  """int64 [m, 4] (category, window, item, count) of query rows [n, 6]: the cells of the
  MatchedCatalog (every candidate positive counts, needed or not). Sums of these over any
  split of the rows are the cells of the whole (_CellCountsFn combines them)."""
  return _sum_cells(_cell_rows(rows, edges))


def catalog_of(cells: np.ndarray, edges: np.ndarray) -> N.MatchedCatalog:
  """The MatchedCatalog of summed cell rows (cell_counts'), without the "any item" table
  (that fallback is the keyed join by item shard)."""
  return N.MatchedCatalog(cells, edges, _NO_ITEMS)


def draw_queries(rows: np.ndarray, catalog: N.MatchedCatalog, totals: np.ndarray,
                 num_negatives: int, seed: int):
  """Query rows [n, 6] of some users (each user's rows of a category shard together) and
  the catalog of their categories -> ([(user, int64 [k, 5] negative rows)], [(item shard,
  fallback candidate rows)], counts). Only rows with Q_NEEDS get negatives.

  Negative rows: (target index, timestamp, item, category, label 0), in draw order for
  each target; item 0 where the draw left the category: those are drawn from all items by
  the keyed fallback (fallback_candidates -> resolve_fallbacks -> attach_negatives). Every
  draw is keyed (seed, user, target, draw, level, candidate), so the result for a user does
  not depend on which other users' rows come in the same call.
  """
  queries = rows[rows[:, Q_NEEDS] == 1]
  queries = queries[np.lexsort((queries[:, Q_TARGET], queries[:, Q_USER]))]
  positives = np.stack([queries[:, Q_TIMESTAMP], queries[:, Q_ITEM], queries[:, Q_CATEGORY],
                        np.ones(len(queries), np.int64)], axis=1)
  # In chunks: a draw's temporaries are ~16 candidates x ~10 arrays; a call can hold
  # millions of positives. Draws are keyed, so chunking does not change them.
  pieces, counts = [], dict.fromkeys(N.FALLBACK_COUNTS, 0)
  for lo in range(0, len(queries), DRAW_CHUNK):
    hi = lo + DRAW_CHUNK
    piece, piece_counts = N.sample_matched_negatives(
        positives[lo:hi], catalog, num_negatives, seed, queries[lo:hi][:, [Q_USER, Q_TARGET]],
        any_item=False)
    pieces.append(piece)
    counts = {k: counts[k] + piece_counts[k] for k in counts}
  drawn = np.concatenate(pieces) if pieces else np.zeros((0, 4), np.int64)
  users = np.repeat(queries[:, Q_USER], num_negatives)
  targets = np.repeat(queries[:, Q_TARGET], num_negatives)
  left = np.flatnonzero(drawn[:, ITEM_ID] == 0)
  candidates = list(fallback_candidates(
      users[left], targets[left], left % num_negatives,
      np.repeat(queries[:, Q_ITEM], num_negatives)[left], N.any_item_level(catalog),
      totals, seed))
  out = np.concatenate([targets[:, None], drawn], axis=1)
  return _by_user(users, out), candidates, counts


def draw_group(blocks, edges: np.ndarray, totals: np.ndarray, num_negatives: int,
               seed: int):
  """Query rows of one key group -> draw_queries' result, the catalog built from the
  group's own rows (the one-pipeline job's GroupByKey form)."""
  rows = np.concatenate(list(blocks))
  return draw_queries(rows, catalog_of(cell_counts(rows, edges), edges), totals,
                      num_negatives, seed)


def _draw_outputs(by_user, candidates, counts):
  """draw_queries' result as DrawNegatives' tagged outputs."""
  counts = {k: v for k, v in counts.items() if v}
  if counts:
    yield beam.pvalue.TaggedOutput(COUNTS, counts)
  for candidate in candidates:
    yield beam.pvalue.TaggedOutput(FALLBACKS, candidate)
  yield from by_user


class _CellCountsFn(CompactingCombineFn):
  """Sum of cell_counts blocks -> the summed (category, window, item, count) rows."""

  def __init__(self, edges):
    super().__init__()
    self._edges = edges

  def block(self, rows):  # unsummed: a block is one user's few rows or a small batch
    return _cell_rows(rows, self._edges)

  def merge_blocks(self, blocks):
    return _sum_cells(np.concatenate(blocks))

  def finish(self, block):
    return np.zeros((0, 4), np.int64) if block is None else block


FALLBACKS = "fallbacks"


class DrawNegatives(beam.PTransform):
  """(key, [query rows]) groups -> (user, negative rows) + `counts` (fallbacks in the
  category) + FALLBACKS ((item shard, candidate rows) for the "any item" fallback).

  `edges` (window edges) and `totals` (item shard totals) are side inputs.
  """

  def __init__(self, edges, totals, num_negatives: int, seed: int):
    super().__init__()
    self._edges, self._totals = edges, totals
    self._num_negatives, self._seed = num_negatives, seed

  def expand(self, groups):
    num_negatives, seed = self._num_negatives, self._seed

    def draw(key_and_blocks, edges, totals):
      yield from _draw_outputs(*draw_group(key_and_blocks[1], edges, totals, num_negatives,
                                           seed))

    return groups | "Draw" >> beam.FlatMap(
        draw, edges=self._edges, totals=self._totals).with_outputs(COUNTS, FALLBACKS,
                                                                   main=VALID)


DRAW_BATCH_ROWS = 1 << 16  # query rows drawn in one numpy pass (streaming form)


class StreamingDrawNegatives(beam.PTransform):
  """Pipeline -> DrawNegatives' outputs for the query rows that `read()` gives
  (CategoryQueries' (key, rows) pairs, as stored by the sharded job), without grouping.

  The catalog is the combine of the cells of every query row (a side input: one row per
  distinct (category, window, item), not per query); the queries are then read a second
  time and drawn in batches as they stream past. Reading twice, instead of one read
  feeding both, keeps the local runner from holding the queries until the catalog is
  done: memory is the catalog plus a batch, however many positives a category has. The
  draws are those of DrawNegatives (keyed per target; the catalog of a category is the
  same), so the records are too.

  `read()` -> a new PTransform from the pipeline to the (key, rows) pairs (applied twice);
  `edges`, `totals`: window edges and item shard totals (numpy arrays, not side inputs).
  """

  def __init__(self, read, edges, totals, num_negatives: int, seed: int):
    super().__init__()
    self._read, self._edges, self._totals = read, edges, totals
    self._num_negatives, self._seed = num_negatives, seed

  def expand(self, pipeline):
    edges, totals = self._edges, self._totals
    num_negatives, seed = self._num_negatives, self._seed
    catalog = (pipeline | "ReadForCells" >> self._read()
               | "CellRows" >> beam.Map(lambda kv: kv[1])
               | "SumCells" >> beam.CombineGlobally(_CellCountsFn(edges))
               | "Catalog" >> beam.Map(catalog_of, edges))

    def draw(blocks, catalog):
      if not blocks:  # (BatchElements sized by rows can close an empty batch)
        return
      yield from _draw_outputs(*draw_queries(np.concatenate(blocks), catalog, totals,
                                             num_negatives, seed))

    return (pipeline | "ReadForDraws" >> self._read()
            | "QueryRows" >> beam.Map(lambda kv: kv[1])
            | "Needed" >> beam.Filter(lambda rows: bool(rows[:, Q_NEEDS].any()))
            | "Batch" >> beam.BatchElements(min_batch_size=DRAW_BATCH_ROWS,
                                            max_batch_size=DRAW_BATCH_ROWS,
                                            element_size_fn=len)
            | "Draw" >> beam.FlatMap(draw, catalog=beam.pvalue.AsSingleton(catalog))
            .with_outputs(COUNTS, FALLBACKS, main=VALID))


class ResolveFallbacks(beam.PTransform):
  """{'weights': (item shard, ItemWeights rows), 'candidates': (item shard, candidate
  rows)} -> (user, acceptable fallback rows): a CoGroupByKey by item shard."""

  def expand(self, inputs):
    return (inputs
            | "JoinByItemShard" >> beam.CoGroupByKey()
            | "Resolve" >> beam.FlatMap(
                lambda kv: resolve_fallbacks(kv[1]["weights"], kv[1]["candidates"])))


def attach_negatives(sequence: UserSequence, blocks, fallback_blocks=()):
  """(the sequence with each drawn negative right after its positive, counts).

  Draws left at item 0 take the first acceptable fallback candidate of their (target,
  draw) (counted negatives_fallback_any); those with none are dropped (counted
  negatives_unavailable).
  """
  blocks = list(blocks)
  if not blocks:
    return sequence, {}
  drawn = np.concatenate(blocks)
  drawn = drawn[np.argsort(drawn[:, D_TARGET], kind="stable")]  # each target's in order
  counts = {}
  left = np.flatnonzero(drawn[:, 1 + ITEM_ID] == 0)
  fallbacks = [f for f in fallback_blocks if len(f)]
  if len(left) and fallbacks:
    fb = np.concatenate(fallbacks)
    fb = fb[np.lexsort((fb[:, F_ROUND], fb[:, F_DRAW], fb[:, F_TARGET]))]
    first = np.r_[True, np.any(fb[1:, :2] != fb[:-1, :2], axis=1)]
    fb = fb[first]  # the first acceptable round of each (target, draw)
    target_starts = np.searchsorted(drawn[:, D_TARGET], drawn[left, D_TARGET])
    draw_keys = np.stack([drawn[left, D_TARGET], left - target_starts], axis=1)
    slot = np.searchsorted(fb[:, F_TARGET] * (1 << 20) + fb[:, F_DRAW],
                           draw_keys[:, 0] * (1 << 20) + draw_keys[:, 1])
    slot = np.minimum(slot, len(fb) - 1)
    found = (fb[slot, F_TARGET] == draw_keys[:, 0]) & (fb[slot, F_DRAW] == draw_keys[:, 1])
    drawn[left[found], 1 + ITEM_ID] = fb[slot[found], F_ITEM]
    drawn[left[found], 1 + CATEGORY_ID] = fb[slot[found], F_CATEGORY]
    counts["negatives_fallback_any"] = int(found.sum())
  unavailable = int((drawn[:, 1 + ITEM_ID] == 0).sum())
  if unavailable:
    counts["negatives_unavailable"] = unavailable
  drawn = drawn[drawn[:, 1 + ITEM_ID] > 0]
  targets = sequence.targets
  # Stable sort by target index: the positive first (it comes first), then its draws.
  order = np.argsort(np.concatenate([np.arange(len(targets)), drawn[:, D_TARGET]]),
                     kind="stable")
  rows = np.concatenate([targets, drawn[:, 1:]])[order]
  return sequence._replace(targets=rows), {k: v for k, v in counts.items() if v}


class AttachNegatives(beam.PTransform):
  """{'sequences': UserSequences, 'negatives': (user, negative rows), 'fallbacks': (user,
  fallback rows)} -> UserSequences + `counts` (negatives_fallback_any, _unavailable)."""

  def expand(self, inputs):
    keyed = inputs["sequences"] | "ByUser" >> beam.Map(lambda s: (s.user_id, s))
    joined = {"sequence": keyed, "negatives": inputs["negatives"],
              "fallbacks": inputs["fallbacks"]} | "Join" >> beam.CoGroupByKey()

    def attach(kv):
      for sequence in kv[1]["sequence"]:
        attached, counts = attach_negatives(sequence, kv[1]["negatives"],
                                            kv[1]["fallbacks"])
        if counts:
          yield beam.pvalue.TaggedOutput(COUNTS, counts)
        yield attached

    return joined | "Attach" >> beam.FlatMap(attach).with_outputs(COUNTS, main=VALID)


class KeyedMatchedNegatives(beam.PTransform):
  """UserSequences -> the same with matched negatives, by the keyed joins; also `counts`.
  The one-pipeline form (the sharded job runs the same pieces per key).

  `edges`: window edges (side input); `weights`: negatives.KeyedItemWeights' output
  ({'rows': PCollection, 'totals': PCollection}).
  """

  def __init__(self, edges, weights, num_negatives: int, seed: int, min_history: int,
               num_shards: int = ONE_PIPELINE_CATEGORY_SHARDS):
    super().__init__()
    self._draw = DrawNegatives(edges, beam.pvalue.AsSingleton(weights["totals"]),
                               num_negatives, seed)
    self._weight_rows = weights["rows"]
    self._num_shards, self._min_history = num_shards, min_history

  def expand(self, sequences):
    drawn = (sequences
             | "CategoryQueries" >> CategoryQueries(self._num_shards, self._min_history)
             | "GroupByCategory" >> beam.GroupByKey()
             | "DrawNegatives" >> self._draw)
    fallbacks = {"weights": self._weight_rows, "candidates": drawn[FALLBACKS]} | (
        "ResolveFallbacks" >> ResolveFallbacks())
    attached = {"sequences": sequences, "negatives": drawn[VALID], "fallbacks": fallbacks} | (
        "AttachNegatives" >> AttachNegatives())
    counts = (drawn[COUNTS], attached[COUNTS]) | "FlattenCounts" >> beam.Flatten()
    return {VALID: attached[VALID], COUNTS: counts}
