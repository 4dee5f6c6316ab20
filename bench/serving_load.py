"""Throughput under concurrency: one loaded model, 1/2/4/8 clients.

    python -m bench.serving_load            # eta, din_long at L=1024, N=200 (~6 min)
    python -m bench.serving_load --quick    # eta at L=1024, N=200, 1 s per cell

Each model is exported once (bench.serving_cost_grid.export) and loaded once; C client
threads then send the same score_candidates request (one user, L behaviors, N
candidates) back to back for --seconds, and every request's latency is kept:

* in-process: the SavedModel in a TF1 session (`Session.run` on the signature's tensor
  names, which is what TF Serving does per request), one session shared by the clients;
* grpc: through the local gRPC server (`python -m serving.local_server` in a
  subprocess), a prebuilt PredictRequest per client channel. The local server is Python:
  its per-request overhead is not TF Serving's, so compare its rows with each other;
* thread sweep: the in-process runs again for each (intra, inter) op parallelism of the
  session ConfigProto, the knobs TF Serving's `--tensorflow_intra_op_parallelism` /
  `--tensorflow_inter_op_parallelism` set (0 = TensorFlow's default: one thread per core).

Per cell: requests/s, p50/p99 ms, the CPU seconds the serving side used (this process
in-process; the server process through gRPC), requests per CPU-second (= requests/s per
fully busy core; it holds on a shared machine, where requests/s also measures the other
jobs), and requests/s divided by the cores this process may run on. The thread setting
with the most requests per CPU-second (averaged over client counts) is the "best".
Writes bench/results/serving_load.json with the machine and the load average.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from bench import machine
from bench import serving_cost
from bench import serving_cost_grid
from bench.compare_models import int_list
from eta_tf import features as F
from eta_tf.savedmodel_session import SavedModelSession

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order

CLIENTS = (1, 2, 4, 8)
# (intra, inter) op parallelism; (0, 0) is TF Serving's default.
THREADS = ((0, 0), (1, 1), (1, 2), (2, 1), (2, 2))
LOAD_FILE = "serving_load.json"


def session_callable(saved_model_dir: str, inputs: dict, intra: int = 0, inter: int = 0):
  """(call, close): one TF1 session on the SavedModel; call() scores `inputs` once."""
  config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=intra,
                                    inter_op_parallelism_threads=inter)
  model = SavedModelSession(saved_model_dir, session_config=config)
  return (lambda: model.run(F.SCORE_CANDIDATES, inputs)), model.close


def drive(calls, seconds: float, cpu_seconds, max_requests: int = 100_000) -> dict:
  """Runs calls[i] back to back in one thread each for `seconds`; the latency stats.

  calls: one zero-argument callable per client. cpu_seconds(): CPU time used so far by
  the serving side (read before and after). Each client stops at the deadline or after
  max_requests, so the loop is bounded in time and count.
  """
  latencies = [[] for _ in calls]
  start_gate = threading.Barrier(len(calls) + 1)
  errors = []

  def client(i):
    start_gate.wait()
    deadline = time.perf_counter() + seconds
    try:
      while time.perf_counter() < deadline and len(latencies[i]) < max_requests:
        t0 = time.perf_counter()
        calls[i]()
        latencies[i].append(time.perf_counter() - t0)
    except Exception as e:  # pylint: disable=broad-except  (reported, then re-raised)
      errors.append(e)

  threads = [threading.Thread(target=client, args=(i,), daemon=True)
             for i in range(len(calls))]
  for t in threads:
    t.start()
  cpu0 = cpu_seconds()
  t0 = time.perf_counter()
  start_gate.wait()
  for t in threads:
    t.join()
  wall = time.perf_counter() - t0
  cpu = cpu_seconds() - cpu0
  if errors:
    raise RuntimeError(f"a client failed: {errors[0]!r}") from errors[0]
  lat = np.concatenate([np.asarray(v) for v in latencies]) * 1e3
  cores = machine.usable_cores()
  return {"clients": len(calls), "requests": int(lat.size), "seconds": wall,
          "requests_per_s": lat.size / wall, "requests_per_s_per_core": lat.size / wall / cores,
          "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
          "cpu_seconds": cpu,
          "requests_per_cpu_s": lat.size / cpu if cpu > 0 else None}


def process_cpu_seconds() -> float:
  t = os.times()
  return t.user + t.system


def pid_cpu_seconds(pid: int) -> float:
  """utime + stime of another process (/proc/<pid>/stat fields 14 and 15)."""
  with open(f"/proc/{pid}/stat") as f:
    fields = f.read().rsplit(")", 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_in_process(path, inputs, clients, seconds, threads=((0, 0),)) -> list:
  rows = []
  for intra, inter in threads:
    call, close = session_callable(path, inputs, intra, inter)
    try:
      for _ in range(3):
        call()  # warm up (first runs allocate and pick kernels)
      for c in clients:
        row = drive([call] * c, seconds, process_cpu_seconds)
        rows.append({"path": "in_process", "intra_op": intra, "inter_op": inter, **row})
        print(f"  in-process intra={intra} inter={inter} clients={c}: "
              f"{row['requests_per_s']:7.1f} req/s  p50 {row['p50_ms']:6.2f}  "
              f"p99 {row['p99_ms']:6.2f} ms", flush=True)
    finally:
      close()
  return rows


class ServerProcess:
  """`python -m serving.local_server` on a free loopback port, in a subprocess."""

  def __init__(self, model_name, base_path, intra=0, inter=0, timeout_s=300):
    cmd = [sys.executable, "-m", "serving.local_server", "--port=0", "--host=127.0.0.1",
           f"--model_name={model_name}", f"--model_base_path={base_path}",
           "--file_system_poll_wait_seconds=0", "--enable_model_warmup=false",
           "--max_candidates=0", f"--tensorflow_intra_op_parallelism={intra}",
           f"--tensorflow_inter_op_parallelism={inter}"]
    self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 text=True, cwd=os.path.dirname(os.path.dirname(
                                     os.path.abspath(__file__))))
    self.port = None
    deadline = time.time() + timeout_s
    for line in self.proc.stdout:  # "serving.local_server listening on HOST:PORT"
      if "listening on" in line:
        self.port = int(line.rsplit(":", 1)[1])
        break
      if time.time() > deadline:
        break
    if self.port is None:
      self.close()
      raise RuntimeError(f"local server did not start: {' '.join(cmd)}")

  def close(self):
    if self.proc.poll() is None:
      self.proc.terminate()
      try:
        self.proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait()


def bench_grpc(model_name, path, inputs, clients, seconds, threads=((0, 0),)) -> list:
  # gRPC only for the served path: the in-process sweep runs without it.
  import grpc  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  from serving import warmup  # pylint: disable=g-import-not-at-top
  request = warmup.build_predict_request(model_name, F.SCORE_CANDIDATES, inputs)
  rows = []
  with tempfile.TemporaryDirectory(prefix="serving_load_") as base:
    os.makedirs(os.path.join(base, model_name))
    os.symlink(os.path.abspath(path), os.path.join(base, model_name, "1"))
    for intra, inter in threads:
      server = ServerProcess(model_name, os.path.join(base, model_name), intra, inter)
      channels = []
      try:
        options = [("grpc.max_send_message_length", 1 << 30),
                   ("grpc.max_receive_message_length", 1 << 30)]
        stubs = []
        for _ in range(max(clients)):
          channels.append(grpc.insecure_channel(f"127.0.0.1:{server.port}", options=options))
          stubs.append(prediction_service_pb2_grpc.PredictionServiceStub(channels[-1]))
        for stub in stubs:
          stub.Predict(request, timeout=60)  # connect and warm up every channel
        for c in clients:
          calls = [(lambda s=s: s.Predict(request, timeout=60)) for s in stubs[:c]]
          row = drive(calls, seconds, lambda: pid_cpu_seconds(server.proc.pid))
          rows.append({"path": "grpc", "intra_op": intra, "inter_op": inter, **row})
          print(f"  grpc       intra={intra} inter={inter} clients={c}: "
                f"{row['requests_per_s']:7.1f} req/s  p50 {row['p50_ms']:6.2f}  "
                f"p99 {row['p99_ms']:6.2f} ms", flush=True)
      finally:
        for channel in channels:
          channel.close()
        server.close()
  return rows


def best_threads(rows) -> dict:
  """The in-process (intra, inter) with the most requests per CPU-second, averaged over
  the client counts; with its peak requests/s.

  Requests per CPU-second is requests/s per fully busy core, and it holds on a shared
  machine where other jobs take cores away (requests/s alone then measures the neighbours).
  """
  by_threads = {}
  for r in rows:
    if r["path"] == "in_process" and r["requests_per_cpu_s"]:
      by_threads.setdefault((r["intra_op"], r["inter_op"]), []).append(r)
  (intra, inter), cells = max(
      by_threads.items(),
      key=lambda kv: sum(r["requests_per_cpu_s"] for r in kv[1]) / len(kv[1]))
  peak = max(cells, key=lambda r: r["requests_per_s"])
  return {"intra_op": intra, "inter_op": inter,
          "requests_per_cpu_s": sum(r["requests_per_cpu_s"] for r in cells) / len(cells),
          "clients": peak["clients"], "requests_per_s": peak["requests_per_s"],
          "requests_per_s_per_core": peak["requests_per_s_per_core"]}


def summarize(result) -> str:
  lines = [f"machine: {result['machine']['summary']}",
           machine.load_line(result["load_before"], result["load_after"]),
           f"score_candidates at L={result['L']}, N={result['N']}; "
           f"{result['seconds_per_cell']} s per cell",
           f"{'model':>9s} {'path':>10s} {'intra':>5s} {'inter':>5s} {'clients':>7s} "
           f"{'req/s':>8s} {'/core':>7s} {'/cpu-s':>7s} {'p50 ms':>8s} {'p99 ms':>8s}"]
  for model, rows in result["models"].items():
    for r in rows:
      per_cpu = r["requests_per_cpu_s"]
      lines.append(f"{model:>9s} {r['path']:>10s} {r['intra_op']:5d} {r['inter_op']:5d} "
                   f"{r['clients']:7d} {r['requests_per_s']:8.1f} "
                   f"{r['requests_per_s_per_core']:7.1f} "
                   f"{per_cpu if per_cpu is None else format(per_cpu, '7.1f'):>7} "
                   f"{r['p50_ms']:8.2f} {r['p99_ms']:8.2f}")
  for model, best in result["best_threads"].items():
    lines.append(f"{model}: most requests per CPU-second in-process with "
                 f"intra={best['intra_op']} inter={best['inter_op']} "
                 f"({best['requests_per_cpu_s']:.1f} averaged over client counts; peak "
                 f"{best['requests_per_s']:.1f} req/s at {best['clients']} clients)")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(
      prog="python -m bench.serving_load", description=__doc__.split("\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  parser.add_argument("--quick", action="store_true",
                      help="eta only, 1 s per cell, no thread sweep through gRPC")
  parser.add_argument("--models", type=serving_cost.model_list, default=None,
                      help="comma-separated (default eta,din_long; --quick eta)")
  parser.add_argument("--length", type=int, default=1024, help="history length L")
  parser.add_argument("--n", type=int, default=200, help="candidates N per request")
  parser.add_argument("--clients", type=int_list, default=list(CLIENTS),
                      help="comma-separated concurrent clients (default 1,2,4,8)")
  parser.add_argument("--seconds", type=float, default=None,
                      help="seconds per cell (default 4, --quick 1)")
  parser.add_argument("--no_sweep", action="store_true",
                      help="in-process with TF's default threads only")
  parser.add_argument("--no_grpc", action="store_true", help="skip the gRPC server runs")
  parser.add_argument("--export_dir", default=None, help="reuse / keep exports here "
                      "(<model>_L<L>/, as bench/serving_cost.py --export_dir)")
  parser.add_argument("--output_dir", default=serving_cost.RESULTS_DIR)
  args = parser.parse_args(argv)
  models = args.models or (["eta"] if args.quick else ["eta", "din_long"])
  seconds = args.seconds or (1.0 if args.quick else 4.0)
  threads = ((0, 0),) if args.no_sweep else THREADS
  inputs = serving_cost_grid.request(args.length, args.n, seed=args.length + args.n)

  result = {**machine.start_run("python -m bench.serving_load", argv),
            "L": args.length, "N": args.n, "seconds_per_cell": seconds,
            "models": {}, "best_threads": {}}
  print(f"machine: {result['machine']['summary']}; load average {result['load_before']}",
        flush=True)
  work_dir = args.export_dir or tempfile.mkdtemp(prefix="serving_load_")
  for model in models:
    path = serving_cost_grid.export(model, args.length, work_dir)
    print(f"-- {model} L={args.length} N={args.n}", flush=True)
    rows = bench_in_process(path, inputs, args.clients, seconds, threads)
    best = best_threads(rows)
    grpc_threads = [(0, 0)]
    if not args.quick and (best["intra_op"], best["inter_op"]) != (0, 0):
      grpc_threads.append((best["intra_op"], best["inter_op"]))
    if not args.no_grpc:
      rows += bench_grpc(model, path, inputs, args.clients, seconds, grpc_threads)
    result["models"][model] = rows
    result["best_threads"][model] = best
  result = machine.finish_run(result)
  print(summarize(result))
  print(f"wrote {machine.write_json(result, args.output_dir, LOAD_FILE)} "
        f"({result['seconds']:.0f} s)")
  if not args.export_dir:
    shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
  main()
