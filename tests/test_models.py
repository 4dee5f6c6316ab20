"""The six models: training on a learnable signal, end-to-end retrieval, SavedModel export."""
import numpy as np
import pytest
import tensorflow as tf

from eta_tf import features as F
from eta_tf.config import MODEL_NAMES
from eta_tf.config import ConfigError
from eta_tf.config import ModelConfig
from eta_tf.models import build_model
from eta_tf.signatures import serving_signatures
from eta_tf.testing import random_samples

SMALL = dict(max_len=32, short_len=4, top_k=6, item_buckets=512, category_buckets=32,
             item_dim=16, category_dim=8, num_heads=2, head_dim=8, mlp_units=(32,))
FORBIDDEN_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


def small_config(model, **kw):
  return ModelConfig(model=model, **{**SMALL, **kw})


def _dataset(feats, labels, batch=64):
  return tf.data.Dataset.from_tensor_slices((feats, labels)).batch(batch)


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_model_trains_and_loss_decreases(model_name):
  tf.keras.utils.set_random_seed(1)
  feats, labels = random_samples(512, SMALL["max_len"], seed=1)
  model = build_model(small_config(model_name))
  model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
  history = model.fit(_dataset(feats, labels), epochs=6, verbose=0).history["loss"]
  assert np.isfinite(history).all()
  assert history[-1] < history[0] - 0.05, history
  logits = model(feats).numpy()
  assert logits.shape == (512,) and np.isfinite(logits).all()


def test_eta_retrieval_changes_as_embeddings_train():
  """Signatures are recomputed from the live embeddings: training moves the top-k."""
  tf.keras.utils.set_random_seed(2)
  feats, labels = random_samples(256, SMALL["max_len"], seed=2, min_history=20)
  model = build_model(small_config("eta"))
  probe = {k: v[:64] for k, v in feats.items()}

  def retrieved():
    context = model._context(  # pylint: disable=protected-access
        model._history(probe),  # pylint: disable=protected-access
        probe[F.TARGET_ITEM_ID][:, None], probe[F.TARGET_CATEGORY_ID][:, None],
        probe[F.TARGET_TIMESTAMP])
    return model.long_block.retrieve(context)[0].numpy()

  before = retrieved()
  model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
  model.fit(_dataset(feats, labels), epochs=3, verbose=0)
  after = retrieved()
  assert (before != after).mean() > 0.05


def test_score_candidates_equals_per_sample_scores():
  tf.keras.utils.set_random_seed(3)
  model = build_model(small_config("eta"))
  feats, _ = random_samples(1, 20, seed=3, min_history=20)
  history = {name: feats[name][0] for name in F.HISTORY_FEATURES}
  candidates = np.arange(5, 25, dtype=np.int64)
  categories = candidates % 10 + 1
  ts = int(feats[F.TARGET_TIMESTAMP][0])
  scores = model.score_candidates(history, ts, candidates, categories).numpy()
  batch = {name: np.repeat(feats[name], len(candidates), 0) for name in F.HISTORY_FEATURES}
  batch.update({F.TARGET_ITEM_ID: candidates, F.TARGET_CATEGORY_ID: categories,
                F.TARGET_TIMESTAMP: np.full(len(candidates), ts)})
  np.testing.assert_allclose(scores, model.predict_ctr(batch).numpy(), atol=1e-6)


@pytest.mark.parametrize("signatures", [
    {"signature_fields": "item"},
    {"signature_fields": "item_category", "signature_distance": "category_first"}])
def test_hamming_xla_config_scores_like_the_stock_graph(signatures, tmp_path):
  """hamming_xla=True changes how the distance pass runs, not what it computes."""
  tf.keras.utils.set_random_seed(4)
  config = small_config("eta", max_len=300, top_k=8,  # >= 256: the blockwise kernel
                        **signatures)
  stock = build_model(config)
  xla = build_model(ModelConfig.from_dict({**config.to_dict(), "hamming_xla": True}))
  assert xla.long_block.top_k.use_xla and not stock.long_block.top_k.use_xla
  xla.set_weights(stock.get_weights())
  feats, _ = random_samples(2, 300, seed=4, min_history=250)
  history = {name: feats[name][0] for name in F.HISTORY_FEATURES}
  candidates = np.arange(1, 62, dtype=np.int64)  # N >= 32: blockwise; 61 pads to 64
  ts = int(feats[F.TARGET_TIMESTAMP][0])
  scores = [m.score_candidates(history, ts, candidates, candidates % 7 + 1).numpy()
            for m in (stock, xla)]
  np.testing.assert_allclose(scores[0], scores[1], atol=1e-6)
  np.testing.assert_allclose(stock.predict_ctr(feats).numpy(),
                             xla.predict_ctr(feats).numpy(), atol=1e-6)


def test_history_longer_than_max_len_keeps_most_recent():
  model = build_model(small_config("din_long"))
  long_feats, _ = random_samples(4, 50, seed=4, min_history=50)
  cut = {k: (v[:, -SMALL["max_len"]:] if k in F.HISTORY_FEATURES else v)
         for k, v in long_feats.items()}
  np.testing.assert_allclose(model(long_feats).numpy(), model(cut).numpy(), atol=1e-6)


def test_config_errors_name_field_and_value():
  with pytest.raises(ConfigError, match="model='nope'"):
    ModelConfig(model="nope")
  with pytest.raises(ConfigError, match="hash_bits=48"):
    ModelConfig(hash_bits=48)
  with pytest.raises(ConfigError, match="top_k=2000"):
    ModelConfig(top_k=2000, max_len=1024)
  cfg = ModelConfig(model="sdim", mlp_units=[8, 4])
  assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_config_saved_before_a_field_existed_loads_as_it_was_trained():
  # A model_config.json from before target_stats / signature_fields existed describes an
  # item-signature model without target statistics, whatever today's defaults are.
  saved = ModelConfig().to_dict()
  for field in ModelConfig.FIELDS_ADDED_LATER:
    del saved[field]
  old = ModelConfig.from_dict(saved)
  assert (old.target_stats, old.signature_fields, old.experiment) == (False, "item", "")
  assert (ModelConfig().target_stats, ModelConfig().signature_fields) == (True,
                                                                          "item_category")
  # Present fields always win.
  assert ModelConfig.from_dict(ModelConfig().to_dict()) == ModelConfig()


def _graph_op_types(meta_graph):
  ops = {node.op for node in meta_graph.graph_def.node}
  for function in meta_graph.graph_def.library.function:
    ops |= {node.op for node in function.node_def}
  return ops


@pytest.mark.parametrize("model_name,overrides", [(m, {}) for m in MODEL_NAMES] + [
    ("eta", {"experiment": "eta_random"}), ("eta", {"experiment": "eta_oracle"}),
    ("eta", {"experiment": "eta_attention_hash"}),
    ("eta", {"experiment": "eta_attention_hash_category"}),
    ("eta", {"experiment": "eta_linear_readout"}), ("eta", {"experiment": "eta_user_bias"}),
    ("eta", {"target_stats": False}), ("eta", {"signature_fields": "item"}),
    ("eta", {"signature_distance": "sum"}), ("eta", {"experiment": "eta_category_sink"}),
    ("eta", {"experiment": "eta_category_split"})])
def test_saved_model_runs_in_tf1_session_loader(model_name, overrides, tmp_path):
  """What TF Serving does: the C++ loader via a TF1 session, feeding signature tensors."""
  tf.keras.utils.set_random_seed(5)
  model = build_model(small_config(model_name, **overrides))
  if model_name == "eta":
    model.freeze_signatures()
  path = str(tmp_path / "1")
  tf.saved_model.save(model, path, signatures=serving_signatures(model))
  feats, _ = random_samples(8, SMALL["max_len"], seed=5)
  expected = model.predict_ctr(feats).numpy()
  graph = tf.Graph()
  with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
    op_types = _graph_op_types(meta)
    assert not op_types & FORBIDDEN_OPS
    assert all(hasattr(tf.raw_ops, op) for op in op_types), \
        sorted(op for op in op_types if not hasattr(tf.raw_ops, op))
    signature = meta.signature_def[F.SERVING_DEFAULT]
    feed = {signature.inputs[name].name: value for name, value in feats.items()}
    got = sess.run(signature.outputs[F.OUTPUT_CTR].name, feed_dict=feed)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    signature = meta.signature_def[F.SCORE_CANDIDATES]
    request = {name: feats[name][0] for name in F.HISTORY_FEATURES}
    request.update({F.REQUEST_TIMESTAMP: feats[F.TARGET_TIMESTAMP][0],
                    F.CANDIDATE_ITEM_ID: feats[F.TARGET_ITEM_ID],
                    F.CANDIDATE_CATEGORY_ID: feats[F.TARGET_CATEGORY_ID]})
    feed = {signature.inputs[name].name: value for name, value in request.items()}
    scores = sess.run(signature.outputs[F.OUTPUT_CTR].name, feed_dict=feed)
  assert scores.shape == (8,) and np.isfinite(scores).all()
  np.testing.assert_allclose(scores[0], expected[0], rtol=1e-5, atol=1e-6)
