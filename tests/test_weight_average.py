"""WeightAverage: the shadow weights follow the EMA recursion of the trained weights
(numpy reference, step by step), and swapped() restores the trained weights."""
import numpy as np
import pytest
import tensorflow as tf

from eta_tf.models.weight_average import WeightAverage


def test_shadow_is_the_warmed_up_ema_of_every_step():
  tf.keras.utils.set_random_seed(0)
  model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(1)])
  model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="mse")
  x = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)
  y = x.sum(axis=1, keepdims=True)
  seen = [[v.numpy() for v in model.trainable_variables]]

  class Record(tf.keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
      seen.append([v.numpy() for v in self.model.trainable_variables])

  average = WeightAverage(0.9)
  model.fit(x, y, batch_size=3, epochs=2, verbose=0, shuffle=False,
            callbacks=[Record(), average])
  want = [w.astype(np.float64) for w in seen[0]]
  for t, step in enumerate(seen[1:]):
    d = min(0.9, (1.0 + t) / (10.0 + t))
    want = [d * a + (1 - d) * w for a, w in zip(want, step)]
  for shadow, expected in zip(average.shadows, want):
    np.testing.assert_allclose(shadow.numpy(), expected, rtol=1e-5, atol=1e-6)
  trained = [v.numpy() for v in model.trainable_variables]
  with average.swapped():
    for v, expected in zip(model.trainable_variables, want):
      np.testing.assert_allclose(v.numpy(), expected, rtol=1e-5, atol=1e-6)
  for v, value in zip(model.trainable_variables, trained):
    np.testing.assert_array_equal(v.numpy(), value)


def test_decay_out_of_range_names_the_value():
  with pytest.raises(ValueError, match="decay=1.0"):
    WeightAverage(1.0)


def test_attached_averages_are_checkpointed_but_are_not_weights(tmp_path):
  """attach(): the averages exist before fit, travel with tf.train.Checkpoint(model=...)
  (what BackupAndRestore writes, so a resumed run continues its average) and are not
  weights of the model (get_weights, the export)."""
  model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
  weights_before = len(model.weights)
  average = WeightAverage(0.9)
  average.attach(model)
  assert len(model.weights) == weights_before and len(model.get_weights()) == weights_before
  average.shadows[0].assign(tf.fill(average.shadows[0].shape, 7.0))
  average.updates.assign(41.0)
  path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
  average.shadows[0].assign(tf.zeros_like(average.shadows[0]))
  average.updates.assign(0.0)
  tf.train.Checkpoint(model=model).read(path).assert_consumed()
  np.testing.assert_array_equal(average.shadows[0].numpy(), 7.0)
  assert average.updates.numpy() == 41.0
  # A model without an average (the exporter's rebuild) reads the same checkpoint.
  plain = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
  tf.train.Checkpoint(model=plain).read(path).expect_partial()
  np.testing.assert_array_equal(plain.get_weights()[0], model.get_weights()[0])


def test_the_trainer_keeps_the_average_of_every_step(tmp_path, small_data_dir, monkeypatch):
  """training.train with weight_average: each epoch's evaluation and the final weights are
  the averaged ones, equal to a numpy EMA over the weights recorded after every step."""
  from conftest import SMALL_BATCH_SIZE, small_model_config  # pylint: disable=g-import-not-at-top
  from eta_tf import config as config_lib  # pylint: disable=g-import-not-at-top
  from eta_tf import training  # pylint: disable=g-import-not-at-top
  seen = []

  class Record(tf.keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
      seen.append([v.numpy() for v in self.model.trainable_variables])

    def on_train_batch_end(self, batch, logs=None):
      seen.append([v.numpy() for v in self.model.trainable_variables])

  make_callbacks = training._callbacks  # pylint: disable=protected-access
  monkeypatch.setattr(training, "_callbacks",
                      lambda *a, **k: {"record": Record(), **make_callbacks(*a, **k)})
  decay = 0.9
  train_config = config_lib.TrainConfig(epochs=2, steps=4, eval_steps=2,
                                        batch_size=SMALL_BATCH_SIZE, weight_average=decay)
  _, model = training.train(small_model_config("eta"), train_config, str(small_data_dir),
                            str(tmp_path / "run"), verbose=0)
  assert len(seen) == 1 + 8
  want = [w.astype(np.float64) for w in seen[0]]
  for t, step in enumerate(seen[1:]):
    d = min(decay, (1.0 + t) / (10.0 + t))
    want = [d * a + (1 - d) * w for a, w in zip(want, step)]
  final = [v.numpy() for v in model.trainable_variables]
  for got, expected in zip(final, want):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
  # ... and not the last step's weights.
  assert max(np.abs(f - s).max() for f, s in zip(final, seen[-1])) > 1e-3
