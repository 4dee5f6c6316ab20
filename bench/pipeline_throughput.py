r"""Throughput of pipelines.build_dataset (events/s) at several log sizes.

  python -m bench.pipeline_throughput [--events=50000,200000] [--seed=0] [beam options...]

For each size it generates a synthetic log (~200 events per user, 1% noise), runs the job
in-process on the local runner and records wall time, events/s and the stats.json summary.
Two sizes give a line time = fixed + events * per_event; linear scaling means events/s is
about flat once the fixed start-up cost is small. Results go to
bench/results/pipeline_throughput.json.
"""
import argparse
import json
import logging
import os
import sys
import tempfile
import time

from bench import machine
from pipelines import build_dataset, synthetic  # (sets the tf-keras env)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       "pipeline_throughput.json")
EVENTS_PER_USER = 200


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--events", default="50000,200000",
                      help="comma-separated log sizes (events) to run")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--output", default=RESULTS)
  args, beam_args = parser.parse_known_args(argv)
  logging.basicConfig(level=logging.INFO, force=True,
                      format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  logging.getLogger("apache_beam").setLevel(logging.WARNING)
  header = machine.start_run("python -m bench.pipeline_throughput", argv)
  runs = []
  with tempfile.TemporaryDirectory() as tmp:
    for size in (int(s) for s in args.events.split(",")):
      log_path = os.path.join(tmp, f"log_{size}.csv.gz")
      started = time.time()
      synthetic.generate(max(1, size // EVENTS_PER_USER), seed=args.seed, output=log_path,
                         noise=0.01)
      generate_s = time.time() - started
      started = time.time()
      stats = build_dataset.run([f"--input={log_path}", f"--output_dir={tmp}/out_{size}",
                                 f"--seed={args.seed}", *beam_args])
      seconds = time.time() - started
      rows = stats["rows"]["behaviors"]["input"]
      run = {"events": size, "input_rows": rows, "generate_seconds": round(generate_s, 2),
             "pipeline_seconds": round(seconds, 2), "events_per_second": round(rows / seconds),
             "stats": {k: stats[k] for k in ("rows", "users", "items", "categories", "time",
                                             "splits", "bytes_written")}}
      logging.info("%d events: %.1f s, %d events/s", rows, seconds, run["events_per_second"])
      runs.append(run)
  # The machine, load before/after and the command: timings on a shared machine need them.
  result = dict(machine.finish_run(header), machine_cores=os.cpu_count(), beam_args=beam_args,
                runs=runs)
  if len(runs) >= 2:
    (a, b) = runs[0], runs[-1]
    per_event = (b["pipeline_seconds"] - a["pipeline_seconds"]) / (
        b["input_rows"] - a["input_rows"])
    result["fit"] = {"fixed_seconds": round(a["pipeline_seconds"] - per_event *
                                            a["input_rows"], 2),
                     "marginal_events_per_second": round(1 / per_event) if per_event > 0
                     else None}
  os.makedirs(os.path.dirname(args.output), exist_ok=True)
  with open(args.output, "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps({k: v for k, v in result.items() if k != "runs"} | {
      "runs": [{k: r[k] for k in ("events", "pipeline_seconds", "events_per_second")}
               for r in runs]}, indent=2))


if __name__ == "__main__":
  main()
