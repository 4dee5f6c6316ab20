"""Matched negatives in the user-sharded job: the keyed joins of pipelines.negative_join,
one pipeline per key, so that no step holds more than one shard of the log.

On the local runner every shuffle is held in memory, so a CoGroupByKey over the whole log
costs as much as the broadcast table it replaces. Here each join runs per shard:

  a. one pass over the stored sequences: window edges and the "any item" ItemWeights (a
     small pickle file), and each user's candidate positive targets partitioned into
     `num_shards` category shards (negative_join.CategoryQueries);
  b. per category shard: group its query rows by key, draw (negative_join.DrawNegatives),
     write each user's negatives into the file of the user's shard; sum the counters;
  c. per user shard: join its sequences with their negatives by user
     (negative_join.AttachNegatives) and store the result for the final pipeline.

The draws are those of the one-pipeline job (seeded per target, per category:
negative_join), so the records are the same.
"""
import json
import logging
import time
from typing import List

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines import metadata_files
from pipelines import negative_join as J
from pipelines import negatives as N
from pipelines import shard_files as F
from pipelines.global_facts import TargetTimeHistogram
from pipelines.split_stats import SumCounts
from pipelines.tags import COUNTS, VALID

_LOG = logging.getLogger("pipelines.sharded")
QUERIES, ATTACHED = "queries", "attached"


def _facts_path(work_dir: str) -> str:
  return FileSystems.join(work_dir, "negative_facts.pickle")


def _negatives_kind(user_shard: int) -> str:
  return f"negatives-u{user_shard:05d}"


def _counts_path(work_dir: str, shard: int) -> str:
  return F.shard_name(work_dir, "negative_counts", shard) + ".json"


def _write_counts(_, path, counts):
  metadata_files.write_json(path, counts)


def _facts_and_queries(args, options_for, work_dir: str, sequences: str, num_shards: int):
  """Step a: edges + ItemWeights to a file; query rows partitioned by category shard."""
  with beam.Pipeline(options=options_for()) as pipeline:
    stored = pipeline | "ReadSequences" >> F.ReadPickled(sequences)
    num_windows = args.negative_time_windows
    edges = (stored | "TargetTimeHistogram" >> TargetTimeHistogram()
             | "TimeWindows" >> beam.MapTuple(
                 lambda times, counts: N.window_edges(times, counts, num_windows)))
    weights = stored | "BuildItemWeights" >> N.BuildItemWeights()
    _ = (pipeline | "Once" >> beam.Create([_facts_path(work_dir)])
         | "WriteFacts" >> beam.Map(
             lambda path, edges, weights: F.write_pickle_file(path, (edges, weights)),
             edges=beam.pvalue.AsSingleton(edges), weights=beam.pvalue.AsSingleton(weights)))
    parts = (stored
             | "CategoryQueries" >> J.CategoryQueries(num_shards, args.min_history)
             | "ByCategoryShard" >> beam.Partition(lambda kv, n: kv[0], num_shards))
    for shard in range(num_shards):
      _ = parts[shard] | f"WriteQueries{shard}" >> F.WritePickled(
          F.shard_name(work_dir, QUERIES, shard))


def _draw(args, options_for, work_dir: str, shard: int, num_shards: int):
  """Step b for one category shard."""
  with beam.Pipeline(options=options_for()) as pipeline:
    facts = (pipeline | "FactsPath" >> beam.Create([_facts_path(work_dir)])
             | "ReadFacts" >> beam.Map(F.read_pickle_file))
    edges = beam.pvalue.AsSingleton(facts | "Edges" >> beam.Map(lambda f: f[0]))
    everything = beam.pvalue.AsSingleton(facts | "ItemWeights" >> beam.Map(lambda f: f[1]))
    drawn = (pipeline
             | "ReadQueries" >> F.ReadPickled(F.shard_name(work_dir, QUERIES, shard) + "-*")
             | "GroupByCategory" >> beam.GroupByKey()
             | "DrawNegatives" >> J.DrawNegatives(edges, everything,
                                                  args.negatives_per_positive, args.seed))
    parts = drawn[VALID] | "ByUserShard" >> beam.Partition(
        lambda kv, n: F.shard_of_user(kv[0], n), num_shards)
    for user_shard in range(num_shards):
      _ = parts[user_shard] | f"WriteNegatives{user_shard}" >> F.WritePickled(
          F.shard_name(work_dir, _negatives_kind(user_shard), shard))
    summed = drawn[COUNTS] | "SumCounts" >> SumCounts()
    _ = (pipeline | "Once" >> beam.Create([None])
         | "WriteCounts" >> beam.Map(_write_counts, path=_counts_path(work_dir, shard),
                                     counts=beam.pvalue.AsSingleton(summed)))


def _attach(options_for, work_dir: str, sequences: str, shard: int):
  """Step c for one user shard."""
  with beam.Pipeline(options=options_for()) as pipeline:
    stored = pipeline | "ReadSequences" >> F.ReadPickled(sequences)
    pattern = F.all_shards(work_dir, _negatives_kind(shard))
    negatives = (pipeline | "ReadNegatives" >> F.ReadPickled(pattern)
                 if F.has_files(pattern) else pipeline | "NoNegatives" >> beam.Create([]))
    attached = {"sequences": stored, "negatives": negatives} | "Attach" >> (
        J.AttachNegatives())
    _ = attached | "WriteAttached" >> F.WritePickled(F.shard_name(work_dir, ATTACHED, shard))


def run(args, options_for, work_dir: str, sequences_kind: str, num_shards: int) -> List[dict]:
  """Steps a-c; returns the draws' count dicts. Afterwards F.all_shards(work_dir, ATTACHED)
  holds every user's sequence with its negatives."""
  started = time.time()
  _facts_and_queries(args, options_for, work_dir, F.all_shards(work_dir, sequences_kind),
                     num_shards)
  _LOG.info("user shards: window edges, item weights and queries written, %.0f s",
            time.time() - started)
  counts = []
  for shard in range(num_shards):
    if not F.has_files(F.shard_name(work_dir, QUERIES, shard) + "-*"):
      continue
    _draw(args, options_for, work_dir, shard, num_shards)
    with FileSystems.open(_counts_path(work_dir, shard)) as f:
      counts.append(json.loads(f.read().decode("utf-8")))
  _LOG.info("user shards: negatives drawn in %d category shards, %.0f s", num_shards,
            time.time() - started)
  for shard in range(num_shards):
    sequences = F.shard_name(work_dir, sequences_kind, shard) + "-*"
    if F.has_files(sequences):
      _attach(options_for, work_dir, sequences, shard)
  _LOG.info("user shards: negatives attached, %.0f s", time.time() - started)
  return counts
