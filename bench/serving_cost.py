"""Serving and training cost of every model, side by side in one process.

    python -m bench.serving_cost            # L in {256, 1024, 4096, 16384}, N in {1, 200, 1000}
                                            # (~25 min on 2 cores; writes after each L)
    python -m bench.serving_cost --quick    # L in {1024, 4096}, N in {200, 1000}, < 5 min

For every L, the models are built from the default ModelConfig (only `model` and `max_len`
differ), exported with tf.saved_model.save + the production signatures (eta_tf.signatures;
ETA with its frozen item-signature table), loaded with the TF1 session loader the way TF
Serving loads them, and the `score_candidates` signature is timed for one user with a full
history of L behaviors and N candidates. Models are interleaved round by round (so their
ratios share the machine's state); median and p99 over --repeats rounds.

  eta       ETA, stock TF Serving graph (no XLA)
  eta_xla   ETA with ModelConfig(hamming_xla=True): the Hamming distance pass
            jit-compiled (TF Serving needs --xla_cpu_compilation_enabled=true)
  din_long  target attention over all L (keys/values projected once per request)
  din       short history only: the floor
  sim_hard  attention over the k behaviors of the candidate's category
  avg       mean pooling of the long history
  sdim      SimHash bucket sampling (no attention over L)

The CPU (model, AVX2 / AVX-512 / AMX from /proc/cpuinfo) and the load average before and
after are recorded in the JSON (a {"machine": ...} record) and printed with the results.

Also, on the same shapes in the same rounds:
  - ns per (candidate, behavior) pair of the Hamming top-k alone (eta_tf.ops.hamming.
    hamming_top_k as ETA calls it, sort=False; with and without XLA; sorted; and the naive
    one-TopKV2 formulation the targets were set against);
  - the attention components: din_long's attention over all L behaviors, and ETA's
    attention over its k gathered behaviors (after retrieval). ETA's long-history block
    costs at least top-k + attention over k, din_long's about the attention over L: where
    that sum exceeds it, no selection kernel can make ETA faster at that (L, N).
  - training examples/s of eta vs din_long.
The kernels and components run in their own interleaved rounds (--component_repeats).
Writes bench/results/serving_cost.json (a list of records) and serving_cost.png
(--output_name for other names).

This module is the CLI; bench/serving_cost_grid.py runs the models x (L, N) grid and the
training, bench/serving_cost_components.py builds the top-k and attention timers,
bench/interleaved_timing.py times the rounds, bench/serving_cost_summary.py prints the
tables and draws the plot.
"""
import argparse
import os
import shutil
import tempfile
import time

from bench import machine
from bench.compare_models import int_list
from bench.serving_cost_grid import MODELS, bench_serving, bench_training
from bench.serving_cost_summary import plot, summarize

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, "results")


def model_list(text: str):
  """--models: comma-separated names out of MODELS (argparse error naming the bad one)."""
  names = [t.strip() for t in text.split(",") if t.strip()]
  unknown = [n for n in names if n not in MODELS]
  if unknown or not names:
    raise argparse.ArgumentTypeError(f"{text!r}: unknown model {', '.join(unknown)!r}; "
                                     f"choose from {', '.join(MODELS)}")
  return names


def build_parser():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="L in {1024, 4096}, N in {200, 1000}, fewer repeats")
  parser.add_argument("--lengths", type=int_list, default=None,
                      help="comma-separated L (overrides)")
  parser.add_argument("--ns", type=int_list, default=None,
                      help="comma-separated N (overrides)")
  parser.add_argument("--models", type=model_list, default=list(MODELS),
                      help=f"comma-separated, out of {','.join(MODELS)} (default: all)")
  parser.add_argument("--repeats", type=int, default=None,
                      help="interleaved rounds of the models (median, p99; default 100, "
                           "--quick 20)")
  parser.add_argument("--component_repeats", type=int, default=None,
                      help="rounds of the top-k kernels and attention components "
                           "(default 15, --quick 5)")
  parser.add_argument("--cell_seconds", type=float, default=None,
                      help="cap each (L, N) cell's model rounds at about this long (at "
                           "least 10 rounds; components a third of it); 0 = no cap "
                           "(default 60, --quick 0)")
  parser.add_argument("--train_lengths", type=lambda t: int_list(t) if t else [],
                      default=[1024, 4096], help="comma-separated L ('' = no training)")
  parser.add_argument("--train_batch", type=int, default=None)
  parser.add_argument("--train_steps", type=int, default=None)
  parser.add_argument("--output_dir", default=RESULTS_DIR)
  parser.add_argument("--output_name", default="serving_cost",
                      help="file names in --output_dir: NAME.json and NAME.png (another "
                           "name keeps the full grid's results when timing a subset)")
  parser.add_argument("--export_dir", default=None,
                      help="keep the exports here (<model>_L<L>/), reusing any already "
                           "there (default: a temporary directory, removed)")
  return parser


def main(argv=None):
  args = build_parser().parse_args(argv)
  # The trade-off's L (1024, 4096) first and the slowest last: a run cut short (see
  # save_partial) has the cells that matter most.
  lengths = [1024, 4096] if args.quick else [1024, 4096, 256, 16384]
  ns = [200, 1000] if args.quick else [1, 200, 1000]
  lengths = args.lengths or lengths
  ns = args.ns or ns
  repeats = args.repeats or (20 if args.quick else 100)
  component_repeats = args.component_repeats or (5 if args.quick else 15)
  if args.cell_seconds is None:
    args.cell_seconds = 0.0 if args.quick else 60.0
  train_steps = args.train_steps or (4 if args.quick else 10)
  train_batch = args.train_batch or (64 if args.quick else 128)

  start = time.time()
  run = machine.start_run("python -m bench.serving_cost", argv)
  print(f"machine: {run['machine']['summary']}; load average {run['load_before']}",
        flush=True)
  # Training first, in a fresh process: after the serving section (many loaded sessions,
  # XLA compilations) eta's steps are slower than in a fresh process, din_long's not.
  training = bench_training(args.train_lengths, train_batch, train_steps)

  def save_partial(serving_records):  # a grid cut short still leaves its finished L
    machine.write_json([machine.finish_run(run, complete=False)] + serving_records + training,
                       args.output_dir, args.output_name + ".json")

  work_dir = args.export_dir or tempfile.mkdtemp(prefix="serving_cost_")
  try:
    records = bench_serving(lengths, ns, repeats, component_repeats, work_dir,
                            args.models, keep_exports=bool(args.export_dir),
                            cell_seconds=args.cell_seconds,
                            on_length_done=save_partial) + training
  finally:
    if not args.export_dir:
      shutil.rmtree(work_dir, ignore_errors=True)
  records = [machine.finish_run(run)] + records
  print(summarize(records))
  machine.write_json(records, args.output_dir, args.output_name + ".json")
  plot(records, os.path.join(args.output_dir, args.output_name + ".png"))
  print(f"wrote {args.output_dir}/{args.output_name}.json and {args.output_name}.png "
        f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
  main()
