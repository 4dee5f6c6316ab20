"""The user-batched path: one history per batch row, every target on its own causal window.

Input (eta_tf.data.make_user_dataset): G rows, each a slice of one user's history
HIST_* [G, W] (oldest first, right-padded with 0) and C of that user's targets
TARGET_* [G, C] with TARGET_HISTORY_END e [G, C]: target c sees exactly the behaviors
j with max(e - L, 0) <= j < e of its row (the last L strictly before its time, what the
per-sample path gives it), and its short history the last S of them.

What is done once per row instead of once per target: the embedding lookups of item,
category and behavior type, the SimHash signatures (eta, sdim) and the key/value
projections of full attention (din_long). The time-gap embedding depends on the pair
(target time - behavior time), so it is looked up per pair; attention keys are linear
in the behavior embedding item ⊕ category ⊕ type ⊕ time, so a key is the row's static
projection plus the projection of the pair's time bucket (a [time_buckets, H·dh] table).

Equal to the per-sample path up to float rounding (tests/test_user_batched.py): the same
k are retrieved (selection keys order ties to the more recent behavior in both layouts).
"""
import tensorflow as tf

from eta_tf import features as F
from eta_tf.layers import attention as attention_lib
from eta_tf.models import long_history
from eta_tf.models.history_summary import drop_summaries
from eta_tf.models.embedding import time_gap_bucket
from eta_tf.models import target_stats as target_stats_lib
from eta_tf.ops import hamming as hamming_ops


def unsupported_reason(config):
  """Why this config cannot train user-batched (None if it can)."""
  if config.experiment:
    return f"experiment={config.experiment!r} (an experimental block)"
  return None


class _Rows:
  """The per-row and per-pair tensors every block reads.

  history: HIST_* int64 [G, W + 1] (one padding column appended: every gather index is
  in range, also for W = 0); window bool [G, C, W + 1]; gap int64 [G, C, W + 1] time-gap
  buckets; static float [G, W + 1, Ds] = item ⊕ category ⊕ type embeddings.
  """

  def __init__(self, model, features):
    cfg, emb = model.config, model.embedding
    self.model = model
    self.history = {name: tf.pad(tf.convert_to_tensor(features[name], tf.int64),
                                 [[0, 0], [0, 1]]) for name in F.HISTORY_FEATURES}
    self.items = tf.convert_to_tensor(features[F.TARGET_ITEM_ID], tf.int64)
    self.categories = tf.convert_to_tensor(features[F.TARGET_CATEGORY_ID], tf.int64)
    self.timestamps = tf.convert_to_tensor(features[F.TARGET_TIMESTAMP], tf.int64)
    self.ends = tf.convert_to_tensor(features[F.TARGET_HISTORY_END], tf.int64)
    item_ids = self.history[F.HIST_ITEM_ID]
    real = item_ids > 0
    position = tf.range(tf.shape(item_ids)[1], dtype=tf.int64)[None, None, :]
    ends = self.ends[:, :, None]
    self.window = (position < ends) & (position >= ends - cfg.max_len) & real[:, None, :]
    # Behaviors between each behavior and the target's window end (target_stats).
    self.behaviors_after = tf.cast(ends - 1 - position, tf.float32)
    self.gap = time_gap_bucket(self.timestamps, self.history[F.HIST_TIMESTAMP][:, None, :],
                               self.window, cfg.time_buckets)
    self.item_bucket = emb.item_buckets(item_ids)
    self.category_bucket = emb.category_buckets(self.history[F.HIST_CATEGORY_ID])
    self.item = emb.item_embedding(self.item_bucket)
    self.category = emb.category_embedding(self.category_bucket)
    behavior_type = tf.clip_by_value(self.history[F.HIST_BEHAVIOR_TYPE], 0,
                                     F.NUM_BEHAVIOR_TYPES - 1)
    behavior_type = tf.where(real, behavior_type, tf.zeros_like(behavior_type))
    self.static = tf.concat([self.item, self.category,
                             emb.behavior_type_embedding(behavior_type)], axis=-1)
    self.query = emb.candidates(self.items, self.categories)  # [G, C, Dq]
    self.candidate_item = emb.items(self.items)
    self.candidate_category_bucket = emb.category_buckets(self.categories)

  def pair_time(self):
    """Time-gap embeddings of every pair, [G, C, W + 1, time_dim]."""
    return self.model.embedding.time_gap_embedding(self.gap)

  def select(self, keys, k):
    """select_nearest per target on its own window: keys int32 [G, C, W + 1] ->
    (indices, selected keys, mask), each [G, C, k]."""
    shape = tf.shape(keys)
    flat_keys = tf.reshape(keys, [-1, 1, shape[2]])
    flat_window = tf.reshape(self.window, [-1, shape[2]])
    out = hamming_ops.select_nearest(flat_keys, flat_window, k, block_size=0, sort=False)
    return [tf.reshape(x, [shape[0], shape[1], k]) for x in out]

  def short_window(self):
    """Indices [G, C, S] of each target's last S behaviors and their mask."""
    s = self.model.config.short_len
    indices = self.ends[:, :, None] - s + tf.range(s, dtype=tf.int64)[None, None, :]
    indices = tf.clip_by_value(indices, 0, tf.cast(tf.shape(self.window)[2] - 1, tf.int64))
    mask = tf.gather(self.window, indices, batch_dims=2) & (
        self.ends[:, :, None] - s + tf.range(s, dtype=tf.int64)[None, None, :] >= 0)
    return tf.cast(indices, tf.int32), mask


def _projected_heads(attention, rows, indices=None):
  """Key and value heads of each target's behaviors, [G, C, k, H, dh] each: the selected
  `indices` [G, C, k], or with None every behavior of the row, [G, C, W + 1, H, dh].

  A key is the projection of item ⊕ category ⊕ type ⊕ time: the row's projection of its
  static part (once per behavior) plus the time bucket's projection (once per bucket),
  then normalised per head as TargetAttention.project_keys does.
  """
  static_dim = rows.static.shape[-1]
  time_table = rows.model.embedding.time_gap_embedding.embeddings
  gap = rows.gap if indices is None else tf.gather(rows.gap, indices, batch_dims=2)

  def heads(kernel):
    row = tf.tensordot(rows.static, kernel[:static_dim], axes=[[-1], [0]])  # [G, W, HD]
    per_bucket = tf.matmul(time_table, kernel[static_dim:])  # [T, HD]
    if indices is None:
      row = row[:, None, :, :]
    else:
      row = tf.gather(row, indices, batch_dims=1)
    return attention._split_heads(row + tf.gather(per_bucket, gap))  # pylint: disable=protected-access

  key_heads = heads(attention.key_kernel)
  if attention.normalize_qk:
    key_heads = tf.math.l2_normalize(key_heads, axis=-1)
  return key_heads, heads(attention.value_kernel)


def attend_gathered(attention, rows, indices, mask):
  """Target attention of each target over its selected behaviors [G, C, k]."""
  key_heads, value_heads = _projected_heads(attention, rows, indices)
  return attention.attend(attention.project_query(rows.query), key_heads, value_heads, mask)


def _eta(block, rows):
  cfg = block.config
  k, m = cfg.top_k, cfg.hash_bits
  history = block.simhash(rows.item)
  candidate = block.simhash(rows.candidate_item)
  if block.category_simhash is not None:
    d, dc = cfg.item_dim, cfg.category_dim
    history = tf.concat([history, block.category_simhash(rows.category)], axis=-1)
    candidate = tf.concat([candidate, block.category_simhash(rows.query[..., d:d + dc])],
                          axis=-1)
  if block.category_first:
    weights = long_history.category_first_weights(cfg.hash_words, m)
    keys = hamming_ops.hamming_distance(candidate, history, word_weights=weights)
    indices, keys, mask = rows.select(keys, k)
    distances = tf.where(mask, keys // (m + 1) + keys % (m + 1), 0)
  else:
    indices, distances, mask = rows.select(hamming_ops.hamming_distance(candidate, history),
                                           k)
    distances = tf.where(mask, distances, 0)
  out = attend_gathered(block.attention, rows, indices, mask)
  if cfg.target_stats:
    out = tf.concat([out, long_history.distance_stats(distances, mask, k,
                                                      block.distance_bits)], axis=-1)
  return out


def _din_long(block, rows):
  """Full attention over each target's window."""
  attention = block.attention
  key_heads, value_heads = _projected_heads(attention, rows)
  return attention.attend(attention.project_query(rows.query), key_heads, value_heads,
                          rows.window)


def _sim_hard(block, rows):
  same_category = tf.equal(rows.candidate_category_bucket[:, :, None],
                           rows.category_bucket[:, None, :])
  indices, selected, mask = rows.select(1 - tf.cast(same_category, tf.int32),
                                        block.config.top_k)
  mask = tf.logical_and(mask, tf.equal(selected, 0))
  return attend_gathered(block.attention, rows, indices, mask)


def _pair_sums(weights, rows):
  """Sums of full behavior embeddings weighted per pair: weights float [G, C, W(, R)]
  -> [G, C, (R,) Db]."""
  if weights.shape.rank == 3:
    static = tf.einsum("gcw,gwd->gcd", weights, rows.static)
    time = tf.einsum("gcw,gcwd->gcd", weights, rows.pair_time())
  else:
    static = tf.einsum("gcwr,gwd->gcrd", weights, rows.static)
    time = tf.einsum("gcwr,gcwd->gcrd", weights, rows.pair_time())
  return tf.concat([static, time], axis=-1)


def _avg(block, rows):
  del block
  window = tf.cast(rows.window, tf.float32)
  count = tf.reduce_sum(window, axis=-1, keepdims=True)
  return tf.math.divide_no_nan(_pair_sums(window, rows), count)


def _sdim(block, rows):
  history_codes = block._group_codes(block.simhash(rows.item))  # pylint: disable=protected-access
  candidate_codes = block._group_codes(  # pylint: disable=protected-access
      block.simhash(rows.candidate_item))
  match = tf.equal(candidate_codes[:, :, None, :], history_codes[:, None, :, :])
  match = tf.logical_and(match, rows.window[..., None])  # [G, C, W, R]
  sums = _pair_sums(tf.cast(match, tf.float32), rows)
  return tf.reduce_mean(tf.math.l2_normalize(sums, axis=-1), axis=2)


def history_summary(layer, rows):
  """HistorySummary (eta_tf/models/history_summary.py) of each target's own window,
  [G, C, output_dim]: the masked mean of the full behavior embeddings, and for mode
  "attention" the learned queries' attention over the window.

  As with attention keys, a behavior's key and value are the row's projection of its
  static part plus the projection of the pair's time bucket; a query's score of a
  behavior is therefore a per-row score plus a per-bucket score, and the time part of a
  pooled value is the queries' attention mass per time bucket times that bucket's value.
  """
  window = tf.cast(rows.window, tf.float32)
  count = tf.reduce_sum(window, axis=-1, keepdims=True)
  mean = tf.math.divide_no_nan(_pair_sums(window, rows), count)  # [G, C, Db]
  if layer.mode == "mean":
    return mean
  queries, dh = layer.num_queries, layer.head_dim
  static_dim = rows.static.shape[-1]
  time_table = rows.model.embedding.time_gap_embedding.embeddings  # [T, time_dim]
  buckets = time_table.shape[0]

  def parts(kernel):  # row part [G, W, Q, dh], bucket part [T, Q, dh]
    row = tf.tensordot(rows.static, kernel[:static_dim], axes=[[-1], [0]])
    shape = tf.shape(row)
    return (tf.reshape(row, [shape[0], shape[1], queries, dh]),
            tf.reshape(tf.matmul(time_table, kernel[static_dim:]), [buckets, queries, dh]))

  key_row, key_bucket = parts(layer.key_kernel)
  row_scores = tf.einsum("gwqd,qd->gwq", key_row, layer.queries)
  bucket_scores = tf.einsum("tqd,qd->tq", key_bucket, layer.queries)
  scores = (row_scores[:, None] + tf.gather(bucket_scores, rows.gap)) * (dh ** -0.5)
  weights = attention_lib.masked_softmax(scores, rows.window[..., None], axis=2)
  value_row, value_bucket = parts(layer.value_kernel)                   # weights [G, C, W, Q]
  pooled = tf.einsum("gcwq,gwqd->gcqd", weights, value_row)
  per_bucket = tf.einsum("gcwq,gcwt->gctq", weights,
                         tf.one_hot(rows.gap, buckets, dtype=weights.dtype))
  pooled += tf.einsum("gctq,tqd->gcqd", per_bucket, value_bucket)
  shape = tf.shape(pooled)
  return tf.concat([mean, tf.reshape(pooled, [shape[0], shape[1], queries * dh])], axis=-1)


_LONG = {"eta": _eta, "din_long": _din_long, "sim_hard": _sim_hard, "avg": _avg,
         "sdim": _sdim}


def tower_inputs(model, features, training=False):
  """The tower's input parts, each [G, C, ...], for a user-batched batch (the per-sample
  path's CtrModel._logits parts, in the same order; `training` drops summaries as it
  does)."""
  reason = unsupported_reason(model.config)
  if reason:
    raise ValueError(f"model={model.config.model!r} with {reason} has no user-batched "
                     "path; train with --batching=sample")
  rows = _Rows(model, features)
  parts = []
  if model.long_block is not None:
    parts.append(_LONG[model.config.model](model.long_block, rows))
  indices, mask = rows.short_window()
  parts.append(attend_gathered(model.short_attention, rows, indices, mask))
  parts.append(rows.query)
  if model.history_summary is not None:
    summary = model.history_summary.with_readout(
        history_summary(model.history_summary, rows), rows.query)
    parts.append(drop_summaries(summary, model.config.summary_dropout, training))
  if model.uses_target_stats:
    h = rows.history
    parts.append(target_stats_lib.target_stats(
        h[F.HIST_ITEM_ID], h[F.HIST_CATEGORY_ID], h[F.HIST_TIMESTAMP], rows.window,
        rows.items, rows.categories, rows.timestamps,
        behaviors_after=rows.behaviors_after, length=model.config.max_len))
  return parts
