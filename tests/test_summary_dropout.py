"""Summary dropout: in training a sample's summary is either whole or exactly zeros (a
history-less user's), in both training layouts; serving never drops; config checks."""
import numpy as np
import pytest
import tensorflow as tf

from eta_tf import presets
from eta_tf.config import ConfigError
from eta_tf.config import ModelConfig
from eta_tf.models import ctr_model
from eta_tf.models import user_batched
from eta_tf.models.history_summary import drop_summaries
from test_user_batched import SMALL
from test_user_batched import _perturbed_model
from test_user_batched import data_dir  # noqa: F401  (the fixture)
from test_user_batched import per_sample_logits
from test_user_batched import user_batched_logits


def test_drop_summaries_zeroes_whole_vectors_at_the_rate():
  tf.keras.utils.set_random_seed(0)
  summary = tf.random.uniform([400, 25, 6], 0.5, 1.5)  # no zero entry of its own
  dropped = drop_summaries(summary, 0.3, training=True).numpy()
  zero = np.all(dropped == 0.0, axis=-1)
  np.testing.assert_array_equal(dropped[~zero], summary.numpy()[~zero])  # kept: untouched
  assert not np.any((dropped == 0.0) & ~zero[..., None])  # nothing dropped partly
  assert abs(zero.mean() - 0.3) < 0.02  # 10,000 draws: sd of the share ~0.005
  for rate, training in ((0.3, False), (0.0, True)):
    np.testing.assert_array_equal(drop_summaries(summary, rate, training).numpy(),
                                  summary.numpy())


@pytest.mark.parametrize("layout", ["sample", "user"])
def test_training_logits_are_with_or_without_the_summary(data_dir, monkeypatch,  # noqa: F811
                                                        layout):
  """Each training logit is the serving logit (summary kept) or the logit of a zero
  summary, both happen, and the two differ where the user has a history (so the check
  can fail)."""
  config = ModelConfig(model="eta", **{**SMALL, "summary_dropout": 0.5})
  model = _perturbed_model(config, seed=11)
  logits = per_sample_logits if layout == "sample" else user_batched_logits

  def run(training):
    return logits(model, data_dir, config.max_len, training=training)

  keys, kept = run(False)
  got_keys, trained = run(True)
  np.testing.assert_array_equal(got_keys, keys)
  for module in (ctr_model, user_batched):
    monkeypatch.setattr(module, "drop_summaries", lambda s, rate, training: tf.zeros_like(s))
  _, zeroed = run(False)
  differ = np.abs(kept - zeroed) > 1e-3  # all but targets without history (zero anyway)
  assert differ.mean() > 0.7
  is_kept = np.abs(trained - kept) < 1e-5
  is_zeroed = np.abs(trained - zeroed) < 1e-5
  assert np.all(is_kept | is_zeroed)
  assert 0.2 < is_kept[differ].mean() < 0.8


def test_summary_dropout_config():
  with pytest.raises(ConfigError, match="summary_dropout=1.0"):
    ModelConfig(summary_dropout=1.0)
  for field in ("summary_dropout", "dropout"):  # not a number: named, not a TypeError
    with pytest.raises(ConfigError, match=f"^{field}='half': must be a number"):
      ModelConfig(**{field: "half"})
  assert ModelConfig(history_summary="none", summary_dropout=0.5).summary_dropout == 0.0
  assert presets.model_config("eta").summary_dropout == 0.5
  # A config saved before the field existed trained with the summary in every sample.
  saved = presets.model_config("eta").to_dict()
  del saved["summary_dropout"]
  assert presets.preset_of(ModelConfig.from_dict(saved)) == "eta_summary_always"
