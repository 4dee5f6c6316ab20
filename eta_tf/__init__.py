"""eta-tf: ETA-Net (end-to-end target attention over long user histories) on TF/Keras."""
from eta_tf import _keras_env  # noqa: F401  (must run before TensorFlow touches tf.keras)

__version__ = "0.1.0"
