"""TF Serving client, local TF-Serving-compatible server and export helpers."""
from eta_tf import _keras_env  # noqa: F401
