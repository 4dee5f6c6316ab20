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
shard count, one pipeline per key) write the same records. The "any item" fallback
reads the one global table left, negatives.ItemWeights (a side input, 24 B per item).
"""
import apache_beam as beam
import numpy as np

from pipelines import negatives as N
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


def draw_group(blocks, edges: np.ndarray, everything: N.ItemWeights, num_negatives: int,
               seed: int):
  """Query rows of one key group -> ([(user, int64 [k, 5] negative rows)], counts).

  Negative rows: (target index, timestamp, item, category, label 0), in draw order for
  each target; item 0 where nothing could be drawn (counted as negatives_unavailable).
  """
  rows = np.concatenate(list(blocks))
  windows = N.window_of(rows[:, Q_TIMESTAMP], edges)
  cells = aggregate_rows(np.stack([rows[:, Q_CATEGORY], windows, rows[:, Q_ITEM]], axis=1),
                         np.ones(len(rows)))
  catalog = N.MatchedCatalog(cells, edges, everything)
  queries = rows[rows[:, Q_NEEDS] == 1]
  queries = queries[np.lexsort((queries[:, Q_TARGET], queries[:, Q_USER]))]
  positives = np.stack([queries[:, Q_TIMESTAMP], queries[:, Q_ITEM], queries[:, Q_CATEGORY],
                        np.ones(len(queries), np.int64)], axis=1)
  # In chunks: a draw's temporaries are ~16 candidates x ~10 arrays; a group can hold
  # millions of positives. Draws are keyed, so chunking does not change them.
  pieces, counts = [], dict.fromkeys(N.FALLBACK_COUNTS, 0)
  for lo in range(0, len(queries), DRAW_CHUNK):
    hi = lo + DRAW_CHUNK
    piece, piece_counts = N.sample_matched_negatives(
        positives[lo:hi], catalog, num_negatives, seed, queries[lo:hi][:, [Q_USER, Q_TARGET]])
    pieces.append(piece)
    counts = {k: counts[k] + piece_counts[k] for k in counts}
  drawn = np.concatenate(pieces) if pieces else np.zeros((0, 4), np.int64)
  counts["negatives_unavailable"] = int((drawn[:, ITEM_ID] == 0).sum())
  out = np.concatenate([np.repeat(queries[:, Q_TARGET], num_negatives)[:, None], drawn],
                       axis=1)
  users = np.repeat(queries[:, Q_USER], num_negatives)
  starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else []
  ends = list(starts[1:]) + [len(users)]
  return [(int(users[a]), out[a:b]) for a, b in zip(starts, ends)], counts


class DrawNegatives(beam.PTransform):
  """(key, [query rows]) groups -> (user, negative rows) + `counts` (fallbacks, unavailable).

  `edges` (window edges) and `everything` (ItemWeights) are side inputs.
  """

  def __init__(self, edges, everything, num_negatives: int, seed: int):
    super().__init__()
    self._edges, self._everything = edges, everything
    self._num_negatives, self._seed = num_negatives, seed

  def expand(self, groups):
    num_negatives, seed = self._num_negatives, self._seed

    def draw(key_and_blocks, edges, everything):
      by_user, counts = draw_group(key_and_blocks[1], edges, everything, num_negatives,
                                   seed)
      counts = {k: v for k, v in counts.items() if v}
      if counts:
        yield beam.pvalue.TaggedOutput(COUNTS, counts)
      yield from by_user

    return groups | "Draw" >> beam.FlatMap(
        draw, edges=self._edges, everything=self._everything).with_outputs(COUNTS, main=VALID)


def attach_negatives(sequence: UserSequence, blocks) -> UserSequence:
  """The sequence with each drawn negative right after its positive (unavailable ones,
  item 0, dropped)."""
  blocks = list(blocks)
  if not blocks:
    return sequence
  drawn = np.concatenate(blocks)
  drawn = drawn[drawn[:, 1 + ITEM_ID] > 0]
  targets = sequence.targets
  # Stable sort by target index: the positive first (it comes first), then its draws.
  order = np.argsort(np.concatenate([np.arange(len(targets)), drawn[:, D_TARGET]]),
                     kind="stable")
  rows = np.concatenate([targets, drawn[:, 1:]])[order]
  return sequence._replace(targets=rows)


class AttachNegatives(beam.PTransform):
  """{'sequences': UserSequences, 'negatives': (user, negative rows)} -> UserSequences."""

  def expand(self, inputs):
    keyed = inputs["sequences"] | "ByUser" >> beam.Map(lambda s: (s.user_id, s))
    joined = {"sequence": keyed, "negatives": inputs["negatives"]} | "Join" >> (
        beam.CoGroupByKey())
    return joined | "Attach" >> beam.FlatMap(
        lambda kv: [attach_negatives(s, kv[1]["negatives"]) for s in kv[1]["sequence"]])


class KeyedMatchedNegatives(beam.PTransform):
  """UserSequences -> the same with matched negatives, by the two keyed joins; also
  `counts`. The one-pipeline form (the sharded job runs the same pieces per key)."""

  def __init__(self, edges, everything, num_negatives: int, seed: int, min_history: int,
               num_shards: int = ONE_PIPELINE_CATEGORY_SHARDS):
    super().__init__()
    self._draw = DrawNegatives(edges, everything, num_negatives, seed)
    self._num_shards, self._min_history = num_shards, min_history

  def expand(self, sequences):
    drawn = (sequences
             | "CategoryQueries" >> CategoryQueries(self._num_shards, self._min_history)
             | "GroupByCategory" >> beam.GroupByKey()
             | "DrawNegatives" >> self._draw)
    attached = {"sequences": sequences, "negatives": drawn[VALID]} | "AttachNegatives" >> (
        AttachNegatives())
    return {VALID: attached, COUNTS: drawn[COUNTS]}
