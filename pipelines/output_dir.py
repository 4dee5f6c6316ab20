"""The life cycle of a pipeline output directory: one writer, built aside, swapped in whole.

    with BuildInto(output_dir, overwrite) as build_dir:   # lock + refusal + temp sibling
      ... the Beam job writes into build_dir ...
      mark_complete(build_dir)                           # last: the output is valid
    # leaving the block without an error swaps build_dir in as output_dir

* One writer at a time: an exclusive lock beside the directory (eta_tf.io_utils); a second
  job on the same --output_dir is refused at once naming the first (exit 2).
* An existing output is refused unless `overwrite` (exit 2, saying what would be replaced);
  with `overwrite` the old output keeps serving readers until the new one is complete:
  the job writes into a hidden sibling `.<name>.building-<pid>` and, on success, the two
  directories are exchanged in one renameat2(RENAME_EXCHANGE) (two renames where the
  file system cannot). Files of the old directory that are not pipeline outputs are
  carried over. A failed or killed job leaves the old output as it was; its sibling is
  removed by the next job on that directory.
* `<output_dir>/_COMPLETE` is written last, listing every output file and its size: the
  trainer reads no directory without it (eta_tf.io_utils.check_complete), so an output that did not
  finish, or was changed after, is never taken for data.

Remote paths (gs://...) have no atomic directory rename: there the job deletes the old
outputs (marker first) and writes in place; the marker still guards readers.
"""
import ctypes
import errno
import json
import os
import secrets
import shutil
import sys
from typing import Dict, List

from apache_beam.io.filesystems import FileSystems

from eta_tf import features
from eta_tf import io_utils

COMPLETE_FILE = features.COMPLETE_FILE
_BUILDING = ".building-"


class OutputDirError(SystemExit):
  """A refused output dir: one line on stderr, exit code 2."""

  def __init__(self, message: str):
    print(f"build_dataset: error: {message}", file=sys.stderr, flush=True)
    super().__init__(2)
    self.message = message

  def __str__(self):
    return self.message


def is_local(path: str) -> bool:
  return "://" not in path


def existing_outputs(output_dir: str) -> List[str]:
  """The pipeline's own files in output_dir (shards, dead letter, stats, schema, marker)."""
  join = FileSystems.join
  patterns = [features.split_file_pattern(output_dir, s) for s in features.SPLITS]
  patterns += [join(output_dir, features.DEAD_LETTER_PREFIX) + "-*",
               join(output_dir, features.STATS_FILE), join(output_dir, features.SCHEMA_FILE),
               join(output_dir, COMPLETE_FILE)]
  found = []
  for result in FileSystems.match(patterns):
    found += [m.path for m in result.metadata_list]
  return found


def _is_output_name(name: str) -> bool:
  return (name in features.SPLITS or name.startswith(features.DEAD_LETTER_PREFIX) or
          name in (features.STATS_FILE, features.SCHEMA_FILE, COMPLETE_FILE))


def mark_complete(build_dir: str) -> Dict[str, int]:
  """Writes `<build_dir>/_COMPLETE` ({relative path: bytes} of every output), last."""
  files = {}
  for path in existing_outputs(build_dir):
    if os.path.basename(path) != COMPLETE_FILE:
      relative = path[len(build_dir.rstrip("/")) + 1:]
      files[relative] = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
  text = json.dumps({"files": files}, indent=1, sort_keys=True) + "\n"
  if is_local(build_dir):
    io_utils.atomic_write_text(os.path.join(build_dir, COMPLETE_FILE), text)
  else:
    with FileSystems.create(FileSystems.join(build_dir, COMPLETE_FILE)) as f:
      f.write(text.encode("utf-8"))
  return files


def _rename_exchange(a: str, b: str) -> bool:
  """Swaps two paths atomically (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
  try:
    renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
  except (OSError, AttributeError):
    return False
  at_fdcwd, rename_exchange = -100, 2
  if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
    return True
  err = ctypes.get_errno()
  if err in (errno.ENOSYS, errno.EINVAL):
    return False
  raise OSError(err, os.strerror(err), b)


class BuildInto:
  """Context manager: yields the directory the job writes into (see the module doc)."""

  def __init__(self, output_dir: str, overwrite: bool):
    self.output_dir = output_dir.rstrip("/") or output_dir
    self.overwrite = overwrite
    self.local = is_local(output_dir)
    self.build_dir = self.output_dir
    self._lock = io_utils.DirectoryLock(self.output_dir, "--output_dir")

  def __enter__(self) -> str:
    try:
      self._lock.acquire()
    except io_utils.LockHeldError as e:
      raise OutputDirError(str(e)) from None
    except OSError as e:
      raise self._unwritable(e) from None
    try:
      self._prepare()
    except OSError as e:
      self._lock.release()
      raise self._unwritable(e) from None
    except BaseException:
      self._lock.release()
      raise
    return self.build_dir

  def _unwritable(self, e: OSError) -> OutputDirError:
    return OutputDirError(f"--output_dir={self.output_dir}: cannot write "
                          f"{e.filename or self.output_dir} ({e.strerror}): make it "
                          "writable or choose another --output_dir")

  def _prepare(self):
    existing = existing_outputs(self.output_dir)
    if existing and not self.overwrite:
      raise OutputDirError(
          f"--output_dir={self.output_dir} already holds a pipeline output ({len(existing)} "
          f"files, e.g. {existing[0]}); pass --overwrite to replace it (the new output "
          "replaces it only once complete) or choose another --output_dir")
    if not self.local:  # no atomic swap: marker first, then the rest
      marker = FileSystems.join(self.output_dir, COMPLETE_FILE)
      if marker in existing:
        FileSystems.delete([marker])
      if existing:
        FileSystems.delete([p for p in existing if p != marker])
      return
    parent = os.path.dirname(os.path.abspath(self.output_dir))
    prefix = f".{os.path.basename(os.path.abspath(self.output_dir))}{_BUILDING}"
    os.makedirs(parent, exist_ok=True)
    for name in os.listdir(parent):  # under the lock, any such sibling is a dead job's
      if name.startswith(prefix):
        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    self.build_dir = os.path.join(parent, f"{prefix}{os.getpid()}-{secrets.token_hex(3)}")
    os.mkdir(self.build_dir)

  def __exit__(self, exc_type, exc, tb):
    try:
      if exc_type is None and self.local:
        self._swap_in()
      elif self.local:
        shutil.rmtree(self.build_dir, ignore_errors=True)
    finally:
      self._lock.release()

  def _swap_in(self):
    if not os.path.exists(os.path.join(self.build_dir, COMPLETE_FILE)):
      shutil.rmtree(self.build_dir, ignore_errors=True)
      raise OutputDirError(f"{self.build_dir}: the job ended without its {COMPLETE_FILE} "
                           f"marker; {self.output_dir} was left as it was")
    if not os.path.exists(self.output_dir):
      os.rename(self.build_dir, self.output_dir)
      return
    old = self.build_dir
    if not _rename_exchange(self.build_dir, self.output_dir):
      old = self.build_dir + ".old"
      os.rename(self.output_dir, old)
      os.rename(self.build_dir, self.output_dir)
    for name in os.listdir(old):  # the user's own files stay with the directory
      if not _is_output_name(name) and not os.path.exists(os.path.join(self.output_dir, name)):
        os.rename(os.path.join(old, name), os.path.join(self.output_dir, name))
    shutil.rmtree(old, ignore_errors=True)
