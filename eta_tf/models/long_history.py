"""Long-history blocks: the only part that differs between the six models.

Every block maps a request context to a long-term interest per candidate:

  context keys (B users, N candidates per user, L behaviors):
    query            float [B, N, Dq]   candidate embedding (item ⊕ category)
    candidate_item   float [B, N, d]    candidate item embedding (what SimHash hashes)
    candidate_category_bucket int64 [B, N]
    behavior         float [B, L, Db]   behavior embeddings
    history_item     float [B, L, d]
    history_category_bucket int64 [B, L]
    valid            bool  [B, L]
    history_signatures / candidate_signatures  int64 [B, L, W] / [B, N, W]  (optional:
                     looked up from the frozen signature table at serving)
  output: float [B, N, output_dim] (or None for `din`, which has no long block).
"""
import tensorflow as tf

from eta_tf.config import ModelConfig
from eta_tf.layers import HammingTopK
from eta_tf.layers import SimHash
from eta_tf.layers import TargetAttention
from eta_tf.ops import bits as bits_ops
from eta_tf.ops import hamming as hamming_ops


def make_attention(config: ModelConfig, name: str) -> TargetAttention:
  """Target attention of candidates (item ⊕ category) over behavior embeddings."""
  query_dim = config.item_dim + config.category_dim
  # Behaviors start with the same item ⊕ category embeddings as the query.
  return TargetAttention(config.num_heads, config.head_dim, query_dim=query_dim,
                         key_dim=config.behavior_dim, shared_prefix_dim=query_dim,
                         normalize_qk=True, name=name)


class LongHistoryBlock(tf.keras.layers.Layer):
  """Base class; `uses_signatures` blocks hash item embeddings with `self.simhash`."""
  uses_signatures = False

  def __init__(self, config: ModelConfig, **kwargs):
    super().__init__(**kwargs)
    self.config = config

  def get_config(self):
    base = super().get_config()
    base["config"] = self.config.to_dict()
    return base

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    model_config = ModelConfig.from_dict(config.pop("config"))
    return cls(model_config, **config)

  def _signatures(self, context):
    """History and candidate signatures: from the frozen table if given, else SimHash."""
    history = context.get("history_signatures")
    if history is None:
      history = self.simhash(context["history_item"])
    candidate = context.get("candidate_signatures")
    if candidate is None:
      candidate = self.simhash(context["candidate_item"])
    return history, candidate


def _mix_ids(history_ids, candidate_ids, num_values: int):
  """A fixed pseudo-random int32 in [0, num_values) per (candidate, behavior) pair.

  history_ids int64 [B, L], candidate_ids int64 [B, N] -> int32 [B, N, L]. Integer
  multiply / xor-shift only (stock ops): the same value in training and at serving.
  """
  length = tf.shape(history_ids)[1]
  position = tf.cast(tf.range(length), tf.int64)[None, None, :]
  x = (history_ids[:, None, :] * 0x9E3779B1 + candidate_ids[:, :, None] * 0x85EBCA77 +
       position * 0xC2B2AE3D)
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 29)) * 0x27D4EB2F
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 32))
  return tf.cast(tf.math.floormod(x, num_values), tf.int32)


def _gathered_distances(candidate_signatures, history_signatures, indices):
  """Hamming distances of each candidate to its selected behaviors, int32 [B, N, k].

  candidate_signatures int64 [B, N, W], history_signatures int64 [B, L, W], indices
  int32 [B, N, k].
  """
  words, k = candidate_signatures.shape[-1], indices.shape[-1]
  gathered = tf.gather(history_signatures, indices, batch_dims=1)  # [B, N, k, W]
  distances = hamming_ops.hamming_distance(tf.reshape(candidate_signatures, [-1, 1, words]),
                                           tf.reshape(gathered, [-1, k, words]))
  return tf.reshape(distances, tf.shape(indices))


def _field_distances(candidate_signatures, history_signatures, indices, mask, field: int):
  """Hamming distances of field `field` (0 item, 1 category) of item_category signatures
  (W words per field) to the selected behaviors, int32 [B, N, k], 0 where masked."""
  words = candidate_signatures.shape[-1] // 2
  part = slice(field * words, (field + 1) * words)
  return tf.where(mask, _gathered_distances(candidate_signatures[..., part],
                                            history_signatures[..., part], indices), 0)


# Learned attention scores (category bias, sink) are this many times their weight: Adam
# moves a weight by ~learning_rate per step, and the attention scores they compete with
# span ±score_scale (10), so at unit pace a bias could not approach a mask within a run.
SCORE_PACE = 10.0

NUM_DISTANCE_STATS = 3


def distance_stats(distances, mask, k: int, num_bits: int):
  """ETA's retrieval statistics per candidate, float32 [B, N, NUM_DISTANCE_STATS].

  distances int32 [B, N, k] (Hamming distances of the retrieved), mask bool [B, N, k]:
  log1p(retrieved at distance 0) / log1p(k), log1p(retrieved within m/8) / log1p(k),
  nearest distance / m (1 when nothing was retrieved). Distance 0 is, up to signature
  collisions, the candidate's own item: a count ETA gets from its retrieval for free.
  """
  log_k = tf.math.log1p(tf.cast(k, tf.float32))
  exact = tf.reduce_sum(tf.cast(mask & tf.equal(distances, 0), tf.float32), axis=-1)
  near = tf.reduce_sum(tf.cast(mask & (distances <= num_bits // 8), tf.float32), axis=-1)
  nearest = tf.reduce_min(tf.where(mask, distances, num_bits), axis=-1)
  return tf.stack([tf.math.log1p(exact) / log_k, tf.math.log1p(near) / log_k,
                   tf.cast(nearest, tf.float32) / num_bits], axis=-1)


def category_first_weights(words: int, num_bits: int) -> tuple:
  """Word weights of item ‖ category signatures (W words each) ranked category first.

  hamming_distance with them is category distance · (m + 1) + item distance (m =
  num_bits per field), so any behavior whose category signature is nearer comes first
  and item distance orders the rest. At most m·(m + 2): int16 block sums in
  hamming_top_k's fused pass, int32 order keys for L < 2^31 / (m·(m + 2) + 2) (500k
  behaviors at m = 64).
  """
  return (1,) * words + (num_bits + 1,) * words


class EtaBlock(LongHistoryBlock):
  """ETA: SimHash + Hamming top-k retrieval, then multi-head target attention on the k.

  `config.retrieval` swaps the selection for a control ("random": exact-item matches, then
  pseudo-random; "oracle": the top-k by this block's own full attention scores); the
  rest of the block is the same. With `config.target_stats` the output also carries
  distance_stats of the retrieved. With signature_fields=item_category,
  `config.signature_distance` ranks by the sum of the field distances or category first
  (category_first_weights), and with `config.category_bias` the attention adds a
  learned per-head bias (SCORE_PACE x weight) to the scores of the retrieved at
  category-signature distance 0: a soft, learned version of SIM(hard)'s category mask.
  With `config.category_split` it attends over the retrieved at category distance 0 and
  over the others separately: output [B, N, 2 · output_dim (+ stats)].
  """
  uses_signatures = True

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    self.simhash = SimHash(config.hash_bits, config.hash_seed, name="simhash")
    self.category_simhash = None
    if config.signature_fields == "item_category":
      self.category_simhash = SimHash(config.hash_bits, config.hash_seed + 1,
                                      name="category_simhash")
    # Attention over the k does not depend on their order: skip the final sort.
    self.top_k = HammingTopK(config.top_k, use_xla=config.hamming_xla, sort=False,
                             name="hamming_top_k")
    self.attention = make_attention(config, "long_attention")
    self.attention_simhash = None
    if config.retrieval == "attention_hash":
      self.attention_simhash = SimHash(config.hash_bits, config.hash_seed + 2,
                                       name="attention_simhash")
    self.category_bias = None
    if self.category_simhash is not None and config.category_bias:
      # Starts at 0 (plain category_first attention); the tower learns how much to
      # prefer the candidate's category, up to SIM(hard)'s hard mask.
      self.category_bias = self.add_weight(name="category_bias",
                                           shape=(config.num_heads,), initializer="zeros")
    # config.validate() keeps category_bias / attention_sink off with the split.
    self.split_by_category = self.category_simhash is not None and config.category_split
    self.sink_logit = None
    if config.attention_sink:
      # Starts at score 0, inside the span of the cosine scores (±10).
      self.sink_logit = self.add_weight(name="sink_logit", shape=(config.num_heads,),
                                        initializer="zeros")

  @property
  def distance_bits(self) -> int:
    """Bits the retrieval's Hamming distances count over: m for attention_hash (one m-bit
    signature of the attention's projections), else m per hashed field."""
    if self.attention_simhash is not None:
      return self.config.hash_bits
    return self.config.hash_bits * (2 if self.category_simhash is not None else 1)

  def _signatures(self, context):
    """Item signatures, followed by category signatures for signature_fields=item_category.

    The category embeddings are the slice of the behavior / query embeddings after the
    item part (behavior = item ⊕ category ⊕ ..., query = item ⊕ category).
    """
    history, candidate = super()._signatures(context)
    if self.category_simhash is None:
      return history, candidate
    d, dc = self.config.item_dim, self.config.category_dim
    history_category = context.get("history_category_signatures")
    if history_category is None:
      history_category = self.category_simhash(context["behavior"][..., d:d + dc])
    candidate_category = context.get("candidate_category_signatures")
    if candidate_category is None:
      candidate_category = self.category_simhash(context["query"][..., d:d + dc])
    return (tf.concat([history, history_category], axis=-1),
            tf.concat([candidate, candidate_category], axis=-1))

  def full_attention_scores(self, context):
    """Head-averaged attention logits of every candidate over all L, float [B, N, L]."""
    key_heads, _ = self.attention.project_keys(context["behavior"])
    query_heads = self.attention.project_query(context["query"])
    return tf.einsum("bnhd,blhd->bnl", query_heads, key_heads) / self.config.num_heads

  def project_all(self, context):
    """((key_heads, value_heads) [B, L, H, dh] of every behavior, query_heads [B, N, H, dh]):
    what retrieval=attention_hash hashes, projected once and gathered for the attention."""
    return (self.attention.project_keys(context["behavior"]),
            self.attention.project_query(context["query"]))

  def attention_signatures(self, projected):
    """retrieval=attention_hash: SimHash of the per-head unit query and key projections,
    concatenated over heads: int64 [B, N, W] and [B, L, W]. `projected` is project_all's.

    The angle between two such concatenations is arccos(mean over heads of the cosine),
    so nearer signatures approximate higher head-averaged attention scores (the oracle's
    ranking, up to the per-head scales), with the same XOR + popcount top-k as ETA.
    """
    (key_heads, _), query_heads = projected  # keys are unit per head (normalize_qk)
    query_heads = tf.math.l2_normalize(query_heads, axis=-1)
    flat = lambda x: tf.reshape(x, tf.concat([tf.shape(x)[:-2], [-1]], 0))  # noqa: E731
    width = self.config.num_heads * self.config.head_dim
    query = tf.ensure_shape(flat(query_heads), [None, None, width])
    keys = tf.ensure_shape(flat(key_heads), [None, None, width])
    return self.attention_simhash(query), self.attention_simhash(keys)

  def retrieve(self, context):
    """Indices int32 [B, N, k], Hamming distances int32 [B, N, k] and mask [B, N, k]."""
    indices, distances, mask, _ = self.retrieve_with_categories(context)
    return indices, distances, mask

  def retrieve_with_categories(self, context, projected=None):
    """retrieve() plus the category-signature distance of each retrieved, int32
    [B, N, k] (0 where masked), or None with item-only signatures. `projected`
    (project_all's, retrieval=attention_hash only) saves projecting the keys twice."""
    k, valid = self.config.top_k, context["valid"]
    if self.config.retrieval == "attention_hash":
      query_signatures, key_signatures = self.attention_signatures(
          projected if projected is not None else self.project_all(context))
      indices, distances, mask = self.top_k(query_signatures, key_signatures, mask=valid)
      categories = None
      if self.category_simhash is not None:  # only category_bias reads them
        history_signatures, candidate_signatures = self._signatures(context)
        categories = _field_distances(candidate_signatures, history_signatures, indices,
                                      mask, field=1)
      return indices, tf.where(mask, distances, 0), mask, categories
    history_signatures, candidate_signatures = self._signatures(context)
    by_sum = self.category_simhash is None or self.config.signature_distance == "sum"
    if self.config.retrieval == "hamming" and not by_sum:  # category_first / category_only
      m = self.config.hash_bits
      # hamming_top_k's fused pass on the weighted distance (int16 block sums), the
      # same exact order as select_nearest over the N x L keys, without storing them.
      indices, keys, mask = hamming_ops.hamming_top_k(
          candidate_signatures, history_signatures, valid, k,
          use_xla=self.config.hamming_xla, sort=False,
          word_weights=category_first_weights(self.config.hash_words, m))
      if self.config.signature_distance == "category_only":  # category distance 0 only
        mask = tf.logical_and(mask, keys <= m)
      # Statistics and diagnostics read the summed distance, as with "sum".
      return (indices, tf.where(mask, keys // (m + 1) + keys % (m + 1), 0), mask,
              tf.where(mask, keys // (m + 1), 0))
    if self.config.retrieval == "hamming":
      indices, distances, mask = self.top_k(candidate_signatures, history_signatures,
                                            mask=valid)
    elif self.config.retrieval == "random":
      same_item = tf.equal(context["candidate_item_id"][:, :, None],
                           context["history_item_id"][:, None, :])
      keys = tf.where(same_item, 0, 1 + _mix_ids(context["history_item_id"],
                                                 context["candidate_item_id"], 1 << 16))
      indices, _, mask = hamming_ops.select_nearest(keys, valid, k, sort=False)
      distances = _gathered_distances(candidate_signatures, history_signatures, indices)
    else:  # oracle
      scores = self.full_attention_scores(context)
      scores = tf.where(valid[:, None, :], scores, tf.constant(-1e30, scores.dtype))
      _, indices = tf.math.top_k(tf.stop_gradient(scores), k=k, sorted=False)
      mask = tf.gather(tf.broadcast_to(valid[:, None, :], tf.shape(scores)), indices,
                       batch_dims=2)
      distances = _gathered_distances(candidate_signatures, history_signatures, indices)
    categories = None
    if self.category_simhash is not None:
      categories = _field_distances(candidate_signatures, history_signatures, indices, mask,
                                    field=1)
    return indices, tf.where(mask, distances, 0), mask, categories

  def call(self, context):
    projected = self.project_all(context) if self.attention_simhash is not None else None
    indices, distances, mask, categories = self.retrieve_with_categories(context, projected)
    if projected is not None:  # every key is projected already: gather the k
      (all_keys, all_values), query_heads = projected
      key_heads = tf.gather(all_keys, indices, batch_dims=1)  # [B, N, k, H, dh]
      value_heads = tf.gather(all_values, indices, batch_dims=1)
    else:
      # [B, N, k, H, dh]; projected per history then gathered when N·k > L (serving), or
      # gathered then projected when N·k < L (training, N = 1): see project_gathered_keys.
      key_heads, value_heads = self.attention.project_gathered_keys(context["behavior"],
                                                                    indices)
      query_heads = self.attention.project_query(context["query"])
    bias = None
    if self.category_bias is not None:
      same_category = tf.cast(tf.equal(categories, 0), tf.float32)[..., None]
      bias = same_category * (SCORE_PACE * self.category_bias)  # [B, N, k, H]
    sink = None if self.sink_logit is None else SCORE_PACE * self.sink_logit
    if self.split_by_category:
      # Same scores, two softmaxes: the candidate's category (SIM(hard)'s set, within
      # the k) and the rest, each its own interest, so neither dilutes the other.
      same = tf.logical_and(mask, tf.equal(categories, 0))
      out = self.attention.attend_partitioned(
          query_heads, key_heads, value_heads,
          [same, tf.logical_and(mask, tf.logical_not(same))])
    else:
      out = self.attention.attend(query_heads, key_heads, value_heads, mask,
                                  score_bias=bias, sink_logit=sink)
    if self.config.target_stats:
      out = tf.concat([out, distance_stats(distances, mask, self.config.top_k,
                                           self.distance_bits)], axis=-1)
    return out


class FullAttentionBlock(LongHistoryBlock):
  """DIN(long) / full target attention over all L behaviors (the paper's ta(1024))."""

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    self.attention = make_attention(config, "long_attention")

  def call(self, context):
    return self.attention(context["query"], context["behavior"], context["valid"])


class SimHardBlock(LongHistoryBlock):
  """SIM(hard): the k most recent behaviors of the candidate's category, then attention."""

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    self.attention = make_attention(config, "long_attention")

  def call(self, context):
    same_category = tf.equal(context["candidate_category_bucket"][:, :, None],
                             context["history_category_bucket"][:, None, :])
    # Distance 0 for the candidate's category, 1 otherwise: select_nearest then returns
    # same-category behaviors, most recent first; the rest are masked out below.
    distances = 1 - tf.cast(same_category, tf.int32)
    indices, selected, mask = hamming_ops.select_nearest(distances, context["valid"],
                                                         self.config.top_k, sort=False)
    mask = tf.logical_and(mask, tf.equal(selected, 0))
    key_heads, value_heads = self.attention.project_gathered_keys(context["behavior"],
                                                                  indices)
    query_heads = self.attention.project_query(context["query"])
    return self.attention.attend(query_heads, key_heads, value_heads, mask)


class AvgPoolBlock(LongHistoryBlock):
  """Mean pooling over the whole long history (candidate-independent)."""

  def call(self, context):
    valid = tf.cast(context["valid"], tf.float32)[:, :, None]
    total = tf.reduce_sum(context["behavior"] * valid, axis=1)
    mean = tf.math.divide_no_nan(total, tf.reduce_sum(valid, axis=1))  # [B, Db]
    n = tf.shape(context["query"])[1]
    return tf.tile(mean[:, None, :], [1, n, 1])


class SdimBlock(LongHistoryBlock):
  """SDIM (Cao et al. 2022): hash-bucket sampling of behaviors, no attention.

  The m SimHash bits are split into m/τ groups of τ bits; in each group, the behaviors whose
  τ-bit code equals the candidate's are summed and l2-normalised; groups are averaged.
  """
  uses_signatures = True

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    self.simhash = SimHash(config.hash_bits, config.hash_seed, name="simhash")

  def _group_codes(self, signatures):
    tau = self.config.sdim_tau
    bits = tf.cast(bits_ops.unpack_bits(signatures, self.config.hash_bits), tf.int32)
    groups = self.config.hash_bits // tau
    bits = tf.reshape(bits, tf.concat([tf.shape(bits)[:-1], [groups, tau]], 0))
    return tf.reduce_sum(bits * (2 ** tf.range(tau)), axis=-1)  # [..., G]

  def call(self, context):
    history_signatures, candidate_signatures = self._signatures(context)
    history_codes = self._group_codes(history_signatures)  # [B, L, G]
    candidate_codes = self._group_codes(candidate_signatures)  # [B, N, G]
    match = tf.equal(candidate_codes[:, :, None, :], history_codes[:, None, :, :])
    match = tf.logical_and(match, context["valid"][:, None, :, None])  # [B, N, L, G]
    bucket_sums = tf.einsum("bnlg,bld->bngd", tf.cast(match, tf.float32),
                            context["behavior"])
    normalized = tf.math.l2_normalize(bucket_sums, axis=-1)  # zero sums stay zero
    return tf.reduce_mean(normalized, axis=2)


LONG_BLOCKS = {
    "eta": EtaBlock,
    "din_long": FullAttentionBlock,
    "sim_hard": SimHardBlock,
    "avg": AvgPoolBlock,
    "sdim": SdimBlock,
    "din": None,  # short history only
}
