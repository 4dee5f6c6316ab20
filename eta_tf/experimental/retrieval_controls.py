"""Retrieval controls of eta: the floor (random), the ceiling (oracle) and the
attention_hash experiments between them. The attention over the k is ETA's."""
import tensorflow as tf

from eta_tf.layers import SimHash
from eta_tf.models.long_history import EtaBlock
from eta_tf.models.long_history import category_first_weights
from eta_tf.models.long_history import gathered_distances
from eta_tf.ops import hamming as hamming_ops
from eta_tf.ops import hamming_matmul


def mix_ids(history_ids, candidate_ids, num_values: int):
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


class RandomRetrievalBlock(EtaBlock):
  """eta_random: the candidate's exact-item matches first, then a fixed pseudo-random k
  (the floor of a k-behavior retrieval). Distances are the Hamming distances of the k."""

  def retrieve(self, context):
    history_signatures, candidate_signatures = self._signatures(context)
    same_item = tf.equal(context["candidate_item_id"][:, :, None],
                         context["history_item_id"][:, None, :])
    keys = tf.where(same_item, 0, 1 + mix_ids(context["history_item_id"],
                                              context["candidate_item_id"], 1 << 16))
    indices, _, mask = hamming_ops.select_nearest(keys, context["valid"],
                                                  self.config.top_k, sort=False)
    distances = gathered_distances(candidate_signatures, history_signatures, indices)
    return indices, tf.where(mask, distances, 0), mask


class OracleRetrievalBlock(EtaBlock):
  """eta_oracle: the top-k by this block's own full attention scores over all L (the
  ceiling of a k-behavior retrieval)."""

  def retrieve(self, context):
    history_signatures, candidate_signatures = self._signatures(context)
    valid = context["valid"]
    scores = self.full_attention_scores(context)
    scores = tf.where(valid[:, None, :], scores, tf.constant(-1e30, scores.dtype))
    _, indices = tf.math.top_k(tf.stop_gradient(scores), k=self.config.top_k, sorted=False)
    mask = tf.gather(tf.broadcast_to(valid[:, None, :], tf.shape(scores)), indices,
                     batch_dims=2)
    distances = gathered_distances(candidate_signatures, history_signatures, indices)
    return indices, tf.where(mask, distances, 0), mask


class AttentionHashBlock(EtaBlock):
  """eta_attention_hash: ETA's Hamming top-k on SimHash of the attention's own projected,
  per-head normalised query and keys (the space the oracle ranks in), computed per
  request, no frozen table. Distances count over m bits."""

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    self.attention_simhash = SimHash(config.hash_bits, config.hash_seed + 2,
                                     name="attention_simhash")

  @property
  def distance_bits(self) -> int:
    return self.config.hash_bits

  def project_all(self, context):
    """((key_heads, value_heads) [B, L, H, dh] of every behavior, query_heads
    [B, N, H, dh]): what is hashed, projected once and gathered for the attention."""
    return (self.attention.project_keys(context["behavior"]),
            self.attention.project_query(context["query"]))

  def attention_signatures(self, projected):
    """SimHash of the per-head unit query and key projections, concatenated over heads:
    int64 [B, N, W] and [B, L, W]. `projected` is project_all's.

    The angle between two such concatenations is arccos(mean over heads of the cosine),
    so nearer signatures approximate higher head-averaged attention scores (the oracle's
    ranking, up to the per-head scales).
    """
    (key_heads, _), query_heads = projected  # keys are unit per head (normalize_qk)
    query_heads = tf.math.l2_normalize(query_heads, axis=-1)
    flat = lambda x: tf.reshape(x, tf.concat([tf.shape(x)[:-2], [-1]], 0))  # noqa: E731
    width = self.config.num_heads * self.config.head_dim
    query = tf.ensure_shape(flat(query_heads), [None, None, width])
    keys = tf.ensure_shape(flat(key_heads), [None, None, width])
    return self.attention_simhash(query), self.attention_simhash(keys)

  def retrieve(self, context, projected=None):
    query_signatures, key_signatures = self.attention_signatures(
        projected if projected is not None else self.project_all(context))
    indices, distances, mask = self.top_k(query_signatures, key_signatures,
                                          mask=context["valid"])
    return indices, tf.where(mask, distances, 0), mask

  def call(self, context):
    projected = self.project_all(context)
    indices, distances, mask = self.retrieve(context, projected)
    (all_keys, all_values), query_heads = projected  # every key is projected: gather k
    key_heads = tf.gather(all_keys, indices, batch_dims=1)  # [B, N, k, H, dh]
    value_heads = tf.gather(all_values, indices, batch_dims=1)
    out = self.attention.attend(query_heads, key_heads, value_heads, mask)
    return self.with_stats(out, distances, mask)


class AttentionHashCategoryFirstBlock(AttentionHashBlock):
  """eta_attention_hash_category: attention_hash's signature ‖ the category signature,
  ranked category first (as the default eta ranks item ‖ category): behaviors whose
  category signature is nearest come first, by nearness of the attention's projections
  among them. Needs signature_fields=item_category (the category SimHash); distances
  count over 2m bits (category + attention), as the default's statistics do."""

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    if self.category_simhash is None:
      raise ValueError("eta_attention_hash_category needs signature_fields=item_category, "
                       f"got signature_fields={config.signature_fields!r}")

  @property
  def distance_bits(self) -> int:
    return 2 * self.config.hash_bits

  def retrieve(self, context, projected=None):
    query_signatures, key_signatures = self.attention_signatures(
        projected if projected is not None else self.project_all(context))
    history_category, candidate_category = self.category_signatures(context)
    words = self.config.hash_words
    indices, distances, mask = hamming_matmul.weighted_top_k(
        tf.concat([query_signatures, candidate_category], axis=-1),
        tf.concat([key_signatures, history_category], axis=-1), context["valid"],
        self.config.top_k, use_xla=self.config.hamming_xla, sort=False,
        word_weights=category_first_weights(words, self.config.hash_bits))
    m1 = self.config.hash_bits + 1  # category · (m + 1) + attention -> their sum
    return indices, tf.where(mask, distances // m1 + distances % m1, 0), mask
