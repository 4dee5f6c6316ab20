"""Selects tf-keras (Keras 2) before TensorFlow resolves `tf.keras`.

tensorflow-recommenders 0.7.x refuses Keras 3. TensorFlow reads TF_USE_LEGACY_KERAS
lazily, the first time `tf.keras` is touched, so setting it here works even when TensorFlow
itself was imported earlier, as long as nobody touched `tf.keras` with Keras 3 yet.
Every package of this project imports this module first.
"""
import os
import sys

_MESSAGE = (
    "eta_tf needs tf-keras (Keras 2) but TensorFlow already resolved tf.keras to Keras 3 "
    "in this process. Import eta_tf (or set TF_USE_LEGACY_KERAS=1) before anything "
    "touches tf.keras.")


def ensure_legacy_keras():
  # TensorFlow's C++ INFO/WARNING lines (CUDA probing on CPU machines) drown our output.
  # Without an NVIDIA driver its CUDA probe also logs "failed call to cuInit" at ERROR
  # level on every start; nothing at that level is actionable there (real failures raise).
  no_gpu_driver = not os.path.exists("/proc/driver/nvidia")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if no_gpu_driver else "2")
  if os.environ.get("TF_USE_LEGACY_KERAS") not in ("1", "true", "True"):
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
  if "tensorflow" in sys.modules:
    # Only when TensorFlow is already loaded: checking it must not import it.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if not tf.keras.__name__.startswith("tf_keras"):
      raise ImportError(_MESSAGE)


ensure_legacy_keras()
