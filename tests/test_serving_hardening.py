"""Fault injection on the local server and the client: TLS, reload, limits.

Mutual TLS with certificates made here by the `openssl` CLI; an empty reload; requests
over the message size, the history cap and the concurrency cap; a warmup that hangs.
"""
import os
import subprocess
import threading
import time

import numpy as np
import pytest

from eta_tf import features as F
from eta_tf.savedmodel_session import SavedModelSession
from serving import client as client_lib
from serving import client_cli
from serving import local_server as ls
from serving import model_config_file
from serving import server_core

import grpc  # pylint: disable=g-import-not-at-top,wrong-import-order
from tensorflow_serving.apis import model_management_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import model_service_pb2_grpc  # pylint: disable=g-import-not-at-top

from serving_helpers import candidates, expected_ctr, history, publish_version  # noqa: E402

MAX_MESSAGE_BYTES = 64 << 10
MAX_HISTORY = 50


def _openssl(*args, cwd):
  subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _sign(name, subject, extensions, cwd):
  key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
  _openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject,
           cwd=cwd)
  with open(os.path.join(cwd, f"{name}.ext"), "w") as f:
    f.write(extensions)
  _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
           "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
           cwd=cwd)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
  """A CA, a server certificate for localhost and a client certificate it signed."""
  d = str(tmp_path_factory.mktemp("certs"))
  _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
           "-subj", "/CN=eta-test-ca", cwd=d)
  _sign("server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n", cwd=d)
  _sign("client", "/CN=eta-client", "extendedKeyUsage=clientAuth\n", cwd=d)
  return {name: os.path.join(d, name) for name in
          ("ca.pem", "server.key", "server.pem", "client.key", "client.pem")}


def _read(path):
  with open(path, "rb") as f:
    return f.read()


def _text_proto_string(pem: bytes) -> str:
  return '"' + pem.decode().replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def test_mutual_tls_serves_a_client_with_a_certificate_and_refuses_one_without(
    certs, tmp_path):
  ssl_config = tmp_path / "ssl.config"
  ssl_config.write_text(
      f"server_key: {_text_proto_string(_read(certs['server.key']))}\n"
      f"server_cert: {_text_proto_string(_read(certs['server.pem']))}\n"
      f"custom_ca: {_text_proto_string(_read(certs['ca.pem']))}\n"
      "client_verify: true\n")
  base = str(tmp_path / "eta")
  publish_version(base, 1)
  parsed = ls.build_parser().parse_args([f"--ssl_config_file={ssl_config}"])
  with ls.LocalServer(model_name="eta", model_base_path=base, port=0,
                      file_system_poll_wait_seconds=0,
                      ssl_config_file=parsed.ssl_config_file) as server:
    target = f"localhost:{server.port}"
    roots = _read(certs["ca.pem"])
    with client_lib.ScoringClient(target, "eta", root_certificates=roots, timeout_s=10,
                                  client_cert=_read(certs["client.pem"]),
                                  client_key=_read(certs["client.key"])) as client:
      np.testing.assert_allclose(client.score_candidates(history(2), candidates([7])),
                                 expected_ctr(1, 2, [7]), rtol=1e-6)
    # The CLI, with the same files.
    assert client_cli.main([f"--server={target}", "--model_name=eta", "--status",
                            f"--root_certificates={certs['ca.pem']}",
                            f"--client_cert={certs['client.pem']}",
                            f"--client_key={certs['client.key']}"]) == 0
    # TLS without a client certificate, and plaintext: refused.
    with client_lib.ScoringClient(target, "eta", root_certificates=roots, timeout_s=5,
                                  max_retries=0) as no_cert:
      with pytest.raises(client_lib.UnavailableError):
        no_cert.score_candidates(history(2), candidates([7]))
    with client_lib.ScoringClient(target, "eta", timeout_s=5, max_retries=0) as plain:
      with pytest.raises(client_lib.UnavailableError):
        plain.score_candidates(history(2), candidates([7]))


def test_ssl_config_without_a_key_is_refused_naming_the_file(tmp_path):
  ssl_config = tmp_path / "ssl.config"
  ssl_config.write_text('server_cert: "x"\nclient_verify: true\n')
  with pytest.raises(ValueError) as e:
    ls.LocalServer(model_name="eta", model_base_path=str(tmp_path), ssl_config_file=str(
        ssl_config))
  assert str(e.value) == (f"--ssl_config_file={ssl_config}: missing server_key, custom_ca "
                          "(needed by client_verify: true)")


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
  """A server with small limits: 64 KiB messages, 2 RPCs in flight, 50-long histories."""
  root = tmp_path_factory.mktemp("limited")
  base = str(root / "models" / "eta")
  publish_version(base, 1)
  with ls.LocalServer(model_name="eta", model_base_path=base, port=0,
                      file_system_poll_wait_seconds=0, max_message_bytes=MAX_MESSAGE_BYTES,
                      max_concurrent_rpcs=2, max_history=MAX_HISTORY,
                      model_base_path_root=str(root / "models")) as server:
    yield server


def _client(server, **kwargs):
  return client_lib.ScoringClient(f"localhost:{server.port}", "eta", timeout_s=10, **kwargs)


def _spec(name="eta"):
  from tensorflow_serving.apis import model_pb2  # pylint: disable=g-import-not-at-top
  return model_pb2.ModelSpec(name=name)


def test_empty_reload_changes_nothing_as_in_tf_serving(limited):
  models = model_service_pb2_grpc.ModelServiceStub(
      grpc.insecure_channel(f"localhost:{limited.port}"))
  with pytest.raises(grpc.RpcError) as e:
    models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(), timeout=10)
  assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert e.value.details() == ("ServerModelConfig type not supported by "
                               "HandleReloadConfigRequest. Only ModelConfigList is currently "
                               "supported")
  limited.core.reload_config(model_management_pb2.ReloadConfigRequest().config)  # no-op
  assert limited.core.state("eta", 1) == server_core.State.AVAILABLE
  np.testing.assert_allclose(_client(limited).score_candidates(history(2), candidates([3])),
                             expected_ctr(1, 2, [3]), rtol=1e-6)


def test_reload_is_confined_to_the_base_path_root_or_disabled(limited, tmp_path):
  outside = model_config_file.parse_config(f'model_config_list {{ config {{ name: "eta" base_path: '
                            f'"{tmp_path}" model_platform: "tensorflow" }} }}')
  models = model_service_pb2_grpc.ModelServiceStub(
      grpc.insecure_channel(f"localhost:{limited.port}"))
  with pytest.raises(grpc.RpcError) as e:
    models.HandleReloadConfigRequest(
        model_management_pb2.ReloadConfigRequest(config=outside), timeout=10)
  assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
  assert e.value.details() == (f"model eta: base_path {tmp_path} is outside "
                               f"--model_base_path_root={limited.core.base_path_root}")
  assert limited.core.state("eta", 1) == server_core.State.AVAILABLE
  base = str(tmp_path / "eta")
  publish_version(base, 1)
  args = ls.build_parser().parse_args(["--enable_reload_config_rpc=false"])
  with ls.LocalServer(model_name="eta", model_base_path=base, port=0,
                      file_system_poll_wait_seconds=0,
                      enable_reload_config_rpc=args.enable_reload_config_rpc) as server:
    stub = model_service_pb2_grpc.ModelServiceStub(
        grpc.insecure_channel(f"localhost:{server.port}"))
    with pytest.raises(grpc.RpcError) as e:
      stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(
          config=server_core.single_model_config("eta", base)), timeout=10)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_oversized_requests_are_refused_and_the_server_keeps_serving(limited):
  client = _client(limited)
  many = np.arange(1, 5001)  # 2 x 5000 int64 candidates: ~80 KB > 64 KiB
  with pytest.raises(client_lib.ResourceExhaustedError):
    client.score_candidates(history(2), candidates(many))
  with pytest.raises(client_lib.InvalidArgumentError) as e:
    client.score_candidates(history(MAX_HISTORY + 1), candidates([1]))
  assert e.value.details == (f"request has a history of {MAX_HISTORY + 1} behaviors, more "
                             f"than this server's --max_history={MAX_HISTORY}: send the most "
                             f"recent {MAX_HISTORY} behaviors")
  np.testing.assert_allclose(client.score_candidates(history(MAX_HISTORY), candidates([4])),
                             expected_ctr(1, 8, [4]), rtol=1e-6)


def test_requests_over_the_concurrency_cap_get_resource_exhausted(limited, monkeypatch):
  with limited.core.servable(_spec()) as servable:
    session = servable.session
  run = session.run_outputs
  gate, entered = threading.Event(), threading.Semaphore(0)

  def slow_for_item_999(signature_name, inputs, *args, **kwargs):
    if inputs.get(F.CANDIDATE_ITEM_ID, [0])[0] == 999:
      entered.release()
      gate.wait(20)
    return run(signature_name, inputs, *args, **kwargs)
  monkeypatch.setattr(session, "run_outputs", slow_for_item_999)

  results = {}

  def slow_client(i):
    results[i] = _client(limited).score_candidates(history(3), candidates([999]))
  threads = [threading.Thread(target=slow_client, args=(i,)) for i in range(2)]
  for t in threads:
    t.start()
  try:
    for _ in threads:
      assert entered.acquire(timeout=20)
    with pytest.raises(client_lib.ResourceExhaustedError):
      _client(limited, max_retries=0).score_candidates(history(1), candidates([5]))
  finally:
    gate.set()
    for t in threads:
      t.join(timeout=30)
  for i in range(2):  # the two in flight were served, and correctly
    np.testing.assert_allclose(results[i], expected_ctr(1, 3, [999]), rtol=1e-6)
  np.testing.assert_allclose(_client(limited).score_candidates(history(1), candidates([5])),
                             expected_ctr(1, 1, [5]), rtol=1e-6)


def test_a_hanging_warmup_times_out_without_blocking_the_server(tmp_path, monkeypatch):
  base = str(tmp_path / "eta")
  publish_version(base, 1)
  run, release = SavedModelSession.run_outputs, threading.Event()

  def hangs(self, *args, **kwargs):
    release.wait(30)
    return run(self, *args, **kwargs)
  monkeypatch.setattr(SavedModelSession, "run_outputs", hangs)
  core = server_core.ServerCore(warmup_timeout_s=1.0)
  reload = threading.Thread(target=core.reload_config,
                            args=(server_core.single_model_config("eta", base),))
  reload.start()
  try:
    deadline = time.monotonic() + 20
    while core.state("eta", 1) != server_core.State.LOADING:
      assert time.monotonic() < deadline
      time.sleep(0.01)
    start = time.monotonic()
    core.poll_once()  # neither the poll nor the status waits for the hanging warmup
    status = core.model_status(_spec()).model_version_status
    assert time.monotonic() - start < 2.0  # the warmup hangs for 30 s
    assert [(s.version, s.state) for s in status] == [(1, server_core.State.LOADING)]
    reload.join(timeout=20)
    assert not reload.is_alive()
    (status,) = core.model_status(_spec()).model_version_status
    assert status.state == server_core.State.END
    assert status.status.error_code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert status.status.error_message == (
        "Loading servable: {name: eta version: 1} failed: Failed to warm up model: the "
        "warmup requests did not finish in 1 s (--warmup_timeout_seconds)")
  finally:
    release.set()
    monkeypatch.undo()
  publish_version(base, 2)
  core.poll_once()
  try:
    assert core.state("eta", 2) == server_core.State.AVAILABLE
  finally:
    core.unload_all()
