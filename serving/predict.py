"""PredictRequest validation and execution, after TF Serving's predict_util.

`run_predict(servable, request, limits)` checks a request the way TF Serving does (the
signature exists; input aliases, dtypes and shapes match the signature; output filter)
with TF Serving's codes and messages, applies the local server's own caps
(`RequestLimits`: candidates / rows, input elements) and, for versions served with
batching, TF Serving's batching preconditions; then runs the signature and answers with
typed repeated fields (AsProtoField), as TF Serving does. `replay_warmup` replays a
version's warmup file through the same path.
"""
import os
import time
from typing import Dict, Optional

import numpy as np

from eta_tf import features
from serving import warmup as warmup_lib
from serving.servable import Servable
from serving.server_status import ServingError, code_of_tf_error, invalid

import grpc  # pylint: disable=g-import-not-at-top,wrong-import-order
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order
from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top

DEFAULT_MAX_CANDIDATES = 10_000
DEFAULT_MAX_REQUEST_ELEMENTS = 1 << 26  # int64 elements of all inputs: 512 MiB
DEFAULT_MAX_HISTORY = 100_000  # behaviors per history row (the models use the last L)
# TF Serving answers with AsProtoField: typed repeated fields, not tensor_content.
_PROTO_FIELDS = {"float32": "float_val", "float64": "double_val", "int32": "int_val",
                 "int16": "int_val", "int8": "int_val", "uint8": "int_val",
                 "int64": "int64_val", "bool": "bool_val"}


class RequestLimits:
  """The local server's caps on one request (0 = no cap)."""

  def __init__(self, max_candidates: int = 0,
               max_request_elements: int = DEFAULT_MAX_REQUEST_ELEMENTS,
               max_history: int = 0):
    self.max_candidates = max_candidates
    self.max_request_elements = max_request_elements
    self.max_history = max_history


def _dtype_name(enum: int) -> str:
  try:
    return tf.dtypes.as_dtype(enum).name
  except TypeError:
    return f"dtype {enum}"


def as_proto_field(value):
  """A TensorProto in a typed repeated field (float_val, int64_val, ...) when possible."""
  array = np.asarray(value)
  proto = tf.make_tensor_proto(array)
  field = _PROTO_FIELDS.get(array.dtype.name)
  if field is not None:
    proto.ClearField("tensor_content")
    proto.ClearField(field)  # make_tensor_proto fills it itself for 1-element arrays
    getattr(proto, field).extend(array.ravel().tolist())
  return proto


def _tensor_shape(proto) -> list:
  return [d.size for d in proto.tensor_shape.dim]


def check_batching(shapes: Dict[str, list], max_batch_size: Optional[int]) -> None:
  """BatchingSession's preconditions (ComputeTensorBatchSize, max batch size)."""
  sizes = set()
  for shape in shapes.values():
    if not shape:
      raise invalid("Batching Run() input tensors must have at least one dimension")
    sizes.add(shape[0])
  if len(sizes) > 1:
    raise invalid("Batching Run() input tensors must have equal 0th-dimension size")
  if max_batch_size and sizes and max(sizes) > max_batch_size:
    raise invalid(f"Task size {max(sizes)} is larger than maximum batch size "
                  f"{max_batch_size}")


def _request_rows(signature_name: str, shapes: Dict[str, list]) -> int:
  """Candidates of a score_candidates request, rows (samples) of any other request."""
  candidate_inputs = (features.CANDIDATE_ITEM_ID, features.CANDIDATE_CATEGORY_ID)
  if signature_name == features.SCORE_CANDIDATES or any(n in shapes for n in candidate_inputs):
    return max([shapes[n][0] for n in candidate_inputs if shapes.get(n)] or [0])
  return max([s[0] for s in shapes.values() if s] or [0])


def _check_inputs(signature, request) -> Dict[str, list]:
  """TF Serving's input checks (aliases, dtypes, shapes); returns {alias: shape}."""
  sent, wanted = set(request.inputs), set(signature.inputs)
  if len(sent) > len(wanted) or (len(sent) < len(wanted) and not signature.defaults):
    raise invalid(
        f"input size does not match signature: {len(sent)}!={len(wanted)} "
        f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
        f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
        f"Missing but required: {{{','.join(sorted(wanted - sent))}}}.")
  for alias in sorted(sent):
    if alias not in wanted:
      raise invalid(f"input tensor alias not found in signature: {alias}. Inputs expected "
                    f"to be in the set {{{','.join(sorted(wanted))}}}.")
  shapes = {}
  for i, alias in enumerate(sorted(sent)):
    info, proto = signature.inputs[alias], request.inputs[alias]
    if proto.dtype != info.dtype:
      raise invalid(f"Expects arg[{i}] to be {_dtype_name(info.dtype)} but "
                    f"{_dtype_name(proto.dtype)} is provided (input {alias})")
    shape = _tensor_shape(proto)
    if any(d < 0 for d in shape):
      raise invalid(f"input {alias}: negative dimension in shape {shape}")
    if not info.tensor_shape.unknown_rank:
      expected = [d.size for d in info.tensor_shape.dim]
      if len(expected) != len(shape) or any(e >= 0 and e != s for e, s in zip(expected, shape)):
        raise invalid(f"input {alias}: shape {shape} is not compatible with the "
                      f"signature's shape {expected} (-1 = any)")
    shapes[alias] = shape
  return shapes


def _check_limits(signature_name: str, shapes: Dict[str, list], limits: RequestLimits):
  elements = sum(int(np.prod(s, dtype=np.float64)) for s in shapes.values())
  if limits.max_request_elements and elements > limits.max_request_elements:
    raise invalid(f"request has {elements} input elements, more than the server's limit "
                  f"of {limits.max_request_elements}")
  if limits.max_candidates:
    rows = _request_rows(signature_name, shapes)
    if rows > limits.max_candidates:
      raise invalid(f"request has {rows} candidates (rows), more than this server's "
                    f"--max_candidates={limits.max_candidates}: split the request into "
                    f"requests of at most {limits.max_candidates} candidates")
  history = max([s[-1] for n, s in shapes.items() if n in features.HISTORY_FEATURES and s]
                or [0])
  if limits.max_history and history > limits.max_history:
    raise invalid(f"request has a history of {history} behaviors, more than this server's "
                  f"--max_history={limits.max_history}: send the most recent "
                  f"{limits.max_history} behaviors")


def _output_aliases(signature, request) -> list:
  aliases = list(request.output_filter) or sorted(signature.outputs)
  seen = set()
  for alias in aliases:
    if alias not in signature.outputs:
      raise invalid(f"output tensor alias not found in signature: {alias} Outputs expected "
                    f"to be in the set {{{','.join(sorted(signature.outputs))}}}.")
    if alias in seen:
      raise invalid(f"duplicate output tensor alias: {alias}")
    seen.add(alias)
  return aliases


def run_predict(servable: Servable, request: predict_pb2.PredictRequest,
                limits: Optional[RequestLimits] = None,
                timeout_s: Optional[float] = None) -> predict_pb2.PredictResponse:
  """Runs one PredictRequest on `servable` with TF Serving's validation and messages."""
  signature_name = request.model_spec.signature_name or features.SERVING_DEFAULT
  signature = servable.signatures.get(signature_name)
  if signature is None:
    raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                       f'Serving signature key "{signature_name}" not found.')
  shapes = _check_inputs(signature, request)
  _check_limits(signature_name, shapes, limits or RequestLimits())
  if servable.batching is not None:
    check_batching(shapes, servable.batching.max_batch_size.value
                   if servable.batching.HasField("max_batch_size") else None)
  inputs = {}
  for alias in sorted(shapes):
    try:
      inputs[alias] = tf.make_ndarray(request.inputs[alias])
    except Exception as e:  # pylint: disable=broad-except
      raise invalid(f"input {alias}: cannot parse the TensorProto: {e}") from e
  aliases = _output_aliases(signature, request)
  try:
    outputs = servable.session.run_outputs(signature_name, inputs, aliases, timeout_s)
  except tf.errors.OpError as e:
    raise ServingError(code_of_tf_error(e.error_code), e.message) from e
  except (ValueError, TypeError) as e:
    raise invalid(str(e)) from e
  response = predict_pb2.PredictResponse()
  response.model_spec.name = servable.name
  response.model_spec.version.value = servable.version
  response.model_spec.signature_name = signature_name
  for alias in aliases:
    response.outputs[alias].CopyFrom(as_proto_field(outputs[alias]))
  return response


def replay_warmup(servable: Servable, timeout_s: Optional[float] = None) -> int:
  """Replays the version's warmup file (if any); returns the number of requests run.

  With `timeout_s`, every request runs with the time left as its TF deadline.
  """
  deadline = None if timeout_s is None else time.monotonic() + timeout_s
  path = warmup_lib.warmup_file(servable.path)
  if not os.path.exists(path):
    return 0
  logs = warmup_lib.read_warmup_logs(path)
  if len(logs) > warmup_lib.MAX_WARMUP_RECORDS:
    raise invalid(f"Number of warmup records exceeds the maximum "
                  f"({warmup_lib.MAX_WARMUP_RECORDS}) at {path}")
  for i, record in enumerate(logs):
    if record.WhichOneof("log_type") != "predict_log":
      raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                         f"warmup record {i}: only predict_log is supported here")
    left = None if deadline is None else deadline - time.monotonic()
    try:
      if left is not None and left <= 0:
        raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                           f"no time left of the {timeout_s:g} s warmup timeout")
      run_predict(servable, record.predict_log.request, timeout_s=left)
    except ServingError as e:
      raise ServingError(e.code, f"Failed to warm up model: warmup record {i}: "
                                 f"{e.message}") from e
  return len(logs)
