"""serving.warmup: PredictRequests from the feature spec, the warmup file format."""
import numpy as np
import pytest

from eta_tf import features as F
from serving import warmup
from serving.errors import InputValidationError

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order
from tensorflow_serving.apis import prediction_log_pb2  # pylint: disable=g-import-not-at-top

from serving_helpers import candidates, history  # noqa: E402


def test_build_predict_request_uses_the_spec_dtypes_and_addressing():
  inputs = {**history(3), **candidates([1, 2])}
  inputs[F.HIST_ITEM_ID] = inputs[F.HIST_ITEM_ID].astype(np.int32)  # widened to int64
  request = warmup.build_predict_request("eta", F.SCORE_CANDIDATES, inputs, version=4)
  assert request.model_spec.name == "eta" and request.model_spec.version.value == 4
  assert request.model_spec.signature_name == F.SCORE_CANDIDATES
  assert set(request.inputs) == set(F.SCORE_CANDIDATES_INPUTS)
  for name, proto in request.inputs.items():
    assert proto.dtype == tf.int64.as_datatype_enum, name
    np.testing.assert_array_equal(tf.make_ndarray(proto), inputs[name])
  labelled = warmup.build_predict_request("eta", F.SCORE_CANDIDATES, inputs,
                                          version_label="canary")
  assert labelled.model_spec.version_label == "canary"
  with pytest.raises(ValueError, match="not both"):
    warmup.build_predict_request("eta", F.SCORE_CANDIDATES, inputs, 1, "canary")


@pytest.mark.parametrize("change,field,message", [
    ({F.CANDIDATE_ITEM_ID: np.array(["a"])}, F.CANDIDATE_ITEM_ID, "got str"),
    ({F.REQUEST_TIMESTAMP: np.array([True])}, F.REQUEST_TIMESTAMP, "got bool"),
    ({F.HIST_ITEM_ID: np.ones((2, 2), np.int64)}, F.HIST_ITEM_ID, "expected shape"),
    ({F.CANDIDATE_CATEGORY_ID: np.array([1, 2, 3])}, F.CANDIDATE_CATEGORY_ID,
     "candidate count"),
    ({F.HIST_ITEM_ID: np.array([2**64 - 1], np.uint64)}, F.HIST_ITEM_ID, "range"),
])
def test_validation_errors_name_the_field(change, field, message):
  inputs = {**history(1), **candidates([1, 2]), **change}
  with pytest.raises(InputValidationError, match=message) as e:
    warmup.validate_inputs(F.SCORE_CANDIDATES, inputs)
  assert e.value.field == field and field in str(e.value)


def test_unknown_signature_is_refused():
  with pytest.raises(InputValidationError, match="unknown signature"):
    warmup.validate_inputs("predict", {})


def test_warmup_file_roundtrip_and_limit(tmp_path):
  requests = warmup.example_requests(max_len=6, batch_sizes=(1, 3), num_candidates=(2,))
  path = warmup.write_warmup_requests(str(tmp_path), requests, model_name="eta")
  assert path == str(tmp_path / "assets.extra" / "tf_serving_warmup_requests")
  logs = warmup.read_warmup_logs(str(tmp_path))
  assert all(isinstance(l, prediction_log_pb2.PredictionLog) for l in logs)
  assert [l.predict_log.request.model_spec.name for l in logs] == ["eta"] * 3
  back = warmup.read_warmup_requests(path)
  assert [s for s, _ in back] == [F.SERVING_DEFAULT, F.SERVING_DEFAULT, F.SCORE_CANDIDATES]
  for (signature, original), (_, read) in zip(requests, back):
    assert set(read) == set(original)
    for name in read:
      np.testing.assert_array_equal(read[name], original[name])
    warmup.validate_inputs(signature, read, max_len=6)
  one = requests[-1:]
  with pytest.raises(ValueError, match="at most 1000"):
    warmup.write_warmup_requests(str(tmp_path / "big"), one * (warmup.MAX_WARMUP_RECORDS + 1))
  with pytest.raises(ValueError, match="no warmup requests"):
    warmup.write_warmup_requests(str(tmp_path / "none"), [])
