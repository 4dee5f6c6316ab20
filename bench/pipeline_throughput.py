r"""Throughput of pipelines.build_dataset on DirectRunner at several input sizes.

  python bench/pipeline_throughput.py                 # 50k and 200k events
  python bench/pipeline_throughput.py --events=50000,200000,800000

For each size: generate a synthetic log (pipelines.synthetic, 200 events per user on
average), run the Beam job in a subprocess, and report wall seconds and events/s of the
whole job (start-up included) and of the pipeline run itself (as the job logs it).
Linear scaling shows as a constant events/s across sizes. Writes
bench/results/pipeline_throughput.json.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--events", default="50000,200000")
  parser.add_argument("--output", default=os.path.join(HERE, "results",
                                                       "pipeline_throughput.json"))
  args = parser.parse_args(argv)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for events in (int(e) for e in args.events.split(",")):
      users = max(1, events // 200)
      log = os.path.join(tmp, f"log_{events}.csv.gz")
      subprocess.run([sys.executable, "-m", "pipelines.synthetic", f"--output={log}",
                      f"--num_users={users}", "--seed=0"], check=True,
                     capture_output=True)
      start = time.perf_counter()
      result = subprocess.run([sys.executable, "-m", "pipelines.build_dataset",
                               f"--input={log}", f"--output_dir={tmp}/out_{events}"],
                              check=True, capture_output=True, text=True)
      wall = time.perf_counter() - start
      with open(os.path.join(tmp, f"out_{events}", "stats.json")) as f:
        rows_in = json.load(f)["rows"]["behaviors"]["input"]
      match = re.search(r"pipeline finished in ([0-9.]+) s", result.stderr + result.stdout)
      run_s = float(match.group(1)) if match else None
      row = {"events": rows_in, "users": users, "job_seconds": wall,
             "job_events_per_second": rows_in / wall, "pipeline_seconds": run_s,
             "pipeline_events_per_second": rows_in / run_s if run_s else None}
      print(json.dumps(row), flush=True)
      rows.append(row)
  os.makedirs(os.path.dirname(args.output), exist_ok=True)
  with open(args.output, "w") as f:
    json.dump(rows, f, indent=2)
  print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
