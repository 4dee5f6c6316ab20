"""Atomic publishing of SavedModel versions into a TF Serving model base path.

TF Serving polls `<base>/` and loads every directory whose name is an integer. A version
must therefore appear all at once: write it under a non-integer temporary name inside the
same base directory (`temp_version_dir`), validate it, then `publish` renames it to
`<base>/<version>` in one rename(2). An existing version is never overwritten.

    tmp = temp_version_dir(base, version := next_version(base))
    ... write the SavedModel and assets.extra/ into tmp ...
    path, version = publish_next(tmp, base, version)

`publish` fsyncs every file and directory of the version before the rename and the base
directory after it, so a crash never leaves a version whose name is durable but whose files
are not. Two exporters that picked the same number race at the rename: `publish_next` lets
the loser take the next free number instead of failing after all its work. A temporary
directory left by a killed export (`.tmp-<version>-<pid>-<random>`) is removed by the next
`temp_version_dir` call once process <pid> is gone. The pid is looked up in this process's
pid namespace: do not export into one base from two machines or containers at the same
time, or one may sweep the other's export in progress.

This module imports neither TensorFlow nor gRPC.
"""
import ctypes
import errno
import os
import re
import secrets
import shutil
from typing import Callable, List, Optional, Tuple

from serving import names

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
TEMP_PREFIX = ".tmp-"
_VERSION_RE = re.compile(r"^[0-9]+$")
_TEMP_RE = re.compile(r"^\.tmp-[0-9]+-([0-9]+)(?:-.*)?$")  # .tmp-<version>-<pid>[-<random>]


class PublishError(RuntimeError):
  """A version cannot be published; the message names the path and the reason."""


class VersionExistsError(PublishError, FileExistsError):
  """`<base>/<version>` is already there; versions are never overwritten."""


def is_version_name(name: str) -> bool:
  """True for the directory names TF Serving treats as versions (non-negative integers)."""
  return bool(_VERSION_RE.match(name)) and int(name) < 2**63


def has_saved_model(path: str) -> bool:
  return any(os.path.isfile(os.path.join(path, f)) for f in SAVED_MODEL_FILES)


def list_versions(base: str, complete_only: bool = False) -> List[int]:
  """Integer version directories under `base`, ascending (temp dirs are never listed).

  With `complete_only`, only versions that contain a saved_model.pb(txt).
  """
  if not os.path.isdir(base):
    return []
  versions = []
  for name in os.listdir(base):
    path = os.path.join(base, name)
    if is_version_name(name) and os.path.isdir(path):
      if not complete_only or has_saved_model(path):
        versions.append(int(name))
  return sorted(versions)


def next_version(base: str) -> int:
  """1 + the highest existing version under `base` (1 for an empty or missing base)."""
  versions = list_versions(base)
  return versions[-1] + 1 if versions else 1


def _check_version(version) -> int:
  try:
    return names.check_version(version)
  except names.InvalidNameError as e:
    raise PublishError(str(e)) from e


def temp_version_dir(base: str, version: int) -> str:
  """Creates and returns `<base>/.tmp-<version>-<pid>-<random>`, a dir TF Serving never loads.

  It lives in `base` itself so that `publish` is a same-filesystem rename. First removes
  the temporary dirs of exports whose process is gone (`clean_stale_temp_dirs`).
  """
  version = _check_version(version)
  os.makedirs(base, exist_ok=True)
  clean_stale_temp_dirs(base)
  while True:  # mkdir (not mkdtemp) so the version gets the usual umask mode, not 0700
    path = os.path.join(base, f"{TEMP_PREFIX}{version}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
      os.mkdir(path)
      return path
    except FileExistsError:
      continue


def _process_exists(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, owned by another user
    return True
  return True


def clean_stale_temp_dirs(base: str) -> List[str]:
  """Removes `<base>/.tmp-<version>-<pid>...` dirs whose owner process is gone; returns them.

  A temp dir of a live process (an export in progress) and any other name are left alone.
  """
  removed = []
  if not os.path.isdir(base):
    return removed
  for name in sorted(os.listdir(base)):
    match = _TEMP_RE.match(name)
    path = os.path.join(base, name)
    if not match or not os.path.isdir(path) or os.path.islink(path):
      continue
    pid = int(match.group(1))
    if pid == os.getpid() or _process_exists(pid):
      continue
    shutil.rmtree(path, ignore_errors=True)
    if not os.path.exists(path):
      removed.append(path)
  return removed


def _rename_noreplace(src: str, dst: str) -> None:
  """rename(2) that fails if `dst` exists (Linux renameat2 RENAME_NOREPLACE when present).

  Plain rename(2) silently replaces an existing *empty* directory; renameat2 closes that gap.
  """
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = libc.renameat2
  except (OSError, AttributeError):
    renameat2 = None
  if renameat2 is not None:
    at_fdcwd, rename_noreplace = -100, 1
    rc = renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace)
    if rc == 0:
      return
    err = ctypes.get_errno()
    if err == errno.EEXIST:
      raise VersionExistsError(f"{dst} already exists; refusing to overwrite a version")
    if err not in (errno.ENOSYS, errno.EINVAL):  # unsupported: fall back below
      raise OSError(err, os.strerror(err), src)
  if os.path.lexists(dst):
    raise VersionExistsError(f"{dst} already exists; refusing to overwrite a version")
  os.rename(src, dst)


def _fsync_dir(path: str) -> None:
  """fsync(2) of a directory; a file system that cannot (EINVAL/ENOTSUP) is skipped."""
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  except OSError as e:
    if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
      raise
  finally:
    os.close(fd)


def _fsync_file(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def fsync_tree(root: str) -> None:
  """fsyncs every regular file and directory under `root` (children before parents)."""
  for directory, _, files in os.walk(root, topdown=False):
    for name in files:
      path = os.path.join(directory, name)
      if os.path.isfile(path) and not os.path.islink(path):
        _fsync_file(path)
    _fsync_dir(directory)


def publish(tmp_dir: str, base: str, version: int) -> str:
  """Atomically renames the fully written `tmp_dir` to `<base>/<version>`; returns it.

  Refuses (PublishError) when `tmp_dir` has an integer name (TF Serving could already have
  picked it up), holds no saved_model.pb, or is on another filesystem; refuses
  (VersionExistsError) when the version exists.
  """
  version = _check_version(version)
  tmp_dir = os.path.abspath(tmp_dir)
  base = os.path.abspath(base)
  if not os.path.isdir(tmp_dir):
    raise PublishError(f"{tmp_dir} is not a directory")
  if is_version_name(os.path.basename(tmp_dir)):
    raise PublishError(f"{tmp_dir}: a temporary directory must not have an integer name "
                       "(TF Serving would load it half-written)")
  if not has_saved_model(tmp_dir):
    raise PublishError(f"{tmp_dir} holds no saved_model.pb; refusing to publish an "
                       "incomplete version")
  os.makedirs(base, exist_ok=True)
  dst = os.path.join(base, str(version))
  if os.stat(tmp_dir).st_dev != os.stat(base).st_dev:
    raise PublishError(f"{tmp_dir} and {base} are on different filesystems; write the "
                       "temporary directory inside the base path (temp_version_dir)")
  try:
    fsync_tree(tmp_dir)
  except OSError as e:
    raise PublishError(f"{tmp_dir}: cannot make the version durable before publishing it: "
                       f"{e}") from e
  _rename_noreplace(tmp_dir, dst)
  _fsync_dir(base)
  return dst


def publish_next(tmp_dir: str, base: str, version: int,
                 before_rename: Optional[Callable[[int], None]] = None,
                 max_attempts: int = 1000) -> Tuple[str, int]:
  """`publish` as `version`, or, when another publisher took it meanwhile, as the next free
  number; returns (`<base>/<version>`, version).

  `before_rename(version)` runs before each attempt (e.g. to stamp the number into the
  version's metadata) and is fsynced with the rest of the tree.
  """
  version = _check_version(version)
  for _ in range(max_attempts):
    if before_rename is not None:
      before_rename(version)
    try:
      return publish(tmp_dir, base, version), version
    except VersionExistsError:
      version = max(version + 1, next_version(base))
  raise PublishError(f"{tmp_dir}: no free version under {base} after {max_attempts} "
                     "attempts")
