"""Test-wide setup: tf-keras before TensorFlow, quiet TF logs, one fixed seed."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import eta_tf  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
