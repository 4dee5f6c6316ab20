"""Memory and payload of serving each model.

    python -m bench.serving_memory            # all models at L=1024; request bytes at
                                              # L in {256, 1024, 4096, 16384}
    python -m bench.serving_memory --quick    # eta and din_long only

Per model (default ModelConfig, max_len = --length; exported with bench.serving_cost_grid.export):
* the SavedModel on disk: total, saved_model.pb (graph) and variables/ bytes;
* the frozen signature tables (ETA and SDIM hash item embeddings; the table holds every
  item bucket's SimHash signature, plus every category's with
  signature_fields=item_category) and their share of the SavedModel;
* resident memory, measured in a fresh subprocess from /proc/self/status (VmRSS, VmHWM):
  after importing TensorFlow (the baseline), after loading one version with the TF1
  session loader and scoring one request, after loading a second version beside it (a
  version swap: TF Serving loads the new version before it unloads the old one), and
  after closing the first version's session.
Per (L, N): the bytes of the serialized score_candidates PredictRequest (model independent).
Writes bench/results/serving_memory.json with the machine and the load average.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

from bench import machine
from bench import serving_cost
from bench import serving_cost_grid
from bench.compare_models import int_list

MEMORY_FILE = "serving_memory.json"
LENGTHS = (256, 1024, 4096, 16384)
NS = (1, 200, 1000)
# Checkpoint keys of the frozen tables (CtrModel.freeze_signatures): signature_table/...
# and, with signature_fields=item_category, category_signature_table/...
TABLE_SUFFIX = "signature_table"


def status_kib(field: str) -> int:
  """A `field:   N kB` line of /proc/self/status, in KiB."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise KeyError(f"/proc/self/status has no {field}")


def _snapshot(stage: str) -> dict:
  return {"stage": stage, "rss_mib": status_kib("VmRSS") / 1024,
          "hwm_mib": status_kib("VmHWM") / 1024}


def probe(saved_model_dir: str, length: int, n: int) -> list:
  """Runs in the subprocess: memory after each stage of a version swap (see module doc)."""
  # Imported here, in the probe subprocess: its first stage is measured before TensorFlow.
  import gc  # pylint: disable=g-import-not-at-top
  import eta_tf  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import tensorflow as tf  # noqa: F401  pylint: disable=g-import-not-at-top
  from eta_tf import features as F  # pylint: disable=g-import-not-at-top
  from eta_tf.savedmodel_session import SavedModelSession  # pylint: disable=g-import-not-at-top
  inputs = serving_cost_grid.request(length, n, seed=length + n)
  stages = [_snapshot("tensorflow imported")]
  first = SavedModelSession(saved_model_dir)
  first.run(F.SCORE_CANDIDATES, inputs)
  stages.append(_snapshot("one version loaded, one request"))
  second = SavedModelSession(saved_model_dir)
  second.run(F.SCORE_CANDIDATES, inputs)
  stages.append(_snapshot("two versions loaded (swap)"))
  first.close()
  del first
  gc.collect()
  stages.append(_snapshot("first version closed"))
  second.close()
  return stages


def resident_memory(saved_model_dir: str, length: int, n: int = 200) -> dict:
  """probe() in a fresh Python process; MiB per stage and the deltas over the baseline."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run(
      [sys.executable, "-m", "bench.serving_memory", f"--probe={saved_model_dir}",
       f"--length={length}", f"--probe_n={n}"],
      capture_output=True, text=True, cwd=root, timeout=600, check=False)
  if out.returncode != 0:
    raise RuntimeError(f"memory probe of {saved_model_dir} failed:\n{out.stderr[-2000:]}")
  stages = json.loads(out.stdout.strip().splitlines()[-1])
  base = stages[0]["rss_mib"]
  return {"stages": stages,
          "one_version_mib": stages[1]["rss_mib"] - base,
          "two_versions_mib": stages[2]["rss_mib"] - base,
          "peak_over_baseline_mib": max(s["hwm_mib"] for s in stages) - base}


def dir_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
             for f in files)


def saved_model_sizes(path: str) -> dict:
  """Bytes on disk of the SavedModel, its graph and variables, and the signature table."""
  # TensorFlow only here: the parent process that launches the probes stays light.
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  total = dir_bytes(path)
  table = 0
  reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
  dtypes = reader.get_variable_to_dtype_map()
  for name, shape in reader.get_variable_to_shape_map().items():
    if name.split("/")[0].endswith(TABLE_SUFFIX):
      table += int(np.prod(shape)) * dtypes[name].size
  return {"total_bytes": total,
          "graph_bytes": os.path.getsize(os.path.join(path, "saved_model.pb")),
          "variables_bytes": dir_bytes(os.path.join(path, "variables")),
          "signature_table_bytes": table, "signature_table_share": table / total}


def request_bytes(lengths, ns) -> list:
  """Serialized score_candidates PredictRequest bytes for each (L, N)."""
  # TensorFlow (via serving.warmup) only here: the parent that launches the probes stays light.
  from eta_tf import features as F  # pylint: disable=g-import-not-at-top
  from serving import warmup  # pylint: disable=g-import-not-at-top
  rows = []
  for length in lengths:
    for n in ns:
      request = warmup.build_predict_request("eta", F.SCORE_CANDIDATES,
                                             serving_cost_grid.request(length, n, seed=0))
      rows.append({"L": length, "N": n, "request_bytes": request.ByteSize()})
  return rows


def summarize(result) -> str:
  mib = 1 << 20
  lines = [f"machine: {result['machine']['summary']}",
           machine.load_line(result["load_before"], result["load_after"]),
           f"SavedModel and resident memory at L={result['L']} (MiB over the process with "
           "TensorFlow imported; peak = VmHWM)",
           f"{'model':>9s} {'disk':>7s} {'graph':>7s} {'vars':>7s} {'table':>7s} "
           f"{'share':>6s} {'1 ver':>7s} {'2 ver':>7s} {'peak':>7s}"]
  for model, r in result["models"].items():
    s, m = r["saved_model"], r["resident"]
    lines.append(f"{model:>9s} {s['total_bytes'] / mib:7.1f} {s['graph_bytes'] / mib:7.2f} "
                 f"{s['variables_bytes'] / mib:7.1f} {s['signature_table_bytes'] / mib:7.1f} "
                 f"{s['signature_table_share']:6.1%} {m['one_version_mib']:7.1f} "
                 f"{m['two_versions_mib']:7.1f} {m['peak_over_baseline_mib']:7.1f}")
  lines += ["score_candidates PredictRequest bytes",
            f"{'L':>6s} {'N':>5s} {'bytes':>10s}"]
  lines += [f"{r['L']:6d} {r['N']:5d} {r['request_bytes']:10d}" for r in result["requests"]]
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(
      prog="python -m bench.serving_memory", description=__doc__.split("\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  parser.add_argument("--quick", action="store_true", help="eta and din_long only")
  parser.add_argument("--models", type=serving_cost.model_list, default=None,
                      help="comma-separated (default: all)")
  parser.add_argument("--length", type=int, default=1024, help="history length L")
  parser.add_argument("--request_lengths", type=int_list, default=list(LENGTHS),
                      help="L of the request-size table")
  parser.add_argument("--request_ns", type=int_list, default=list(NS),
                      help="N of the request-size table")
  parser.add_argument("--export_dir", default=None, help="reuse / keep exports here "
                      "(<model>_L<L>/, as bench/serving_cost.py --export_dir)")
  parser.add_argument("--output_dir", default=serving_cost.RESULTS_DIR)
  parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # the subprocess
  parser.add_argument("--probe_n", type=int, default=200, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.probe:
    print(json.dumps(probe(args.probe, args.length, args.probe_n)))
    return
  models = args.models or (["eta", "din_long"] if args.quick else list(serving_cost_grid.MODELS))

  result = {**machine.start_run("python -m bench.serving_memory", argv),
            "L": args.length, "models": {}}
  work_dir = args.export_dir or tempfile.mkdtemp(prefix="serving_memory_")
  try:
    for model in models:
      path = serving_cost_grid.export(model, args.length, work_dir)
      result["models"][model] = {"saved_model": saved_model_sizes(path),
                                 "resident": resident_memory(path, args.length)}
      print(f"-- {model}: {result['models'][model]['resident']['one_version_mib']:.1f} MiB "
            "resident", flush=True)
  finally:
    if not args.export_dir:
      shutil.rmtree(work_dir, ignore_errors=True)
  result["requests"] = request_bytes(args.request_lengths, args.request_ns)
  result = machine.finish_run(result)
  print(summarize(result))
  print(f"wrote {machine.write_json(result, args.output_dir, MEMORY_FILE)} "
        f"({result['seconds']:.0f} s)")


if __name__ == "__main__":
  main()
