"""Experimental category treatments of eta's retrieved k (item_category signatures):
SIM(hard)'s category mask applied to ETA's retrieval (hard: category_only; soft: a
learned bias, optionally with an attention sink; split: two softmaxes)."""
import tensorflow as tf

from eta_tf.layers import attention as attention_lib
from eta_tf.models.long_history import EtaBlock
from eta_tf.models.long_history import gathered_distances

# Learned attention scores (category bias, sink) are this many times their weight: Adam
# moves a weight by ~learning_rate per step, and the attention scores they compete with
# span ±score_scale, so at unit pace a bias could not approach a mask within a run.
SCORE_PACE = 10.0


class CategoryExperimentBlock(EtaBlock):
  """Base: retrieval as EtaBlock's, plus the category-signature distance of each
  retrieved (needs signature_fields=item_category; ModelConfig.validate checks)."""

  def retrieve_with_categories(self, context):
    """retrieve() plus the category-signature distance of each retrieved, int32
    [B, N, k] (0 where masked)."""
    indices, keys, mask = self.ranked_top_k(context)
    m = self.config.hash_bits
    if self.category_first:
      mask = self.restrict(mask, keys)
      return (indices, tf.where(mask, keys // (m + 1) + keys % (m + 1), 0), mask,
              tf.where(mask, keys // (m + 1), 0))
    history_signatures, candidate_signatures = self._signatures(context)
    words = self.config.hash_words
    categories = gathered_distances(candidate_signatures[..., words:],
                                    history_signatures[..., words:], indices)
    return indices, keys, mask, tf.where(mask, categories, 0)

  def restrict(self, mask, keys):
    """The retrieved kept (category_first ranking keys): all of them here."""
    del keys
    return mask

  def retrieve(self, context):
    indices, distances, mask, _ = self.retrieve_with_categories(context)
    return indices, distances, mask


class CategoryOnlyBlock(CategoryExperimentBlock):
  """eta_category_only: category_first keeping only the retrieved at category distance
  0, as SIM(hard) masks other categories (ETA's order inside the category)."""

  def restrict(self, mask, keys):
    return tf.logical_and(mask, keys <= self.config.hash_bits)


def attend_biased(attention, query_heads, key_heads, value_heads, mask, score_bias,
                  sink_logit=None):
  """Per-query attention with a score bias [B, N, k, H] added before the softmax and an
  optional sink: one more zero-valued key per head of score sink_logit [H], so that when
  no behavior scores above it the context shrinks towards zero. -> [B, N, output_dim]."""
  scores = attention_lib.per_query_scores(query_heads, key_heads) + score_bias
  if sink_logit is None:
    return attention.output(attention_lib.per_query_context(scores, mask, value_heads))
  mask = tf.cast(mask, tf.bool)[..., None]
  logits = tf.where(mask, scores, tf.constant(-1e9, scores.dtype))
  top = tf.maximum(tf.reduce_max(logits, axis=2, keepdims=True), sink_logit)
  exp = tf.exp(logits - top) * tf.cast(mask, scores.dtype)
  total = tf.reduce_sum(exp, axis=2, keepdims=True) + tf.exp(sink_logit - top)
  weights = exp / tf.maximum(total, tf.constant(1e-30, scores.dtype))
  return attention.output(tf.reduce_sum(weights[..., None] * value_heads, axis=2))


class CategoryBiasBlock(CategoryExperimentBlock):
  """eta_category_bias: a learned per-head attention bias (SCORE_PACE x weight) for the
  retrieved whose category signature equals the candidate's: SIM(hard)'s category mask,
  soft and learned, without losing the other retrieved."""
  use_sink = False

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    # Starts at 0 (plain category_first attention).
    self.category_bias = self.add_weight(name="category_bias",
                                         shape=(config.num_heads,), initializer="zeros")
    self.sink_logit = None
    if self.use_sink:  # starts at score 0, inside the span of the cosine scores
      self.sink_logit = self.add_weight(name="sink_logit", shape=(config.num_heads,),
                                        initializer="zeros")

  def call(self, context):
    indices, distances, mask, categories = self.retrieve_with_categories(context)
    query_heads, key_heads, value_heads = self.project_retrieved(context, indices)
    same_category = tf.cast(tf.equal(categories, 0), tf.float32)[..., None]
    bias = same_category * (SCORE_PACE * self.category_bias)  # [B, N, k, H]
    sink = None if self.sink_logit is None else SCORE_PACE * self.sink_logit
    out = attend_biased(self.attention, query_heads, key_heads, value_heads, mask, bias,
                        sink)
    return self.with_stats(out, distances, mask)


class CategorySinkBlock(CategoryBiasBlock):
  """eta_category_sink: eta_category_bias plus an attention sink key per head."""
  use_sink = True


class CategorySplitBlock(CategoryExperimentBlock):
  """eta_category_split: the same scores, two softmaxes: over the retrieved of the
  candidate's category (category distance 0) and over the rest, two long-term interests
  for the tower: output [B, N, 2 · output_dim (+ stats)]."""

  def call(self, context):
    indices, distances, mask, categories = self.retrieve_with_categories(context)
    query_heads, key_heads, value_heads = self.project_retrieved(context, indices)
    same = tf.logical_and(mask, tf.equal(categories, 0))
    scores = attention_lib.per_query_scores(query_heads, key_heads)  # [B, N, k, H]
    out = tf.concat([
        self.attention.output(attention_lib.per_query_context(scores, part, value_heads))
        for part in (same, tf.logical_and(mask, tf.logical_not(same)))], axis=-1)
    return self.with_stats(out, distances, mask)
