"""Serving signatures built from the shared feature spec (eta_tf.features).

`serving_default`: a batch of samples -> {"ctr": [B]}.  History inputs are [B, T] with
any T (longer than L is truncated to the most recent L in-graph).
`score_candidates`: one user's history [T] + N candidates -> {"ctr": [N]}; the history is
embedded, hashed and projected once per request.
"""
import tensorflow as tf

from eta_tf import features as F


def _spec(feature: F.Feature, batch: bool) -> tf.TensorSpec:
  shape = tuple(None for _ in feature.shape)
  if batch:
    shape = (None,) + shape
  return tf.TensorSpec(shape, tf.as_dtype(feature.dtype), name=feature.name)


def sample_input_specs(max_len: int):
  """TensorSpecs of the `serving_default` inputs (history width left open)."""
  return [_spec(f, batch=True) for f in F.sample_features(max_len)]


def score_candidates_input_specs():
  return [_spec(f, batch=False) for f in F.score_candidates_features()]


def serving_signatures(model) -> dict:
  """{"serving_default": ConcreteFunction, "score_candidates": ConcreteFunction}."""
  sample_specs = sample_input_specs(model.config.max_len)
  sample_names = [s.name for s in sample_specs]

  @tf.function(input_signature=sample_specs)
  def serving_default(*inputs):
    features = dict(zip(sample_names, inputs))
    return {F.OUTPUT_CTR: model.predict_ctr(features)}

  request_specs = score_candidates_input_specs()
  request_names = [s.name for s in request_specs]

  @tf.function(input_signature=request_specs)
  def score_candidates(*inputs):
    request = dict(zip(request_names, inputs))
    history = {name: request[name] for name in F.HISTORY_FEATURES}
    return {F.OUTPUT_CTR: model.score_candidates(
        history, request[F.REQUEST_TIMESTAMP], request[F.CANDIDATE_ITEM_ID],
        request[F.CANDIDATE_CATEGORY_ID])}

  return {
      F.SERVING_DEFAULT: serving_default.get_concrete_function(),
      F.SCORE_CANDIDATES: score_candidates.get_concrete_function(),
  }
