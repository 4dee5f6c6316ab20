"""Shared harness of the serving A/B benchmarks: exports of one model in two forms (same
weights), loaded with the TF1 session loader, timed in interleaved rounds per (L, N).

run(doc, argv, module, export_variants, describe, default_output) parses --sizes/--repeats/--output_name,
calls export_variants(L, work_dir) -> {name: export path} once per L, and for every
(L, N) times score_candidates of every export on the same request (median ms);
describe(median_ms, scores) -> the record's comparison fields (ratios, largest score
differences). Writes bench/results/<output_name>.json with the machine and its load
average before / after.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from bench import machine
from bench.interleaved_timing import time_rounds
from bench.serving_cost_grid import request
from eta_tf import features as F
from eta_tf.savedmodel_session import SavedModelSession

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def run(doc: str, argv, module: str, export_variants, describe, default_output: str):
  """The benchmark `module` (its docstring `doc`): see this module's docstring."""
  parser = argparse.ArgumentParser(description=doc.split("\n")[0])
  parser.add_argument("--sizes", default="1024:200,1024:1000,4096:200,4096:1000",
                      help="L:N pairs")
  parser.add_argument("--repeats", type=int, default=30, help="interleaved rounds")
  parser.add_argument("--output_name", default=default_output,
                      help="results file bench/results/<name>.json ('' = none)")
  args = parser.parse_args(argv)
  sizes = [tuple(int(v) for v in s.split(":")) for s in args.sizes.split(",")]
  load_before = machine.load_average()
  records = []
  with tempfile.TemporaryDirectory() as work:
    for length in sorted({L for L, _ in sizes}):
      t0 = time.time()
      runners = {name: SavedModelSession(path)
                 for name, path in export_variants(length, work).items()}
      print(f"-- L={length}: exported and loaded ({time.time() - t0:.0f} s)", flush=True)
      for n in [n for L, n in sizes if L == length]:
        inputs = request(length, n, seed=length + n)
        scores = {name: r.run(F.SCORE_CANDIDATES, inputs) for name, r in runners.items()}
        fns = {name: (lambda r=r: r.run(F.SCORE_CANDIDATES, inputs))
               for name, r in runners.items()}
        med = {name: float(np.median(v)) * 1e3
               for name, v in time_rounds(fns, args.repeats, warmup=3).items()}
        record = {"L": length, "N": n, "repeats": args.repeats, "median_ms": med,
                  **describe(med, scores)}
        records.append(record)
        print(f"L={length:5d} N={n:5d} " + " ".join(f"{k} {v:.2f}" for k, v in med.items())
              + " ms | " + " ".join(f"{k} {v:.3g}" for k, v in record.items()
                                    if k not in ("L", "N", "repeats", "median_ms"))
              + f" | load {machine.load_average()}", flush=True)
      for r in runners.values():
        r.close()
  if args.output_name:
    out = os.path.join(RESULTS_DIR, args.output_name + ".json")
    with open(out, "w") as f:
      json.dump({"command": f"python -m {module} " + " ".join(
                     sys.argv[1:] if argv is None else argv),
                 "machine": dict(machine.describe(), load_before=load_before,
                                 load_after=machine.load_average()),
                 "records": records}, f, indent=1)
    print(f"wrote {out}")
  return records
