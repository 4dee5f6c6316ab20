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
from eta_tf.ops import hamming_matmul


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


def gathered_distances(candidate_signatures, history_signatures, indices):
  """Hamming distances of each candidate to its selected behaviors, int32 [B, N, k].

  candidate_signatures int64 [B, N, W], history_signatures int64 [B, L, W], indices
  int32 [B, N, k].
  """
  words, k = candidate_signatures.shape[-1], indices.shape[-1]
  gathered = tf.gather(history_signatures, indices, batch_dims=1)  # [B, N, k, W]
  distances = hamming_ops.hamming_distance(tf.reshape(candidate_signatures, [-1, 1, words]),
                                           tf.reshape(gathered, [-1, k, words]))
  return tf.reshape(distances, tf.shape(indices))


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

  Signatures: SimHash of the item embedding (signature_fields=item), or item ‖ category
  (item_category), ranked by the sum of the field distances or category first
  (category_first_weights). With `config.target_stats` the output also carries
  distance_stats of the retrieved: [B, N, output_dim + NUM_DISTANCE_STATS].
  Experimental variants (eta_tf/experimental) subclass it and override `retrieve`/`call`.
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

  @property
  def category_first(self) -> bool:
    """Ranked by category distance · (m + 1) + item distance (item_category only)."""
    return (self.category_simhash is not None and
            self.config.signature_distance == "category_first")

  @property
  def distance_bits(self) -> int:
    """Bits the retrieval's Hamming distances count over: m per hashed field."""
    return self.config.hash_bits * (2 if self.category_simhash is not None else 1)

  def _signatures(self, context):
    """Item signatures, followed by category signatures for signature_fields=item_category.

    The category embeddings are the slice of the behavior / query embeddings after the
    item part (behavior = item ⊕ category ⊕ ..., query = item ⊕ category).
    """
    history, candidate = super()._signatures(context)
    if self.category_simhash is None:
      return history, candidate
    history_category, candidate_category = self.category_signatures(context)
    return (tf.concat([history, history_category], axis=-1),
            tf.concat([candidate, candidate_category], axis=-1))

  def category_signatures(self, context):
    """Category signatures of the behaviors int64 [B, L, W] and of the candidates [B, N,
    W]: the frozen table's when given, else SimHash of the category embeddings (the
    slice of the behavior / query embeddings after the item part). Needs
    signature_fields=item_category."""
    d, dc = self.config.item_dim, self.config.category_dim
    history = context.get("history_category_signatures")
    if history is None:
      history = self.category_simhash(context["behavior"][..., d:d + dc])
    candidate = context.get("candidate_category_signatures")
    if candidate is None:
      candidate = self.category_simhash(context["query"][..., d:d + dc])
    return history, candidate

  def full_attention_scores(self, context):
    """Head-averaged attention logits of every candidate over all L, float [B, N, L]."""
    key_heads, _ = self.attention.project_keys(context["behavior"])
    query_heads = self.attention.project_query(context["query"])
    return tf.einsum("bnhd,blhd->bnl", query_heads, key_heads) / self.config.num_heads

  def ranked_top_k(self, context):
    """The Hamming top-k by this block's ranking: indices int32 [B, N, k], ranking
    distances int32 [B, N, k] (category_first: category · (m + 1) + item) and mask."""
    history_signatures, candidate_signatures = self._signatures(context)
    if not self.category_first:
      return self.top_k(candidate_signatures, history_signatures, mask=context["valid"])
    # The same exact order as select_nearest over the N x L weighted distances: one
    # float32 matrix product of ±1 signs for many candidates over long histories,
    # hamming_top_k's fused XOR + popcount pass otherwise (training's N = 1).
    return hamming_matmul.weighted_top_k(
        candidate_signatures, history_signatures, context["valid"], self.config.top_k,
        use_xla=self.config.hamming_xla, sort=False,
        word_weights=category_first_weights(self.config.hash_words, self.config.hash_bits))

  def retrieve(self, context):
    """Indices int32 [B, N, k], summed Hamming distances int32 [B, N, k] (0 where
    masked) and mask bool [B, N, k]."""
    indices, distances, mask = self.ranked_top_k(context)
    if self.category_first:  # statistics read the summed distance, as with "sum"
      m1 = self.config.hash_bits + 1
      distances = distances // m1 + distances % m1
    return indices, tf.where(mask, distances, 0), mask

  def project_retrieved(self, context, indices):
    """(query_heads [B, N, H, dh], key_heads, value_heads [B, N, k, H, dh]) of the
    retrieved: projected per history then gathered when N·k > L (serving), or gathered
    then projected when N·k < L (training, N = 1): see project_gathered_keys."""
    key_heads, value_heads = self.attention.project_gathered_keys(context["behavior"],
                                                                  indices)
    return self.attention.project_query(context["query"]), key_heads, value_heads

  def with_stats(self, out, distances, mask):
    """`out` [B, N, D] followed by distance_stats when config.target_stats."""
    if not self.config.target_stats:
      return out
    return tf.concat([out, distance_stats(distances, mask, self.config.top_k,
                                          self.distance_bits)], axis=-1)

  def call(self, context):
    indices, distances, mask = self.retrieve(context)
    query_heads, key_heads, value_heads = self.project_retrieved(context, indices)
    out = self.attention.attend(query_heads, key_heads, value_heads, mask)
    return self.with_stats(out, distances, mask)


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


def masked_mean(behavior, valid):
  """(mean [B, Db] of the real behaviors, zeros without history; their count [B, 1])
  from behavior float [B, L, Db] and valid bool [B, L]."""
  validf = tf.cast(valid, behavior.dtype)[:, :, None]
  count = tf.reduce_sum(validf, axis=1)
  return tf.math.divide_no_nan(tf.reduce_sum(behavior * validf, axis=1), count), count


class AvgPoolBlock(LongHistoryBlock):
  """Mean pooling over the whole long history (candidate-independent)."""

  def call(self, context):
    mean, _ = masked_mean(context["behavior"], context["valid"])  # [B, Db]
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


# The product's long-history block of each model (eta_tf.models.blocks adds the experiments).
LONG_BLOCKS = {
    "eta": EtaBlock,
    "din_long": FullAttentionBlock,
    "sim_hard": SimHardBlock,
    "avg": AvgPoolBlock,
    "sdim": SdimBlock,
    "din": None,  # short history only
}
