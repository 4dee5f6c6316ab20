r"""Beam job: raw behavior logs (+ optional impression log) -> TFRecord user sequences.

  python -m pipelines.build_dataset --input='logs/*.csv.gz' --output_dir=data \
      [--impressions='imps/*.csv'] [--runner=DirectRunner] [any Beam pipeline option]

Unknown flags go to Beam's PipelineOptions unchanged, so DataflowRunner / FlinkRunner /
SparkRunner and their options work as documented by Beam. Outputs in --output_dir:

  train/part-*.tfrecord.gz, eval/part-*.tfrecord.gz   user-sequence records (features.py)
  dead_letter-*.txt    every rejected input row: source<TAB>reason<TAB>raw line
  stats.json           row/target/user counts, rejections by reason, length percentiles
  schema.json          features.schema_dict() + the pipeline parameters (eval_start ...)

See README.md, "Data pipeline", for the semantics (targets, negatives, split, bad input).
"""
import argparse
import json
import logging
import sys
import time
from typing import Dict, List, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from eta_tf import features
from pipelines import leakage as L
from pipelines import negatives as N
from pipelines import parsing
from pipelines import transforms as T
# Stats/metadata assembly lives in dataset_stats; re-exported here for callers and tests.
from pipelines.dataset_stats import (  # noqa: F401
    MAX_SHARE_DEVIATION, SPLIT_METHODS, SPLIT_TIME, SPLIT_USER_LAST, UnbalancedStatsError,
    _write_json, add_split_shares, assemble_stats, check_balanced, schema_with_params,
    split_check, summarize, write_metadata)

DEFAULT_POSITIVE_BEHAVIORS = "pv"
SAMPLER_MATCHED = "matched"
SAMPLER_UNIFORM = "uniform"
TFRECORD_SUFFIX = ".tfrecord.gz"
DEAD_LETTER_SUFFIX = ".txt"

_LOG = logging.getLogger("pipelines.build_dataset")


def _behavior_codes(names: str) -> List[int]:
  codes = []
  for name in filter(None, (n.strip() for n in names.split(","))):
    if name not in features.BEHAVIOR_TYPES:
      raise argparse.ArgumentTypeError(
          f"unknown behavior type {name!r}; choose from {sorted(features.BEHAVIOR_TYPES)}")
    codes.append(features.BEHAVIOR_TYPES[name])
  if not codes:
    raise argparse.ArgumentTypeError("at least one positive behavior type is needed")
  return codes


def _fraction(value: str) -> float:
  f = float(value)
  if not 0.0 < f < 1.0:
    raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
  return f


def _positive(value: str) -> int:
  n = int(value)
  if n < 1:
    raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
  return n


def _non_negative(value: str) -> int:
  n = int(value)
  if n < 0:
    raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
  return n


def make_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m pipelines.build_dataset",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="Other flags (e.g. --runner, --direct_num_workers, --project, --region, "
             "--temp_location) are Beam pipeline options and are passed through.")
  parser.add_argument("--input", required=True,
                      help="glob of behavior logs user_id,item_id,category_id,"
                           "behavior_type,timestamp (plain or .gz, no header)")
  parser.add_argument("--output_dir", required=True, help="directory to write (local/GCS)")
  parser.add_argument("--impressions", default=None,
                      help="optional glob of impression logs user_id,item_id,category_id,"
                           "timestamp,label; when given, targets are these impressions and "
                           "no negatives are sampled")
  parser.add_argument("--split", choices=SPLIT_METHODS, default=SPLIT_TIME,
                      help="'time' (default): eval = the latest --eval_fraction of all "
                           "targets (a quantile of target timestamps; targets of one second "
                           "stay on one side) or those at/after --eval_start; 'user_last': "
                           "each user's last --eval_targets_per_user targets are eval, the "
                           "rest train (leave-last-out). Either way a train sample never "
                           "sees a behavior at/after its user's eval start")
  parser.add_argument("--eval_fraction", type=_fraction, default=0.1,
                      help="--split=time: share of targets (the latest) that form eval "
                           "(default 0.1)")
  parser.add_argument("--eval_start", type=int, default=None,
                      help="--split=time: explicit eval split start (unix s); overrides "
                           "--eval_fraction")
  parser.add_argument("--eval_targets_per_user", type=_positive, default=1,
                      help="--split=user_last: eval targets per user (default 1; ties in "
                           "time with the first of them go to eval too)")
  parser.add_argument("--allow_skewed_split", action="store_true",
                      help="keep a split that is empty or whose eval share of targets is "
                           "off --eval_fraction by more than "
                           f"{MAX_SHARE_DEVIATION * 100:.0f} points (otherwise the job exits with code 2 after writing "
                           "stats.json)")
  parser.add_argument("--positive_behaviors", type=_behavior_codes,
                      default=_behavior_codes(DEFAULT_POSITIVE_BEHAVIORS),
                      help="comma-separated behavior types that make a positive target "
                           "when there is no impression log (default 'pv': a pv is the "
                           "Taobao click; cart/fav/buy almost always follow a pv of the "
                           "same item, so counting them too mostly duplicates positives)")
  parser.add_argument("--negatives_per_positive", type=_non_negative, default=1,
                      help="seeded negatives per positive, same category where possible "
                           "(default 1; ignored with --impressions)")
  parser.add_argument("--negative_sampler", choices=(SAMPLER_MATCHED, SAMPLER_UNIFORM),
                      default=SAMPLER_MATCHED,
                      help="'matched' (default): a negative is an item of the positive's "
                           "category that is a positive target in the same time window, "
                           "drawn in proportion to its frequency there (falls back to "
                           "wider windows, the category, then all items, counted in "
                           "stats); 'uniform': a uniform distinct item of the category "
                           "over the whole log (what papers usually do; leaks "
                           "popularity/freshness on real logs)")
  parser.add_argument("--negative_time_windows", type=_positive,
                      default=N.DEFAULT_TIME_WINDOWS,
                      help="number of equal-target-count time windows of the matched "
                           "sampler (default %(default)s; the leakage check always uses "
                           f"{L.CHECK_WINDOWS})")
  parser.add_argument("--seed", type=int, default=0, help="negative sampling seed")
  parser.add_argument("--min_history", type=_non_negative, default=1,
                      help="drop (and count in stats) targets with fewer prior behaviors "
                           "than this (default 1: every sample has some history)")
  parser.add_argument("--min_timestamp", type=int, default=parsing.DEFAULT_MIN_TIMESTAMP,
                      help="rows before this unix time are dead-lettered "
                           "(timestamp_out_of_range); default 1 = any plausible Unix time. "
                           "Narrow it to your log's collection window, e.g. Taobao "
                           "UserBehavior: --min_timestamp=1511539200 "
                           "--max_timestamp=1512316800")
  parser.add_argument("--max_timestamp", type=int, default=parsing.DEFAULT_MAX_TIMESTAMP,
                      help="rows at/after this unix time are dead-lettered "
                           "(default 4102444800 = 2100-01-01)")
  parser.add_argument("--num_shards", type=_non_negative, default=0,
                      help="TFRecord shards per split (default 0 = runner decides)")
  parser.add_argument("--overwrite", action="store_true",
                      help="delete previous outputs of this job in --output_dir first")
  return parser


def _output_paths(output_dir: str) -> Dict[str, str]:
  return {
      "dead_letter_prefix": FileSystems.join(output_dir, features.DEAD_LETTER_PREFIX),
      "stats": FileSystems.join(output_dir, features.STATS_FILE),
      "schema": FileSystems.join(output_dir, features.SCHEMA_FILE),
  }


def _existing_outputs(output_dir: str) -> List[str]:
  paths = _output_paths(output_dir)
  patterns = [features.split_file_pattern(output_dir, s) for s in features.SPLITS]
  patterns += [paths["dead_letter_prefix"] + "-*", paths["stats"], paths["schema"]]
  found = []
  for result in FileSystems.match(patterns):
    found += [m.path for m in result.metadata_list]
  return found


def prepare_output_dir(output_dir: str, overwrite: bool):
  """Refuses to mix with a previous run's shards unless --overwrite (then deletes them)."""
  existing = _existing_outputs(output_dir)
  if existing and not overwrite:
    raise SystemExit(f"{output_dir} already holds pipeline outputs ({len(existing)} files, "
                     f"e.g. {existing[0]}); pass --overwrite or choose another directory")
  if existing:
    _LOG.info("deleting %d previous outputs in %s", len(existing), output_dir)
    FileSystems.delete(existing)


def pipeline_params(args) -> dict:
  """The job parameters recorded in schema.json and stats.json."""
  names = {v: k for k, v in features.BEHAVIOR_TYPES.items()}
  return {
      "input": args.input,
      "impressions": args.impressions,
      "sources": [parsing.SOURCE_BEHAVIORS] + (
          [parsing.SOURCE_IMPRESSIONS] if args.impressions else []),
      "target_source": (parsing.SOURCE_IMPRESSIONS if args.impressions
                        else parsing.SOURCE_BEHAVIORS),
      "positive_behaviors": None if args.impressions else sorted(
          names[c] for c in args.positive_behaviors),
      "negatives_per_positive": 0 if args.impressions else args.negatives_per_positive,
      "negative_sampler": None if args.impressions else args.negative_sampler,
      "negative_time_windows": args.negative_time_windows,
      "seed": args.seed,
      "min_history": args.min_history,
      "split": args.split,
      "eval_fraction": args.eval_fraction,
      "eval_start_flag": args.eval_start,
      "eval_targets_per_user": args.eval_targets_per_user,
      "allow_skewed_split": args.allow_skewed_split,
      "min_timestamp": args.min_timestamp,
      "max_timestamp": args.max_timestamp,
  }


def _entries(pcoll, *path):
  """Singleton PCollection -> ((path...), value) stat entry."""
  return pcoll | f"Entry_{'_'.join(path)}" >> beam.Map(lambda value: (path, value))


def _file_bytes(paths: Sequence[str]) -> int:
  return sum(m.size_in_bytes for r in FileSystems.match(list(paths)) for m in r.metadata_list)


def build_pipeline(pipeline: beam.Pipeline, args) -> None:
  """Adds the whole job to `pipeline` (reads, transforms, writes, stats + schema)."""
  paths = _output_paths(args.output_dir)
  sources = {parsing.SOURCE_BEHAVIORS: args.input}
  if args.impressions:
    sources[parsing.SOURCE_IMPRESSIONS] = args.impressions

  valid, rejected, counts, stat_entries = {}, [], [], []
  for source, pattern in sources.items():
    label = source.capitalize()
    # Bytes, not str: invalid UTF-8 must reach the dead letter instead of failing decode.
    lines = pipeline | f"Read{label}" >> beam.io.ReadFromText(
        pattern, coder=beam.coders.BytesCoder(), validate=False)
    parsed = lines | f"ParseAndValidate{label}" >> T.ParseAndValidate(
        source, args.min_timestamp, args.max_timestamp)
    valid[source] = parsed[T.VALID]
    rejected.append(parsed[T.REJECTED])
    counts.append(parsed[T.COUNTS])

  rejected = rejected | "FlattenRejected" >> beam.Flatten()
  (rejected
   | "FormatDeadLetter" >> T.FormatDeadLetter()
   | "WriteDeadLetter" >> beam.io.WriteToText(
       paths["dead_letter_prefix"], file_name_suffix=DEAD_LETTER_SUFFIX))
  stat_entries.append(
      rejected
      | "ReasonOf" >> beam.Map(lambda r: (r[0], r[1]))
      | "CountReasons" >> beam.combiners.Count.PerElement()
      | "ReasonEntry" >> beam.MapTuple(
          lambda key, n: (("rows", key[0], "rejected_by_reason", key[1]), n)))

  sequences = valid | "GroupByUser" >> T.GroupByUser()
  built = sequences | "BuildSequences" >> T.BuildSequences()
  sequences = built[T.VALID]
  counts.append(built[T.COUNTS])
  if not args.impressions:
    sequences = sequences | "SelectPositiveTargets" >> T.SelectPositiveTargets(
        args.positive_behaviors)

  user_last = args.split == SPLIT_USER_LAST
  if user_last:
    sequences = sequences | "AssignUserLastSplit" >> T.AssignUserLastSplit(
        args.eval_targets_per_user)
  histogram = sequences | "TargetTimeHistogram" >> T.TargetTimeHistogram()
  time_split = histogram | "ComputeTimeSplit" >> T.DescribeTimeSplit(
      args.eval_fraction, args.eval_start, user_last)
  time_split_side = beam.pvalue.AsSingleton(time_split)
  # Equal-count windows of target time: matched negatives and the leakage check.
  num_windows = args.negative_time_windows
  edges = beam.pvalue.AsSingleton(histogram | "TimeWindows" >> beam.MapTuple(
      lambda times, counts: N.window_edges(times, counts, num_windows)))
  # The check's own fixed resolution: a coarser sampler cannot make itself look good.
  check_edges = beam.pvalue.AsSingleton(histogram | "CheckWindows" >> beam.MapTuple(
      lambda times, counts: N.window_edges(times, counts, L.CHECK_WINDOWS)))
  item_facts = beam.pvalue.AsSingleton(sequences | "BuildItemFacts" >> L.BuildItemFacts())
  if args.negative_sampler == SAMPLER_MATCHED:
    sampler_catalog = beam.pvalue.AsSingleton(
        sequences | "BuildMatchedCatalog" >> N.BuildMatchedCatalog(edges))
    sampler = N.sample_matched_negatives
  else:
    sampler_catalog, sampler = None, T.sample_uniform_negatives
  stat_entries.append(_entries(time_split, "time"))
  catalog = sequences | "BuildCatalog" >> T.BuildCatalog()
  stat_entries.append(catalog | "CatalogSizes" >> beam.FlatMap(
      lambda c: [(("items",), c.num_items), (("categories",), c.num_categories)]))

  if args.min_history:
    kept = sequences | "FilterShortHistory" >> T.FilterShortHistory(
        args.min_history, time_split_side)
    sequences = kept[T.VALID]
    stat_entries.append(
        kept[T.FILTERED]
        | "SumFiltered" >> beam.CombinePerKey(sum)
        | "FilteredEntry" >> beam.MapTuple(
            lambda split, n: (("splits", split, "filtered_min_history"), n)))

  if not args.impressions and args.negatives_per_positive:
    with_negatives = sequences | "SampleNegatives" >> T.SampleNegatives(
        sampler_catalog or beam.pvalue.AsSingleton(catalog), args.negatives_per_positive,
        args.seed, sampler)
    sequences = with_negatives[T.VALID]
    counts.append(with_negatives[T.COUNTS])

  splits = sequences | "SplitByTime" >> T.SplitByTime(time_split_side)
  counts.append(splits[T.COUNTS])
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
        splits[split] | f"Stats{label}" >> T.SplitStats(), "splits", split, "sequences"))
    stat_entries.append(_entries(
        splits[split] | f"Leakage{label}" >> L.LeakageCheck(item_facts, check_edges),
        "splits", split, "leakage"))

  stat_entries.append(_entries(
      counts | "FlattenCounts" >> beam.Flatten() | "SumCounts" >> T.SumCounts(), "counts"))
  entries = stat_entries | "FlattenStats" >> beam.Flatten()
  params = pipeline_params(args)
  _ = (pipeline
       | "Once" >> beam.Create([None])
       | "WriteStatsAndSchema" >> beam.Map(
           lambda _, entries: write_metadata(paths, params, entries),
           entries=beam.pvalue.AsList(entries)))


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
  args, beam_args = make_parser().parse_known_args(argv)
  _LOG.info("build_dataset: input=%s impressions=%s output_dir=%s beam=%s", args.input,
            args.impressions, args.output_dir, beam_args)
  prepare_output_dir(args.output_dir, args.overwrite)
  started = time.time()
  options = pipeline_options(beam_args)
  with beam.Pipeline(options=options) as pipeline:
    build_pipeline(pipeline, args)
  _LOG.info("pipeline finished in %.1f s", time.time() - started)
  with FileSystems.open(_output_paths(args.output_dir)["stats"]) as f:
    stats = json.loads(f.read().decode("utf-8"))
  _LOG.info("stats:\n%s", summarize(stats))
  if not stats["split_check"]["ok"] and not args.allow_skewed_split:
    print(f"build_dataset: error: {stats['split_check']['message']}", file=sys.stderr)
    raise SystemExit(2)
  return stats


def main(argv=None):
  logging.basicConfig(level=logging.INFO, force=True,
                      format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  run(argv)


if __name__ == "__main__":
  main()
