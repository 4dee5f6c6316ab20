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
