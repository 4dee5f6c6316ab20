"""Exponential moving average of a model's trainable weights, for evaluation and export.

The weights after the last step reflect the last few batches (Adam and Adagrad at their
default rates move a CTR model by more between two epochs than two seeds differ at the
end); the average of the recent steps does not. `WeightAverage` keeps a shadow copy of
every trainable variable, updated after each training batch:

  shadow <- d_t * shadow + (1 - d_t) * weight,   d_t = min(decay, (1 + t) / (10 + t))

(t = updates so far; the warm-up term keeps the first steps from pinning the average to
the initial weights, as tf.train.ExponentialMovingAverage's num_updates does).
`swapped()` is a context manager that puts the averages in the model (evaluate, save the
weights) and the trained weights back on exit; `apply()` puts them in for good (the end
of training: the averages are what is evaluated, saved and exported).

`attach(model)` creates the averages before fit() (inside a distribution strategy's
scope, so they are placed like the weights) and makes them part of the model's
checkpoints (tf.train.Checkpoint(model=...), BackupAndRestore), so a resumed run
continues its average; they are not weights of the model (model.weights, get_weights and
the SavedModel do not change).
"""
import contextlib

import tensorflow as tf


class WeightAverage(tf.keras.callbacks.Callback):
  """EMA of the model's trainable weights (see module); decay in (0, 1)."""

  def __init__(self, decay: float = 0.99):
    super().__init__()
    if not 0.0 < decay < 1.0:
      raise ValueError(f"decay={decay!r}: must be in (0, 1)")
    self.decay = float(decay)
    self.shadows = None
    self.updates = None

  def _variables(self):
    return self.model.trainable_variables

  def _create(self):
    self.shadows = [tf.Variable(v, trainable=False) for v in self._variables()]
    self.updates = tf.Variable(0.0, trainable=False)
    self._update = tf.function(self._update_fn)

  def attach(self, model):
    """Creates the averages of `model` now and tracks them in its checkpoints (module)."""
    self.set_model(model)
    self._create()
    # A plain trackable, not a list of variables: Keras would count those as weights.
    model._weight_average = tf.train.Checkpoint(  # pylint: disable=protected-access
        shadows=self.shadows, updates=self.updates)

  def on_train_begin(self, logs=None):
    if self.shadows is None:  # one average over every fit() call of a run
      self._create()

  def _update_fn(self):
    decay = tf.minimum(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
    for shadow, variable in zip(self.shadows, self._variables()):
      shadow.assign(decay * shadow + (1.0 - decay) * tf.cast(variable, shadow.dtype))
    self.updates.assign_add(1.0)

  def on_train_batch_end(self, batch, logs=None):
    self._update()

  def apply(self):
    """Puts the averaged weights in the model for good."""
    for shadow, variable in zip(self.shadows, self._variables()):
      variable.assign(shadow)

  @contextlib.contextmanager
  def swapped(self):
    """The averaged weights in the model inside the block, the trained ones after."""
    trained = [v.numpy() for v in self._variables()]
    for shadow, variable in zip(self.shadows, self._variables()):
      variable.assign(shadow)
    try:
      yield self.model
    finally:
      for value, variable in zip(trained, self._variables()):
        variable.assign(value)
