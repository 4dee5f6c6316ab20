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


# --- one writer at a time ---------------------------------------------------------------

class LockHeldError(RuntimeError):
  """Another live process writes the same directory; the message names it (exit 2)."""


def lock_path(directory: str) -> str:
  """`<parent>/.<name>.lock`: beside the directory, so it survives a swap of the dir."""
  directory = os.path.abspath(directory.rstrip("/") or "/")
  return os.path.join(os.path.dirname(directory), f".{os.path.basename(directory)}.lock")


def _holder_text() -> str:
  import socket  # pylint: disable=g-import-not-at-top  (only lockers need it)
  import sys  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                     "command": " ".join(sys.argv), "since": time.strftime(
                         "%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, sort_keys=True)


def describe_holder(text: str) -> str:
  """'pid 123 on host h since T: <command>' from a lock file's text."""
  try:
    holder = json.loads(text)
    return (f"pid {holder['pid']} on host {holder['host']} since {holder['since']}: "
            f"{holder['command']}")
  except (ValueError, KeyError, TypeError):
    return "a process that has not yet written its name"


class DirectoryLock:
  """An exclusive flock(2) on `lock_path(directory)`, held until `release` or exit.

      with DirectoryLock(model_dir, "--model_dir"):
        ...                                   # the only writer of model_dir

    A second process is refused at once (LockHeldError naming the holder's pid, host
    and command). The kernel drops the lock when its process dies, however it dies, so
    the lock file a killed process leaves behind is taken over by the next one (that
    is a stale lock: `took_over` then holds its former holder). Re-entrant within one
    process (a nested lock of the same directory is a no-op). flock is per host: on a
    network file system, run one writer per directory by other means.
  """
  _held = {}  # path -> DirectoryLock of this process

  def __init__(self, directory: str, what: str = "directory"):
    self.directory = directory
    self.what = what
    self.path = lock_path(directory)
    self.took_over = None
    self._fd = None

  def acquire(self) -> "DirectoryLock":
    import fcntl  # pylint: disable=g-import-not-at-top  (POSIX only; lockers only)
    if self.path in DirectoryLock._held:
      return self
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        os.close(fd)
        raise LockHeldError(
            f"{self.what} {self.directory} is in use by {describe_holder(holder)} "
            f"(lock {self.path}); wait for it to finish or stop it, then run again"
        ) from None
      except BaseException:
        os.close(fd)
        raise
      try:  # the file may have been unlinked by its last holder meanwhile: retry
        same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        same = False
      if same:
        break
      os.close(fd)
    try:
      previous = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
      if previous:
        self.took_over = describe_holder(previous)
      os.ftruncate(fd, 0)
      os.pwrite(fd, (_holder_text() + "\n").encode("utf-8"), 0)
    except OSError:  # e.g. a full disk: the flock still holds; only the name is missing
      pass
    self._fd = fd
    DirectoryLock._held[self.path] = self
    return self

  def release(self) -> None:
    if self._fd is None:
      return
    DirectoryLock._held.pop(self.path, None)
    try:
      os.unlink(self.path)  # before unlocking: a waiter re-checks the inode and retries
    except FileNotFoundError:
      pass
    os.close(self._fd)  # closing drops the flock
    self._fd = None

  def __enter__(self) -> "DirectoryLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


# --- finished outputs -----------------------------------------------------------------

def check_complete(data_dir: str, marker_name: str, exists, size_of, read_text) -> None:
  """ValueError naming the path unless `data_dir` holds a finished, unchanged output.

  The marker (`marker_name`, written last by the writer) lists {relative path: bytes};
  every listed file must be there with that size. `exists`, `size_of` and `read_text` are
  the caller's file system calls (tf.io.gfile for the trainer: local or remote paths).
  """
  marker = f"{data_dir.rstrip('/')}/{marker_name}"
  rebuild = "rebuild it with python -m pipelines.build_dataset (--overwrite)"
  if not exists(marker):
    raise ValueError(f"{marker} not found: the pipeline that wrote {data_dir} did not "
                     f"finish (killed or failed); {rebuild}")
  try:
    files = json.loads(read_text(marker))["files"]
  except (ValueError, KeyError, TypeError):
    raise ValueError(f"{marker} is not a valid completion marker; {rebuild}") from None
  for relative, size in sorted(files.items()):
    path = f"{data_dir.rstrip('/')}/{relative}"
    if not exists(path):
      raise ValueError(f"{path} is missing (listed in {marker}); {rebuild}")
    got = size_of(path)
    if got != size:
      raise ValueError(f"{path} has {got} bytes, the pipeline wrote {size}: the file was "
                       f"changed or truncated after the job; {rebuild}")
