r"""Beam job: raw behavior logs (+ optional impression log) -> TFRecord user sequences.

  python -m pipelines.build_dataset --input='logs/*.csv.gz' --output_dir=data \
      [--impressions='imps/*.csv'] [--runner=DirectRunner] [any Beam pipeline option]

Other flags go to Beam's PipelineOptions unchanged, so DataflowRunner / FlinkRunner /
SparkRunner and their options work as documented by Beam; a flag neither this job nor
Beam knows (a typo) is refused with exit code 2 and a "did you mean". Outputs in --output_dir:

  train/part-*.tfrecord.gz, eval/part-*.tfrecord.gz   user-sequence records (features.py)
  dead_letter-*.txt    every rejected input row: source<TAB>reason<TAB>raw line
  stats.json           row/target/user counts, rejections by reason, length percentiles
  schema.json          features.schema_dict() + the pipeline parameters (eval_start ...)
  _COMPLETE            written last: the files above and their sizes (the trainer reads
                       no output without it)

One job per --output_dir at a time; an existing output is replaced (--overwrite) only
once the new one is complete (pipelines/output_dir.py).

See README.md, "Data pipeline", for the semantics (targets, negatives, split, bad input).
"""
import json
import logging
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from eta_tf import features
from pipelines import leakage as L
from pipelines import negatives as N
from pipelines import output_dir as output_dir_lib
from pipelines import parsing
from pipelines import sharded
from pipelines.progress import LogProgress
from pipelines import transforms as T
from pipelines.build_dataset_flags import SAMPLER_MATCHED, make_parser, parse_args
from pipelines.build_dataset_flags import pipeline_params
from pipelines.dataset_stats import SPLIT_USER_LAST, leakage_message, summarize
from pipelines.dataset_stats import write_metadata
from pipelines.global_facts import BuildCatalog, CountCategories, DescribeTimeSplit
from pipelines.global_facts import TargetTimeHistogram
from pipelines.negative_join import KeyedMatchedNegatives
from pipelines.negative_sampling import SampleNegatives
from pipelines.shard_files import has_files
from pipelines.split_stats import SplitStats, SumCounts
from pipelines.tags import COUNTS, FILTERED, REJECTED, VALID

TFRECORD_SUFFIX = ".tfrecord.gz"
DEAD_LETTER_SUFFIX = ".txt"

_LOG = logging.getLogger("pipelines.build_dataset")


def _output_paths(output_dir: str) -> Dict[str, str]:
  return {
      "dead_letter_prefix": FileSystems.join(output_dir, features.DEAD_LETTER_PREFIX),
      "stats": FileSystems.join(output_dir, features.STATS_FILE),
      "schema": FileSystems.join(output_dir, features.SCHEMA_FILE),
  }


def _entries(pcoll, *path):
  """Singleton PCollection -> ((path...), value) stat entry."""
  return pcoll | f"Entry_{'_'.join(path)}" >> beam.Map(lambda value: (path, value))


def _file_bytes(paths: Sequence[str]) -> int:
  return sum(m.size_in_bytes for r in FileSystems.match(list(paths)) for m in r.metadata_list)


def _sources(args) -> Dict[str, str]:
  """{source name: input glob} of the job."""
  sources = {parsing.SOURCE_BEHAVIORS: args.input}
  if args.impressions:
    sources[parsing.SOURCE_IMPRESSIONS] = args.impressions
  return sources


def read_text_lines(source: str, pattern: str):  # pylint: disable=unused-argument
  # Bytes, not str: invalid UTF-8 must reach the dead letter instead of failing decode.
  return beam.io.ReadFromText(pattern, coder=beam.coders.BytesCoder(), validate=False)


def read_and_validate(pipeline: beam.Pipeline, sources: Dict[str, str], args,
                      dead_letter_prefix: str, read=read_text_lines):
  """Reads (`read(source, pattern)`: a PTransform) and parses every source; rejected rows
  to the dead letter.

  Returns ({source: PCollection[(user, event)]}, [count-dict PCollections],
  [stat-entry PCollections]).
  """
  valid, rejected, counts = {}, [], []
  for source, pattern in sources.items():
    label = source.capitalize()
    lines = pipeline | f"Read{label}" >> read(source, pattern)
    parsed = lines | f"ParseAndValidate{label}" >> T.ParseAndValidate(
        source, args.min_timestamp, args.max_timestamp)
    valid[source] = parsed[VALID]
    rejected.append(parsed[REJECTED])
    counts.append(parsed[COUNTS])

  rejected = rejected | "FlattenRejected" >> beam.Flatten()
  (rejected
   | "FormatDeadLetter" >> T.FormatDeadLetter()
   | "WriteDeadLetter" >> beam.io.WriteToText(
       dead_letter_prefix, file_name_suffix=DEAD_LETTER_SUFFIX))
  reasons = (
      rejected
      | "ReasonOf" >> beam.Map(lambda r: (r[0], r[1]))
      | "CountReasons" >> beam.combiners.Count.PerElement()
      | "ReasonEntry" >> beam.MapTuple(
          lambda key, n: (("rows", key[0], "rejected_by_reason", key[1]), n)))
  return valid, counts, [reasons]


def group_into_sequences(valid, args):
  """{source: (user, event)} -> (UserSequence PCollection with candidate targets and, for
  --split=user_last, each user's eval_start; count-dict PCollection)."""
  built = valid | "GroupByUser" >> T.GroupByUser() | "BuildSequences" >> T.BuildSequences()
  sequences = built[VALID]
  if not args.impressions:
    sequences = sequences | "SelectPositiveTargets" >> T.SelectPositiveTargets(
        args.positive_behaviors)
  if args.split == SPLIT_USER_LAST:
    sequences = sequences | "AssignUserLastSplit" >> T.AssignUserLastSplit(
        args.eval_targets_per_user)
  return sequences, built[COUNTS]


def finish_pipeline(pipeline: beam.Pipeline, args, sequences, fact_sequences: Callable,
                    counts: list, stat_entries: list, users: Optional[int] = None,
                    negatives_attached: bool = False, leakage_inputs=None) -> None:
  """Global facts, filter, negatives, split, encode, write, then stats + schema.

  `sequences` feed the per-user chain; `fact_sequences(label)` gives the same users for a
  global fact. The one-pipeline job returns `sequences` itself; the sharded job a fresh
  read of its files per fact: the local runner buffers in memory every PCollection whose
  consumer waits for a side input computed from that PCollection's own stage (the window
  edges of the matched catalog, the time split of the chain), so separate reads are what
  lets each stage stream. `users` (if known) makes the progress lines show an ETA.
  Matched negatives are drawn by keyed joins (pipelines.negative_join) unless
  `negatives_attached` (the sharded job drew them already, per shard). The leakage check
  joins target rows with item facts by item shard (leakage.KeyedLeakageCheck), unless
  `leakage_inputs(check_edges)` gives a sharded_leakage.WriteLeakageInputs: then its
  inputs are written by item shard and the sharded job computes it afterwards (with the
  item count, when the matched sampler takes that from the item facts).
  """
  paths = _output_paths(args.output_dir)
  histogram = fact_sequences("Histogram") | "TargetTimeHistogram" >> TargetTimeHistogram()
  time_split = histogram | "ComputeTimeSplit" >> DescribeTimeSplit(
      args.eval_fraction, args.eval_start, args.split == SPLIT_USER_LAST)
  time_split_side = beam.pvalue.AsSingleton(time_split)
  # Equal-count windows of target time: matched negatives and the leakage check.
  num_windows = args.negative_time_windows
  edges = beam.pvalue.AsSingleton(histogram | "TimeWindows" >> beam.MapTuple(
      lambda times, counts: N.window_edges(times, counts, num_windows)))
  # The check's own fixed resolution: a coarser sampler cannot make itself look good.
  check_edges = beam.pvalue.AsSingleton(histogram | "CheckWindows" >> beam.MapTuple(
      lambda times, counts: N.window_edges(times, counts, L.CHECK_WINDOWS)))
  writer = leakage_inputs(check_edges) if leakage_inputs else None
  if writer:
    writer.facts(fact_sequences("Histogram"))
  else:
    item_facts = fact_sequences("Histogram") | "KeyedItemFacts" >> L.KeyedItemFacts(
        N.ITEM_SHARDS)
  stat_entries.append(_entries(time_split, "time"))
  matched = args.negative_sampler == SAMPLER_MATCHED
  if matched:  # no (category, item) catalog: the sizes from item facts + category ids
    categories = fact_sequences("Histogram") | "CountCategories" >> CountCategories()
    if not writer:  # (else counted by the sharded leakage step)
      stat_entries.append(_entries(
          item_facts | "ShardItems" >> beam.MapTuple(lambda _, rows: len(rows))
          | "ItemCount" >> beam.CombineGlobally(sum), "items"))
  else:
    catalog = fact_sequences("Histogram") | "BuildCatalog" >> BuildCatalog()
    categories = catalog | "CategoryCount" >> beam.Map(lambda c: c.num_categories)
    stat_entries.append(_entries(catalog | "ItemCount" >> beam.Map(lambda c: c.num_items),
                                 "items"))
  stat_entries.append(_entries(categories, "categories"))
  draw_negatives = not args.impressions and args.negatives_per_positive

  if matched and draw_negatives and not negatives_attached:
    # Before the history filter: short-history targets count in the cells but get no
    # draw (query flag), and the filter then drops them as it always did.
    weights = fact_sequences("Histogram") | "KeyedItemWeights" >> N.KeyedItemWeights()
    with_negatives = sequences | "MatchedNegatives" >> KeyedMatchedNegatives(
        edges, weights, args.negatives_per_positive, args.seed, args.min_history,
        args.history_length)
    sequences = with_negatives[VALID]
    counts.append(with_negatives[COUNTS])

  sequences = sequences | "ChainProgress" >> LogProgress(
      "negatives, split, encode", total=users)
  if args.min_history:
    kept = sequences | "FilterShortHistory" >> T.FilterShortHistory(
        args.min_history, time_split_side)
    sequences = kept[VALID]
    stat_entries.append(
        kept[FILTERED]
        | "SumFiltered" >> beam.CombinePerKey(sum)
        | "FilteredEntry" >> beam.MapTuple(
            lambda split, n: (("splits", split, "filtered_min_history"), n)))

  if draw_negatives and not matched:
    with_negatives = sequences | "SampleNegatives" >> SampleNegatives(
        beam.pvalue.AsSingleton(catalog), args.negatives_per_positive, args.seed)
    sequences = with_negatives[VALID]
    counts.append(with_negatives[COUNTS])

  splits = sequences | "SplitByTime" >> T.SplitByTime(time_split_side)
  counts.append(splits[COUNTS])
  for split in features.SPLITS:
    label = split.capitalize()
    written = (splits[split]
               | f"EncodeExamples{label}" >> T.EncodeExamples()
               | f"Write{label}" >> beam.io.WriteToTFRecord(
                   features.split_file_prefix(args.output_dir, split),
                   file_name_suffix=TFRECORD_SUFFIX,
                   num_shards=args.num_shards,
                   compression_type=CompressionTypes.GZIP))
    stat_entries.append(_entries(
        written | f"Files{label}" >> beam.combiners.ToList()
        | f"Bytes{label}" >> beam.Map(_file_bytes), "splits", split, "bytes_written"))
    stat_entries.append(_entries(
        splits[split] | f"Stats{label}" >> SplitStats(), "splits", split, "sequences"))
    if writer:
      writer.queries(split, splits[split])
    else:
      stat_entries.append(_entries(
          splits[split] | f"Leakage{label}" >> L.KeyedLeakageCheck(
              item_facts, check_edges, N.ITEM_SHARDS, args.history_length),
          "splits", split, "leakage"))

  stat_entries.append(_entries(
      counts | "FlattenCounts" >> beam.Flatten() | "SumCounts" >> SumCounts(), "counts"))
  entries = stat_entries | "FlattenStats" >> beam.Flatten()
  params = pipeline_params(args)
  _ = (pipeline
       | "Once" >> beam.Create([None])
       | "WriteStatsAndSchema" >> beam.Map(
           lambda _, entries: write_metadata(paths, params, entries),
           entries=beam.pvalue.AsList(entries)))


def build_pipeline(pipeline: beam.Pipeline, args) -> None:
  """Adds the whole job to `pipeline` (reads, transforms, writes, stats + schema)."""
  valid, counts, stat_entries = read_and_validate(
      pipeline, _sources(args), args, _output_paths(args.output_dir)["dead_letter_prefix"])
  sequences, sequence_counts = group_into_sequences(valid, args)
  finish_pipeline(pipeline, args, sequences, lambda _: sequences,
                  counts + [sequence_counts], stat_entries)


# Beam's DirectRunner first probes the Prism runner, which downloads a Go binary from the
# internet at run time (impossible offline, slow otherwise), and then falls back to the
# in-process FnApiRunner for batch jobs like this one. We go to the FnApiRunner directly.
LOCAL_RUNNER = "FnApiRunner"


def pipeline_options(beam_args: List[str]) -> PipelineOptions:
  """Beam options of the job; a DirectRunner (or no runner) becomes LOCAL_RUNNER.

  Beam's default --direct_running_mode=in_memory is kept on purpose. Measured on 2 cores
  (200k events): in_memory 16.7 s vs multi_processing with 2 workers 34 s -- worker
  start-up and cross-process shuffle encoding cost more than the second core wins back.
  --direct_running_mode / --direct_num_workers given by the user are respected; other
  runners are untouched.
  """
  options = PipelineOptions(beam_args)
  if options.view_as(StandardOptions).runner in (None, "DirectRunner", "direct"):
    options = PipelineOptions(beam_args, runner=LOCAL_RUNNER)
  return options


def run(argv: Optional[Sequence[str]] = None) -> dict:
  """Runs the job to completion and returns the stats dict (also in stats.json)."""
  parser = make_parser(__doc__)
  args, beam_args = parse_args(parser, argv)
  for flag, pattern in (("--input", args.input), ("--impressions", args.impressions)):
    # A glob that matches nothing would otherwise run the whole job on zero rows.
    if pattern is not None and not has_files(pattern):
      parser.error(f"{flag}={pattern!r}: no file matches")
  _LOG.info("build_dataset: input=%s impressions=%s output_dir=%s beam=%s", args.input,
            args.impressions, args.output_dir, beam_args)
  with output_dir_lib.BuildInto(args.output_dir, args.overwrite) as build_dir:
    stats = _run_job(_replaced(args, output_dir=build_dir), beam_args)
    if not stats["split_check"]["ok"] and not args.allow_skewed_split:
      raise output_dir_lib.OutputDirError(
          f"{stats['split_check']['message']} ({args.output_dir} left as it was)")
    output_dir_lib.mark_complete(build_dir)
  leaky = leakage_message(stats)
  if leaky:
    _LOG.warning(leaky)
    if args.refuse_leaky_negatives:  # the output stays complete, for inspection
      print(f"build_dataset: error: {leaky} (--refuse_leaky_negatives; the output is in "
            f"{args.output_dir} for inspection)", file=sys.stderr)
      raise SystemExit(3)
  return stats


def _replaced(args, **changes):
  """A copy of the argparse namespace with `changes`."""
  copy = type(args)(**vars(args))
  for key, value in changes.items():
    setattr(copy, key, value)
  return copy


def _run_job(args, beam_args) -> dict:
  """The Beam job into args.output_dir; returns the stats dict (also in stats.json)."""
  started = time.time()
  if args.user_shards > 1:
    sharded.run_sharded(args, lambda: pipeline_options(beam_args), sharded.JobStages(
        sources=_sources(args), read_text=read_text_lines,
        read_and_validate=read_and_validate, group_into_sequences=group_into_sequences,
        finish_pipeline=finish_pipeline,
        dead_letter_prefix=_output_paths(args.output_dir)["dead_letter_prefix"],
        stats_path=_output_paths(args.output_dir)["stats"]))
  else:
    with beam.Pipeline(options=pipeline_options(beam_args)) as pipeline:
      build_pipeline(pipeline, args)
  _LOG.info("pipeline finished in %.1f s", time.time() - started)
  with FileSystems.open(_output_paths(args.output_dir)["stats"]) as f:
    stats = json.loads(f.read().decode("utf-8"))
  _LOG.info("stats:\n%s", summarize(stats))
  return stats


def main(argv=None):
  logging.basicConfig(level=logging.INFO, force=True,
                      format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  run(argv)


if __name__ == "__main__":
  main()
