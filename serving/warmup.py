"""PredictRequests from the shared feature spec, and TF Serving's warmup file.

`build_predict_request` is the one place that turns named numpy inputs into a
tensorflow.serving PredictRequest: names, dtypes and ranks come from
`eta_tf.features.signature_input_features`, tensors from `tf.make_tensor_proto`. The gRPC
client and the warmup writer both call it.

TF Serving replays `<version>/assets.extra/tf_serving_warmup_requests` (a TFRecord file of
PredictionLog protos, at most 1000 records) before it marks a version AVAILABLE, so the
first real request does not pay for graph optimisation / XLA compilation.

    write_warmup_requests(saved_model_dir, [(SERVING_DEFAULT, inputs), ...], model_name)
    read_warmup_requests(saved_model_dir) -> [(signature_name, {input: ndarray})]
"""
import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from eta_tf import features
# validate_inputs (no TensorFlow) lives in serving.inputs; also imported from here.
from serving.inputs import validate_inputs

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order
from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import prediction_log_pb2  # pylint: disable=g-import-not-at-top

ASSETS_EXTRA_DIR = "assets.extra"
WARMUP_FILE_NAME = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving refuses a longer warmup file

WarmupRequest = Tuple[str, Mapping[str, np.ndarray]]


def warmup_file(saved_model_dir: str) -> str:
  return os.path.join(saved_model_dir, ASSETS_EXTRA_DIR, WARMUP_FILE_NAME)


def build_predict_request(model_name: str, signature_name: str,
                          inputs: Mapping[str, object], version: Optional[int] = None,
                          version_label: Optional[str] = None) -> predict_pb2.PredictRequest:
  """A PredictRequest for `signature_name` with `inputs` validated against the spec.

  Addresses `version`, or `version_label`, or (neither) the latest available version.
  """
  if version is not None and version_label:
    raise ValueError("give version or version_label, not both")
  arrays = validate_inputs(signature_name, inputs)
  dtypes = {f.name: f.dtype for f in features.signature_input_features(signature_name)}
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature_name
  if version is not None:
    request.model_spec.version.value = int(version)
  elif version_label:
    request.model_spec.version_label = version_label
  for name, array in arrays.items():
    request.inputs[name].CopyFrom(tf.make_tensor_proto(array, dtype=tf.as_dtype(dtypes[name])))
  return request


# --- warmup file --------------------------------------------------------------------------
def write_warmup_requests(saved_model_dir: str, requests: Sequence[WarmupRequest],
                          model_name: str = "") -> str:
  """Writes `assets.extra/tf_serving_warmup_requests` into `saved_model_dir`; returns it.

  `requests` is a list of (signature_name, {input_name: array}); at most 1000 of them.
  """
  requests = list(requests)
  if not requests:
    raise ValueError("no warmup requests given")
  if len(requests) > MAX_WARMUP_RECORDS:
    raise ValueError(f"{len(requests)} warmup requests; TF Serving accepts at most "
                     f"{MAX_WARMUP_RECORDS}")
  logs = []
  for signature_name, inputs in requests:
    request = build_predict_request(model_name, signature_name, inputs)
    logs.append(prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)))
  path = warmup_file(saved_model_dir)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tf.io.TFRecordWriter(path) as writer:
    for log in logs:
      writer.write(log.SerializeToString())
  return path


def read_warmup_logs(path: str) -> List[prediction_log_pb2.PredictionLog]:
  """The PredictionLogs of a warmup file (or of `<saved_model_dir>/assets.extra/...`)."""
  if os.path.isdir(path):
    path = warmup_file(path)
  logs = []
  for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
    logs.append(prediction_log_pb2.PredictionLog.FromString(record))
  return logs


def read_warmup_requests(path: str) -> List[Tuple[str, Dict[str, np.ndarray]]]:
  """[(signature_name, {input_name: ndarray})] of the warmup file's predict logs."""
  out = []
  for log in read_warmup_logs(path):
    request = log.predict_log.request
    out.append((request.model_spec.signature_name or features.SERVING_DEFAULT,
                {k: tf.make_ndarray(v) for k, v in request.inputs.items()}))
  return out


def example_requests(max_len: int, batch_sizes: Iterable[int] = (1, 8),
                     num_candidates: Iterable[int] = (1, 50),
                     seed: int = 0) -> List[WarmupRequest]:
  """Synthetic warmup requests for both signatures (positive ids, sorted timestamps).

  One serving_default request per batch size and one score_candidates request per
  candidate count, so each shape class is compiled before the version serves.
  """
  rng = np.random.default_rng(seed)
  now = 1_700_000_000

  def history(shape):
    ts = np.sort(rng.integers(now - 86_400 * 30, now, size=shape), axis=-1)
    return {
        features.HIST_ITEM_ID: rng.integers(1, 1 << 30, size=shape),
        features.HIST_CATEGORY_ID: rng.integers(1, 1 << 14, size=shape),
        features.HIST_BEHAVIOR_TYPE: rng.integers(1, features.NUM_BEHAVIOR_TYPES, size=shape),
        features.HIST_TIMESTAMP: ts,
    }

  requests = []
  for b in batch_sizes:
    inputs = history((b, max_len))
    inputs[features.TARGET_ITEM_ID] = rng.integers(1, 1 << 30, size=b)
    inputs[features.TARGET_CATEGORY_ID] = rng.integers(1, 1 << 14, size=b)
    inputs[features.TARGET_TIMESTAMP] = np.full(b, now)
    requests.append((features.SERVING_DEFAULT, inputs))
  for n in num_candidates:
    inputs = history((max_len,))
    inputs[features.REQUEST_TIMESTAMP] = np.int64(now)
    inputs[features.CANDIDATE_ITEM_ID] = rng.integers(1, 1 << 30, size=n)
    inputs[features.CANDIDATE_CATEGORY_ID] = rng.integers(1, 1 << 14, size=n)
    requests.append((features.SCORE_CANDIDATES, inputs))
  return requests
