"""Thin gRPC client for the ETA models on TF Serving (or serving.local_server).

    client = ScoringClient("localhost:8500", "eta", version_label="stable")
    ctr = client.score(samples)                        # serving_default, [B] float32
    ctr = client.score_candidates(history, candidates) # score_candidates, [N] float32

Requests are built by `serving.warmup.build_predict_request` from the shared feature spec
(`eta_tf.features`): inputs are checked client-side (names, integer dtypes, ranks, matching
lengths) and a bad one raises `InputValidationError` naming the field. Every call has a
deadline (`timeout_s`, per attempt) and is retried with exponential backoff on UNAVAILABLE
and DEADLINE_EXCEEDED only (scoring is idempotent). Other failures raise a typed
`ScoringError` carrying the server's message: `InvalidArgumentError`, `NotFoundError`,
`UnknownVersionLabelError` (TF Serving reports unknown labels as INVALID_ARGUMENT),
`FailedPreconditionError` (unknown signature), and after the last retry
`UnavailableError` / `DeadlineExceededError`.

`score(..., with_version=True)` also returns which version answered (`ServedBy`, from
the response's model_spec), e.g. to check canary routing.

CLI (serving/client_cli.py): `python -m serving.client --server=HOST:PORT
--model_name=eta --input=req.json` (the JSON format is in --help).
"""
import dataclasses
import random
import runpy
import threading
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

if __name__ == "__main__":
  # `python -m serving.client` is the command line (serving.client_cli). It runs before the
  # imports below load TensorFlow, so that a usage error is reported at once; it is run,
  # not imported: the command line imports this library, never the reverse.
  runpy.run_module("serving.client_cli", run_name="__main__", alter_sys=True)

import numpy as np

from eta_tf import features
from serving import errors
from serving import inputs as inputs_lib
from serving import tls as tls_lib
from serving import warmup as warmup_lib
from serving.inputs import pad_history_rows  # noqa: F401  (public; also imported from here)
# The errors are defined in serving.errors; they are also imported from here by users
# (README, "Scoring client": `from serving.client import ScoringClient, NotFoundError`).
from serving.errors import (DeadlineExceededError, FailedPreconditionError,  # noqa: F401
                            InputValidationError, InvalidArgumentError, NotFoundError,
                            ResourceExhaustedError, ScoringError, UnavailableError,
                            UnknownVersionLabelError)

import grpc  # pylint: disable=g-import-not-at-top,wrong-import-order
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order
from tensorflow_serving.apis import get_model_metadata_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import get_model_status_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import model_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import model_service_pb2_grpc  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_MAX_MESSAGE_BYTES = (1 << 31) - 1


@dataclasses.dataclass(frozen=True)
class VersionStatus:
  version: int
  state: str  # START, LOADING, AVAILABLE, UNLOADING, END
  error_code: int
  error_message: str


@dataclasses.dataclass(frozen=True)
class ServedBy:
  """Which model version answered a request (the response's model_spec)."""
  model_name: str
  version: int
  signature_name: str


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
  model_name: str
  version: int
  signature_defs: Dict[str, object]  # name -> tensorflow.SignatureDef

  def input_specs(self, signature_name: str = features.SERVING_DEFAULT) -> Dict[str, tuple]:
    """{input name: (dtype name, shape with -1 for unknown dims)} of one signature."""
    return _tensor_specs(self.signature_defs[signature_name].inputs)

  def output_specs(self, signature_name: str = features.SERVING_DEFAULT) -> Dict[str, tuple]:
    return _tensor_specs(self.signature_defs[signature_name].outputs)


def _tensor_specs(infos) -> Dict[str, tuple]:
  return {name: (tf.dtypes.as_dtype(info.dtype).name,
                 None if info.tensor_shape.unknown_rank
                 else tuple(d.size for d in info.tensor_shape.dim))
          for name, info in infos.items()}


class ScoringClient:
  """Scores samples / candidates against one model (a version, a label, or latest)."""

  def __init__(self, target: str, model_name: str, version: Optional[int] = None,
               version_label: Optional[str] = None, tls: bool = False,
               root_certificates: Optional[bytes] = None, timeout_s: float = 1.0,
               max_retries: int = 3, backoff_s: float = 0.05, max_backoff_s: float = 2.0,
               history_width: Optional[int] = None, client_cert: Optional[bytes] = None,
               client_key: Optional[bytes] = None,
               metadata: Optional[Sequence[Tuple[str, str]]] = None):
    """`tls` / `root_certificates`: TLS (roots default to the system's); `client_cert` +
    `client_key` (PEM): mutual TLS; `metadata`: (key, value) pairs sent with every call,
    e.g. [("authorization", "Bearer <token>")] (keys lowercase, as gRPC requires)."""
    if version is not None and version_label:
      raise ValueError("give version or version_label, not both")
    self.metadata = tuple((str(k), str(v)) for k, v in (metadata or ()))
    self.target, self.model_name = target, model_name
    self.version = None if version is None else int(version)
    self.version_label = version_label or None
    self.timeout_s, self.max_retries = float(timeout_s), int(max_retries)
    self.backoff_s, self.max_backoff_s = float(backoff_s), float(max_backoff_s)
    self.history_width = history_width
    self._width_lock = threading.Lock()
    # Reconnect quickly after a server restart; our retry loop owns the backoff policy.
    options = [("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
               ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
               ("grpc.initial_reconnect_backoff_ms", 100),
               ("grpc.min_reconnect_backoff_ms", 100),
               ("grpc.max_reconnect_backoff_ms", 5000)]
    if tls or root_certificates or client_cert or client_key:
      credentials = tls_lib.channel_credentials(root_certificates, client_key, client_cert)
      self._channel = grpc.secure_channel(target, credentials, options=options)
    else:
      self._channel = grpc.insecure_channel(target, options=options)
    self._predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)

  # -- plumbing -------------------------------------------------------------------------------
  def close(self):
    self._channel.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def _call(self, method, request):
    """One RPC with a per-attempt deadline; retries UNAVAILABLE / DEADLINE_EXCEEDED only."""
    attempt = 0
    while True:
      try:
        return method(request, timeout=self.timeout_s, metadata=self.metadata or None)
      except grpc.RpcError as e:
        code = e.code() if callable(getattr(e, "code", None)) else grpc.StatusCode.UNKNOWN
        details = (e.details() if callable(getattr(e, "details", None)) else str(e)) or ""
        if code in RETRYABLE and attempt < self.max_retries:
          delay = min(self.max_backoff_s, self.backoff_s * (2 ** attempt))
          time.sleep(delay * (0.5 + random.random() / 2))  # jitter
          attempt += 1
          continue
        if code in RETRYABLE and attempt:
          details = f"{details} (after {attempt + 1} attempts)"
        raise errors.error_for_status(code.name, details) from e

  def _model_spec(self, spec, signature_name: Optional[str] = None):
    spec.name = self.model_name
    if signature_name:
      spec.signature_name = signature_name
    if self.version is not None:
      spec.version.value = self.version
    elif self.version_label:
      spec.version_label = self.version_label

  def predict(self, signature_name: str, inputs: Mapping[str, object],
              with_version: bool = False):
    """Any signature: validated inputs in, {output name: ndarray} out.

    with_version=True: returns ({output name: ndarray}, ServedBy) instead.
    """
    request = warmup_lib.build_predict_request(
        self.model_name, signature_name, inputs, self.version, self.version_label)
    response = self._call(self._predict_stub.Predict, request)
    outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    if not with_version:
      return outputs
    spec = response.model_spec
    return outputs, ServedBy(spec.name, spec.version.value, spec.signature_name)

  def _ctr(self, outputs, expected: int) -> np.ndarray:
    if features.OUTPUT_CTR not in outputs:
      raise ScoringError(f"response has no {features.OUTPUT_CTR!r} output (got "
                         f"{sorted(outputs)})")
    ctr = np.asarray(outputs[features.OUTPUT_CTR], np.float32).reshape(-1)
    if ctr.shape[0] != expected:
      raise ScoringError(f"expected {expected} scores, got {ctr.shape[0]}")
    return ctr

  # -- scoring ---------------------------------------------------------------------------------
  def _signature_width(self) -> Optional[int]:
    """The fixed history width of serving_default, from the model's metadata (cached)."""
    with self._width_lock:
      if self.history_width is None:
        shape = self.model_metadata().input_specs(features.SERVING_DEFAULT).get(
            features.HIST_ITEM_ID, ("", None))[1]
        self.history_width = (shape[1] if shape and len(shape) == 2 and shape[1] > 0
                              else 0)  # 0: any width
      return self.history_width or None

  def score(self, samples: Mapping[str, object], with_version: bool = False):
    """CTR of a batch of samples (serving_default) -> float32 [B].

    with_version=True: returns (ctr, ServedBy), the version that answered.

    `samples` maps every `features.MODEL_INPUTS` name to a batch: history features as
    [B, W] arrays or as B rows of any lengths (oldest first), target features as [B].
    Rows are left-padded with 0 / left-truncated (keeping the most recent behaviors) to
    the signature's history width, or to the longest row when the width is open.
    """
    samples = dict(samples)
    hist = [n for n in features.HISTORY_FEATURES if n in samples]
    if hist:
      width = self._signature_width()
      rows = {n: inputs_lib.pad_history_rows(samples[n], width, n) for n in hist}
      if width is None:  # pad every feature to the same (longest) width
        common = max(r.shape[1] for r in rows.values())
        rows = {n: inputs_lib.pad_history_rows(r, common, n) for n, r in rows.items()}
      samples.update(rows)
    batch = len(np.atleast_1d(np.asarray(samples.get(features.TARGET_ITEM_ID, []))))
    outputs, served_by = self.predict(features.SERVING_DEFAULT, samples, with_version=True)
    ctr = self._ctr(outputs, batch)
    return (ctr, served_by) if with_version else ctr

  def score_candidates(self, history: Mapping[str, object],
                       candidates: Mapping[str, object], with_version: bool = False):
    """CTR of N candidates for one user (score_candidates) -> float32 [N].

    with_version=True: returns (ctr, ServedBy); ServedBy is None for N = 0 (no call made).

    `history`: the HIST_* features as 1-D arrays of one length (oldest first).
    `candidates`: CANDIDATE_ITEM_ID and CANDIDATE_CATEGORY_ID ([N]) and REQUEST_TIMESTAMP
    (a scalar).
    """
    inputs = dict(history)
    for name in candidates:
      if name in inputs:
        raise InputValidationError(name, "given both in history and in candidates")
    inputs.update(candidates)
    n = np.asarray(inputs.get(features.CANDIDATE_ITEM_ID, []))
    if n.ndim == 1 and n.size == 0:
      inputs_lib.validate_inputs(features.SCORE_CANDIDATES, inputs)
      empty = np.zeros((0,), np.float32)
      return (empty, None) if with_version else empty
    outputs, served_by = self.predict(features.SCORE_CANDIDATES, inputs, with_version=True)
    ctr = self._ctr(outputs, n.size)
    return (ctr, served_by) if with_version else ctr

  # -- model / version information --------------------------------------------------------------
  def model_metadata(self) -> ModelMetadata:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    self._model_spec(request.model_spec)
    response = self._call(self._predict_stub.GetModelMetadata, request)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    return ModelMetadata(response.model_spec.name, response.model_spec.version.value,
                         dict(signature_map.signature_def))

  def model_status(self) -> List[VersionStatus]:
    """Every version the server knows of this model (a version_label is not applied)."""
    request = get_model_status_pb2.GetModelStatusRequest(
        model_spec=model_pb2.ModelSpec(name=self.model_name))
    if self.version is not None:
      request.model_spec.version.value = self.version
    response = self._call(self._model_stub.GetModelStatus, request)
    state_name = get_model_status_pb2.ModelVersionStatus.State.Name
    return sorted((VersionStatus(s.version, state_name(s.state), int(s.status.error_code),
                                 s.status.error_message)
                   for s in response.model_version_status), key=lambda s: s.version)

