"""Apache Beam pipelines: raw behavior logs -> TFRecord user sequences."""
from eta_tf import _keras_env  # noqa: F401
