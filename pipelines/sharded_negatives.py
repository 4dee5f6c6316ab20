"""Matched negatives in the user-sharded job: the keyed joins of pipelines.negative_join,
one pipeline per key, so that no step holds more than one shard of the log.

On the local runner every shuffle is held in memory, so a CoGroupByKey over the whole log
costs as much as the broadcast table it replaces. Here each join runs per shard:

  a. one pass over the stored sequences, streamed (nothing per item or per event is
     combined here): window edges and the item shard totals of the "any item" fallback (a
     small pickle file), each user's (item, category, count) blocks of that fallback's
     table partitioned by item shard, and each user's candidate positive targets
     partitioned into `num_shards` category shards (negative_join.CategoryQueries: with
     the negatives of its revisits, drawn from its history there, and the history rows of
     those categories that the other draws must avoid);
  b. per category shard: sum its query rows' cells into the catalog, then draw the
     queries as they stream past (negative_join.StreamingDrawNegatives: not grouped, so
     a popular category's positives are never held at once); write the negatives into
     the files of their users' shards and the draws that left their category, as
     candidates, into the files of their item shards; sum the counters;
  c. per item shard with candidates: sum its count blocks into its ItemWeights rows and
     resolve the candidates against them (negative_join.ResolveFallbacks;
     min(num_shards, ITEM_SHARDS) pipelines, each joining its item shards one by one),
     written to their users' shards;
  d. per user shard: join its sequences with their negatives and fallbacks by user
     (negative_join.AttachNegatives) and store the result for the final pipeline.

No step holds a per-item table bigger than one item shard. Every intermediate file holds
batches of many users' rows per shard (shard_files.WriteBatchesByKey), so the elements
stored grow with the rows, not with users x shards. The draws are those of the one-pipeline job (seeded
per target, per category: negative_join), so the records are the same.
"""
import json
import logging
import time
from typing import List

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines import metadata_files
from pipelines import negative_fallbacks as B
from pipelines import negative_join as J
from pipelines import negatives as N
from pipelines import shard_files as F
from pipelines.global_facts import TargetTimeHistogram
from pipelines.split_stats import SumCounts
from pipelines.tags import COUNTS, VALID

_LOG = logging.getLogger("pipelines.sharded")
QUERIES, ATTACHED, ITEM_COUNTS = "queries", "attached", "item_counts"


def _facts_path(work_dir: str) -> str:
  return FileSystems.join(work_dir, "negative_facts.pickle")


def _negatives_kind(user_shard: int) -> str:
  return f"negatives-u{user_shard:05d}"


def _fallbacks_kind(user_shard: int) -> str:
  return f"fallbacks-u{user_shard:05d}"


def _candidates_kind(item_shard: int) -> str:
  return f"candidates-i{item_shard:05d}"


def _counts_path(work_dir: str, shard: int, kind: str = "negative_counts") -> str:
  return F.shard_name(work_dir, kind, shard) + ".json"


def _by_user_shard(pairs, num_shards: int, label: str):
  """(user, rows) -> (user shard, rows with the user id first: B.with_user_column)."""
  return pairs | f"{label}ToUserShard" >> beam.MapTuple(
      lambda user, rows: (F.shard_of_user(user, num_shards), B.with_user_column(user, rows)))


def _read_by_user(pipeline, label: str, pattern: str):
  """_by_user_shard's stored batches -> (user, rows), one per user and batch."""
  return (pipeline | f"Read{label}" >> F.ReadBatches(pattern)
          | f"{label}ByUser" >> beam.FlatMap(lambda kv: B.split_by_user(kv[1])))


def _write_counts(_, path, counts):
  metadata_files.write_json(path, counts)


def _write_summed_counts(pipeline, counts, path: str) -> None:
  summed = counts | "SumCounts" >> SumCounts()
  _ = (pipeline | "Once" >> beam.Create([None])
       | "WriteCounts" >> beam.Map(_write_counts, path=path,
                                   counts=beam.pvalue.AsSingleton(summed)))


def _facts_and_queries(args, options_for, work_dir: str, sequences: str, num_shards: int):
  """Step a: edges + item shard totals to a file; the ItemWeights count blocks (unsummed)
  and the query rows, partitioned by item shard and by category shard."""
  with beam.Pipeline(options=options_for()) as pipeline:
    stored = pipeline | "ReadSequences" >> F.ReadPickled(sequences)
    num_windows = args.negative_time_windows
    edges = (stored | "TargetTimeHistogram" >> TargetTimeHistogram()
             | "TimeWindows" >> beam.MapTuple(
                 lambda times, counts: N.window_edges(times, counts, num_windows)))
    # The "any item" table is not summed here: its count blocks go to their item shard's
    # files and each shard is summed alone in step c (a lifted per-key combine of all 16
    # shards in this pass holds several times the table). Only the shard totals are summed.
    totals = stored | "ItemShardTotals" >> N.ItemShardTotals()
    _ = (pipeline | "Once" >> beam.Create([_facts_path(work_dir)])
         | "WriteFacts" >> beam.Map(
             lambda path, edges, totals: F.write_pickle_file(path, (edges, totals)),
             edges=beam.pvalue.AsSingleton(edges),
             totals=beam.pvalue.AsSingleton(totals)))
    # Intermediate files: batches of many users' rows per shard (F.WriteBatchesByKey),
    # so what is stored grows with the rows, not with users x shards.
    _ = (stored | "ItemCountBlocks" >> beam.FlatMap(N.item_count_blocks)
         | "WriteItemCounts" >> F.WriteBatchesByKey(
             lambda k: F.shard_name(work_dir, ITEM_COUNTS, k)))
    _ = (stored | "CategoryQueries" >> J.CategoryQueries(
        num_shards, args.min_history, args.history_length,
        args.negatives_per_positive, args.seed)
         | "WriteQueries" >> F.WriteBatchesByKey(
             lambda k: F.shard_name(work_dir, QUERIES, k)))


def _draw(args, options_for, work_dir: str, shard: int, num_shards: int):
  """Step b for one category shard (its queries streamed, not grouped: a category's
  positives grow with the log, its catalog only with its items)."""
  edges, totals = F.read_pickle_file(_facts_path(work_dir))
  queries = F.shard_name(work_dir, QUERIES, shard) + "-*"
  with beam.Pipeline(options=options_for()) as pipeline:
    drawn = pipeline | "DrawNegatives" >> J.StreamingDrawNegatives(
        lambda: F.ReadBatches(queries), edges, totals, args.negatives_per_positive,
        args.seed)
    _ = (_by_user_shard(drawn[VALID], num_shards, "Negatives")
         | "WriteNegatives" >> F.WriteBatchesByKey(
             lambda k: F.shard_name(work_dir, _negatives_kind(k), shard)))
    _ = drawn[J.FALLBACKS] | "WriteCandidates" >> F.WriteBatchesByKey(
        lambda k: F.shard_name(work_dir, _candidates_kind(k), shard))
    _write_summed_counts(pipeline, drawn[COUNTS], _counts_path(work_dir, shard))


def _resolve(options_for, work_dir: str, item_shards: List[int], num_shards: int):
  """Step c for some item shards (one pipeline; each shard's count blocks summed into its
  ItemWeights rows and joined alone)."""
  with beam.Pipeline(options=options_for()) as pipeline:
    resolved = []
    for item_shard in item_shards:
      weights = (pipeline | f"ReadItemCounts{item_shard}" >> F.ReadBatches(
          F.shard_name(work_dir, ITEM_COUNTS, item_shard) + "-*")
                 | f"SumItemCounts{item_shard}" >> N.SumItemCounts())
      candidates = pipeline | f"ReadCandidates{item_shard}" >> F.ReadBatches(
          F.all_shards(work_dir, _candidates_kind(item_shard)))
      resolved.append({"weights": weights, "candidates": candidates}
                      | f"Resolve{item_shard}" >> B.ResolveFallbacks())
    resolved = resolved | "Flatten" >> beam.Flatten()
    _ = (_by_user_shard(resolved, num_shards, "Fallbacks")
         | "WriteFallbacks" >> F.WriteBatchesByKey(
             lambda k: F.shard_name(work_dir, _fallbacks_kind(k), item_shards[0])))


def _attach(options_for, work_dir: str, sequences: str, shard: int):
  """Step d for one user shard."""
  with beam.Pipeline(options=options_for()) as pipeline:
    stored = pipeline | "ReadSequences" >> F.ReadPickled(sequences)
    negatives = _read_by_user(pipeline, "Negatives",
                              F.all_shards(work_dir, _negatives_kind(shard)))
    fallbacks = _read_by_user(pipeline, "Fallbacks",
                              F.all_shards(work_dir, _fallbacks_kind(shard)))
    attached = {"sequences": stored, "negatives": negatives, "fallbacks": fallbacks} | (
        "Attach" >> B.AttachNegatives())
    _ = attached[VALID] | "WriteAttached" >> F.WritePickled(
        F.shard_name(work_dir, ATTACHED, shard))
    _write_summed_counts(pipeline, attached[COUNTS],
                         _counts_path(work_dir, shard, "attach_counts"))


def _read_counts(path: str) -> dict:
  with FileSystems.open(path) as f:
    return json.loads(f.read().decode("utf-8"))


def run(args, options_for, work_dir: str, sequences_kind: str, num_shards: int) -> List[dict]:
  """Steps a-d; returns the draws' count dicts. Afterwards F.all_shards(work_dir, ATTACHED)
  holds every user's sequence with its negatives."""
  started = time.time()
  _facts_and_queries(args, options_for, work_dir, F.all_shards(work_dir, sequences_kind),
                     num_shards)
  _LOG.info("user shards: window edges, item counts and queries written, %.0f s",
            time.time() - started)
  counts = []
  for shard in range(num_shards):
    if not F.has_files(F.shard_name(work_dir, QUERIES, shard) + "-*"):
      continue
    _draw(args, options_for, work_dir, shard, num_shards)
    counts.append(_read_counts(_counts_path(work_dir, shard)))
  _LOG.info("user shards: negatives drawn in %d category shards, %.0f s", num_shards,
            time.time() - started)
  # Item shards with candidates, in min(num_shards, ITEM_SHARDS) pipelines: a pipeline
  # holds ~1/num_shards of the item weights, as the other steps hold ~1/num_shards of the
  # log (and a small job does not start ITEM_SHARDS pipelines).
  pending = [k for k in range(N.ITEM_SHARDS)
             if F.has_records(F.all_shards(work_dir, _candidates_kind(k)))]
  groups = min(num_shards, N.ITEM_SHARDS)
  for group in range(groups):
    if pending[group::groups]:
      _resolve(options_for, work_dir, pending[group::groups], num_shards)
  for shard in range(num_shards):
    sequences = F.shard_name(work_dir, sequences_kind, shard) + "-*"
    if F.has_files(sequences):
      _attach(options_for, work_dir, sequences, shard)
      counts.append(_read_counts(_counts_path(work_dir, shard, "attach_counts")))
  _LOG.info("user shards: negatives attached, %.0f s", time.time() - started)
  return counts
