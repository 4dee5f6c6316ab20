"""The local server object: gRPC server, version polling and config polling threads.

    with LocalServer(model_name="eta", model_base_path=base, port=0) as server:
      ScoringClient(f"localhost:{server.port}", "eta").score(samples)

`LocalServer` wires a `ServerCore` (versions, labels) to the gRPC services and runs two
background loops: the file-system poll (new versions) and, with a models.config, the
config-file poll (TF Serving's --model_config_file_poll_wait_seconds).
"""
import concurrent.futures
import logging
import threading
import time
from typing import Optional

from serving import grpc_services
from serving.model_config_file import ModelConfigError, parse_config
from serving import tfs_protos
from serving import tls
from serving import version_loader
from serving.predict import (DEFAULT_MAX_CANDIDATES, DEFAULT_MAX_HISTORY,
                             DEFAULT_MAX_REQUEST_ELEMENTS, RequestLimits)
from serving.server_core import ServerCore, State, single_model_config
from serving.server_status import ServingError

import grpc  # pylint: disable=g-import-not-at-top,wrong-import-order
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order

log = logging.getLogger("serving.local_server")

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20  # TF Serving allows ~2 GiB; we keep memory bounded
DEFAULT_MAX_CONCURRENT_RPCS = 64


class LocalServer:
  """The local TF-Serving-compatible server; start()/stop(), or use it as a context manager.

  Give `model_config_file` (a models.config) or `model_name` + `model_base_path` (the
  latest version, no labels). `port=0` picks a free port (read `.port` after start()).
  Poll intervals <= 0 poll once. The keyword arguments are the CLI's flags (see
  `python -m serving.local_server --help`).
  """

  def __init__(self, model_config_file: Optional[str] = None,
               model_name: Optional[str] = None, model_base_path: Optional[str] = None,
               port: int = 8500, host: str = "127.0.0.1",
               file_system_poll_wait_seconds: float = 1.0,
               model_config_file_poll_wait_seconds: float = 0.0,
               max_candidates: int = DEFAULT_MAX_CANDIDATES,
               max_request_elements: int = DEFAULT_MAX_REQUEST_ELEMENTS,
               allow_version_labels_for_unavailable_models: bool = False,
               enable_batching: bool = False, batching_parameters_file: Optional[str] = None,
               enable_per_model_batching_parameters: bool = False,
               enable_model_warmup: bool = True, grpc_max_threads: int = 16,
               tensorflow_intra_op_parallelism: int = 0,
               tensorflow_inter_op_parallelism: int = 0,
               ssl_config_file: Optional[str] = None,
               max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
               max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS,
               max_history: int = DEFAULT_MAX_HISTORY,
               warmup_timeout_seconds: float = version_loader.DEFAULT_WARMUP_TIMEOUT_S,
               enable_reload_config_rpc: bool = True,
               model_base_path_root: Optional[str] = None):
    if not model_config_file and not (model_name and model_base_path):
      raise ValueError("give model_config_file, or model_name and model_base_path")
    self.model_config_file = model_config_file
    self._initial_config = (None if model_config_file
                            else single_model_config(model_name, model_base_path))
    self._requested_port, self.host = int(port), host
    self.port: Optional[int] = None
    self.fs_poll_s = float(file_system_poll_wait_seconds)
    self.config_poll_s = float(model_config_file_poll_wait_seconds)
    batching = None
    if enable_batching:
      batching = (tfs_protos.parse_text(batching_parameters_file, tfs_protos.BatchingParameters)
                  if batching_parameters_file else tfs_protos.BatchingParameters())
    self.limits = RequestLimits(max_candidates, max_request_elements, max_history)
    self.grpc_max_threads = grpc_max_threads
    self.ssl_config = tls.read_ssl_config(ssl_config_file) if ssl_config_file else None
    self.max_message_bytes = int(max_message_bytes)
    self.max_concurrent_rpcs = int(max_concurrent_rpcs) or None
    self.enable_reload_config_rpc = enable_reload_config_rpc
    session_config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=tensorflow_intra_op_parallelism,
        inter_op_parallelism_threads=tensorflow_inter_op_parallelism)
    self.core = ServerCore(allow_version_labels_for_unavailable_models, enable_model_warmup,
                           session_config, batching, enable_per_model_batching_parameters,
                           warmup_timeout_seconds, model_base_path_root)
    self._server = None
    self._stop = threading.Event()
    self._threads = []
    self._config_text = None

  def _read_config_file(self):
    with open(self.model_config_file, encoding="utf-8") as f:
      text = f.read()
    return text, parse_config(text)

  def start(self) -> "LocalServer":
    if self.model_config_file:
      self._config_text, config = self._read_config_file()
    else:
      config = self._initial_config
    self.core.reload_config(config)
    try:
      self._start_grpc()
    except BaseException:
      self.core.unload_all()
      raise
    if self.fs_poll_s > 0:
      self._spawn(self.fs_poll_s, self.core.poll_once, "fs-poll")
    if self.model_config_file and self.config_poll_s > 0:
      self._spawn(self.config_poll_s, self._poll_config, "config-poll")
    log.info("Running gRPC ModelServer at %s:%d ...", self.host, self.port)
    return self

  def _start_grpc(self):
    # A request over max_message_bytes, or one past max_concurrent_rpcs RPCs in flight
    # (queued ones included), is refused by gRPC itself with RESOURCE_EXHAUSTED.
    options = [("grpc.max_receive_message_length", self.max_message_bytes),
               ("grpc.max_send_message_length", self.max_message_bytes),
               ("grpc.so_reuseport", 0)]
    self._server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=self.grpc_max_threads,
                                              thread_name_prefix="local-serving"),
        options=options, maximum_concurrent_rpcs=self.max_concurrent_rpcs)
    grpc_services.add_services(self._server, self.core, self.limits,
                               self.enable_reload_config_rpc)
    address = f"{self.host}:{self._requested_port}"
    if self.ssl_config is not None:
      self.port = self._server.add_secure_port(address,
                                               tls.server_credentials(self.ssl_config))
    else:
      self.port = self._server.add_insecure_port(address)
    if not self.port:
      raise OSError(f"could not bind {self.host}:{self._requested_port}")
    self._server.start()

  def _spawn(self, interval, fn, name):
    def loop():
      while not self._stop.wait(interval):
        try:
          fn()
        except Exception:  # pylint: disable=broad-except
          log.exception("%s failed", name)
    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    self._threads.append(thread)

  def _poll_config(self):
    try:
      text, config = self._read_config_file()
    except (OSError, ModelConfigError) as e:
      log.error("cannot read %s: %s", self.model_config_file, e)
      return
    if text == self._config_text:
      return
    self._config_text = text
    try:
      self.core.reload_config(config)
      log.info("Reloaded %s", self.model_config_file)
    except ServingError as e:
      log.error("Rejected new config %s: %s", self.model_config_file, e.message)

  def stop(self, grace_s: float = 1.0) -> None:
    self._stop.set()
    if self._server is not None:
      self._server.stop(grace_s).wait()
      self._server = None
    for thread in self._threads:
      thread.join(timeout=30)
    self._threads = []
    self.core.unload_all()

  def wait_for_state(self, model_name: str, version: int, state=State.AVAILABLE,
                     timeout_s: float = 30.0) -> None:
    """Blocks until `version` of `model_name` reaches `state` (TimeoutError otherwise)."""
    deadline = time.monotonic() + timeout_s
    while self.core.state(model_name, version) != state:
      if time.monotonic() > deadline:
        raise TimeoutError(f"{model_name} version {version} did not reach state "
                           f"{State.Name(state)} in {timeout_s}s (now "
                           f"{self.core.state(model_name, version)})")
      time.sleep(0.02)

  def __enter__(self):
    return self.start()

  def __exit__(self, *exc):
    self.stop()
