"""Serving signatures built from the shared feature spec (eta_tf.features).

`serving_default`: a batch of samples -> {"ctr": [B]}.  History inputs are [B, T] with
any T (longer than L is truncated to the most recent L in-graph).
`score_candidates`: one user's history [T] + N candidates -> {"ctr": [N]}; the history is
embedded, hashed and projected once per request.

Each signature enforces its input contract in the graph (stock Assert ops, so the TF1
session loader and TF Serving enforce it too, whatever the client): ranks, a scalar
request time, equal lengths of the per-behavior arrays and of the per-candidate arrays
(serving_default: equal [B, T] histories and [B] targets). A violation fails the request
with INVALID_ARGUMENT and a message naming the signature, the inputs and their lengths;
valid requests score exactly as before (the checks only gate the inputs).
"""
from typing import Dict, Sequence

import tensorflow as tf

from eta_tf import features as F

_CANDIDATE_FEATURES = (F.CANDIDATE_ITEM_ID, F.CANDIDATE_CATEGORY_ID)
_TARGET_FEATURES = (F.TARGET_ITEM_ID, F.TARGET_CATEGORY_ID, F.TARGET_TIMESTAMP)


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


def _assert(condition, message: str, values: Sequence[tf.Tensor]):
  """An Assert op whose one-line message is `message` with `values` formatted in."""
  return tf.debugging.Assert(
      condition, [tf.strings.format(message, list(values), summarize=8)], summarize=1)


def _described(signature: str, what: str, names: Sequence[str]) -> str:
  return f"{signature}: {what}; got " + ", ".join(f"{name}={{}}" for name in names)


def check_ranks(signature: str, inputs: Dict[str, tf.Tensor],
                ranks: Dict[str, int]) -> tf.Operation:
  """Asserts each input's rank (a dynamic Rank op: also checked for fed tensors)."""
  names = sorted(ranks)
  got = [tf.raw_ops.Rank(input=inputs[n]) for n in names]
  ok = tf.reduce_all(tf.stack([tf.equal(g, ranks[n]) for g, n in zip(got, names)]))
  listed = ", ".join(f"{n}=rank {{}} (want {ranks[n]})" for n in names)
  return _assert(ok, f"{signature}: an input of the wrong rank; got {listed}", got)


def check_equal_lengths(signature: str, inputs: Dict[str, tf.Tensor],
                        names: Sequence[str], what: str, axis: int = 0) -> tf.Operation:
  """Asserts that `names` have one length along `axis`; the message lists them all."""
  lengths = [tf.shape(inputs[n], out_type=tf.int64)[axis] for n in names]
  ok = tf.reduce_all(tf.equal(tf.stack(lengths), lengths[0]))
  return _assert(ok, _described(signature, what, names), lengths)


def check_equal_shapes(signature: str, inputs: Dict[str, tf.Tensor],
                       names: Sequence[str], what: str) -> tf.Operation:
  """Asserts that `names` have one shape (same rank already checked)."""
  shapes = [tf.shape(inputs[n], out_type=tf.int64) for n in names]
  ok = tf.reduce_all(tf.equal(tf.stack(shapes), shapes[0]))
  return _assert(ok, _described(signature, what, names), shapes)


def _gated(inputs: Dict[str, tf.Tensor], checks) -> Dict[str, tf.Tensor]:
  """The inputs behind the checks: nothing downstream runs before they pass."""
  with tf.control_dependencies(checks):
    return {name: tf.identity(value) for name, value in inputs.items()}


def checked_sample_inputs(inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """serving_default's contract: histories [B, T] of one shape, targets [B] with that B."""
  name = F.SERVING_DEFAULT
  ranks = check_ranks(name, inputs, {**{n: 2 for n in F.HISTORY_FEATURES},
                                     **{n: 1 for n in _TARGET_FEATURES}})
  with tf.control_dependencies([ranks]):
    shapes = check_equal_shapes(name, inputs, F.HISTORY_FEATURES,
                                "the history inputs must have one shape [B, T]")
    rows = check_equal_lengths(name, inputs, (F.HIST_ITEM_ID,) + _TARGET_FEATURES,
                               "every input must have the same batch size B (dim 0)")
  return _gated(inputs, [shapes, rows])


def checked_request_inputs(inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """score_candidates' contract: histories [T] of one length, candidates [N] of one
  length, a scalar request_timestamp."""
  name = F.SCORE_CANDIDATES
  ranks = check_ranks(name, inputs, {**{n: 1 for n in F.HISTORY_FEATURES},
                                     F.REQUEST_TIMESTAMP: 0,
                                     **{n: 1 for n in _CANDIDATE_FEATURES}})
  with tf.control_dependencies([ranks]):
    history = check_equal_lengths(name, inputs, F.HISTORY_FEATURES,
                                  "the per-behavior inputs must have equal lengths")
    candidates = check_equal_lengths(name, inputs, _CANDIDATE_FEATURES,
                                     "the per-candidate inputs must have equal lengths")
  return _gated(inputs, [history, candidates])


def serving_signatures(model, check_inputs: bool = True) -> dict:
  """{"serving_default": ConcreteFunction, "score_candidates": ConcreteFunction}.

  `check_inputs=False` leaves the contract checks out: only for measuring their cost
  (bench/contract_cost.py); an export always has them."""
  if not check_inputs:
    sample_check = request_check = lambda inputs: inputs
  else:
    sample_check, request_check = checked_sample_inputs, checked_request_inputs
  sample_specs = sample_input_specs(model.config.max_len)
  sample_names = [s.name for s in sample_specs]

  @tf.function(input_signature=sample_specs)
  def serving_default(*inputs):
    features = sample_check(dict(zip(sample_names, inputs)))
    return {F.OUTPUT_CTR: model.predict_ctr(features)}

  request_specs = score_candidates_input_specs()
  request_names = [s.name for s in request_specs]

  @tf.function(input_signature=request_specs)
  def score_candidates(*inputs):
    request = request_check(dict(zip(request_names, inputs)))
    history = {name: request[name] for name in F.HISTORY_FEATURES}
    return {F.OUTPUT_CTR: model.score_candidates(
        history, request[F.REQUEST_TIMESTAMP], request[F.CANDIDATE_ITEM_ID],
        request[F.CANDIDATE_CATEGORY_ID])}

  return {
      F.SERVING_DEFAULT: serving_default.get_concrete_function(),
      F.SCORE_CANDIDATES: score_candidates.get_concrete_function(),
  }
