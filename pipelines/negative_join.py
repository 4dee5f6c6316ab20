"""Matched negatives by keyed joins, not broadcast tables.

The matched sampler (pipelines.negatives) needs, for each positive target, the item
frequencies of its category around its time and the user's own history. Broadcasting the
(category, window, item) table to every worker would make the job's memory grow with the
log. Here the draw is keyed joins:

  1. CategoryQueries: each user's candidate positive targets, as rows keyed by a hash of
     their category (`category_shard`, S keys), one element per (user, key), with the
     user's behaviors of those categories that the draws read (history rows);
     GroupByKey; DrawNegatives builds, inside each group, the MatchedCatalog of that
     group's categories from the group's own rows (every candidate positive counts in the
     cells; only those kept by --min_history get negatives) and draws -> (user, negatives).
  2. AttachNegatives (pipelines.negative_fallbacks): CoGroupByKey of the sequences and the
     drawn negatives by user; each negative goes right after its positive.

Every draw is seeded by (seed, user, target index, draw, level, candidate)
(negatives.uniforms) and reads only its own category's rows and its own user's history,
so the result does not depend on S, on which categories share a group, on bundling or on
the runner: the one-pipeline job (S = ONE_PIPELINE_CATEGORY_SHARDS) and the user-sharded
job (S = its shard count, one pipeline per key) write the same records. The "any item"
fallback is a third join, by item shard (pipelines.negative_fallbacks).
"""
import apache_beam as beam
import numpy as np

from pipelines import negative_fallbacks as B
from pipelines import negative_history as H
from pipelines import negatives as N
from pipelines.global_facts import CompactingCombineFn
from pipelines.parsing import CATEGORY_ID, ITEM_ID, KIND, TIMESTAMP
from pipelines.records import UserSequence, aggregate_rows
from pipelines.tags import COUNTS, VALID

# Columns of a query row (int64): one candidate positive target of one user (Q_TARGET its
# index in the targets; Q_OCCURRENCES its item's occurrences in its history, ranks
# [Q_LO, Q_HI)); with Q_KIND = HISTORY_ROW one behavior of the user's history (Q_TARGET its
# rank in the user's behaviors), which the draws read so as not to take an item of the
# history; with Q_KIND = REVISIT_ROW one negative of a revisit, drawn from the history
# already (negative_history.revisit_draws: Q_ITEM, R_CATEGORY, draw R_DRAW, R_SAME).
(Q_CATEGORY, Q_USER, Q_TARGET, Q_TIMESTAMP, Q_ITEM, Q_NEEDS, Q_OCCURRENCES, Q_LO, Q_HI,
 Q_KIND) = range(10)
R_SAME, R_DRAW, R_CATEGORY = Q_OCCURRENCES, Q_LO, Q_HI
QUERY_ROW, HISTORY_ROW, REVISIT_ROW = range(3)
QUERY_COLUMNS = 10
ONE_PIPELINE_CATEGORY_SHARDS = 16
DRAW_CHUNK = 1 << 14  # positives drawn at once in a group (bounds the draw's temporaries)
_NO_ITEMS = N.ItemWeights(np.zeros((0, 3), np.int64))


def category_shard(categories: np.ndarray, num_shards: int) -> np.ndarray:
  """Key [N] in [0, num_shards) of each category: a fixed hash, the same on every worker."""
  return np.minimum((N.uniforms(0, categories) * num_shards).astype(np.int64),
                    num_shards - 1)


def _history_rows(sequence: UserSequence, queries: np.ndarray) -> np.ndarray:
  """int64 [h, QUERY_COLUMNS] history rows of the behaviors the draws for `queries` read:
  those of the needed queries' categories, within their history ranks."""
  needed = queries[(queries[:, Q_NEEDS] == 1) & (queries[:, Q_KIND] == QUERY_ROW)]
  history = sequence.history
  if not len(needed) or not len(history):
    return np.zeros((0, QUERY_COLUMNS), np.int64)
  ranks = np.arange(needed[:, Q_LO].min(), needed[:, Q_HI].max())
  ranks = ranks[np.isin(history[ranks, CATEGORY_ID], needed[:, Q_CATEGORY])]
  rows = np.zeros((len(ranks), QUERY_COLUMNS), np.int64)
  rows[:, Q_CATEGORY], rows[:, Q_USER], rows[:, Q_TARGET] = (
      history[ranks, CATEGORY_ID], sequence.user_id, ranks)
  rows[:, Q_TIMESTAMP], rows[:, Q_ITEM] = history[ranks, TIMESTAMP], history[ranks, ITEM_ID]
  rows[:, Q_KIND] = HISTORY_ROW
  return rows


def _revisit_rows(sequence: UserSequence, rows: np.ndarray, num_negatives: int, seed: int
                  ) -> np.ndarray:
  """int64 [k, QUERY_COLUMNS] REVISIT_ROWs of the needed revisits among query rows."""
  revisits = rows[(rows[:, Q_NEEDS] == 1) & (rows[:, Q_OCCURRENCES] > 0)]
  drawn = H.revisit_draws(sequence, revisits[:, Q_TARGET], revisits[:, Q_LO],
                          revisits[:, Q_HI], revisits[:, Q_OCCURRENCES], num_negatives,
                          seed, N.uniforms)
  slot = np.searchsorted(revisits[:, Q_TARGET], drawn[:, 0])
  out = revisits[slot].copy()
  out[:, Q_ITEM], out[:, R_CATEGORY], out[:, R_DRAW], out[:, R_SAME] = (
      drawn[:, 2], drawn[:, 3], drawn[:, 1], drawn[:, 4])
  out[:, Q_NEEDS], out[:, Q_KIND] = 0, REVISIT_ROW
  return out


def query_blocks(sequence: UserSequence, num_shards: int, min_history: int,
                 history_length: int, num_negatives: int, seed: int):
  """Yields (category shard, int64 [m, QUERY_COLUMNS] rows) of one user's positive
  targets: each shard's query rows, the negatives of its revisits (drawn here, where the
  whole history is at hand) and the history rows its other draws read.

  Q_NEEDS is 1 where the target has >= min_history prior behaviors (it gets negatives);
  the others still count in the cells.
  """
  targets = sequence.targets
  index = np.flatnonzero(targets[:, KIND] == 1)
  if not len(index):
    return
  lo, hi = (r[index] for r in H.history_ranges(sequence, history_length))
  occurrences = H.target_occurrences(sequence, history_length, by_item_only=True)[index]
  rows = np.stack([targets[index, CATEGORY_ID], np.full(len(index), sequence.user_id),
                   index, targets[index, TIMESTAMP], targets[index, ITEM_ID],
                   hi >= min_history, occurrences, lo, hi, np.zeros(len(index))],
                  axis=1).astype(np.int64)
  rows = np.concatenate([rows, _revisit_rows(sequence, rows, num_negatives, seed)])
  shards = category_shard(rows[:, Q_CATEGORY], num_shards)
  for shard in np.unique(shards):
    block = rows[shards == shard]
    yield int(shard), np.concatenate([block, _history_rows(sequence, block)])


class CategoryQueries(beam.PTransform):
  """UserSequences -> (category shard, query rows [m, QUERY_COLUMNS]) per user and shard."""

  def __init__(self, num_shards: int, min_history: int, history_length: int,
               num_negatives: int, seed: int):
    super().__init__()
    self._args = num_shards, min_history, history_length, num_negatives, seed

  def expand(self, sequences):
    return sequences | "Queries" >> beam.FlatMap(query_blocks, *self._args)


def _cell_rows(rows: np.ndarray, edges: np.ndarray) -> np.ndarray:
  """int64 [n, 4] (category, window, item, 1) of the query rows of rows [m, QUERY_COLUMNS]
  that are not revisits (the draws from the catalog are the negatives of those: a
  revisit's are drawn from its history), unsummed."""
  rows = rows[(rows[:, Q_KIND] == QUERY_ROW) & (rows[:, Q_OCCURRENCES] == 0)]
  return np.stack([rows[:, Q_CATEGORY], N.window_of(rows[:, Q_TIMESTAMP], edges),
                   rows[:, Q_ITEM], np.ones(len(rows), np.int64)], axis=1)


def _sum_cells(cells: np.ndarray) -> np.ndarray:
  return aggregate_rows(cells[:, :3], cells[:, 3])


def cell_counts(rows: np.ndarray, edges: np.ndarray) -> np.ndarray:
  """int64 [m, 4] (category, window, item, count) of query rows: the cells of the
  MatchedCatalog (every candidate positive counts, needed or not). Sums of these over
  any split of the rows are the cells of the whole (_CellCountsFn combines them)."""
  return _sum_cells(_cell_rows(rows, edges))


def catalog_of(cells: np.ndarray, edges: np.ndarray) -> N.MatchedCatalog:
  """The MatchedCatalog of summed cell rows (cell_counts'), without the "any item" table
  (that fallback is the keyed join by item shard)."""
  return N.MatchedCatalog(cells, edges, _NO_ITEMS)


def draw_queries(rows: np.ndarray, catalog: N.MatchedCatalog, totals: np.ndarray,
                 num_negatives: int, seed: int):
  """Query rows [n, QUERY_COLUMNS] of some users (each user's rows of a category shard
  together, with their history rows) and the catalog of their categories -> ([(user, int64 [k, 5] negative rows)], [(item shard,
  fallback candidate rows)], counts). Only rows with Q_NEEDS get negatives.

  Negative rows: (target index, timestamp, item, category, label 0), in draw order for
  each target; item 0 where the draw left the category: those are drawn from all items by
  the keyed fallback (fallback_candidates -> resolve_fallbacks -> attach_negatives). Every
  draw is keyed (seed, user, target, draw, level, candidate), so the result for a user does
  not depend on which other users' rows come in the same call.
  """
  history = rows[rows[:, Q_KIND] == HISTORY_ROW]
  index = H.HistoryIndex(history[:, Q_USER], history[:, Q_CATEGORY], history[:, Q_ITEM],
                         history[:, Q_TARGET])
  queries = rows[(rows[:, Q_NEEDS] == 1) & (rows[:, Q_KIND] == QUERY_ROW)]
  queries = queries[np.lexsort((queries[:, Q_TARGET], queries[:, Q_USER]))]
  positives = np.stack([queries[:, Q_TIMESTAMP], queries[:, Q_ITEM], queries[:, Q_CATEGORY],
                        np.ones(len(queries), np.int64)], axis=1)
  revisits = rows[rows[:, Q_KIND] == REVISIT_ROW]
  keys = H.DenseKeys((revisits[:, Q_USER], revisits[:, Q_TARGET], revisits[:, R_DRAW]))
  slot, predrawn = keys.lookup((np.repeat(queries[:, Q_USER], num_negatives),
                                np.repeat(queries[:, Q_TARGET], num_negatives),
                                np.tile(np.arange(num_negatives), len(queries))))
  order = np.argsort(keys.ids, kind="stable")  # revisit row of each dense id
  # In chunks: a draw's temporaries are ~16 candidates x ~10 arrays; a call can hold
  # millions of positives. Draws are keyed, so chunking does not change them.
  pieces, counts = [], dict.fromkeys(N.DRAW_COUNTS, 0)
  for lo in range(0, len(queries), DRAW_CHUNK):
    chunk = queries[lo:lo + DRAW_CHUNK]
    match = H.HistoryMatch(index, chunk[:, Q_USER], chunk[:, Q_CATEGORY], chunk[:, Q_LO],
                           chunk[:, Q_HI])
    piece, piece_counts = N.sample_matched_negatives(
        positives[lo:lo + DRAW_CHUNK], catalog, num_negatives, seed,
        chunk[:, [Q_USER, Q_TARGET]], any_item=False, history=match,
        skip=predrawn[lo * num_negatives:(lo + len(chunk)) * num_negatives])
    pieces.append(piece)
    counts = {k: counts[k] + piece_counts[k] for k in counts}
  drawn = np.concatenate(pieces) if pieces else np.zeros((0, 4), np.int64)
  counts.update(_add_revisits(drawn, revisits[order[slot[predrawn]]], predrawn,
                              np.repeat(queries[:, Q_OCCURRENCES], num_negatives),
                              np.repeat(queries[:, Q_CATEGORY], num_negatives)))
  users = np.repeat(queries[:, Q_USER], num_negatives)
  targets = np.repeat(queries[:, Q_TARGET], num_negatives)
  left = np.flatnonzero(drawn[:, ITEM_ID] == 0)
  candidates = list(B.fallback_candidates(
      users[left], targets[left], left % num_negatives,
      np.repeat(queries[:, Q_ITEM], num_negatives)[left], N.any_item_level(catalog),
      totals, seed))
  out = np.concatenate([targets[:, None], drawn], axis=1)
  return B.by_user(users, out), candidates, counts


def _add_revisits(drawn, revisits, predrawn, occurrences, categories) -> dict:
  """Puts the revisit rows' negatives into `drawn` (int64 [n, 4]) where `predrawn` [n];
  the history-match counters of those draws."""
  drawn[predrawn, ITEM_ID], drawn[predrawn, CATEGORY_ID] = (revisits[:, Q_ITEM],
                                                            revisits[:, R_CATEGORY])
  return {"negatives_of_revisits": int((occurrences > 0).sum()),
          "negatives_revisit_other_count": int((revisits[:, R_SAME] == 0).sum()),
          "negatives_revisit_other_category": int(
              (revisits[:, R_CATEGORY] != categories[predrawn]).sum()),
          "negatives_revisit_unmatched": int(((occurrences > 0) & ~predrawn).sum())}


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


class KeyedMatchedNegatives(beam.PTransform):
  """UserSequences -> the same with matched negatives, by the keyed joins; also `counts`.
  The one-pipeline form (the sharded job runs the same pieces per key).

  `edges`: window edges (side input); `weights`: negatives.KeyedItemWeights' output
  ({'rows': PCollection, 'totals': PCollection}).
  """

  def __init__(self, edges, weights, num_negatives: int, seed: int, min_history: int,
               history_length: int = H.DEFAULT_HISTORY_LENGTH,
               num_shards: int = ONE_PIPELINE_CATEGORY_SHARDS):
    super().__init__()
    self._draw = DrawNegatives(edges, beam.pvalue.AsSingleton(weights["totals"]),
                               num_negatives, seed)
    self._weight_rows = weights["rows"]
    self._queries = CategoryQueries(num_shards, min_history, history_length, num_negatives,
                                    seed)

  def expand(self, sequences):
    drawn = (sequences
             | "CategoryQueries" >> self._queries
             | "GroupByCategory" >> beam.GroupByKey()
             | "DrawNegatives" >> self._draw)
    fallbacks = {"weights": self._weight_rows, "candidates": drawn[FALLBACKS]} | (
        "ResolveFallbacks" >> B.ResolveFallbacks())
    attached = {"sequences": sequences, "negatives": drawn[VALID], "fallbacks": fallbacks} | (
        "AttachNegatives" >> B.AttachNegatives())
    counts = (drawn[COUNTS], attached[COUNTS]) | "FlattenCounts" >> beam.Flatten()
    return {VALID: attached[VALID], COUNTS: counts}
