"""Crash-safe file writes shared by every layer (no TensorFlow, no Beam).

A reader (a restarted trainer, the exporter, TF Serving's config poll, a user) sees either
the old file or the new one, never half of one: write a temporary file in the same
directory, fsync it, then `os.replace` it over the destination (atomic on POSIX).
"""
import json
import os
import tempfile


def atomic_write_text(path: str, text: str) -> str:
  """Writes `text` to `path` atomically; keeps the mode of a file it replaces."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                             dir=directory)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644
    os.chmod(tmp, mode)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


def atomic_write_json(path: str, content, **dump_kwargs) -> str:
  """`content` as indented, key-sorted JSON, written atomically (see atomic_write_text)."""
  options = {"indent": 2, "sort_keys": True, **dump_kwargs}
  return atomic_write_text(path, json.dumps(content, **options) + "\n")
