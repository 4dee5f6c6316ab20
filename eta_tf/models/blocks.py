"""The long-history block class of a config: the product's block of each model
(long_history.LONG_BLOCKS) or, when ModelConfig.experiment names one, an experimental eta
block (eta_tf.experimental, whose blocks subclass EtaBlock).

The one module that knows both, so that the product's blocks never import the experiments.
"""
from eta_tf import experimental
from eta_tf.config import ModelConfig
from eta_tf.models.long_history import LONG_BLOCKS


def block_class(config: ModelConfig):
  """The Keras layer class of config's long-history block (None for din, which has only
  the short history): EXPERIMENTAL_BLOCKS[config.experiment] when config.experiment is
  set, else LONG_BLOCKS[config.model]."""
  if config.experiment:
    return experimental.EXPERIMENTAL_BLOCKS[config.experiment]
  return LONG_BLOCKS[config.model]
