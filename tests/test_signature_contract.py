"""The exported signatures enforce their input contract in the graph.

A real eta SavedModel (small config, untrained weights, the exporter's signatures) loaded
by the TF1 session loader (what TF Serving runs) and served by the local server over raw
gRPC (no client-side checks): per-behavior arrays of different lengths, per-candidate
arrays of different lengths, a non-scalar request time, serving_default histories of
different widths or batch sizes -> INVALID_ARGUMENT naming the inputs and their lengths;
valid requests keep their scores.
"""
import numpy as np
import pytest

from conftest import small_model_config
from eta_tf import features as F
from eta_tf import signatures
from eta_tf.models import build_model
from eta_tf.savedmodel_session import SavedModelSession
from serving import local_server as ls
from serving.predict import as_proto_field

import grpc  # pylint: disable=g-import-not-at-top,wrong-import-order
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order
from tensorflow.core.protobuf import config_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top

HISTORY = {F.HIST_ITEM_ID: np.array([11, 12, 13]), F.HIST_CATEGORY_ID: np.array([1, 1, 2]),
           F.HIST_BEHAVIOR_TYPE: np.array([1, 2, 1]),
           F.HIST_TIMESTAMP: np.array([1511600000, 1511600005, 1511600009])}
REQUEST = {**HISTORY, F.REQUEST_TIMESTAMP: np.array(1511600100),
           F.CANDIDATE_ITEM_ID: np.array([21, 22, 23, 24]),
           F.CANDIDATE_CATEGORY_ID: np.array([1, 2, 3, 4])}
SAMPLES = {**{n: np.tile(np.arange(1, 65), (2, 1)) for n in F.HISTORY_FEATURES},
           F.TARGET_ITEM_ID: np.array([5, 6]), F.TARGET_CATEGORY_ID: np.array([1, 2]),
           F.TARGET_TIMESTAMP: np.array([1511600100, 1511600200])}

# (signature, changed inputs, fragments the INVALID_ARGUMENT message must contain)
HOSTILE = {
    "history_lengths": (F.SCORE_CANDIDATES, {F.HIST_CATEGORY_ID: [1, 1],
                                             F.HIST_TIMESTAMP: [1511600000]},
                        ["per-behavior inputs must have equal lengths", "hist_item_id=3",
                         "hist_category_id=2", "hist_behavior_type=3", "hist_timestamp=1"]),
    "one_longer_behavior_array": (F.SCORE_CANDIDATES, {F.HIST_BEHAVIOR_TYPE: [1, 1, 1, 1]},
                                  ["hist_behavior_type=4", "hist_item_id=3"]),
    "candidate_lengths": (F.SCORE_CANDIDATES, {F.CANDIDATE_CATEGORY_ID: [1, 2]},
                          ["per-candidate inputs must have equal lengths",
                           "candidate_item_id=4", "candidate_category_id=2"]),
    "empty_history_array": (F.SCORE_CANDIDATES, {F.HIST_ITEM_ID: np.zeros(0, np.int64)},
                            ["hist_item_id=0", "hist_category_id=3"]),
    "history_widths": (F.SERVING_DEFAULT, {F.HIST_CATEGORY_ID: np.ones((2, 10), np.int64)},
                       ["history inputs must have one shape", "hist_item_id=[2 64]",
                        "hist_category_id=[2 10]"]),
    "history_rows": (F.SERVING_DEFAULT, {F.HIST_TIMESTAMP: np.ones((3, 64), np.int64)},
                     ["hist_timestamp=[3 64]"]),
    "target_batch": (F.SERVING_DEFAULT, {F.TARGET_ITEM_ID: np.array([5, 6, 7])},
                     ["same batch size", "hist_item_id=2", "target_item_id=3",
                      "target_category_id=2"]),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """An eta SavedModel with the exporter's signatures, as version 1 of a base."""
  base = tmp_path_factory.mktemp("contract") / "eta"
  model = build_model(small_model_config())
  model.freeze_signatures()
  path = str(base / "1")
  tf.saved_model.save(model, path, signatures=signatures.serving_signatures(model))
  return str(base), path, model


@pytest.fixture(scope="module")
def session(saved):
  with SavedModelSession(saved[1]) as s:
    yield s


def _inputs(case):
  signature, changed, _ = HOSTILE[case]
  valid = REQUEST if signature == F.SCORE_CANDIDATES else SAMPLES
  return signature, {k: np.asarray(changed.get(k, v), np.int64) for k, v in valid.items()}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_session_loader_refuses_a_broken_contract_naming_inputs(session, case):
  signature, inputs = _inputs(case)
  with pytest.raises(tf.errors.InvalidArgumentError) as e:
    session.run(signature, inputs)
  for fragment in HOSTILE[case][2]:
    assert fragment in e.value.message
  assert f"{signature}:" in e.value.message


def test_request_time_must_be_a_scalar_in_the_graph(session):
  """A fed tensor of the wrong rank reaches the graph through a callable (no Python
  shape check, as in TF Serving's C++ Session::Run) and fails its rank assertion."""
  signature = session.signatures[F.SCORE_CANDIDATES]
  names = sorted(REQUEST)
  options = config_pb2.CallableOptions(feed=[signature.inputs[n].name for n in names],
                                       fetch=[signature.outputs[F.OUTPUT_CTR].name])
  call = session.session._make_callable_from_options(options)  # pylint: disable=protected-access
  np.testing.assert_array_equal(call(*[REQUEST[n] for n in names])[0],
                                session.run(F.SCORE_CANDIDATES, REQUEST))
  with pytest.raises(tf.errors.InvalidArgumentError) as e:
    call(*[np.array([1511600100]) if n == F.REQUEST_TIMESTAMP else REQUEST[n]
           for n in names])
  assert "request_timestamp=rank 1 (want 0)" in e.value.message


def test_valid_requests_score_as_the_model(saved, session):
  model = saved[2]
  history = {n: REQUEST[n] for n in F.HISTORY_FEATURES}
  want = model.score_candidates(history, REQUEST[F.REQUEST_TIMESTAMP],
                                REQUEST[F.CANDIDATE_ITEM_ID],
                                REQUEST[F.CANDIDATE_CATEGORY_ID]).numpy()
  np.testing.assert_allclose(session.run(F.SCORE_CANDIDATES, REQUEST), want, atol=1e-6)
  np.testing.assert_allclose(session.run(F.SERVING_DEFAULT, SAMPLES),
                             model.predict_ctr(SAMPLES).numpy(), atol=1e-6)
  empty = {**REQUEST, **{n: np.zeros(0, np.int64) for n in F.HISTORY_FEATURES}}
  assert np.isfinite(session.run(F.SCORE_CANDIDATES, empty)).all()


def _request(signature, inputs):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "eta"
  request.model_spec.signature_name = signature
  for name, value in inputs.items():
    request.inputs[name].CopyFrom(as_proto_field(np.asarray(value, np.int64)))
  return request


def test_raw_grpc_hostile_requests_get_invalid_argument_and_serving_goes_on(saved, session):
  with ls.LocalServer(model_name="eta", model_base_path=saved[0], port=0,
                      file_system_poll_wait_seconds=0) as server:
    server.wait_for_state("eta", 1)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    try:
      for case in sorted(HOSTILE):
        with pytest.raises(grpc.RpcError) as e:
          stub.Predict(_request(*_inputs(case)), timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
        for fragment in HOSTILE[case][2]:
          assert fragment in e.value.details(), (case, e.value.details())
        response = stub.Predict(_request(F.SCORE_CANDIDATES, REQUEST), timeout=30)
        np.testing.assert_array_equal(tf.make_ndarray(response.outputs[F.OUTPUT_CTR]),
                                      session.run(F.SCORE_CANDIDATES, REQUEST))
    finally:
      channel.close()
