"""Load + faults: N clients score through a publish, bad configs, a version delete and
hostile requests; nothing valid may fail, nothing hostile may be scored.

    python -m bench.serving_faults                    # 8 clients, 60 s
    python -m bench.serving_faults --clients=4 --seconds=20

A real eta SavedModel (small config, the exporter's signatures with their in-graph input
contract; two versions with different weights) is served by `python -m
serving.local_server --model_config_file` in a subprocess. `--clients` threads send valid
score_candidates requests (latest version) back to back over raw gRPC; one more thread
sends hostile requests (per-behavior / per-candidate arrays of different lengths, a
serving_default history of another width, a mistyped input). At fixed points of the run:

  publish   version 2 is published and added to models.config (label canary)
  bad_path  models.config points the model at a base_path that does not exist
  bad_load  models.config points it at a base_path whose only version does not load
  retire    models.config keeps only version 2 (version 1 leaves the policy)
  delete    version 1's directory is deleted from disk

Counted: valid requests and their failures (any status but OK), the versions that
answered, hostile requests and any that were not refused with INVALID_ARGUMENT, and the
server's log lines rejecting a config. Writes bench/results/serving_faults.json with
the command, the machine and the load average.
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
from bench import serving_load
from eta_tf import config as config_lib
from eta_tf import config_flags
from eta_tf import features as F
from eta_tf import signatures
from eta_tf.models import build_model
from serving import model_config as mc
from serving import model_config_file
from serving import publish
from serving.predict import as_proto_field

import grpc  # pylint: disable=g-import-not-at-top,wrong-import-order
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order
from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
from tensorflow_serving.config import model_server_config_pb2  # pylint: disable=g-import-not-at-top

RESULTS_FILE = "serving_faults.json"
MODEL = dict(max_len=64, short_len=8, top_k=8, item_buckets=4096, category_buckets=512,
             item_dim=16, category_dim=8, num_heads=2, head_dim=8, mlp_units=(32,))
# (event, fraction of the run at which it happens)
EVENTS = (("publish", 0.15), ("bad_path", 0.3), ("bad_load", 0.45), ("retire", 0.6),
          ("delete", 0.75))
HISTORY = {F.HIST_ITEM_ID: np.arange(1, 41), F.HIST_CATEGORY_ID: np.arange(1, 41) % 7 + 1,
           F.HIST_BEHAVIOR_TYPE: np.ones(40, np.int64),
           F.HIST_TIMESTAMP: 1511600000 + np.arange(40)}
VALID = {**HISTORY, F.REQUEST_TIMESTAMP: np.array(1511600100),
         F.CANDIDATE_ITEM_ID: np.arange(100, 300), F.CANDIDATE_CATEGORY_ID: np.ones(200)}
SAMPLES = {**{n: np.ones((2, 64)) for n in F.HISTORY_FEATURES},
           F.TARGET_ITEM_ID: np.array([5, 6]), F.TARGET_CATEGORY_ID: np.array([1, 2]),
           F.TARGET_TIMESTAMP: np.array([1511600100, 1511600100])}
HOSTILE = (
    (F.SCORE_CANDIDATES, dict(VALID, **{F.HIST_CATEGORY_ID: [1, 1],
                                       F.HIST_TIMESTAMP: [1511600000]})),
    (F.SCORE_CANDIDATES, dict(VALID, **{F.CANDIDATE_CATEGORY_ID: [1, 2, 3]})),
    (F.SERVING_DEFAULT, dict(SAMPLES, **{F.HIST_CATEGORY_ID: np.ones((2, 10))})),
    (F.SERVING_DEFAULT, dict(SAMPLES, **{F.TARGET_ITEM_ID: np.array([5, 6, 7])})),
)


def request(signature, inputs, dtype=np.int64):
  req = predict_pb2.PredictRequest()
  req.model_spec.name = "eta"
  req.model_spec.signature_name = signature
  for name, value in inputs.items():
    req.inputs[name].CopyFrom(as_proto_field(np.asarray(value, dtype)))
  return req


def save_versions(root: str) -> dict:
  """Two eta SavedModels (seeds 1 and 2) with the exporter's signatures: {v: dir}."""
  paths = {}
  for version in (1, 2):
    tf.keras.utils.set_random_seed(version)
    model = build_model(config_lib.ModelConfig(model="eta", **MODEL))
    model.freeze_signatures()
    paths[version] = os.path.join(root, f"template{version}")
    tf.saved_model.save(model, paths[version],
                        signatures=signatures.serving_signatures(model))
  return paths


def write_config(path: str, base: str, versions, labels=None) -> None:
  config = model_server_config_pb2.ModelServerConfig()
  config.model_config_list.config.append(mc.make_model_config("eta", base, versions,
                                                              labels))
  model_config_file.write_config(config, path)


def publish_copy(src: str, base: str, version: int) -> str:
  tmp = publish.temp_version_dir(base, version)
  os.rmdir(tmp)
  shutil.copytree(src, tmp)
  return publish.publish(tmp, base, version)


class Server(serving_load.ServerProcess):
  """`python -m serving.local_server --model_config_file` in a subprocess; its stderr
  (the log) is kept in a file."""

  def __init__(self, config_path: str, log_path: str, poll_s: float):  # pylint: disable=super-init-not-called
    self.log = open(log_path, "w")
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "serving.local_server", "--port=0", "--host=127.0.0.1",
         f"--model_config_file={config_path}",
         f"--model_config_file_poll_wait_seconds={poll_s}",
         f"--file_system_poll_wait_seconds={poll_s}", "--enable_model_warmup=false",
         "--allow_version_labels_for_unavailable_models=true"],
        stdout=subprocess.PIPE, stderr=self.log, text=True)
    self.port = None
    for line in self.proc.stdout:
      if "listening on" in line:
        self.port = int(line.rsplit(":", 1)[1])
        break
    if self.port is None:
      self.close()
      raise RuntimeError(f"the local server did not start; see {log_path}")

  def close(self):
    super().close()
    self.log.close()


def run_clients(port: int, clients: int, seconds: float, faults) -> dict:
  """Valid clients + one hostile client for `seconds` while `faults()` runs."""
  counts = {"requests": 0, "failures": 0, "versions_answered": {}, "failure_examples": [],
            "hostile_requests": 0, "hostile_not_refused": 0, "hostile_codes": {}}
  lock = threading.Lock()
  stop = threading.Event()
  valid = request(F.SCORE_CANDIDATES, VALID)
  hostile = [request(s, inputs) for s, inputs in HOSTILE]
  hostile.append(request(F.SCORE_CANDIDATES, VALID, dtype=np.int32))  # mistyped

  def valid_client():
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    while not stop.is_set():
      try:
        response = stub.Predict(valid, timeout=30)
        version = str(response.model_spec.version.value)
        ok = np.isfinite(tf.make_ndarray(response.outputs[F.OUTPUT_CTR])).all()
        error = None if ok else "non-finite scores"
      except grpc.RpcError as e:
        version, error = None, f"{e.code().name}: {e.details()[:200]}"
      with lock:
        counts["requests"] += 1
        if error:
          counts["failures"] += 1
          if len(counts["failure_examples"]) < 5:
            counts["failure_examples"].append(error)
        else:
          counts["versions_answered"][version] = counts["versions_answered"].get(
              version, 0) + 1
    channel.close()

  def hostile_client():
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    i = 0
    while not stop.is_set():
      try:
        stub.Predict(hostile[i % len(hostile)], timeout=30)
        code = "OK"
      except grpc.RpcError as e:
        code = e.code().name
      with lock:
        counts["hostile_requests"] += 1
        counts["hostile_codes"][code] = counts["hostile_codes"].get(code, 0) + 1
        counts["hostile_not_refused"] += code != "INVALID_ARGUMENT"
      i += 1
    channel.close()

  threads = [threading.Thread(target=valid_client) for _ in range(clients)]
  threads.append(threading.Thread(target=hostile_client))
  started = time.time()
  for thread in threads:
    thread.start()
  try:
    counts["events"] = faults(started)
    time.sleep(max(0.0, started + seconds - time.time()))
  finally:
    stop.set()
    for thread in threads:
      thread.join()
  counts["seconds"] = round(time.time() - started, 1)
  return counts


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--clients", type=int, default=8, help="valid client threads")
  parser.add_argument("--seconds", type=float, default=60.0, help="length of the run")
  parser.add_argument("--poll_seconds", type=float, default=0.5,
                      help="the server's config and file-system poll interval")
  parser.add_argument("--output_dir", default=os.path.join(os.path.dirname(__file__),
                                                           "results"))
  args = config_flags.add_flag_suggestions(parser).parse_args(argv)
  run = machine.start_run("python -m bench.serving_faults", argv)
  root = tempfile.mkdtemp(prefix="serving-faults-")
  try:
    templates = save_versions(root)
    base = os.path.join(root, "export", "eta")
    publish_copy(templates[1], base, 1)
    broken = os.path.join(root, "broken")
    shutil.copytree(templates[2], os.path.join(broken, "1"))
    with open(os.path.join(broken, "1", "saved_model.pb"), "wb") as f:
      f.write(b"not a SavedModel")
    config = os.path.join(root, "models.config")
    write_config(config, base, [1], {"stable": 1})
    server = Server(config, os.path.join(root, "server.log"), args.poll_seconds)
    actions = {
        "publish": lambda: (publish_copy(templates[2], base, 2),
                            write_config(config, base, [1, 2], {"stable": 1, "canary": 2})),
        "bad_path": lambda: write_config(config, os.path.join(root, "missing"), [1, 2]),
        "bad_load": lambda: write_config(config, broken, [1]),
        "retire": lambda: write_config(config, base, [2], {"stable": 2}),
        "delete": lambda: shutil.rmtree(os.path.join(base, "1")),
    }

    def faults(started):
      done = []
      for name, at in EVENTS:
        time.sleep(max(0.0, started + at * args.seconds - time.time()))
        actions[name]()
        done.append({"event": name, "at_s": round(time.time() - started, 2)})
      return done
    try:
      counts = run_clients(server.port, args.clients, args.seconds, faults)
    finally:
      server.close()
    with open(os.path.join(root, "server.log")) as f:
      log = f.read().splitlines()
    counts["config_rejections"] = [l.split("Rejected config: ", 1)[1][:240] for l in log
                                   if "Rejected config: " in l]
    counts["unloaded"] = [l.split("] ", 1)[-1] for l in log if "Unloaded servable" in l]
  finally:
    shutil.rmtree(root, ignore_errors=True)
  result = {**machine.finish_run(run), "clients": args.clients,
            "seconds_requested": args.seconds, "poll_seconds": args.poll_seconds,
            "model": MODEL, "request": {"behaviors": 40, "candidates": 200},
            "events_planned": [{"event": e, "at_fraction": a} for e, a in EVENTS],
            **counts,
            "requests_per_second": round(counts["requests"] / counts["seconds"], 1)}
  path = machine.write_json(result, args.output_dir, RESULTS_FILE)
  print(f"{counts['requests']} valid requests ({result['requests_per_second']}/s), "
        f"{counts['failures']} failed, versions answered {counts['versions_answered']}; "
        f"{counts['hostile_requests']} hostile, {counts['hostile_not_refused']} not refused; "
        f"{len(counts['config_rejections'])} config rejections -> {path}", flush=True)
  return result


if __name__ == "__main__":
  main()
