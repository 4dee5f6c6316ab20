"""CtrModel: embeddings + long-history block + short-term attention + DCN-v2/MLP tower.

One class for all six models (docs/DESIGN.md §1); `ModelConfig.model` picks the long block.
"""
import tensorflow as tf
import tensorflow_recommenders as tfrs

from eta_tf import features as F
from eta_tf.config import ModelConfig
from eta_tf.models.embedding import FeatureEmbedding
from eta_tf.models.embedding import fit_history
from eta_tf.models.history_summary import HistorySummary
from eta_tf.models.history_summary import drop_summaries
from eta_tf.models.blocks import block_class as long_block_class
from eta_tf.models.long_history import make_attention
from eta_tf.models import target_stats as target_stats_lib
from eta_tf.models import user_batched


class CtrModel(tfrs.Model):
  """CTR model of the ETA-Net family.

  call(features) takes a dict of sample features (eta_tf.features.sample_features): the
  HIST_* ids [B, T] (left-padded, T may differ from L: longer is truncated to the most
  recent L), TARGET_ITEM_ID / TARGET_CATEGORY_ID / TARGET_TIMESTAMP [B]; returns logits [B].
  Or a user-batched batch (features with TARGET_HISTORY_END, eta_tf.data.make_user_dataset:
  HIST_* [G, W], TARGET_* [G, C]); returns logits [G, C], equal to the per-sample logits
  of the same targets (eta_tf/models/user_batched.py).

  score_candidates(...) scores N candidates for one user with the history embedded,
  hashed and projected once; returns probabilities [N].
  """

  def __init__(self, config: ModelConfig, **kwargs):
    super().__init__(**kwargs)
    config.validate()
    self.config = config
    self.embedding = FeatureEmbedding(config, name="feature_embedding")
    block_class = long_block_class(config)
    self.long_block = block_class(config, name=f"{config.model}_long_history") \
        if block_class else None
    self.short_attention = make_attention(config, "short_attention")
    self.history_summary = HistorySummary(
        config.behavior_dim, config.history_summary, config.num_heads, config.head_dim,
        query_dim=config.item_dim + config.category_dim,
        name="history_summary") if (config.model == "eta" and
                                    config.history_summary != "none") else None
    self.cross_layers = [tfrs.layers.dcn.Cross(name=f"cross_{i}")
                         for i in range(config.cross_layers)]
    self.mlp_layers = []
    for i, units in enumerate(config.mlp_units):
      self.mlp_layers.append(tf.keras.layers.Dense(units, activation="relu",
                                                   name=f"mlp_{i}"))
      if config.dropout:
        self.mlp_layers.append(tf.keras.layers.Dropout(config.dropout, seed=i))
    self.logit_layer = tf.keras.layers.Dense(1, name="logit")
    self.task = tfrs.tasks.Ranking(
        # SUM, scaled in compute_loss by the global batch: the reduction tf.distribute
        # needs so per-replica gradients add up to the global mean's gradient.
        loss=tf.keras.losses.BinaryCrossentropy(
            from_logits=True, reduction=tf.keras.losses.Reduction.SUM),
        metrics=[tf.keras.metrics.AUC(name="auc", from_logits=True),
                 tf.keras.metrics.BinaryCrossentropy(name="logloss", from_logits=True)])
    # Real targets trained on (the progress bar's "examples": user-batched batches vary).
    self.examples = tf.keras.metrics.Sum(name="examples")
    # The shared block of target-aware statistics reads the long history, so `din`
    # (short history only) stays without it.
    self.uses_target_stats = config.target_stats and self.long_block is not None
    # Set by freeze_signatures() at export: item bucket -> packed SimHash signature (and
    # category bucket -> signature for signature_fields=item_category).
    self.signature_table = None
    self.category_signature_table = None

  # ---------------------------------------------------------------- core computation
  def _context(self, history, candidate_items, candidate_categories, target_timestamp):
    """Embeds a batch of histories [B, L] and candidates [B, N] into a block context."""
    emb = self.embedding
    behaviors = emb.behaviors(history, target_timestamp)
    context = {
        "query": emb.candidates(candidate_items, candidate_categories),
        "candidate_item": emb.items(candidate_items),
        "candidate_category_bucket": emb.category_buckets(candidate_categories),
        "behavior": behaviors["behavior"],
        "history_item": behaviors["item"],
        "history_category_bucket": behaviors["category_bucket"],
        "valid": behaviors["valid"],
        "history_item_id": history[F.HIST_ITEM_ID],
        "candidate_item_id": candidate_items,
    }
    if self.uses_target_stats:
      context["target_stats"] = target_stats_lib.target_stats(
          history[F.HIST_ITEM_ID], history[F.HIST_CATEGORY_ID], history[F.HIST_TIMESTAMP],
          behaviors["valid"], candidate_items, candidate_categories, target_timestamp)
    if self.signature_table is not None:
      context["history_signatures"] = tf.gather(self.signature_table,
                                                behaviors["item_bucket"])
      context["candidate_signatures"] = tf.gather(self.signature_table,
                                                  emb.item_buckets(candidate_items))
    if self.category_signature_table is not None:
      context["history_category_signatures"] = tf.gather(
          self.category_signature_table, behaviors["category_bucket"])
      context["candidate_category_signatures"] = tf.gather(
          self.category_signature_table, context["candidate_category_bucket"])
    return context

  def _logits(self, context, training=False):
    """[B, N] logits from a block context."""
    s = self.config.short_len
    parts = []
    if self.long_block is not None:
      parts.append(self.long_block(context))
    parts.append(self.short_attention(context["query"], context["behavior"][:, -s:],
                                      context["valid"][:, -s:]))
    parts.append(context["query"])
    if self.history_summary is not None:  # once per user, broadcast to the N candidates
      summary = self.history_summary(context["behavior"], context["valid"])  # [B, D]
      parts.append(self.candidate_summary(summary, context["query"], training))
    if "target_stats" in context:
      parts.append(context["target_stats"])
    logits = self._tower(parts, training)
    # An experimental block may add one logit per user ([B, 1], the same for its N
    # candidates): it moves a user's scores together and leaves their order unchanged.
    user_offset = getattr(self.long_block, "user_logit_offset", None)
    return logits if user_offset is None else logits + user_offset(context)

  def candidate_summary(self, summary, query, training=False):
    """The tower's summary part [B, N, output_dim] from the per-user summary [B, user_dim]
    and the candidates' embeddings [B, N, Dq]: broadcast to the N candidates, read out per
    candidate (history_summary=interests), dropped in training (summary_dropout)."""
    summary = summary[:, None, :] + tf.zeros_like(query[..., :1])
    summary = self.history_summary.with_readout(summary, query)
    return drop_summaries(summary, self.config.summary_dropout, training)

  def _tower(self, parts, training=False):
    """Logits [B, N] from the tower's input parts, each [B, N, ...]."""
    x = tf.concat(parts, axis=-1)
    x0 = x
    for cross in self.cross_layers:
      x = cross(x0, x)
    for layer in self.mlp_layers:
      x = layer(x, training=training)
    return self.logit_layer(x)[..., 0]

  def _history(self, features):
    return {name: fit_history(features[name], self.config.max_len)
            for name in F.HISTORY_FEATURES}

  def call(self, features, training=False):
    if F.TARGET_HISTORY_END in features:  # a user-batched batch: logits [G, C]
      return self._tower(user_batched.tower_inputs(self, features, training), training)
    history = self._history(features)
    context = self._context(
        history,
        tf.convert_to_tensor(features[F.TARGET_ITEM_ID], tf.int64)[:, None],
        tf.convert_to_tensor(features[F.TARGET_CATEGORY_ID], tf.int64)[:, None],
        tf.convert_to_tensor(features[F.TARGET_TIMESTAMP], tf.int64))
    return self._logits(context, training=training)[:, 0]

  def compute_loss(self, inputs, training=False):
    features, labels = inputs
    logits = self(features, training=training)
    labels = tf.cast(labels, tf.float32)
    if F.TARGET_HISTORY_END in features:
      # User-batched: the real targets of the batch, the mean over all replicas' targets.
      real = tf.convert_to_tensor(features[F.TARGET_WEIGHT]) > 0
      logits, labels = tf.boolean_mask(logits, real), tf.boolean_mask(labels, real)
      count = tf.cast(tf.size(logits), tf.float32)
      context = tf.distribute.get_replica_context()
      global_batch = context.all_reduce("sum", count) if context is not None else count
    else:
      replicas = tf.distribute.get_strategy().num_replicas_in_sync
      global_batch = tf.cast(tf.shape(logits)[0] * replicas, tf.float32)
    loss_sum = self.task(labels=labels[:, None], predictions=logits[:, None])
    self.examples.update_state(tf.cast(tf.size(logits), tf.float32))
    return loss_sum / tf.maximum(global_batch, 1.0)

  # ---------------------------------------------------------------- serving entry points
  def predict_ctr(self, features):
    """Probabilities [B] for a batch of samples (the `serving_default` computation)."""
    return tf.sigmoid(self(features, training=False))

  def score_candidates(self, history, request_timestamp, candidate_items,
                       candidate_categories):
    """One user, N candidates -> probabilities [N].

    Args:
      history: dict of HIST_* int64 [T] (oldest first; truncated to the latest L).
      request_timestamp: int64 [].
      candidate_items, candidate_categories: int64 [N].
    """
    batch_history = self._history({k: tf.convert_to_tensor(v, tf.int64)[None, :]
                                   for k, v in history.items()})
    context = self._context(
        batch_history,
        tf.convert_to_tensor(candidate_items, tf.int64)[None, :],
        tf.convert_to_tensor(candidate_categories, tf.int64)[None, :],
        tf.reshape(tf.convert_to_tensor(request_timestamp, tf.int64), [1]))
    return tf.sigmoid(self._logits(context, training=False)[0])

  # ---------------------------------------------------------------- export helpers
  def freeze_signatures(self, chunk_size: int = 65536):
    """Precomputes every item bucket's SimHash signature into a table inside the model.

    At export the embeddings are frozen, so the signature of each item never changes
    ("store the fingerprint with the embedding", docs/DESIGN.md §1): serving then looks
    history signatures up instead of projecting L x d x m. Do not train after this.
    """
    if self.long_block is None or not self.long_block.uses_signatures:
      return None
    table = self.embedding.item_embedding.embeddings
    simhash = self.long_block.simhash
    parts = [simhash(table[start:start + chunk_size])
             for start in range(0, self.config.item_buckets, chunk_size)]
    self.signature_table = tf.Variable(tf.concat(parts, 0), trainable=False,
                                       name="item_signature_table")
    category_simhash = getattr(self.long_block, "category_simhash", None)
    if category_simhash is not None:
      self.category_signature_table = tf.Variable(
          category_simhash(self.embedding.category_embedding.embeddings), trainable=False,
          name="category_signature_table")
    return self.signature_table

  def dummy_features(self, batch_size: int = 2):
    """A tiny valid batch; calling the model on it creates every weight."""
    length = self.config.max_len
    ids = tf.ones([batch_size, length], tf.int64)
    feats = {name: ids for name in F.HISTORY_FEATURES}
    for name in (F.TARGET_ITEM_ID, F.TARGET_CATEGORY_ID, F.TARGET_TIMESTAMP):
      feats[name] = tf.ones([batch_size], tf.int64) * 2
    return feats

  def build_weights(self):
    self(self.dummy_features(), training=False)
    return self

  # ---------------------------------------------------------------- diagnostics
  def retrieval_diagnostics(self, features):
    """How good ETA's k retrieved behaviors are, per sample (eta only).

    Returns a dict of float32 [B] plus has_history bool [B]:
      overlap: share of the Hamming top-k in the exact inner-product top-k of the
        candidate's item embedding over the real history (the quality of the hashing);
      attention_recall: share of the model's own full attention mass over all L (softmax
        of the block's head-averaged attention logits over the real history) that falls
        on the k retrieved;
      distance0_share: share of the retrieved at Hamming distance 0;
      same_category_share: share of the retrieved of the candidate's category.
    Shares are over the real retrieved behaviors (0 when there are none).
    """
    if self.config.model != "eta":
      raise ValueError(f"model={self.config.model!r}: retrieval_diagnostics is for eta")
    history = self._history(features)
    context = self._context(
        history, tf.convert_to_tensor(features[F.TARGET_ITEM_ID], tf.int64)[:, None],
        tf.convert_to_tensor(features[F.TARGET_CATEGORY_ID], tf.int64)[:, None],
        tf.convert_to_tensor(features[F.TARGET_TIMESTAMP], tf.int64))
    k = self.config.top_k
    indices, distances, mask = self.long_block.retrieve(context)
    valid = context["valid"][:, None, :]
    retrieved = tf.reduce_sum(tf.cast(mask, tf.float32), axis=-1)  # [B, N]
    share = lambda hit: tf.math.divide_no_nan(  # noqa: E731
        tf.reduce_sum(tf.cast(hit & mask, tf.float32), axis=-1), retrieved)[:, 0]
    # Exact inner-product top-k on the same embeddings.
    scores = tf.einsum("bnd,bld->bnl", context["candidate_item"], context["history_item"])
    scores = tf.where(valid, scores, tf.constant(-1e30, scores.dtype))
    _, exact_indices = tf.math.top_k(scores, k=k)
    exact_mask = tf.gather(tf.broadcast_to(valid, tf.shape(scores)), exact_indices,
                           batch_dims=2)
    hit = tf.equal(indices[:, :, :, None], exact_indices[:, :, None, :])
    hit = hit & mask[:, :, :, None] & exact_mask[:, :, None, :]
    hits = tf.reduce_sum(tf.cast(hit, tf.float32), axis=[-1, -2])[:, 0]
    exact_count = tf.reduce_sum(tf.cast(exact_mask, tf.float32), axis=-1)[:, 0]
    # The block's own attention over all L, head-averaged logits, softmax over real ones.
    logits = self.long_block.full_attention_scores(context)
    logits = tf.where(valid, logits, tf.constant(-1e9, logits.dtype))
    weights = tf.nn.softmax(logits, axis=-1) * tf.cast(valid, logits.dtype)
    on_retrieved = tf.gather(weights, indices, batch_dims=2) * tf.cast(mask, weights.dtype)
    same_category = tf.equal(
        tf.gather(context["history_category_bucket"], indices, batch_dims=1),
        context["candidate_category_bucket"][:, :, None])
    return {
        "overlap": tf.math.divide_no_nan(hits, exact_count),
        "attention_recall": tf.reduce_sum(on_retrieved, axis=-1)[:, 0],
        "distance0_share": share(tf.equal(distances, 0)),
        "same_category_share": share(same_category),
        "has_history": retrieved[:, 0] > 0,
    }


def build_model(config: ModelConfig) -> CtrModel:
  """Builds a model by `config.model` with all weights created."""
  return CtrModel(config).build_weights()
