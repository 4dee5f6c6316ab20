"""Multi-head target attention: one query (the candidate) over a set of behaviors."""
import tensorflow as tf


class TargetAttention(tf.keras.layers.Layer):
  """Multi-head scaled dot-product attention of candidates over behaviors, masked.

  Keys and values are projected once per history (`project_keys`) and can then be shared
  by all N candidates of a request or gathered per candidate (ETA's top-k).

  call(query, keys, mask):
    query: float [B, Dq] or [B, N, Dq].
    keys: float [B, T, Dk] (shared by the N queries).
    mask: bool [B, T] or [B, N, T]; True = real behavior.
    returns float [B, output_dim] or [B, N, output_dim].
  A row whose mask is all False (no history) returns exactly zeros, never NaN.
  """

  def __init__(self, num_heads: int = 4, head_dim: int = 16, output_dim=None,
               query_dim=None, key_dim=None, shared_prefix_dim: int = 0,
               normalize_qk: bool = False, initial_scale: float = 10.0, **kwargs):
    super().__init__(**kwargs)
    self.num_heads = int(num_heads)
    self.head_dim = int(head_dim)
    self.output_dim = int(output_dim or num_heads * head_dim)
    self.query_dim = query_dim
    self.key_dim = key_dim
    self.shared_prefix_dim = int(shared_prefix_dim)
    self.normalize_qk = bool(normalize_qk)
    self.initial_scale = float(initial_scale)
    if query_dim and key_dim:
      # Known widths: create the weights now, so project_keys/attend work before the
      # first __call__ (the ETA block calls them directly).
      self.build_from_dims(int(query_dim), int(key_dim))

  def build(self, input_shape=None):
    # tf_keras passes only the query's shape to build(); the weights need the key width
    # too, so they are created by build_from_dims (explicitly, or on the first call).
    super().build(input_shape)

  def build_from_dims(self, query_dim: int, key_dim: int):
    """Creates the weights for query width Dq and behavior width Dk."""
    width = self.num_heads * self.head_dim
    dense = lambda name, n_in, n_out: self.add_weight(  # noqa: E731
        name=name, shape=(n_in, n_out), initializer="glorot_uniform")
    self.query_kernel = dense("query_kernel", query_dim, width)
    self.key_kernel = dense("key_kernel", key_dim, width)
    self.value_kernel = dense("value_kernel", key_dim, width)
    self.output_kernel = dense("output_kernel", width, self.output_dim)
    self.output_bias = self.add_weight(name="output_bias", shape=(self.output_dim,),
                                       initializer="zeros")
    self.query_dim, self.key_dim = query_dim, key_dim
    if self.normalize_qk:
      # Cosine attention with a learnable per-head scale (QK-normalisation): the score
      # range no longer depends on the embeddings' scale, which starts tiny, so attention
      # can be sharp from the first step.
      self.score_scale = self.add_weight(
          name="score_scale", shape=(self.num_heads,),
          initializer=tf.keras.initializers.Constant(self.initial_scale))
    prefix = min(self.shared_prefix_dim, query_dim, key_dim)
    if prefix:
      # The first `prefix` features of queries and keys are the same embeddings (the
      # candidate's item ⊕ category and the behavior's). Starting the key projection of
      # that part equal to the query projection makes the initial score a similarity
      # (largest for the candidate's own item) instead of a random bilinear form.
      self.key_kernel.assign(tf.concat([self.query_kernel[:prefix],
                                        self.key_kernel[prefix:]], axis=0))

  def _split_heads(self, x):
    shape = tf.shape(x)
    return tf.reshape(x, tf.concat([shape[:-1], [self.num_heads, self.head_dim]], 0))

  def project_query(self, query):
    """[..., Dq] -> [..., H, dh], pre-scaled (1/sqrt(dh), or unit norm x scale)."""
    q = self._split_heads(tf.tensordot(query, self.query_kernel, axes=[[-1], [0]]))
    if self.normalize_qk:
      return tf.math.l2_normalize(q, axis=-1) * self.score_scale[:, None]
    return q * (self.head_dim ** -0.5)

  def project_keys(self, keys):
    """[..., T, Dk] -> (keys, values), each [..., T, H, dh]."""
    k = self._split_heads(tf.tensordot(keys, self.key_kernel, axes=[[-1], [0]]))
    v = tf.tensordot(keys, self.value_kernel, axes=[[-1], [0]])
    if self.normalize_qk:
      k = tf.math.l2_normalize(k, axis=-1)
    return k, self._split_heads(v)

  def project_gathered_keys(self, keys, indices):
    """Keys/values of the behaviors selected per query.

    Args:
      keys: [B, L, Dk] behaviors.
      indices: int [B, N, k] positions in L selected for each of the N queries.
    Returns:
      (key_heads, value_heads), each [B, N, k, H, dh].

    The projection (and the key normalisation) acts on each behavior on its own, so
    gather-then-project and project-then-gather give the same result; only the cost
    differs. Projecting all L behaviors once costs L·Dk·H·dh, projecting the N·k gathered
    ones N·k·Dk·H·dh: serving (N in the hundreds) wants the former, training (N = 1,
    k << L) the latter (~L/k less work). The order is chosen from static shapes; if
    any is unknown, project-then-gather (the serving case, where N is dynamic).
    """
    n, k = indices.shape[1], indices.shape[2]
    length = keys.shape[1]
    if None not in (n, k, length) and n * k < length:
      return self.project_keys(tf.gather(keys, indices, batch_dims=1))
    key_heads, value_heads = self.project_keys(keys)
    return (tf.gather(key_heads, indices, batch_dims=1),
            tf.gather(value_heads, indices, batch_dims=1))

  def attend(self, query_heads, key_heads, value_heads, mask):
    """Attention on projected tensors.

    Args:
      query_heads: [B, N, H, dh] (from project_query).
      key_heads, value_heads: [B, T, H, dh] shared by the N queries, or [B, N, T, H, dh]
        per query (gathered top-k).
      mask: bool [B, T] or [B, N, T].
    Returns:
      [B, N, output_dim].
    """
    mask = tf.cast(mask, tf.bool)
    if key_heads.shape.rank == 5:
      context = per_query_attention(query_heads, key_heads, value_heads, mask)
    else:
      scores = tf.einsum("bnhd,bthd->bnht", query_heads, key_heads)
      mask = mask[:, None, None, :] if mask.shape.rank == 2 else mask[:, :, None, :]
      weights = masked_softmax(scores, mask, axis=-1)
      context = tf.einsum("bnht,bthd->bnhd", weights, value_heads)
    return self.output(context)

  def output(self, context):
    """Heads [..., H, dh] -> the output projection [..., output_dim]."""
    shape = tf.shape(context)
    context = tf.reshape(context, tf.concat([shape[:-2], [self.num_heads * self.head_dim]], 0))
    return tf.tensordot(context, self.output_kernel, axes=[[-1], [0]]) + self.output_bias

  def call(self, query, keys, mask=None):
    if not hasattr(self, "query_kernel"):
      self.build_from_dims(int(query.shape[-1]), int(keys.shape[-1]))
    squeeze = query.shape.rank == 2
    if squeeze:
      query = query[:, None, :]
    if mask is None:
      mask = tf.ones(tf.shape(keys)[:2], tf.bool)
    key_heads, value_heads = self.project_keys(keys)
    out = self.attend(self.project_query(query), key_heads, value_heads, mask)
    return out[:, 0] if squeeze else out

  def get_config(self):
    config = super().get_config()
    config.update({"num_heads": self.num_heads, "head_dim": self.head_dim,
                   "output_dim": self.output_dim, "query_dim": self.query_dim,
                   "key_dim": self.key_dim, "shared_prefix_dim": self.shared_prefix_dim,
                   "normalize_qk": self.normalize_qk, "initial_scale": self.initial_scale})
    return config


def per_query_attention(query_heads, key_heads, value_heads, mask):
  """Each query over its own keys: query_heads [B, N, H, dh], key_heads / value_heads
  [B, N, T, H, dh], mask bool [B, N, T] -> context [B, N, H, dh].

  Two batched matrix products per query (N of them, not N·H): the query's heads as a
  block-diagonal [H·dh, H] matrix (head h in rows h·dh.. of column h) give all heads'
  scores as one [H, H·dh] x [H·dh, T] product; the weights [H, T] times the values
  [T, H·dh] give [H, H·dh], whose diagonal blocks are the heads' contexts. The products
  do H times the necessary multiply-adds, still far fewer memory passes than
  elementwise products over [B, N, T, H, dh] (which TF would otherwise need: einsum
  "bnhd,bnthd->bnht" lowers to N·H [1, dh] x [dh, T] products).
  """
  heads, dh = query_heads.shape[-2], query_heads.shape[-1]
  eye = tf.eye(heads, dtype=query_heads.dtype)
  flat = lambda x: tf.reshape(x, tf.concat([tf.shape(x)[:-2], [heads * dh]], 0))  # noqa: E731
  block = tf.reshape(query_heads[..., None] * eye[:, None, :],
                     tf.concat([tf.shape(query_heads)[:-2], [heads * dh, heads]], 0))
  scores = tf.matmul(block, flat(key_heads), transpose_a=True, transpose_b=True)  # [.., H, T]
  weights = masked_softmax(scores, mask[..., None, :], axis=-1)
  both = tf.matmul(weights, flat(value_heads))  # [B, N, H, H·dh]
  both = tf.reshape(both, tf.concat([tf.shape(both)[:-1], [heads, dh]], 0))
  return tf.reduce_sum(both * eye[:, :, None], axis=-2)


def per_query_scores(query_heads, key_heads):
  """Scores [B, N, T, H] of queries [B, N, H, dh] over their own keys [B, N, T, H, dh]."""
  return tf.reduce_sum(query_heads[:, :, None] * key_heads, axis=-1)


def per_query_context(scores, mask, value_heads):
  """Softmax over T of scores [B, N, T, H] where mask bool [B, N, T], applied to values
  [B, N, T, H, dh] -> [B, N, H, dh]."""
  weights = masked_softmax(scores, mask[..., None], axis=2)
  return tf.reduce_sum(weights[..., None] * value_heads, axis=2)


def masked_softmax(scores, mask, axis):
  """Softmax of `scores` over `axis` where `mask` (broadcastable) is True; 0 elsewhere.

  A row with no True entry is exactly zero, never NaN. For an inner axis it is written
  out (max, exp, sum): tf.nn.softmax transposes input and output for any axis but the
  last, two full passes that cost more than the softmax itself on [B, N, k, H].
  """
  # Masked logits get a large negative value (not -inf: a fully masked row would then be
  # NaN); multiplying by the mask afterwards makes such a row exactly zero.
  logits = tf.where(mask, scores, tf.constant(-1e9, scores.dtype))
  if axis in (-1, scores.shape.rank - 1):
    return tf.nn.softmax(logits, axis=-1) * tf.cast(mask, scores.dtype)  # fused kernel
  top = tf.reduce_max(logits, axis=axis, keepdims=True)
  exp = tf.exp(logits - top) * tf.cast(mask, scores.dtype)
  total = tf.reduce_sum(exp, axis=axis, keepdims=True)
  return exp / tf.maximum(total, tf.constant(1e-30, scores.dtype))
