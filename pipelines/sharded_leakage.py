"""The leakage check in the user-sharded job, one item shard per pipeline.

The check needs, for each target row, facts about its item (pipelines.leakage). On the
local runner a CoGroupByKey of every split's target rows with the item facts would hold
them all in memory, so here:

  1. the final pipeline writes, as it streams, the users' item fact rows and each split's
     target (query) rows into `num_shards` files by a hash of the item, many users' rows
     per stored element (F.ConcatenateRowsByKey; WriteLeakageInputs);
  2. per item shard, one pipeline sums that shard's facts (1/num_shards of the items) and
     turns its query rows into score histograms (run);
  3. the histograms are summed over shards into the AUCs, and stats.json gets them (and
     the distinct item count, the sum of the shards' fact rows).

The history score needs only each sequence: the final pipeline sums its histogram per
split as it streams (leakage.UserHistograms) and writes it to a small file, added in 3.

Histograms are sums, so the AUCs equal the one-pipeline job's (KeyedLeakageCheck) for any
number of shards.
"""
import collections
import json
import logging
from typing import Dict

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from eta_tf import features
from pipelines import leakage as L
from pipelines import metadata_files
from pipelines import shard_files as F
from pipelines.split_stats import SumDictsFn

_LOG = logging.getLogger("pipelines.sharded")
FACTS, QUERIES = "leakage_facts", "leakage_queries"
USER_HISTOGRAMS = "leakage_user_histograms"


def _prefix(kind: str, shard: int) -> str:
  return f"{kind}-i{shard:05d}"


def _pattern(work_dir: str, kind: str, shard: int) -> str:
  """Every file of one item shard of one kind (the facts, the queries of every split)."""
  return FileSystems.join(work_dir, _prefix(kind, shard) + "-*")


def _result_path(work_dir: str, shard: int) -> str:
  return F.shard_name(work_dir, "leakage_histograms", shard) + ".pickle"


class WriteLeakageInputs:
  """Adds the writes of step 1 to the final pipeline (facts once, queries per split)."""

  def __init__(self, work_dir: str, num_shards: int, edges, history_length: int):
    self._work_dir, self._num_shards, self._edges = work_dir, num_shards, edges
    self._history_length = history_length

  def _write(self, blocks, kind: str, label: str):
    parts = blocks | f"{label}ByItemShard" >> beam.Partition(lambda kv, n: kv[0],
                                                             self._num_shards)
    for shard in range(self._num_shards):
      _ = (parts[shard] | f"{label}Value{shard}" >> beam.Map(lambda kv: kv[1])
           | f"{label}Write{shard}" >> F.WritePickled(
               FileSystems.join(self._work_dir, f"{_prefix(kind, shard)}-{label}")))

  def facts(self, sequences) -> None:
    self._write(sequences | "LeakageFactBlocks" >> beam.FlatMap(
        L.fact_blocks, self._num_shards)
        | "LeakageFactBatches" >> F.ConcatenateRowsByKey(), FACTS, "LeakageFacts")

  def queries(self, split: str, sequences) -> None:
    label, num_shards = f"LeakageQueries{split.capitalize()}", self._num_shards
    blocks = (sequences
              | f"{label}Blocks" >> beam.FlatMap(
                  lambda s, edges: L.query_blocks(s, edges, num_shards), self._edges)
              | f"{label}Batches" >> F.ConcatenateRowsByKey()
              | f"{label}Split" >> beam.MapTuple(lambda k, rows: (k, (split, rows))))
    self._write(blocks, QUERIES, label)
    path = _user_histograms_path(self._work_dir, split)
    _ = (sequences | f"{label}Users" >> L.UserHistograms(self._history_length)
         | f"{label}WriteUsers" >> beam.Map(lambda h: F.write_pickle_file(path, dict(h))))


def _user_histograms_path(work_dir: str, split: str) -> str:
  return FileSystems.join(work_dir, f"{USER_HISTOGRAMS}-{split}.pickle")


def _shard_result(_, path, facts, histograms):
  F.write_pickle_file(path, (len(facts.items), dict(histograms)))


def _run_shard(options_for, work_dir: str, shard: int) -> None:
  """Step 2 for one item shard: (distinct items, {split: histogram}) to a pickle file."""
  with beam.Pipeline(options=options_for()) as pipeline:
    facts = (F.read_pickled_or_nothing(pipeline, "Facts",
                                       _pattern(work_dir, FACTS, shard))
             | "SumFacts" >> beam.CombineGlobally(L._RowsFn())  # pylint: disable=protected-access
             | "ItemFacts" >> beam.Map(lambda rows: L.item_facts([rows])))
    facts_side = beam.pvalue.AsSingleton(facts)
    histograms = (F.read_pickled_or_nothing(pipeline, "Queries",
                                            _pattern(work_dir, QUERIES, shard))
                  | "Scores" >> beam.Map(
                      lambda kv, facts: (kv[0], L.shard_histogram(facts, [kv[1]])),
                      facts=facts_side)
                  | "SumPerSplit" >> beam.CombinePerKey(SumDictsFn()))
    _ = (pipeline | "Once" >> beam.Create([None])
         | "WriteResult" >> beam.Map(_shard_result, path=_result_path(work_dir, shard),
                                     facts=facts_side,
                                     histograms=beam.pvalue.AsList(histograms)))


def run(options_for, work_dir: str, num_shards: int, stats_path: str, count_items: bool
        ) -> Dict[str, dict]:
  """Steps 2-3; updates stats.json in place (and its `items`, the distinct items of the
  facts, if count_items); returns {split: leakage summary}."""
  items, totals = 0, {split: collections.Counter() for split in features.SPLITS}
  for shard in range(num_shards):
    _run_shard(options_for, work_dir, shard)
    shard_items, histograms = F.read_pickle_file(_result_path(work_dir, shard))
    items += shard_items
    for split, histogram in histograms.items():
      totals[split].update(histogram)
  for split in features.SPLITS:
    path = _user_histograms_path(work_dir, split)
    if FileSystems.exists(path):
      totals[split].update(F.read_pickle_file(path))
  leakage = {split: L.summarize(histogram) for split, histogram in totals.items()}
  with FileSystems.open(stats_path) as f:
    stats = json.loads(f.read().decode("utf-8"))
  if count_items:
    stats["items"] = items
  for split, summary in leakage.items():
    stats["splits"][split]["leakage"] = summary
  metadata_files.write_json(stats_path, stats)
  _LOG.info("user shards: leakage check in %d item shards done", num_shards)
  return leakage
