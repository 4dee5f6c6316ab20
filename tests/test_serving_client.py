"""serving.client: retries, deadlines and typed errors against a fake servicer; padding."""
import concurrent.futures
import json
import socket
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from eta_tf import features as F
from serving import client as client_lib
from serving import client_cli

import grpc  # pylint: disable=g-import-not-at-top,wrong-import-order
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order
from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top

from serving_helpers import candidates, history, samples  # noqa: E402


class FakePredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
  """Fails the first `failures` calls with `code` (or sleeps `delay_s`), then answers 0.5."""

  VERSION = 7  # the version it says answered

  def __init__(self, code=None, failures=0, message="boom", delay_s=0.0):
    self.code, self.failures, self.message, self.delay_s = code, failures, message, delay_s
    self.calls = 0
    self.requests = []
    self.metadata = []  # the invocation metadata of every call
    self._lock = threading.Lock()

  def Predict(self, request, context):
    with self._lock:
      self.calls += 1
      call = self.calls
    self.requests.append(request)
    self.metadata.append(dict(context.invocation_metadata()))
    if call <= self.failures:
      if self.delay_s:
        time.sleep(self.delay_s)
      else:
        context.abort(self.code, self.message)
    n = tf.make_ndarray(request.inputs[
        F.CANDIDATE_ITEM_ID if F.CANDIDATE_ITEM_ID in request.inputs else F.TARGET_ITEM_ID])
    response = predict_pb2.PredictResponse()
    response.model_spec.name = request.model_spec.name  # as TF Serving: who answered
    response.model_spec.version.value = self.VERSION
    response.model_spec.signature_name = request.model_spec.signature_name
    response.outputs[F.OUTPUT_CTR].CopyFrom(
        tf.make_tensor_proto(np.full(n.shape[0], 0.5, np.float32)))
    return response


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _serve(servicer, port=0):
  server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
  port = server.add_insecure_port(f"127.0.0.1:{port}")
  server.start()
  return server, port


@pytest.fixture
def fake():
  servers = []

  def make(**kwargs):
    servicer = FakePredictionService(**kwargs)
    server, port = _serve(servicer)
    servers.append(server)
    return servicer, port
  yield make
  for server in servers:
    server.stop(0)


def _score(port, **kwargs):
  client = client_lib.ScoringClient(f"127.0.0.1:{port}", "eta", backoff_s=0.01, **kwargs)
  return client.score_candidates(history(3), candidates([1, 2]))


def test_retries_unavailable_then_succeeds(fake):
  servicer, port = fake(code=grpc.StatusCode.UNAVAILABLE, failures=2)
  np.testing.assert_allclose(_score(port, max_retries=3), [0.5, 0.5])
  assert servicer.calls == 3


def test_gives_up_after_max_retries(fake):
  servicer, port = fake(code=grpc.StatusCode.UNAVAILABLE, failures=10, message="overloaded")
  with pytest.raises(client_lib.UnavailableError, match="overloaded .after 3 attempts") as e:
    _score(port, max_retries=2)
  assert servicer.calls == 3 and e.value.details.startswith("overloaded")


def test_retries_deadline_exceeded(fake):
  servicer, port = fake(failures=1, delay_s=0.5)
  np.testing.assert_allclose(_score(port, timeout_s=0.2, max_retries=2), [0.5, 0.5])
  assert servicer.calls == 2


@pytest.mark.parametrize("code,error", [
    (grpc.StatusCode.INVALID_ARGUMENT, client_lib.InvalidArgumentError),
    (grpc.StatusCode.NOT_FOUND, client_lib.NotFoundError),
    (grpc.StatusCode.FAILED_PRECONDITION, client_lib.FailedPreconditionError),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, client_lib.ResourceExhaustedError),
    (grpc.StatusCode.INTERNAL, client_lib.ScoringError),
])
def test_other_errors_are_typed_and_never_retried(fake, code, error):
  servicer, port = fake(code=code, failures=5, message=f"server says {code.name}")
  with pytest.raises(error) as e:
    _score(port, max_retries=3)
  assert servicer.calls == 1
  assert e.value.details == f"server says {code.name}" and e.value.code_name == code.name


def test_unknown_label_is_a_not_found_error(fake):
  servicer, port = fake(code=grpc.StatusCode.INVALID_ARGUMENT, failures=1,
                        message="Unrecognized servable version label: canary")
  with pytest.raises(client_lib.NotFoundError) as e:
    _score(port)
  assert isinstance(e.value, client_lib.InvalidArgumentError)
  assert isinstance(e.value, client_lib.UnknownVersionLabelError)


def test_server_down_then_up():
  port = _free_port()
  servicer = FakePredictionService()
  started = []

  def start_later():
    time.sleep(0.4)
    started.append(_serve(servicer, port)[0])
  thread = threading.Thread(target=start_later)
  thread.start()
  try:
    t0 = time.monotonic()
    np.testing.assert_allclose(_score(port, timeout_s=0.3, max_retries=12), [0.5, 0.5])
    assert time.monotonic() - t0 >= 0.3
  finally:
    thread.join()
    for server in started:
      server.stop(0)
  assert servicer.calls == 1


def test_request_addresses_version_or_label(fake):
  servicer, port = fake()
  _score(port, version=3)
  _score(port, version_label="canary")
  _score(port)
  specs = [r.model_spec for r in servicer.requests]
  assert [s.WhichOneof("version_choice") for s in specs] == ["version", "version_label", None]
  assert specs[0].version.value == 3 and specs[1].version_label == "canary"
  assert {s.signature_name for s in specs} == {F.SCORE_CANDIDATES}
  assert all(r.inputs[F.HIST_ITEM_ID].dtype == tf.int64.as_datatype_enum
             for r in servicer.requests)
  with pytest.raises(ValueError, match="not both"):
    client_lib.ScoringClient("127.0.0.1:1", "eta", version=1, version_label="stable")


def test_client_side_validation_names_the_field_and_sends_nothing(fake):
  servicer, port = fake()
  client = client_lib.ScoringClient(f"127.0.0.1:{port}", "eta", history_width=8)
  bad_dtype = {**history(3), F.HIST_TIMESTAMP: np.array([1.5, 2.5, 3.5])}
  with pytest.raises(client_lib.InputValidationError, match=F.HIST_TIMESTAMP) as e:
    client.score_candidates(bad_dtype, candidates([1]))
  assert e.value.field == F.HIST_TIMESTAMP and "float64" in str(e.value)
  short = {**history(3), F.HIST_CATEGORY_ID: np.array([1, 2])}
  with pytest.raises(client_lib.InputValidationError, match=F.HIST_CATEGORY_ID):
    client.score_candidates(short, candidates([1]))
  missing = dict(candidates([1]))
  del missing[F.CANDIDATE_CATEGORY_ID]
  with pytest.raises(client_lib.InputValidationError, match=F.CANDIDATE_CATEGORY_ID):
    client.score_candidates(history(3), missing)
  with pytest.raises(client_lib.InputValidationError, match="unexpected input"):
    client.score_candidates({**history(3), "user_age": np.array([3])}, candidates([1]))
  with pytest.raises(client_lib.InputValidationError, match=F.REQUEST_TIMESTAMP):
    client.score_candidates(history(3), {**candidates([1]), F.REQUEST_TIMESTAMP: [1, 2]})
  bad_rows = samples([2, 3], [1, 2])
  bad_rows[F.HIST_ITEM_ID] = [np.array([1.0, 2.0]), np.array([3.0])]
  with pytest.raises(client_lib.InputValidationError, match=F.HIST_ITEM_ID):
    client.score(bad_rows)
  with pytest.raises(client_lib.InputValidationError, match=F.TARGET_TIMESTAMP):
    client.score({**samples([2], [1]), F.TARGET_TIMESTAMP: np.array([1, 2])})
  assert servicer.calls == 0
  np.testing.assert_allclose(client.score(samples([2, 9], [1, 2])), [0.5, 0.5])
  sent = tf.make_ndarray(servicer.requests[-1].inputs[F.HIST_ITEM_ID])
  np.testing.assert_array_equal(sent, [[0, 0, 0, 0, 0, 0, 1, 2], [2, 3, 4, 5, 6, 7, 8, 9]])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(1, 10**12), max_size=12), min_size=1, max_size=6),
       st.one_of(st.none(), st.integers(1, 10)))
def test_pad_history_rows_keeps_the_most_recent_behaviors(rows, width):
  out = client_lib.pad_history_rows([np.array(r, np.int64) for r in rows], width)
  expected_width = width if width is not None else max(len(r) for r in rows)
  assert out.shape == (len(rows), expected_width) and out.dtype == np.int64
  for row, got in zip(rows, out):
    kept = row[-expected_width:] if expected_width else []
    assert list(got[expected_width - len(kept):]) == list(kept)
    assert not got[:expected_width - len(kept)].any()


def test_cli_help_and_input(fake, tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    client_cli.main(["--help"])
  assert e.value.code == 0
  help_text = capsys.readouterr().out
  assert F.CANDIDATE_ITEM_ID in help_text and "--version_label" in help_text
  servicer, port = fake()
  request = tmp_path / "candidates.json"
  request.write_text(json.dumps({**{k: v.tolist() for k, v in history(4).items()},
                                 F.REQUEST_TIMESTAMP: 5000,
                                 F.CANDIDATE_ITEM_ID: [1, 2, 3],
                                 F.CANDIDATE_CATEGORY_ID: [1, 1, 1]}))
  assert client_cli.main([f"--server=127.0.0.1:{port}", "--model_name=eta",
                          "--version_label=stable", f"--signature={F.SCORE_CANDIDATES}",
                          f"--input={request}"]) == 0
  assert json.loads(capsys.readouterr().out) == {F.OUTPUT_CTR: [0.5, 0.5, 0.5], "model_spec": {
      "name": "eta", "version": 7, "signature_name": F.SCORE_CANDIDATES}}
  assert servicer.requests[-1].model_spec.version_label == "stable"
  request.write_text(json.dumps({F.HIST_ITEM_ID: [1.5]}))
  assert client_cli.main([f"--server=127.0.0.1:{port}", f"--signature={F.SCORE_CANDIDATES}",
                          f"--input={request}"]) == 1
  assert F.HIST_ITEM_ID in capsys.readouterr().err


def test_every_call_carries_the_per_call_metadata(fake, tmp_path, capsys):
  servicer, port = fake()
  _score(port, metadata=[("authorization", "Bearer s3cret"), ("x-tenant", "a")])
  assert servicer.metadata[-1]["authorization"] == "Bearer s3cret"
  assert servicer.metadata[-1]["x-tenant"] == "a"
  request = tmp_path / "candidates.json"
  request.write_text(json.dumps({**{k: v.tolist() for k, v in history(2).items()},
                                 F.REQUEST_TIMESTAMP: 5000, F.CANDIDATE_ITEM_ID: [1],
                                 F.CANDIDATE_CATEGORY_ID: [1]}))
  assert client_cli.main([f"--server=127.0.0.1:{port}", f"--signature={F.SCORE_CANDIDATES}",
                          f"--input={request}", "--grpc_metadata=Authorization=Bearer t=1"]) == 0
  assert servicer.metadata[-1]["authorization"] == "Bearer t=1"
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    client_cli.main([f"--server=127.0.0.1:{port}", f"--input={request}",
                     "--grpc_metadata=novalue"])
  assert e.value.code == 2
  assert "--grpc_metadata='novalue': expected KEY=VALUE" in capsys.readouterr().err
  with pytest.raises(SystemExit) as e:
    client_cli.main([f"--server=127.0.0.1:{port}", f"--input={request}",
                     "--client_cert=c.pem"])
  assert e.value.code == 2
