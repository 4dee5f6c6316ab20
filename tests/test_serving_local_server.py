"""serving.local_server against toy SavedModels, through serving.client and raw stubs."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from eta_tf import features as F
from serving import client as client_lib
from serving import client_cli
from serving import local_server as ls
from serving import predict
from serving import server_core
from serving.servable import Servable
from serving.server_status import ServingError
from serving import model_config as mc
from serving import model_config_file
from serving import warmup

import grpc  # pylint: disable=g-import-not-at-top,wrong-import-order
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order
from tensorflow_serving.apis import get_model_metadata_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import get_model_status_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import model_management_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import model_service_pb2_grpc  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top

from serving_helpers import (MAX_LEN, candidates, expected_ctr, history,  # noqa: E402
                             publish_version, samples, template)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_CANDIDATES = 16
POLL_S = 0.05


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  base = str(tmp_path_factory.mktemp("models") / "eta")
  publish_version(base, 1)
  with ls.LocalServer(model_name="eta", model_base_path=base, port=0,
                      file_system_poll_wait_seconds=0,
                      max_candidates=MAX_CANDIDATES) as srv:
    yield srv


@pytest.fixture(scope="module")
def stubs(server):
  channel = grpc.insecure_channel(f"localhost:{server.port}")
  yield (prediction_service_pb2_grpc.PredictionServiceStub(channel),
         model_service_pb2_grpc.ModelServiceStub(channel))
  channel.close()


def _client(server, **kwargs):
  return client_lib.ScoringClient(f"localhost:{server.port}", kwargs.pop("model_name", "eta"),
                                  timeout_s=10, **kwargs)


def _raw_error(call, request):
  with pytest.raises(grpc.RpcError) as e:
    call(request, timeout=10)
  return e.value.code(), e.value.details()


def test_scores_metadata_and_status(server, stubs):
  client = _client(server)
  # Ragged rows: left-padded to the signature's width 8; the 11-long row keeps its last 8.
  got = client.score(samples([3, 1, 11], [13, 27, 40]))
  np.testing.assert_allclose(got, expected_ctr(1, [3, 1, 8], [13, 27, 40]), rtol=1e-6)
  assert got.dtype == np.float32 and got.shape == (3,)
  got = client.score_candidates(history(5), candidates([13, 27, 5]))
  np.testing.assert_allclose(got, expected_ctr(1, 5, [13, 27, 5]), rtol=1e-6)
  long_history = client.score_candidates(history(50), candidates([13]))  # truncated to L
  np.testing.assert_allclose(long_history, expected_ctr(1, MAX_LEN, [13]), rtol=1e-6)
  assert client.score_candidates(history(3), candidates([])).shape == (0,)

  meta = client.model_metadata()
  assert (meta.model_name, meta.version) == ("eta", 1)
  for signature in F.SIGNATURE_NAMES:
    specs = meta.input_specs(signature)
    assert set(specs) == {f.name for f in F.signature_input_features(signature)}
    assert {dtype for dtype, _ in specs.values()} == {"int64"}
    assert meta.output_specs(signature)[F.OUTPUT_CTR][0] == "float32"
  assert meta.input_specs(F.SCORE_CANDIDATES)[F.REQUEST_TIMESTAMP][1] == ()
  assert [(s.version, s.state) for s in client.model_status()] == [(1, "AVAILABLE")]

  # Responses are typed fields (AsProtoField), as TF Serving sends them.
  request = warmup.build_predict_request("eta", F.SCORE_CANDIDATES,
                                         {**history(2), **candidates([1, 2])})
  response = stubs[0].Predict(request, timeout=10)
  assert len(response.outputs[F.OUTPUT_CTR].float_val) == 2
  assert (response.model_spec.name, response.model_spec.version.value,
          response.model_spec.signature_name) == ("eta", 1, F.SCORE_CANDIDATES)


def test_not_found_for_unknown_model_version_and_label(server, stubs):
  predict, models = stubs
  with pytest.raises(client_lib.NotFoundError, match=r"Servable not found for request: "
                                                     r"Latest\(nope\)"):
    _client(server, model_name="nope").score_candidates(history(2), candidates([1]))
  with pytest.raises(client_lib.NotFoundError, match=r"Specific\(eta, 7\)"):
    _client(server, version=7).score_candidates(history(2), candidates([1]))
  with pytest.raises(client_lib.NotFoundError, match="Unrecognized servable version label: "
                                                     "canary") as e:
    _client(server, version_label="canary").model_metadata()
  assert isinstance(e.value, client_lib.UnknownVersionLabelError)
  assert e.value.code_name == "INVALID_ARGUMENT"  # TF Serving's code for unknown labels

  def status(name, version=None):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
      request.model_spec.version.value = version
    return request
  assert _raw_error(models.GetModelStatus, status("nope")) == (
      grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope")
  assert _raw_error(models.GetModelStatus, status("eta", 7)) == (
      grpc.StatusCode.NOT_FOUND, "Could not find version 7 of model eta")
  with pytest.raises(client_lib.NotFoundError, match="Could not find any versions"):
    _client(server, model_name="nope").model_status()


def test_invalid_argument_for_missing_mistyped_or_misshapen_inputs(server, stubs):
  predict = stubs[0]
  client = _client(server)
  good = warmup.build_predict_request("eta", F.SERVING_DEFAULT, {
      k: (np.asarray(v) if k not in F.HISTORY_FEATURES else client_lib.pad_history_rows(
          v, MAX_LEN)) for k, v in samples([2, 3], [1, 2]).items()})

  missing = type(good)()
  missing.CopyFrom(good)
  del missing.inputs[F.TARGET_ITEM_ID]
  code, message = _raw_error(predict.Predict, missing)
  assert code == grpc.StatusCode.INVALID_ARGUMENT
  assert f"Missing but required: {{{F.TARGET_ITEM_ID}}}" in message

  mistyped = type(good)()
  mistyped.CopyFrom(good)
  mistyped.inputs[F.TARGET_ITEM_ID].CopyFrom(tf.make_tensor_proto(np.array([1.0, 2.0],
                                                                           np.float32)))
  code, message = _raw_error(predict.Predict, mistyped)
  assert code == grpc.StatusCode.INVALID_ARGUMENT
  assert "to be int64 but float32 is provided" in message and F.TARGET_ITEM_ID in message
  with pytest.raises(client_lib.InvalidArgumentError, match="int64 but float32") as e:
    client._call(client._predict_stub.Predict, mistyped)  # the server's message, typed
  assert e.value.details == message

  renamed = type(good)()
  renamed.CopyFrom(good)
  renamed.inputs["bogus"].CopyFrom(renamed.inputs.pop(F.TARGET_ITEM_ID))
  code, message = _raw_error(predict.Predict, renamed)
  assert code == grpc.StatusCode.INVALID_ARGUMENT
  assert message.startswith("input tensor alias not found in signature: bogus")

  wrong_width = type(good)()
  wrong_width.CopyFrom(good)
  wrong_width.inputs[F.HIST_ITEM_ID].CopyFrom(tf.make_tensor_proto(np.ones((2, 5), np.int64)))
  code, message = _raw_error(predict.Predict, wrong_width)
  assert code == grpc.StatusCode.INVALID_ARGUMENT and "not compatible" in message

  unknown_signature = type(good)()
  unknown_signature.CopyFrom(good)
  unknown_signature.model_spec.signature_name = "nope"
  assert _raw_error(predict.Predict, unknown_signature) == (
      grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.')
  with pytest.raises(client_lib.FailedPreconditionError):
    client._call(client._predict_stub.Predict, unknown_signature)

  no_field = get_model_metadata_pb2.GetModelMetadataRequest()
  no_field.model_spec.name = "eta"
  assert _raw_error(predict.GetModelMetadata, no_field)[0] == grpc.StatusCode.INVALID_ARGUMENT
  # ... and the server keeps serving.
  assert client.score_candidates(history(1), candidates([3])).shape == (1,)


def test_oversized_and_malformed_requests_are_rejected_without_crashing(server, stubs):
  predict = stubs[0]
  client = _client(server)
  with pytest.raises(client_lib.InvalidArgumentError,
                     match=f"17 candidates .* --max_candidates={MAX_CANDIDATES}"):
    client.score_candidates(history(3), candidates(np.arange(1, MAX_CANDIDATES + 2)))
  with pytest.raises(client_lib.InvalidArgumentError, match="max_candidates"):
    client.score(samples([1] * (MAX_CANDIDATES + 1), np.arange(MAX_CANDIDATES + 1)))

  bomb = warmup.build_predict_request("eta", F.SCORE_CANDIDATES,
                                      {**history(2), **candidates([1])})
  # Claims 2^40 history elements with no data: must not allocate them.
  bomb.inputs[F.HIST_ITEM_ID].tensor_shape.dim[0].size = 1 << 40
  bomb.inputs[F.HIST_ITEM_ID].ClearField("tensor_content")
  bomb.inputs[F.HIST_ITEM_ID].int64_val.append(1)
  code, message = _raw_error(predict.Predict, bomb)
  assert code == grpc.StatusCode.INVALID_ARGUMENT and "input elements" in message

  garbled = warmup.build_predict_request("eta", F.SCORE_CANDIDATES,
                                         {**history(4), **candidates([1])})
  garbled.inputs[F.HIST_TIMESTAMP].tensor_content = b"\x01\x02\x03"
  assert _raw_error(predict.Predict, garbled)[0] == grpc.StatusCode.INVALID_ARGUMENT

  results = []
  def hammer():
    try:
      client.score_candidates(history(2), candidates(np.arange(1, 100)))
    except client_lib.InvalidArgumentError:
      results.append("rejected")
  threads = [threading.Thread(target=hammer) for _ in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert results == ["rejected"] * 8
  np.testing.assert_allclose(client.score_candidates(history(2), candidates([9])),
                             expected_ctr(1, 2, [9]), rtol=1e-6)


def test_new_version_while_streaming_fails_no_request(tmp_path):
  base = str(tmp_path / "eta")
  publish_version(base, 1)
  template(2)  # save before streaming starts, so the switch is the only thing going on
  v1, v2 = expected_ctr(1, 3, [21])[0], expected_ctr(2, 3, [21])[0]
  with ls.LocalServer(model_name="eta", model_base_path=base, port=0,
                      file_system_poll_wait_seconds=POLL_S) as server:
    client = _client(server)
    scores, failures, stop = [], [], threading.Event()

    def stream():
      while not stop.is_set():
        try:
          scores.append(float(client.score_candidates(history(3), candidates([21]))[0]))
        except Exception as e:  # pylint: disable=broad-except
          failures.append(e)

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for t in threads:
      t.start()
    try:
      time.sleep(0.3)
      publish_version(base, 2)
      server.wait_for_state("eta", 1, server_core.State.END)  # v2 served, v1 unloaded
      switched_at = len(scores)
      time.sleep(0.3)
    finally:
      stop.set()
      for t in threads:
        t.join()
    assert not failures, failures[:3]
    assert scores and all(np.isclose(s, v1) or np.isclose(s, v2) for s in scores)
    assert np.isclose(scores[0], v1) and np.isclose(scores[-1], v2)
    assert all(np.isclose(s, v2) for s in scores[switched_at + 3:])  # 3 threads in flight
    assert [(s.version, s.state) for s in client.model_status()] == [
        (1, "END"), (2, "AVAILABLE")]


def test_half_written_and_broken_versions_are_never_served(tmp_path):
  base = str(tmp_path / "eta")
  publish_version(base, 1)
  # By hand: a complete copy under a temp name, an integer dir still being written (no
  # saved_model.pb yet), and a version whose saved_model.pb is corrupt.
  shutil.copytree(template(2), os.path.join(base, ".tmp-2-999"))
  os.makedirs(os.path.join(base, "3", "variables"))
  shutil.copy(os.path.join(template(2), "variables", "variables.index"),
              os.path.join(base, "3", "variables"))
  with ls.LocalServer(model_name="eta", model_base_path=base, port=0,
                      file_system_poll_wait_seconds=POLL_S) as server:
    client = _client(server)
    time.sleep(5 * POLL_S)
    assert [(s.version, s.state) for s in client.model_status()] == [(1, "AVAILABLE")]
    np.testing.assert_allclose(client.score_candidates(history(1), candidates([4])),
                               expected_ctr(1, 1, [4]), rtol=1e-6)
    # Corrupt a copy first and rename it into place: corrupting "4" in place would race
    # the poller, which may load the intact copy before the overwrite.
    broken = os.path.join(base, ".tmp-4-broken")
    shutil.copytree(template(2), broken)
    with open(os.path.join(broken, "saved_model.pb"), "wb") as f:
      f.write(b"not a SavedModel")
    os.rename(broken, os.path.join(base, "4"))
    server.wait_for_state("eta", 4, server_core.State.END)
    status = {s.version: s for s in client.model_status()}
    assert status[4].error_code != 0 and "failed" in status[4].error_message
    assert status[1].state == "AVAILABLE"  # the broken latest never replaced v1
    np.testing.assert_allclose(client.score_candidates(history(1), candidates([4])),
                               expected_ctr(1, 1, [4]), rtol=1e-6)


def test_labels_follow_models_config_with_tf_serving_rules(tmp_path):
  export_base = str(tmp_path / "export")
  base = os.path.join(export_base, "eta")
  for v in (1, 2, 3):
    publish_version(base, v)
  config = str(tmp_path / "models.config")
  mc.init_config(config, "eta", base, versions=[1], labels={"stable": 1})
  with ls.LocalServer(model_config_file=config, port=0, file_system_poll_wait_seconds=POLL_S,
                      model_config_file_poll_wait_seconds=POLL_S,
                      allow_version_labels_for_unavailable_models=True) as server:
    target = f"localhost:{server.port}"
    stable = client_lib.ScoringClient(target, "eta", version_label="stable", timeout_s=10)
    canary = client_lib.ScoringClient(target, "eta", version_label="canary", timeout_s=10)

    def score(c):
      return c.score_candidates(history(2), candidates([8]))[0]

    def eventually(fn, timeout_s=10):
      deadline = time.monotonic() + timeout_s
      while True:
        try:
          if fn():
            return
        except client_lib.ScoringError:
          pass
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(POLL_S)

    assert np.isclose(score(stable), expected_ctr(1, 2, [8])[0])
    mc.add_version(config, "eta", 2, export_base)
    server.wait_for_state("eta", 2)
    mc.set_label(config, "eta", "canary", 2, export_base)
    eventually(lambda: np.isclose(score(canary), expected_ctr(2, 2, [8])[0]))
    mc.promote(config, "eta", "canary", "stable")
    eventually(lambda: np.isclose(score(stable), expected_ctr(2, 2, [8])[0]))

    # Moving an existing label to a version that is not loaded is refused, whole.
    bad = model_config_file.read_config(config)
    model = mc.get_model(bad, "eta")
    model.model_version_policy.specific.versions.append(3)
    model.version_labels["stable"] = 3
    request = model_management_pb2.ReloadConfigRequest(config=bad)
    models = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(target))
    code, message = _raw_error(models.HandleReloadConfigRequest, request)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert message == ("Request to assign label to version 3 of model eta, which is not "
                       "currently available for inference")
    assert server.core.state("eta", 3) is None  # nothing of the bad config was applied
    # A *new* label may name an unloaded version (allow_version_labels_for_unavailable_models).
    model.version_labels["stable"] = 2
    model.version_labels["next"] = 3
    models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=bad),
                                     timeout=30)
    assert server.core.state("eta", 3) == server_core.State.AVAILABLE


def test_warmup_is_replayed_and_a_failing_warmup_fails_the_load(tmp_path):
  servable = Servable("eta", 1, template(1))
  try:
    assert predict.replay_warmup(servable) == 4
  finally:
    servable.close()
  base = str(tmp_path / "eta")
  publish_version(base, 1)
  core = server_core.ServerCore()
  core.reload_config(server_core.single_model_config("eta", base))
  assert core.state("eta", 1) == server_core.State.AVAILABLE
  bad = str(tmp_path / "bad")
  shutil.copytree(template(2), bad)
  request = warmup.build_predict_request("eta", F.SCORE_CANDIDATES,
                                         {**history(2), **candidates([1])})
  request.model_spec.signature_name = "no_such_signature"
  from tensorflow_serving.apis import prediction_log_pb2  # pylint: disable=g-import-not-at-top
  with tf.io.TFRecordWriter(warmup.warmup_file(bad)) as writer:
    writer.write(prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
  from serving import publish  # pylint: disable=g-import-not-at-top
  tmp = publish.temp_version_dir(base, 2)
  os.rmdir(tmp)
  shutil.move(bad, tmp)
  publish.publish(tmp, base, 2)
  core.poll_once()
  try:
    states = {s.version: s for s in core.model_status(_spec("eta")).model_version_status}
    assert states[2].state == server_core.State.END
    assert "Failed to warm up model" in states[2].status.error_message
    assert states[1].state == server_core.State.AVAILABLE
  finally:
    core.unload_all()


def _spec(name):
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = name
  return request.model_spec


def test_batching_preconditions_of_tf_serving(tmp_path):
  from serving import tfs_protos  # pylint: disable=g-import-not-at-top
  base = str(tmp_path / "eta")
  publish_version(base, 1)
  params = tfs_protos.BatchingParameters()
  params.max_batch_size.value = 4
  # Global batching: every signature is batched; score_candidates' scalar input and its
  # history/candidate lengths break TF Serving's batcher, so even the warmup fails.
  core = server_core.ServerCore(batching=params)
  core.reload_config(server_core.single_model_config("eta", base))
  try:
    states = {s.version: s for s in core.model_status(_spec("eta")).model_version_status}
    assert states[1].state == server_core.State.END
    assert "must have at least one dimension" in states[1].status.error_message
  finally:
    core.unload_all()
  # Per-model batching (what docker-compose.yml runs): no batching_params.pbtxt, no batching.
  core = server_core.ServerCore(batching=params, per_model_batching=True)
  core.reload_config(server_core.single_model_config("eta", base))
  try:
    assert core.state("eta", 1) == server_core.State.AVAILABLE
    with core.servable(_spec("eta")) as servable:
      assert servable.batching is None
      servable.batching = params  # as if the version shipped batching_params.pbtxt
      request = warmup.build_predict_request("eta", F.SERVING_DEFAULT, {
          k: (client_lib.pad_history_rows(v, MAX_LEN) if k in F.HISTORY_FEATURES else v)
          for k, v in samples([1] * 5, np.arange(5)).items()})
      with pytest.raises(ServingError, match="Task size 5 is larger than maximum batch "
                                                "size 4"):
        predict.run_predict(servable, request)
  finally:
    core.unload_all()


def _listening_addresses(port):
  """The local addresses of the TCP sockets listening on `port` (from /proc/net/tcp*)."""
  import ipaddress  # pylint: disable=g-import-not-at-top
  addresses = set()
  for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    with open(table) as f:
      for row in f.readlines()[1:]:
        local, state = row.split()[1], row.split()[3]
        hex_address, hex_port = local.rsplit(":", 1)
        if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
          raw = bytes.fromhex(hex_address)  # 32-bit words in host (little-endian) order
          packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
          address = ipaddress.ip_address(packed)
          addresses.add(str(getattr(address, "ipv4_mapped", None) or address))
  return addresses


def test_cli_serves_until_sigterm(tmp_path, capsys):
  base = str(tmp_path / "eta")
  publish_version(base, 1)
  env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
  proc = subprocess.Popen(
      [sys.executable, "-m", "serving.local_server", "--port=0",  # default --host
       "--model_name=eta", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1",
       "--max_candidates=100", "--rest_api_port=8501", "--xla_cpu_compilation_enabled=true"],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  try:
    line = proc.stdout.readline()
    assert "listening on" in line, line
    port = int(line.rsplit(":", 1)[1])
    assert line.split()[-1] == f"127.0.0.1:{port}"
    assert _listening_addresses(port) == {"127.0.0.1"}  # loopback only, by default
    request = str(tmp_path / "request.json")
    with open(request, "w") as f:
      json.dump({k: (v.tolist() if hasattr(v, "tolist") else [r.tolist() for r in v])
                 for k, v in samples([2, 4], [5, 6]).items()}, f)
    assert client_cli.main([f"--server=127.0.0.1:{port}", "--model_name=eta",
                            f"--input={request}", "--timeout_s=10"]) == 0
    out = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(out[F.OUTPUT_CTR], expected_ctr(1, [2, 4], [5, 6]), rtol=1e-6)
    assert client_cli.main([f"--server=127.0.0.1:{port}", "--model_name=eta", "--status"]) == 0
    assert json.loads(capsys.readouterr().out)["model_version_status"][0]["state"] == \
        "AVAILABLE"
  finally:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
