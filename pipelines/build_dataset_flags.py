"""Command-line flags of pipelines.build_dataset and the job parameters they record.

Split from pipelines/build_dataset.py (which builds and runs the Beam job) so that the
flags, their validation and their help text are read in one place.
"""
import argparse
from typing import List

from eta_tf import config_flags
from eta_tf import features
from pipelines import leakage as L
from pipelines import negative_history as H
from pipelines import negatives as N
from pipelines import parsing
from pipelines.dataset_stats import MAX_SHARE_DEVIATION, SPLIT_METHODS, SPLIT_TIME

DEFAULT_POSITIVE_BEHAVIORS = "pv"
SAMPLER_MATCHED = "matched"
SAMPLER_UNIFORM = "uniform"
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


def non_negative(value: str) -> int:
  n = int(value)
  if n < 0:
    raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
  return n


def make_parser(description: str = "") -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m pipelines.build_dataset",
      description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
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
  parser.add_argument("--negatives_per_positive", type=non_negative, default=1,
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
  parser.add_argument("--history_length", type=non_negative,
                      default=H.DEFAULT_HISTORY_LENGTH,
                      help="L: a sample's history is its user's last L behaviors before "
                           "its time (set it to the model's --max_len; default "
                           "%(default)s). The matched sampler matches each negative to its "
                           "positive on the occurrences of the item in that history, and "
                           "the leakage check scores them (history_occurrences_auc)")
  parser.add_argument("--refuse_leaky_negatives", action="store_true",
                      help="exit with code 3 (after writing stats.json) when a leakage "
                           "AUC of sampled negatives is more than "
                           f"{L.MAX_DEVIATION} from 0.5 (default: warn only)")
  parser.add_argument("--seed", type=int, default=0, help="negative sampling seed")
  parser.add_argument("--min_history", type=non_negative, default=1,
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
  parser.add_argument("--num_shards", type=non_negative, default=0,
                      help="TFRecord shards per split (default 0 = runner decides)")
  parser.add_argument("--user_shards", type=_positive, default=1,
                      help="local runs of big logs: run the job in N shards of users (a "
                           "partition pass, one pipeline per shard, one pipeline for the "
                           "global facts and the output), so that memory follows the "
                           "largest shard instead of the whole log; same records and "
                           "stats as 1 (the default, one pipeline). See README, 'Training "
                           "on the full UserBehavior dataset'")
  parser.add_argument("--shard_work_dir", default=None,
                      help="--user_shards > 1: where the shards' intermediate files go "
                           "(default <output_dir>/_user_shards; deleted when the job ends)")
  parser.add_argument("--overwrite", action="store_true",
                      help="delete previous outputs of this job in --output_dir first")
  return parser


def _beam_option_parser() -> argparse.ArgumentParser:
  """Every option of Beam's PipelineOptions classes (what Beam itself would parse)."""
  # Lazy: the flags and their --help need no Beam.
  from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
  seen = {}
  for cls in pipeline_options.PipelineOptions.__subclasses__():
    seen.setdefault(str(cls), cls)
  for cls in seen.values():
    try:
      cls._add_argparse_args(parser)  # pylint: disable=protected-access
    except argparse.ArgumentError:  # an option two classes define: the first one counts
      continue
  return parser


def parse_args(parser: argparse.ArgumentParser, argv=None):
  """(our args, Beam's args): a flag that neither this job nor Beam's PipelineOptions
  knows is refused (exit 2, "did you mean --x?"), never passed on and ignored."""
  args, beam_args = parser.parse_known_args(argv)
  beam_parser = _beam_option_parser()
  _, unknown = beam_parser.parse_known_args(beam_args)
  flags = [a for a in unknown if a.startswith("-")]
  if flags or unknown:
    known = [o for p in (parser, beam_parser) for a in p._actions  # pylint: disable=protected-access
             for o in a.option_strings]
    first = (flags or unknown)[0]
    parser.error(f"unrecognized flag {first}{config_flags.did_you_mean(first, known)}; "
                 "neither this job nor Beam's pipeline options know it")
  return args, beam_args


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
      "history_length": args.history_length,
      "refuse_leaky_negatives": args.refuse_leaky_negatives,
      "min_history": args.min_history,
      "split": args.split,
      "eval_fraction": args.eval_fraction,
      "eval_start_flag": args.eval_start,
      "eval_targets_per_user": args.eval_targets_per_user,
      "allow_skewed_split": args.allow_skewed_split,
      "min_timestamp": args.min_timestamp,
      "max_timestamp": args.max_timestamp,
      "user_shards": args.user_shards,
  }
