"""Per-stage latency of score_candidates: every millisecond of a model's request named.

stage_fns(name, L, N, request) builds the model of preset `name` (random weights, frozen
signature tables as at export) and returns one callable per stage of its serving
computation (one tf.function each, fed the previous stages' outputs computed once,
fetching one element of its outputs), for bench.interleaved_timing:

  embedding           request parsing, bucket hashing, embedding lookups (history, candidates)
  signature_lookup    frozen signature tables -> history / candidate signatures (eta, sdim;
                      from the buckets)
  target_stats        the target-aware statistics of the long history (all but din)
  history_projection  keys / values of the L behaviors (attention models)
  hamming_distances   eta: the distance pass of the Hamming top-k
  top_k_selection     eta: the rest of the retrieval (selection, re-scoring, decoding);
                      sim_hard: the category selection
  gather              the retrieved behaviors' keys / values per candidate
  attention           query projection, attention, retrieval statistics (eta);
                      avg / sdim: their pooling block
  history_summary     eta: the per-user summary of the whole history (once per
                      request, broadcast to the N candidates)
  tower               short-term attention, DCN cross and MLP, sigmoid
  call_overhead       an empty tf.function call (subtracted from every stage above)

Sum of the stages vs the model's latency through the session loader: the difference is the
session's own work (feeds, fetches, executor).
"""
import eta_tf  # noqa: F401  (tf-keras env before TensorFlow)
import tensorflow as tf

from eta_tf import features as F
from eta_tf import presets
from eta_tf.models import build_model
from eta_tf.models import long_history
from eta_tf.models import target_stats as target_stats_lib
from eta_tf.ops import hamming as hamming_ops
from eta_tf.ops import hamming_matmul

STAGES = ("embedding", "signature_lookup", "target_stats", "history_projection",
          "hamming_distances", "top_k_selection", "gather", "attention", "history_summary",
          "tower")


def _timed(fn):
  """A callable running `fn` as one tf.function that fetches one element of each output
  (fetching whole outputs would time copying them, which serving does not do)."""
  graph = tf.function(lambda: [tf.reshape(t, [-1])[:1] for t in tf.nest.flatten(fn())])
  return lambda: [t.numpy() for t in graph()]


def stage_fns(name: str, length: int, n: int, request: dict) -> dict:
  """{stage: callable} for preset `name` at L = `length` on `request` (serving_cost_grid's
  request dict, N = `n` candidates); only the stages the model has, plus call_overhead."""
  del n  # the request's candidates
  model = build_model(presets.model_config(name, max_len=length))
  model.freeze_signatures()
  emb, block = model.embedding, model.long_block
  hist = {k: tf.constant(request[k], tf.int64)[None] for k in F.HISTORY_FEATURES}
  items = tf.constant(request[F.CANDIDATE_ITEM_ID], tf.int64)[None]
  cats = tf.constant(request[F.CANDIDATE_CATEGORY_ID], tf.int64)[None]
  now = tf.constant(request[F.REQUEST_TIMESTAMP], tf.int64)[None]
  fns = {"call_overhead": _timed(lambda: now)}

  def embedding():
    history = model._history(hist)  # pylint: disable=protected-access
    return (emb.behaviors(history, now), emb.candidates(items, cats), emb.items(items),
            emb.category_buckets(cats), emb.item_buckets(items))
  fns["embedding"] = _timed(embedding)
  history = model._history(hist)  # pylint: disable=protected-access
  context = model._context(history, items, cats, now)  # pylint: disable=protected-access
  behaviors = emb.behaviors(history, now)

  if block is not None and block.uses_signatures:
    def signature_lookup():
      buckets = [behaviors["item_bucket"], emb.item_buckets(items)]
      out = [tf.gather(model.signature_table, b) for b in buckets]
      if model.category_signature_table is not None:
        out += [tf.gather(model.category_signature_table, b) for b in (
            behaviors["category_bucket"], context["candidate_category_bucket"])]
      return out
    fns["signature_lookup"] = _timed(signature_lookup)

  if "target_stats" in context:
    fns["target_stats"] = _timed(lambda: target_stats_lib.target_stats(
        history[F.HIST_ITEM_ID], history[F.HIST_CATEGORY_ID], history[F.HIST_TIMESTAMP],
        context["valid"], items, cats, now))

  long_out = block(context) if block is not None else None
  fns.update(_block_fns(block, context))
  summary = None
  if model.history_summary is not None:
    summarize = lambda: model.history_summary(context["behavior"], context["valid"])  # noqa: E731
    fns["history_summary"] = _timed(summarize)
    summary = summarize()

  def tower():
    s = model.config.short_len
    parts = [] if long_out is None else [long_out]
    parts.append(model.short_attention(context["query"], context["behavior"][:, -s:],
                                       context["valid"][:, -s:]))
    parts.append(context["query"])
    if summary is not None:
      parts.append(model.candidate_summary(summary, context["query"]))
    if "target_stats" in context:
      parts.append(context["target_stats"])
    x = x0 = tf.concat(parts, axis=-1)
    for cross in model.cross_layers:
      x = cross(x0, x)
    for layer in model.mlp_layers:
      x = layer(x, training=False)
    return tf.sigmoid(model.logit_layer(x)[..., 0])
  fns["tower"] = _timed(tower)
  return fns


def _block_fns(block, context) -> dict:
  """The long block's stages (see the module docstring)."""
  if block is None:
    return {}
  if isinstance(block, (long_history.AvgPoolBlock, long_history.SdimBlock)):
    return {"attention": _timed(lambda: block(context))}
  attention = block.attention
  behavior, query, valid = context["behavior"], context["query"], context["valid"]
  fns = {"history_projection": _timed(lambda: attention.project_keys(behavior))}
  key_heads, value_heads = attention.project_keys(behavior)
  if isinstance(block, long_history.FullAttentionBlock):
    fns["attention"] = _timed(lambda: attention.attend(attention.project_query(query),
                                                       key_heads, value_heads, valid))
    return fns
  if isinstance(block, long_history.EtaBlock):
    if type(block) is long_history.EtaBlock:  # pylint: disable=unidiomatic-typecheck
      fns["hamming_distances"] = _timed(lambda: distance_pass(block, context))
      fns["_retrieval"] = _timed(lambda: block.retrieve(context))
    else:  # experimental retrievals: one selection stage
      fns["top_k_selection"] = _timed(lambda: block.retrieve(context))
    indices, distances, mask = block.retrieve(context)
  else:  # sim_hard: its selection, as in SimHardBlock.call
    select = lambda: hamming_ops.select_nearest(  # noqa: E731
        1 - tf.cast(tf.equal(context["candidate_category_bucket"][:, :, None],
                             context["history_category_bucket"][:, None, :]), tf.int32),
        valid, block.config.top_k, sort=False)
    fns["top_k_selection"] = _timed(select)
    indices, _, mask = select()
  gather = lambda: (tf.gather(key_heads, indices, batch_dims=1),  # noqa: E731
                    tf.gather(value_heads, indices, batch_dims=1))
  fns["gather"] = _timed(gather)
  keys_k, values_k = gather()

  def attend_k():
    out = attention.attend(attention.project_query(query), keys_k, values_k, mask)
    if isinstance(block, long_history.EtaBlock):
      out = block.with_stats(out, distances, mask)
    return out
  fns["attention"] = _timed(attend_k)
  return fns


def distance_pass(block, context):
  """The distance pass of eta's Hamming top-k alone, as block.retrieve runs it: the order
  keys of the matrix-product path (category_first, by size), the block minima of the
  blockwise kernel (with the per-user block preparation), or the N x L distances of the
  direct path."""
  # pylint: disable=protected-access
  history, candidate = block._signatures(context)
  valid, k = context["valid"], block.config.top_k
  weights = None
  if block.category_first:
    weights = long_history.category_first_weights(block.config.hash_words,
                                                  block.config.hash_bits)
  if block.category_first:
    product_b = hamming_matmul.product_block_size(history.shape[1], candidate.shape[1], k,
                                                  block.config.hamming_xla)
    if product_b is not None:  # the matrix-product path: its order keys over N x L'
      return hamming_matmul.product_keys(candidate, history, valid, k, product_b,
                                         weights)[0]
  b = hamming_ops._resolve_block_size(history.shape[1], k, None)
  if b == 0 or candidate.shape[1] < hamming_ops._MIN_BLOCKWISE_CANDIDATES:
    return hamming_ops.hamming_distance(candidate, history, weights)
  words = history.shape[-1]
  batch, length = tf.shape(history)[0], tf.shape(history)[1]
  num_blocks = tf.maximum((length + b - 1) // b, k)
  pad = num_blocks * b - length
  signatures = tf.reshape(tf.pad(history, [[0, 0], [0, pad], [0, 0]]),
                          [batch, num_blocks, b, words])
  elems = tf.reshape(tf.pad(valid, [[0, 0], [0, pad]]), [batch, num_blocks, b])
  first_valid = tf.argmax(tf.cast(elems, tf.int32), axis=2, output_type=tf.int32)
  replacement = tf.gather(signatures, first_valid, batch_dims=2)
  filled = tf.where(elems[..., None], signatures, replacement[:, :, None, :])
  return hamming_ops._block_keys(candidate, tf.transpose(filled, [0, 3, 2, 1]),
                                 tf.reduce_any(elems, axis=2), weights)


def stage_medians(raw: dict) -> dict:
  """Stage -> median ms from the raw medians (seconds) of stage_fns' callables: each less
  the call overhead; top_k_selection = retrieval - distance pass."""
  overhead = raw["call_overhead"]
  ms = {}
  for stage in STAGES:
    if stage == "top_k_selection" and "_retrieval" in raw:
      value = raw["_retrieval"] - raw["hamming_distances"]
    elif stage in raw:
      value = raw[stage] - overhead
    else:
      continue
    ms[stage] = max(value, 0.0) * 1e3
  ms["call_overhead"] = overhead * 1e3
  return ms
