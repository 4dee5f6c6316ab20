"""The dataset job in user shards, for memory bounded by the shard: --user_shards=N.

The local runner (FnApiRunner) keeps every PCollection that crosses a shuffle in memory:
the one-pipeline job's peak RSS grows with the log (bench/results/scale*.json record it),
far beyond one machine for the full Taobao UserBehavior file. Distributed runners spill
and spread that; on one machine, --user_shards=N runs the same transforms in four steps
whose memory is set by the largest shard and by the global tables, not by the log:

  1. PartitionLinesByUser: one streaming pass copies each raw input line, byte for byte,
     into the shard of its user (TFRecords under --shard_work_dir);
  2. per shard, one pipeline: parse and validate (rejected rows to the dead letter, as
     always), group by user, build sequences and candidate targets -> pickled
     UserSequence records + the shard's row counts (a JSON file);
  3. matched negatives by keyed joins, one pipeline per shard (pipelines.sharded_negatives):
     one pass writes each user's candidate positives into category shards; per category
     shard, the negatives are drawn from that shard's own cells and written to their
     users' shards (draws that leave the category are resolved per item shard); per user
     shard, sequences and negatives are joined by user;
  4. one pipeline over all shards' sequences, read twice so that every stage streams
     instead of buffering every sequence until its side inputs exist: the target time
     histogram and category count; the per-user chain (filter, split, encode, write),
     which also writes the leakage check's target rows and item facts by item shard;
  5. the leakage check, one pipeline per item shard (pipelines.sharded_leakage).

Records and stats.json equal the one-pipeline job's (tests/test_pipeline_sharded.py):
users are independent once grouped, each negative is seeded by (seed, user, target) and
drawn from its own category's cells, and the global facts are sums over the same
sequences. No step holds a per-item table bigger than one item shard: the item facts
of the leakage check and the "any item" fallback's weights are keyed by item shard.
"""
import json
import logging
import time
import zlib
from typing import Callable, Dict, NamedTuple
import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines import metadata_files
from pipelines import parsing
from pipelines import shard_files as F
from pipelines import sharded_leakage
from pipelines import sharded_negatives
from pipelines.build_dataset_flags import SAMPLER_MATCHED
from pipelines.split_stats import SumCounts

_LOG = logging.getLogger("pipelines.sharded")
SEQUENCES = "sequences"


def user_shard(line: bytes, num_shards: int) -> int:
  """Shard of a raw line: a hash of its user id as the parser reads it.

  Every accepted row of one user has the same user_field_id, so one user never spans two
  shards; a line without a readable user id is rejected wherever it goes and is placed
  by a hash of its bytes.
  """
  user_id = parsing.user_field_id(line)
  if user_id is None:
    return zlib.crc32(bytes(line)) % num_shards
  return F.shard_of_user(user_id, num_shards)


class PartitionLinesByUser(beam.PTransform):
  """Raw lines -> num_shards TFRecord files of the same lines (bytes kept exactly), by user."""

  def __init__(self, work_dir: str, source: str, num_shards: int):
    super().__init__()
    self._work_dir, self._source, self._num_shards = work_dir, source, num_shards

  def expand(self, lines):
    parts = lines | "ByUser" >> beam.Partition(
        lambda line, n: user_shard(line, n), self._num_shards)
    for shard in range(self._num_shards):
      _ = parts[shard] | f"Write{shard}" >> beam.io.WriteToTFRecord(
          F.shard_name(self._work_dir, self._source, shard), file_name_suffix=".tfrecord")
    return lines.pipeline


def _read_shard(work_dir: str, shard: int):
  """read(source, pattern) for read_and_validate: the shard's copy of the source's lines."""
  def read(source, _):
    return beam.io.ReadFromTFRecord(F.shard_name(work_dir, source, shard) + "-*",
                                    coder=beam.coders.BytesCoder(), validate=False)
  return read


def _stats_path(work_dir: str, shard: int) -> str:
  return F.shard_name(work_dir, "stats", shard) + ".json"


def _write_shard_stats(_, path, counts, reasons):
  metadata_files.write_json(path, {"counts": counts,
                                   "rejected": [[list(p), n] for p, n in reasons]})


class JobStages(NamedTuple):
  """The pieces of pipelines.build_dataset's job that each step reuses."""
  sources: Dict[str, str]  # {source name: input glob}
  read_text: Callable  # (source, glob) -> PTransform reading raw lines as bytes
  read_and_validate: Callable
  group_into_sequences: Callable
  finish_pipeline: Callable
  dead_letter_prefix: str
  stats_path: str  # stats.json (the sharded leakage check adds its AUCs afterwards)


def run_sharded(args, options_for: Callable, stages: JobStages) -> None:
  """Runs the three steps; options_for() gives each pipeline fresh PipelineOptions."""
  work_dir = args.shard_work_dir or FileSystems.join(args.output_dir, "_user_shards")
  if FileSystems.exists(work_dir):  # our own leftovers of an interrupted run
    FileSystems.delete([work_dir])
  FileSystems.mkdirs(work_dir)
  sources = stages.sources
  num_shards = args.user_shards
  started = time.time()

  with beam.Pipeline(options=options_for()) as pipeline:
    for source, pattern in sources.items():
      label = source.capitalize()
      _ = (pipeline
           | f"Read{label}" >> stages.read_text(source, pattern)
           | f"Partition{label}" >> PartitionLinesByUser(work_dir, source, num_shards))
  partitioned = time.time()
  _LOG.info("user shards: partitioned the input into %d shards in %.0f s", num_shards,
            partitioned - started)

  for shard in range(num_shards):
    shard_sources = {s: p for s, p in sources.items()
                     if F.has_files(F.shard_name(work_dir, s, shard) + "-*")}
    if not shard_sources:  # no line hashed here
      _write_shard_stats(None, _stats_path(work_dir, shard), {}, [])
      continue
    with beam.Pipeline(options=options_for()) as pipeline:
      valid, counts, reasons = stages.read_and_validate(
          pipeline, shard_sources, args, f"{stages.dead_letter_prefix}-s{shard:05d}",
          read=_read_shard(work_dir, shard))
      sequences, sequence_counts = stages.group_into_sequences(valid, args)
      _ = sequences | "WriteSequences" >> F.WritePickled(
          F.shard_name(work_dir, SEQUENCES, shard))
      counts.append(sequences | "CountSequences" >> beam.Map(lambda _: {"sequences": 1}))
      summed = ((counts + [sequence_counts]) | "FlattenCounts" >> beam.Flatten()
                | "SumCounts" >> SumCounts())
      _ = (pipeline | "Once" >> beam.Create([None])
           | "WriteShardStats" >> beam.Map(
               _write_shard_stats, path=_stats_path(work_dir, shard),
               counts=beam.pvalue.AsSingleton(summed),
               reasons=beam.pvalue.AsList(reasons[0])))
    grouping = time.time() - partitioned  # the ETA of this step, not of the partition
    _LOG.info("user shards: %d/%d grouped, %.0f s elapsed, ~%.0f s to go in this step",
              shard + 1, num_shards, time.time() - started,
              grouping / (shard + 1) * (num_shards - shard - 1))

  shard_counts, reason_totals, users = [], {}, 0
  for shard in range(num_shards):
    with FileSystems.open(_stats_path(work_dir, shard)) as f:
      stats = json.loads(f.read().decode("utf-8"))
    users += stats["counts"].pop("sequences", 0)  # not a stats.json count
    shard_counts.append(stats["counts"])
    for path, n in stats["rejected"]:
      reason_totals[tuple(path)] = reason_totals.get(tuple(path), 0) + n

  # Matched negatives: keyed joins, one pipeline per shard (pipelines.sharded_negatives).
  attach = (args.negative_sampler == SAMPLER_MATCHED and not args.impressions
            and args.negatives_per_positive)
  if attach:
    shard_counts += sharded_negatives.run(args, options_for, work_dir, SEQUENCES, num_shards)

  with beam.Pipeline(options=options_for()) as pipeline:
    reads = {}

    def read_sequences(label, kind=SEQUENCES):
      if label not in reads:
        reads[label] = pipeline | f"Read{label}" >> F.ReadPickled(
            F.all_shards(work_dir, kind))
      return reads[label]

    counts = [pipeline | "ShardCounts" >> beam.Create(shard_counts)]
    entries = [pipeline | "ShardRejections" >> beam.Create(sorted(reason_totals.items()))]
    _LOG.info("user shards: global facts, then split and encode for %d users", users)
    chain = (read_sequences("Attached", sharded_negatives.ATTACHED) if attach
             else read_sequences("Sequences"))
    stages.finish_pipeline(
        pipeline, args, chain, read_sequences, counts, entries, users=users,
        negatives_attached=attach,
        leakage_inputs=lambda edges: sharded_leakage.WriteLeakageInputs(
            work_dir, num_shards, edges, args.history_length))
  _LOG.info("user shards: split and encode done, %.0f s", time.time() - started)
  sharded_leakage.run(options_for, work_dir, num_shards, stages.stats_path,
                      count_items=args.negative_sampler == SAMPLER_MATCHED)
  _LOG.info("user shards: done in %.0f s", time.time() - started)
  FileSystems.delete([work_dir])

