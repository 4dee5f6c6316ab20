"""Arranges the process before TensorFlow loads: tf-keras (Keras 2), and quiet imports.

tensorflow-recommenders 0.7.x refuses Keras 3. TensorFlow reads TF_USE_LEGACY_KERAS
lazily, the first time `tf.keras` is touched, so setting it here works even when TensorFlow
itself was imported earlier, as long as nobody touched `tf.keras` with Keras 3 yet.
Every package of this project imports this module first.

Noise a user can do nothing about is dropped, each by its exact source, so that every
command shows its own output:
- TensorFlow logs its CUDA probe, oneDNN and CPU-feature INFO lines while it is imported,
  before absl's logging is initialised, and so ignores TF_CPP_MIN_LOG_LEVEL for them. The
  first `import tensorflow` runs with stderr captured; the captured lines are written back
  except those below that level (INFO below 1, WARNING below 2; ERROR lines are kept,
  except "failed call to cuInit" on a machine without an NVIDIA driver) and absl's
  "All log messages before absl::InitializeLog()" banner.
- Beam's "apitools not found" (no BigQuery client: not used here) and "Couldn't find
  python-snappy or google-crc32c" (a slower CRC for TFRecords) warnings.
"""
import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile

_MESSAGE = (
    "eta_tf needs tf-keras (Keras 2) but TensorFlow already resolved tf.keras to Keras 3 "
    "in this process. Import eta_tf (or set TF_USE_LEGACY_KERAS=1) before anything "
    "touches tf.keras.")
_NO_GPU_DRIVER = not os.path.exists("/proc/driver/nvidia")
# absl's C++ log line: severity letter, MMDD, time, thread, file:line] message.
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [^\]]+\] ")
_ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called"
_BEAM_NOISE = {"root": "apitools not found, and bigquery client libraries",
               "apache_beam.io.tfrecordio": "Couldn't find python-snappy or google-crc32c"}


def ensure_legacy_keras():
  # TensorFlow's C++ INFO/WARNING lines (CUDA probing on CPU machines) drown our output.
  # Without an NVIDIA driver its CUDA probe also logs "failed call to cuInit" at ERROR
  # level on every start; nothing at that level is actionable there (real failures raise).
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if _NO_GPU_DRIVER else "2")
  if os.environ.get("TF_USE_LEGACY_KERAS") not in ("1", "true", "True"):
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
  if "tensorflow" in sys.modules:
    # Only when TensorFlow is already loaded: checking it must not import it.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if not tf.keras.__name__.startswith("tf_keras"):
      raise ImportError(_MESSAGE)


def drop_import_noise(text: str, min_level: int) -> str:
  """`text` (captured stderr) without the absl lines below `min_level` (0 INFO .. 3
  FATAL, ERROR kept but cuInit's without a driver), absl's banner, and the second line of
  TensorFlow's CPU-feature note when its first is dropped."""
  kept, dropped_previous = [], False
  for line in text.splitlines(keepends=True):
    match = _ABSL_LINE.match(line)
    level = "IWEF".index(match.group(1)) if match else None
    drop = (line.startswith(_ABSL_BANNER)
            or (level is not None and level < min(min_level, 2))
            or (level == 2 and _NO_GPU_DRIVER and "failed call to cuInit" in line)
            or (dropped_previous and line.startswith("To enable the following instructions")))
    dropped_previous = drop
    if not drop:
      kept.append(line)
  return "".join(kept)


@contextlib.contextmanager
def _filtered_stderr():
  """Captures file descriptor 2 (C++ and Python writes alike) and writes back what
  `drop_import_noise` keeps, also when the body raises."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError, AttributeError):  # no usable fd 2: nothing to filter
    yield
    return
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      with contextlib.suppress(Exception):
        sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      try:
        level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
      except ValueError:
        level = 0
      kept = drop_import_noise(captured.read().decode("utf-8", "replace"), level)
      if kept:
        sys.stderr.write(kept)
        sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Runs the first `import tensorflow` (whoever triggers it) under _filtered_stderr."""

  def find_spec(self, fullname, path=None, target=None):
    if fullname != "tensorflow":
      return None
    sys.meta_path.remove(self)  # once: the real finders answer from now on
    spec = importlib.util.find_spec(fullname)
    if spec is None or spec.loader is None:
      return spec
    self._loader = spec.loader
    spec.loader = self
    return spec

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    module.__loader__ = module.__spec__.loader = self._loader  # the real loader again
    with _filtered_stderr():
      self._loader.exec_module(module)


class _DropMessage(logging.Filter):
  def __init__(self, start: str):
    super().__init__()
    self.start = start

  def filter(self, record):
    return not str(record.msg).startswith(self.start)


def quiet_imports():
  if "tensorflow" not in sys.modules and not any(
      isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _QuietTensorFlowImport())
  for logger, start in _BEAM_NOISE.items():
    target = logging.getLogger(None if logger == "root" else logger)
    if not any(isinstance(f, _DropMessage) for f in target.filters):
      target.addFilter(_DropMessage(start))


ensure_legacy_keras()
quiet_imports()
