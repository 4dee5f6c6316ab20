"""A local, TF-Serving-compatible gRPC model server for development and tests.

This is NOT a replacement for TensorFlow Serving: it is a small Python server that speaks
the same gRPC API and copies the behaviour our client, exporter and rollout procedure rely
on, so that they can be tested on a machine without Docker or the tensorflow_model_server
binary. Production serves with the tensorflow/serving image (docker/).

What it implements, after TF Serving:

* PredictionService.Predict and .GetModelMetadata (the `signature_def` field, as a packed
  SignatureDefMap), ModelService.GetModelStatus and .HandleReloadConfigRequest.
* Loading: each version goes through the TF1 session loader
  (`tf.compat.v1.saved_model.loader.load` into its own Graph and Session), as TF Serving's
  C++ SavedModelBundle loader does, so signatures run exactly as the C++ server runs them.
* Version discovery: polls every model's base path each --file_system_poll_wait_seconds;
  only directories with an integer name and a saved_model.pb count, so half-written
  `.tmp-*` directories are never loaded. Version policy from models.config: latest N
  (default 1), all, or specific versions. A version that fails to load or to warm up goes
  to END with its error and is not retried.
* Warmup: `assets.extra/tf_serving_warmup_requests` (at most 1000 PredictionLogs) is
  replayed before a version becomes AVAILABLE; a failing replay fails the load.
* Availability preserving: versions that leave the policy are unloaded only once the
  policy's new versions are AVAILABLE, and only after their in-flight requests finish.
  Requests for "latest" go to the highest AVAILABLE version, so a switch fails no request.
* Version labels from models.config, with TF Serving's rule: a label may only point at an
  AVAILABLE version, except that --allow_version_labels_for_unavailable_models allows a
  *new* label (not a moved one) to point at a version that is not loaded yet. A config
  that breaks the rule is rejected whole and the previous config stays in force.
* Status codes and messages as TF Serving's: NOT_FOUND "Servable not found for request:
  Latest(m)" / "Specific(m, v)" for unknown models and versions; INVALID_ARGUMENT
  "Unrecognized servable version label: x" for unknown labels (TF Serving's code, not
  NOT_FOUND); FAILED_PRECONDITION 'Serving signature key "x" not found.' for unknown
  signatures (TF Serving's code); INVALID_ARGUMENT for missing, extra, mistyped or
  misshapen inputs.

Additions of its own: --max_candidates rejects (INVALID_ARGUMENT) requests with more rows
/ candidates than configured, and a per-request element cap rejects tensors that would
not fit in memory, so a bad request never takes the server down. With --enable_batching
(and --enable_per_model_batching_parameters: only versions shipping batching_params.pbtxt)
it applies TF Serving's batching preconditions to those versions' requests and warmup
(every input at least 1-D with one shared 0th dimension; at most max_batch_size rows)
without batching anything, so tests see what the batching server would refuse.

    python -m serving.local_server --port=8500 --model_config_file=models.config
    python -m serving.local_server --port=8500 --model_name=eta --model_base_path=/abs/eta

    with LocalServer(model_name="eta", model_base_path=base, port=0) as server:
      ScoringClient(f"localhost:{server.port}", "eta").score(samples)
"""
import argparse
import concurrent.futures
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import Dict, Optional, Sequence

import numpy as np

from eta_tf import features
from serving import model_config as model_config_lib
from serving import publish as publish_lib
from serving import tfs_protos
from serving import warmup as warmup_lib

import grpc  # pylint: disable=g-import-not-at-top,wrong-import-order
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order
from tensorflow_serving.apis import get_model_metadata_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import get_model_status_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import model_management_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import model_service_pb2_grpc  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import status_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.config import model_server_config_pb2  # pylint: disable=g-import-not-at-top

log = logging.getLogger("serving.local_server")

State = get_model_status_pb2.ModelVersionStatus.State
SIGNATURE_DEF_FIELD = "signature_def"
PER_MODEL_BATCHING_FILE = "batching_params.pbtxt"
DEFAULT_MAX_CANDIDATES = 10_000
DEFAULT_MAX_REQUEST_ELEMENTS = 1 << 26  # int64 elements of all inputs: 512 MiB
_INT32_MAX = (1 << 31) - 1  # TF Serving's gRPC message size limit
_CODES = {c.value[0]: c for c in grpc.StatusCode}
# TF Serving answers with AsProtoField: typed repeated fields, not tensor_content.
_PROTO_FIELDS = {"float32": "float_val", "float64": "double_val", "int32": "int_val",
                 "int16": "int_val", "int8": "int_val", "uint8": "int_val",
                 "int64": "int64_val", "bool": "bool_val"}


class ServingError(Exception):
  """A request fails with a gRPC status code and a TF-Serving-style message."""

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code = code
    self.message = message


def _invalid(message):
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _status_proto(code: grpc.StatusCode = grpc.StatusCode.OK, message: str = ""):
  return status_pb2.StatusProto(error_code=code.value[0], error_message=message)


def _dtype_name(enum: int) -> str:
  try:
    return tf.dtypes.as_dtype(enum).name
  except TypeError:
    return f"dtype {enum}"


def _as_proto_field(value):
  array = np.asarray(value)
  proto = tf.make_tensor_proto(array)
  field = _PROTO_FIELDS.get(array.dtype.name)
  if field is not None:
    proto.ClearField("tensor_content")
    proto.ClearField(field)  # make_tensor_proto fills it itself for 1-element arrays
    getattr(proto, field).extend(array.ravel().tolist())
  return proto


# --- one loaded version -------------------------------------------------------------------
class Servable:
  """One model version loaded into its own Graph and tf.compat.v1.Session."""

  def __init__(self, name: str, version: int, path: str, session_config=None):
    self.name, self.version, self.path = name, int(version), path
    self.graph = tf.Graph()
    self.session = tf.compat.v1.Session(graph=self.graph, config=session_config)
    try:
      with self.graph.as_default():
        self.meta_graph_def = tf.compat.v1.saved_model.loader.load(
            self.session, [tf.compat.v1.saved_model.tag_constants.SERVING], path)
    except Exception:
      self.session.close()
      raise
    self.signatures = dict(self.meta_graph_def.signature_def)
    self.batching = None  # BatchingParameters when requests go through TF's batcher
    self._inflight = 0
    self._cv = threading.Condition()

  def acquire(self):
    with self._cv:
      self._inflight += 1

  def release(self):
    with self._cv:
      self._inflight -= 1
      self._cv.notify_all()

  def close(self, drain_timeout_s: float = 30.0):
    """Waits (bounded) for in-flight requests, then closes the session."""
    with self._cv:
      self._cv.wait_for(lambda: self._inflight == 0, timeout=drain_timeout_s)
    self.session.close()


class _Model:
  def __init__(self, config: model_server_config_pb2.ModelConfig):
    self.config = config
    self.available: Dict[int, Servable] = {}
    self.failed: Dict[int, str] = {}
    self.labels: Dict[str, int] = {}

  @property
  def name(self):
    return self.config.name


# --- request processing (TF Serving's predict_util / get_model_metadata_impl) -----------
def _tensor_shape(proto) -> list:
  return [d.size for d in proto.tensor_shape.dim]


def _check_batching(shapes: Dict[str, list], max_batch_size: Optional[int]):
  """BatchingSession's preconditions (ComputeTensorBatchSize, max batch size)."""
  sizes = set()
  for shape in shapes.values():
    if not shape:
      raise _invalid("Batching Run() input tensors must have at least one dimension")
    sizes.add(shape[0])
  if len(sizes) > 1:
    raise _invalid("Batching Run() input tensors must have equal 0th-dimension size")
  if max_batch_size and sizes and max(sizes) > max_batch_size:
    raise _invalid(f"Task size {max(sizes)} is larger than maximum batch size "
                   f"{max_batch_size}")


def _request_rows(signature_name: str, shapes: Dict[str, list]) -> int:
  """Candidates of a score_candidates request, rows (samples) of any other request."""
  candidate_inputs = (features.CANDIDATE_ITEM_ID, features.CANDIDATE_CATEGORY_ID)
  if signature_name == features.SCORE_CANDIDATES or any(n in shapes for n in candidate_inputs):
    return max([shapes[n][0] for n in candidate_inputs if shapes.get(n)] or [0])
  return max([s[0] for s in shapes.values() if s] or [0])


class _Limits:
  def __init__(self, max_candidates=0, max_request_elements=DEFAULT_MAX_REQUEST_ELEMENTS):
    self.max_candidates = max_candidates
    self.max_request_elements = max_request_elements


def run_predict(servable: Servable, request: predict_pb2.PredictRequest,
                limits: Optional[_Limits] = None,
                timeout_s: Optional[float] = None) -> predict_pb2.PredictResponse:
  """Runs one PredictRequest on `servable` with TF Serving's validation and messages."""
  signature_name = request.model_spec.signature_name or features.SERVING_DEFAULT
  signature = servable.signatures.get(signature_name)
  if signature is None:
    raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                       f'Serving signature key "{signature_name}" not found.')
  sent, wanted = set(request.inputs), set(signature.inputs)
  if len(sent) > len(wanted) or (len(sent) < len(wanted) and not signature.defaults):
    raise _invalid(
        f"input size does not match signature: {len(sent)}!={len(wanted)} "
        f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
        f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
        f"Missing but required: {{{','.join(sorted(wanted - sent))}}}.")
  for alias in sorted(sent):
    if alias not in wanted:
      raise _invalid(f"input tensor alias not found in signature: {alias}. Inputs expected "
                     f"to be in the set {{{','.join(sorted(wanted))}}}.")
  shapes = {}
  for i, alias in enumerate(sorted(sent)):
    info, proto = signature.inputs[alias], request.inputs[alias]
    if proto.dtype != info.dtype:
      raise _invalid(f"Expects arg[{i}] to be {_dtype_name(info.dtype)} but "
                     f"{_dtype_name(proto.dtype)} is provided (input {alias})")
    shape = _tensor_shape(proto)
    if any(d < 0 for d in shape):
      raise _invalid(f"input {alias}: negative dimension in shape {shape}")
    if not info.tensor_shape.unknown_rank:
      expected = [d.size for d in info.tensor_shape.dim]
      if len(expected) != len(shape) or any(e >= 0 and e != s for e, s in zip(expected, shape)):
        raise _invalid(f"input {alias}: shape {shape} is not compatible with the "
                       f"signature's shape {expected} (-1 = any)")
    shapes[alias] = shape
  limits = limits or _Limits()
  elements = sum(int(np.prod(s, dtype=np.float64)) for s in shapes.values())
  if limits.max_request_elements and elements > limits.max_request_elements:
    raise _invalid(f"request has {elements} input elements, more than the server's limit "
                   f"of {limits.max_request_elements}")
  if limits.max_candidates:
    rows = _request_rows(signature_name, shapes)
    if rows > limits.max_candidates:
      raise _invalid(f"request has {rows} candidates (rows), more than "
                     f"--max_candidates={limits.max_candidates}")
  if servable.batching is not None:
    _check_batching(shapes, servable.batching.max_batch_size.value
                    if servable.batching.HasField("max_batch_size") else None)
  feeds = {}
  for alias in sorted(sent):
    try:
      feeds[signature.inputs[alias].name] = tf.make_ndarray(request.inputs[alias])
    except Exception as e:  # pylint: disable=broad-except
      raise _invalid(f"input {alias}: cannot parse the TensorProto: {e}") from e

  aliases = list(request.output_filter) or sorted(signature.outputs)
  seen = set()
  for alias in aliases:
    if alias not in signature.outputs:
      raise _invalid(f"output tensor alias not found in signature: {alias} Outputs expected "
                     f"to be in the set {{{','.join(sorted(signature.outputs))}}}.")
    if alias in seen:
      raise _invalid(f"duplicate output tensor alias: {alias}")
    seen.add(alias)
  fetches = [signature.outputs[a].name for a in aliases]
  options = None
  if timeout_s is not None:
    options = tf.compat.v1.RunOptions(timeout_in_ms=max(1, int(timeout_s * 1000)))
  try:
    values = servable.session.run(fetches, feed_dict=feeds, options=options)
  except tf.errors.OpError as e:
    raise ServingError(_CODES.get(e.error_code, grpc.StatusCode.UNKNOWN), e.message) from e
  except (ValueError, TypeError) as e:
    raise _invalid(str(e)) from e
  response = predict_pb2.PredictResponse()
  response.model_spec.name = servable.name
  response.model_spec.version.value = servable.version
  response.model_spec.signature_name = signature_name
  for alias, value in zip(aliases, values):
    response.outputs[alias].CopyFrom(_as_proto_field(value))
  return response


def replay_warmup(servable: Servable) -> int:
  """Replays the version's warmup file (if any); returns the number of requests run."""
  path = warmup_lib.warmup_file(servable.path)
  if not os.path.exists(path):
    return 0
  logs = warmup_lib.read_warmup_logs(path)
  if len(logs) > warmup_lib.MAX_WARMUP_RECORDS:
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"Number of warmup records exceeds the maximum "
                       f"({warmup_lib.MAX_WARMUP_RECORDS}) at {path}")
  for i, record in enumerate(logs):
    if record.WhichOneof("log_type") != "predict_log":
      raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                         f"warmup record {i}: only predict_log is supported here")
    try:
      run_predict(servable, record.predict_log.request)
    except ServingError as e:
      raise ServingError(e.code, f"Failed to warm up model: warmup record {i}: "
                                 f"{e.message}") from e
  return len(logs)


# --- the model manager --------------------------------------------------------------------
class ServerCore:
  """Models, versions, labels and their states; thread-safe."""

  def __init__(self, allow_version_labels_for_unavailable_models: bool = False,
               enable_model_warmup: bool = True, session_config=None, batching=None,
               per_model_batching: bool = False):
    self.allow_unavailable_labels = allow_version_labels_for_unavailable_models
    self.enable_model_warmup = enable_model_warmup
    self.session_config = session_config
    self.batching = batching  # global BatchingParameters (--enable_batching) or None
    self.per_model_batching = per_model_batching
    self._models: Dict[str, _Model] = {}
    self._states: Dict[str, Dict[int, tuple]] = {}  # name -> version -> (State, StatusProto)
    self._lock = threading.RLock()  # models, available maps, labels, states
    self._sync_lock = threading.RLock()  # one config reload / version sync at a time
    self.config = model_server_config_pb2.ModelServerConfig()

  # -- config ------------------------------------------------------------------------------
  def reload_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
    """Applies a new ModelServerConfig, or raises ServingError and keeps the old one."""
    with self._sync_lock:
      if config.WhichOneof("config") not in (None, "model_config_list"):
        raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                           "only model_config_list configs are supported")
      try:
        model_config_lib.validate_config(config)
      except model_config_lib.ModelConfigError as e:
        raise _invalid(str(e)) from e
      for m in config.model_config_list.config:
        if m.model_platform not in ("", model_config_lib.TENSORFLOW_PLATFORM):
          raise _invalid(f"Model {m.name} requests unsupported platform {m.model_platform}")
        if not os.path.isabs(m.base_path):
          raise _invalid(f"Expected model {m.name} to have an absolute path or URI; got "
                         f"base_path()={m.base_path}")
      new_labels = self._check_labels(config)
      with self._lock:
        names = {m.name for m in config.model_config_list.config}
        removed = [self._models[n] for n in self._models if n not in names]
        for m in config.model_config_list.config:
          model = self._models.get(m.name)
          if model is None:
            model = self._models[m.name] = _Model(m)
            self._states.setdefault(m.name, {})
          model.config = m
          model.labels = new_labels.get(m.name, {})
        for model in removed:
          del self._models[model.name]
        self.config = config
      for model in removed:
        for version in sorted(model.available):
          self._unload(model, version)
      self.poll_once()

  def _check_labels(self, config) -> Dict[str, Dict[str, int]]:
    """TF Serving's UpdateModelVersionLabelMap rule; returns the new label map."""
    labels = {}
    with self._lock:
      for m in config.model_config_list.config:
        model = self._models.get(m.name)
        current = model.labels if model else {}
        available = set(model.available) if model else set()
        for label, version in m.version_labels.items():
          moved = label in current and current[label] != version
          if version not in available and (moved or not self.allow_unavailable_labels):
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Request to assign label to version {version} of model {m.name}, which is "
                "not currently available for inference")
          labels.setdefault(m.name, {})[label] = int(version)
    return labels

  # -- versions ----------------------------------------------------------------------------
  def poll_once(self) -> None:
    """One pass of the file-system source: load new versions, unload retired ones."""
    with self._sync_lock:
      with self._lock:
        models = list(self._models.values())
      for model in models:
        self._sync_model(model)

  def _sync_model(self, model: _Model) -> None:
    on_disk = publish_lib.list_versions(model.config.base_path, complete_only=True)
    aspired = model_config_lib.policy_versions(model.config.model_version_policy, on_disk)
    for version in list(model.failed):
      if version not in on_disk:
        del model.failed[version]
    for version in aspired:
      if version not in model.available and version not in model.failed:
        self._load(model, version)
    retired = [v for v in model.available if v not in aspired]
    if retired and (not aspired or any(v in model.available for v in aspired)):
      for version in sorted(retired):
        self._unload(model, version)

  def _set_state(self, name, version, state, status=None):
    with self._lock:
      self._states.setdefault(name, {})[version] = (state, status or _status_proto())

  def _load(self, model: _Model, version: int) -> None:
    path = os.path.join(model.config.base_path, str(version))
    self._set_state(model.name, version, State.LOADING)
    log.info("Loading servable: {name: %s version: %d} from %s", model.name, version, path)
    servable = None
    try:
      servable = Servable(model.name, version, path, self.session_config)
      servable.batching = self._batching_for(path)
      if self.enable_model_warmup:
        count = replay_warmup(servable)
        log.info("Finished warming up %s version %d with %d requests", model.name, version,
                 count)
    except Exception as e:  # pylint: disable=broad-except
      code = e.code if isinstance(e, ServingError) else grpc.StatusCode.UNKNOWN
      message = f"Loading servable: {{name: {model.name} version: {version}}} failed: {e}"
      log.error(message)
      if servable is not None:
        servable.close(0)
      model.failed[version] = message
      self._set_state(model.name, version, State.END, _status_proto(code, message))
      return
    with self._lock:
      model.available[version] = servable
      self._states[model.name][version] = (State.AVAILABLE, _status_proto())
    log.info("Successfully loaded servable version {name: %s version: %d}", model.name,
             version)

  def _batching_for(self, path: str):
    """TF Serving's GetPerModelBatchingParams: which params batch this version, if any."""
    if self.batching is None:
      return None
    if not self.per_model_batching:
      return self.batching
    per_model = os.path.join(path, PER_MODEL_BATCHING_FILE)
    if not os.path.exists(per_model):
      return None
    return tfs_protos.parse_text(per_model, tfs_protos.BatchingParameters)

  def _unload(self, model: _Model, version: int) -> None:
    with self._lock:
      servable = model.available.pop(version, None)
      if servable is None:
        return
      self._states[model.name][version] = (State.UNLOADING, _status_proto())
    servable.close()
    self._set_state(model.name, version, State.END)
    log.info("Unloaded servable version {name: %s version: %d}", model.name, version)

  def unload_all(self) -> None:
    with self._sync_lock:
      with self._lock:
        models = list(self._models.values())
      for model in models:
        for version in sorted(model.available):
          self._unload(model, version)

  # -- requests ----------------------------------------------------------------------------
  @contextlib.contextmanager
  def servable(self, model_spec):
    """Resolves a ModelSpec (version, label or latest) to a held Servable."""
    name = model_spec.name
    if not name:
      raise _invalid("ModelSpec has no name specified.")
    with self._lock:
      model = self._models.get(name)
      choice = model_spec.WhichOneof("version_choice")
      version = None
      if choice == "version_label":
        label = model_spec.version_label
        if model is None or label not in model.labels:
          raise _invalid(f"Unrecognized servable version label: {label}")
        version = model.labels[label]
      elif choice == "version":
        version = model_spec.version.value
      request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
      if model is not None and version is None and model.available:
        version = max(model.available)
      servable = model.available.get(version) if model is not None else None
      if servable is None:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"Servable not found for request: {request}")
      servable.acquire()
    try:
      yield servable
    finally:
      servable.release()

  def model_status(self, model_spec) -> get_model_status_pb2.GetModelStatusResponse:
    name = model_spec.name
    with self._lock:
      states = dict(self._states.get(name, {}))
    response = get_model_status_pb2.GetModelStatusResponse()
    if model_spec.HasField("version"):
      version = model_spec.version.value
      if version not in states:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"Could not find version {version} of model {name}")
      versions = [version]
    else:
      if not states:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"Could not find any versions of model {name}")
      versions = sorted(states)
    for version in versions:
      state, status = states[version]
      response.model_version_status.add(version=version, state=state, status=status)
    return response

  def state(self, name: str, version: int):
    with self._lock:
      entry = self._states.get(name, {}).get(version)
    return entry[0] if entry else None


# --- gRPC servicers -------------------------------------------------------------------------
def _abort_on_error(method):
  def wrapper(self, request, context):
    try:
      return method(self, request, context)
    except ServingError as e:
      context.abort(e.code, e.message)
    except Exception as e:  # pylint: disable=broad-except
      log.exception("internal error in %s", method.__name__)
      context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
  wrapper.__name__ = method.__name__
  return wrapper


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, core: ServerCore, limits: _Limits):
    self.core, self.limits = core, limits

  @_abort_on_error
  def Predict(self, request, context):
    if not request.HasField("model_spec"):
      raise _invalid("Missing ModelSpec")
    with self.core.servable(request.model_spec) as servable:
      return run_predict(servable, request, self.limits, context.time_remaining())

  @_abort_on_error
  def GetModelMetadata(self, request, context):
    if not request.HasField("model_spec"):
      raise _invalid("Missing ModelSpec")
    if not request.metadata_field:
      raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
      if field != SIGNATURE_DEF_FIELD:
        raise _invalid(f"Metadata field {field} is not supported")
    with self.core.servable(request.model_spec) as servable:
      response = get_model_metadata_pb2.GetModelMetadataResponse()
      response.model_spec.name = servable.name
      response.model_spec.version.value = servable.version
      signature_map = get_model_metadata_pb2.SignatureDefMap()
      for key, signature in servable.signatures.items():
        signature_map.signature_def[key].CopyFrom(signature)
      response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
      return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):

  def __init__(self, core: ServerCore):
    self.core = core

  @_abort_on_error
  def GetModelStatus(self, request, context):
    if not request.HasField("model_spec"):
      raise _invalid("Missing ModelSpec")
    return self.core.model_status(request.model_spec)

  @_abort_on_error
  def HandleReloadConfigRequest(self, request, context):
    self.core.reload_config(request.config)
    return model_management_pb2.ReloadConfigResponse(status=_status_proto())


# --- the server -------------------------------------------------------------------------------
def single_model_config(model_name: str, model_base_path: str):
  config = model_server_config_pb2.ModelServerConfig()
  config.model_config_list.config.append(model_config_lib.make_model_config(
      model_name, os.path.abspath(model_base_path)))
  return config


class LocalServer:
  """The local TF-Serving-compatible server; start()/stop(), or use it as a context manager.

  Give `model_config_file` (a models.config) or `model_name` + `model_base_path`.
  `port=0` picks a free port (read `.port` after start()). Poll intervals <= 0 poll once.
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
               tensorflow_inter_op_parallelism: int = 0):
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
    self.limits = _Limits(max_candidates, max_request_elements)
    self.grpc_max_threads = grpc_max_threads
    session_config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=tensorflow_intra_op_parallelism,
        inter_op_parallelism_threads=tensorflow_inter_op_parallelism)
    self.core = ServerCore(allow_version_labels_for_unavailable_models, enable_model_warmup,
                           session_config, batching, enable_per_model_batching_parameters)
    self._server = None
    self._stop = threading.Event()
    self._threads = []
    self._config_text = None

  def _read_config_file(self):
    with open(self.model_config_file, encoding="utf-8") as f:
      text = f.read()
    return text, model_config_lib.parse_config(text)

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
    options = [("grpc.max_receive_message_length", _INT32_MAX),
               ("grpc.max_send_message_length", _INT32_MAX),
               ("grpc.so_reuseport", 0)]
    self._server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=self.grpc_max_threads,
                                              thread_name_prefix="local-serving"),
        options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(self.core, self.limits), self._server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self.core),
                                                              self._server)
    self.port = self._server.add_insecure_port(f"{self.host}:{self._requested_port}")
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
    except (OSError, model_config_lib.ModelConfigError) as e:
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


# --- CLI ------------------------------------------------------------------------------------
def _bool(text):
  if isinstance(text, bool):
    return text
  if text.lower() in ("1", "true", "yes"):
    return True
  if text.lower() in ("0", "false", "no"):
    return False
  raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m serving.local_server",
      description="Local TF-Serving-compatible gRPC server (PredictionService.Predict/"
                  "GetModelMetadata, ModelService.GetModelStatus/HandleReloadConfigRequest) "
                  "for development and tests. Not a replacement for TensorFlow Serving.",
      epilog="Flags are named as tensorflow_model_server's. Boolean flags take "
             "--flag or --flag=true/false.")
  flag = parser.add_argument
  flag("--port", type=int, default=8500, help="gRPC port; 0 picks a free one (default: 8500)")
  flag("--host", default="0.0.0.0", help="address to bind (default: %(default)s)")
  flag("--model_config_file", default=None,
       help="models.config (ModelServerConfig text proto); overrides --model_name/base_path")
  flag("--model_config_file_poll_wait_seconds", type=float, default=0.0,
       help="re-read --model_config_file every N seconds; 0 = read once (default: 0)")
  flag("--model_name", default="default", help="model name (default: %(default)s)")
  flag("--model_base_path", default=None, help="absolute path holding <version>/ dirs")
  flag("--file_system_poll_wait_seconds", type=float, default=1.0,
       help="poll the base paths for new versions every N seconds; 0 = once (default: 1)")
  flag("--max_candidates", type=int, default=DEFAULT_MAX_CANDIDATES,
       help="reject requests with more candidates / rows (INVALID_ARGUMENT); 0 = no limit "
            "(default: %(default)s)")
  flag("--max_request_elements", type=int, default=DEFAULT_MAX_REQUEST_ELEMENTS,
       help="reject requests whose inputs hold more elements (default: %(default)s)")
  flag("--allow_version_labels_for_unavailable_models", type=_bool, nargs="?", const=True,
       default=False, help="allow new labels on versions not loaded yet (default: false)")
  flag("--enable_batching", type=_bool, nargs="?", const=True, default=False,
       help="enforce TF Serving's batching preconditions on requests (default: false)")
  flag("--batching_parameters_file", default=None,
       help="BatchingParameters text proto (max_batch_size is enforced)")
  flag("--enable_per_model_batching_parameters", type=_bool, nargs="?", const=True,
       default=False, help="batch only versions that ship batching_params.pbtxt, with "
                           "those params (default: false)")
  flag("--enable_model_warmup", type=_bool, nargs="?", const=True, default=True,
       help="replay assets.extra/tf_serving_warmup_requests before serving (default: true)")
  flag("--grpc_max_threads", type=int, default=16, help="gRPC worker threads (default: 16)")
  flag("--tensorflow_intra_op_parallelism", type=int, default=0, help="0 = auto")
  flag("--tensorflow_inter_op_parallelism", type=int, default=0, help="0 = auto")
  for ignored in ("--rest_api_port", "--monitoring_config_file",
                  "--xla_cpu_compilation_enabled"):
    flag(ignored, default=None, nargs="?", const="true",
         help="accepted for command-line compatibility with TF Serving; ignored")
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  if not args.model_config_file and not args.model_base_path:
    print("error: give --model_config_file or --model_base_path", file=sys.stderr)
    return 2
  server = LocalServer(
      model_config_file=args.model_config_file, model_name=args.model_name,
      model_base_path=args.model_base_path, port=args.port, host=args.host,
      file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
      model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
      max_candidates=args.max_candidates, max_request_elements=args.max_request_elements,
      allow_version_labels_for_unavailable_models=(
          args.allow_version_labels_for_unavailable_models),
      enable_batching=args.enable_batching,
      batching_parameters_file=args.batching_parameters_file,
      enable_per_model_batching_parameters=args.enable_per_model_batching_parameters,
      enable_model_warmup=args.enable_model_warmup, grpc_max_threads=args.grpc_max_threads,
      tensorflow_intra_op_parallelism=args.tensorflow_intra_op_parallelism,
      tensorflow_inter_op_parallelism=args.tensorflow_inter_op_parallelism)
  stop = threading.Event()
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda *_: stop.set())
  try:
    server.start()
  except (ServingError, OSError, RuntimeError, model_config_lib.ModelConfigError) as e:
    print(f"error: failed to start server: {getattr(e, 'message', e)}", file=sys.stderr)
    server.stop(0)
    return 1
  print(f"serving.local_server listening on {args.host}:{server.port}", flush=True)
  stop.wait()
  server.stop()
  return 0


if __name__ == "__main__":
  sys.exit(main())
