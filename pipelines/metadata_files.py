"""Atomic writes of the job's small JSON outputs (stats.json, schema.json) on any Beam filesystem.

A reader (the trainer, a user, a rerun) sees the previous file or the complete new one, never a
truncated one: the content is serialized before anything is opened, written to a temporary
name next to the destination, then moved over it. Local paths go through
eta_tf.io_utils.atomic_write_text (fsync + os.replace, atomic on POSIX); other filesystems
(gs://, hdfs://, s3://) through FileSystems.rename, the most atomic move Beam offers there.
"""
import json
import logging
import uuid

from apache_beam.io.filesystems import FileSystems

from eta_tf import io_utils


def json_text(content: dict) -> str:
  """The bytes written for `content`: indented, key-sorted JSON (the layout readers diff)."""
  return json.dumps(content, indent=2, sort_keys=True)


def temp_path(path: str) -> str:
  """A unique temporary name in the destination's directory (same filesystem, same bucket)."""
  directory, name = FileSystems.split(path)
  return FileSystems.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")


def write_json(path: str, content: dict) -> str:
  """Writes `content` as JSON to `path` atomically; returns `path`.

  Raises whatever serialization or the filesystem raises, after removing its temporary file;
  the previous `path`, if any, is then untouched.
  """
  text = json_text(content)  # before any file is touched: a bad value leaves nothing behind
  if FileSystems.get_scheme(path) is None:  # a plain OS path: LocalFileSystem's own form
    return io_utils.atomic_write_text(path, text)
  tmp = temp_path(path)
  try:
    with FileSystems.create(tmp) as f:
      f.write(text.encode("utf-8"))
    FileSystems.rename([tmp], [path])
  except BaseException:
    try:
      if FileSystems.exists(tmp):
        FileSystems.delete([tmp])
    except Exception:  # the write's own error is the one to report
      logging.exception("could not remove the temporary file %s", tmp)
    raise
  return path
