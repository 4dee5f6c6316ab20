r"""A log -> a training data dir in one call: the synthetic log if none is given, then the
Beam job in-process (pipelines.build_dataset.run). Used by `python -m eta_tf.train`'s
embedded default and by bench/.

    data_dir = prepare_synthetic_data("runs/eta/data", num_users=2000, seed=0)
    data_dir = build("logs/*.csv.gz", "data", seed=0)

The job builds beside data_dir and swaps it in only when complete (pipelines/output_dir.py:
its `_COMPLETE` marker is written last), so a data_dir with the marker is a finished one
and is reused as is; one without it is rebuilt.

Command line (see --help):

    python -m pipelines.prepare --data_dir=runs/data                  # synthetic log
    python -m pipelines.prepare --data_dir=runs/data --log='logs/*.csv.gz' --split=user_last

Flags it does not know are handed to pipelines.build_dataset (which refuses the ones it
does not know either).
"""
import argparse
import logging
import os
import sys
from typing import Callable, Optional, Sequence

from eta_tf import features as F
from pipelines import build_dataset
from pipelines import dataset_stats
from pipelines import synthetic


def is_complete(data_dir: str) -> bool:
  return os.path.exists(os.path.join(data_dir, F.COMPLETE_FILE))


def build(log_glob: str, data_dir: str, seed: int, extra_args: Sequence[str] = ()) -> str:
  """Runs the Beam job on `log_glob` into data_dir (unless complete); returns data_dir."""
  if is_complete(data_dir):
    return data_dir
  stats = build_dataset.run([f"--input={log_glob}", f"--output_dir={data_dir}",
                             f"--seed={seed}", "--overwrite", *extra_args])
  if not logging.getLogger(build_dataset.__name__).isEnabledFor(logging.INFO):
    print(dataset_stats.summarize(stats), flush=True)  # else the job has logged it
  return data_dir


def prepare_synthetic_data(data_dir: str, num_users: Optional[int], seed: int,
                           log_path: Optional[str] = None,
                           synthetic_args: Sequence[str] = (),
                           announce: Optional[Callable[[str], None]] = None) -> str:
  """Generates a synthetic log (pipelines.synthetic flags in `synthetic_args`, e.g.
  "--recent_categories=5"; `num_users` None keeps its default) and builds data_dir.

  `announce(text)` is called at the start of each of the two steps (the caller numbers
  them); not called when data_dir is complete already."""
  if is_complete(data_dir):
    print(f"Reusing the prepared data in {data_dir}", flush=True)
    return data_dir
  log_path = log_path or data_dir + ".log.csv.gz"
  args = [f"--output={log_path}", f"--seed={seed}", *synthetic_args]
  if num_users is not None:
    args.append(f"--num_users={num_users}")
  config, _ = synthetic.parse_args(args)
  if announce:
    announce(f"Generating a synthetic Taobao-format log ({config.num_users} users) "
             f"-> {log_path}")
  os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
  synthetic.write_lines(log_path, synthetic.generate_log(config).lines)
  if announce:
    announce(f"Beam pipeline (DirectRunner) -> {data_dir}")
  return build(log_path, data_dir, seed)


_EPILOG = """\
examples:
  python -m pipelines.prepare
      a synthetic Taobao-format log (2000 users) -> Beam (DirectRunner) -> runs/data
  python -m pipelines.prepare --data_dir=runs/taobao --log=UserBehavior.csv.gz
  python -m pipelines.prepare --data_dir=runs/ml --log=ml_logs/behaviors.csv \\
      --impressions=ml_logs/impressions.csv --split=user_last
then: python -m eta_tf.train --data_dir=<data_dir>

Other flags (e.g. --split, --impressions, --max_len, --user_shards) go to
pipelines.build_dataset; see python -m pipelines.build_dataset --help. An existing complete
data_dir is reused as is (delete it to rebuild).
"""


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m pipelines.prepare",
      description="Prepare a training data dir: a behavior log (or a synthetic one) -> the\n"
                  "Beam job (pipelines.build_dataset, in-process) -> TFRecords + stats.json.",
      epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_dir", default="runs/data",
                      help="output data dir, reused when complete (default: %(default)s)")
  parser.add_argument("--log", default=None,
                      help="behavior log file or glob (Taobao format: user_id,item_id,"
                           "category_id,pv|cart|fav|buy,timestamp); default: generate a "
                           "synthetic one next to data_dir")
  parser.add_argument("--synthetic_users", type=int, default=2000,
                      help="users of the synthetic log (without --log; default: "
                           "%(default)s)")
  parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = build_parser()
  args, build_args = parser.parse_known_args(argv)
  if args.log is not None and args.synthetic_users != parser.get_default("synthetic_users"):
    parser.error("--synthetic_users is for the synthetic log: drop it or --log")
  if args.synthetic_users < 1:
    parser.error(f"--synthetic_users={args.synthetic_users}: must be >= 1")
  # Our progress lines and the job's own (pipelines.*), not Beam's INFO chatter.
  logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s",
                      force=True)
  logging.getLogger("pipelines").setLevel(logging.INFO)
  done = []

  def announce(text):
    done.append(text)
    print(f"[{len(done)}/2] {text}", flush=True)

  if args.log is None:
    if build_args:
      parser.error(f"{' '.join(build_args)}: build_dataset flags need --log (the synthetic "
                   "log is built with the defaults)")
    prepare_synthetic_data(args.data_dir, args.synthetic_users, args.seed, announce=announce)
  elif is_complete(args.data_dir):
    print(f"Reusing the prepared data in {args.data_dir}", flush=True)
  else:
    print(f"Beam pipeline (DirectRunner): {args.log} -> {args.data_dir}", flush=True)
    build(args.log, args.data_dir, args.seed, build_args)
  print(f"Data ready in {args.data_dir}; train with: python -m eta_tf.train "
        f"--data_dir={args.data_dir}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
