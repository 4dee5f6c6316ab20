"""Atomic publishing of SavedModel versions into a TF Serving model base path.

TF Serving polls `<base>/` and loads every directory whose name is an integer. A version
must therefore appear all at once: write it under a non-integer temporary name inside the
same base directory (`temp_version_dir`), validate it, then `publish` renames it to
`<base>/<version>` in one rename(2). An existing version is never overwritten.

    tmp = temp_version_dir(base, version := next_version(base))
    ... write the SavedModel and assets.extra/ into tmp ...
    publish(tmp, base, version)

This module imports neither TensorFlow nor gRPC.
"""
import ctypes
import errno
import os
import re
from typing import List

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
TEMP_PREFIX = ".tmp-"
_VERSION_RE = re.compile(r"^[0-9]+$")


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


def temp_version_dir(base: str, version: int) -> str:
  """Creates and returns `<base>/.tmp-<version>-<pid>`, a dir TF Serving never loads.

  It lives in `base` itself so that `publish` is a same-filesystem rename.
  """
  os.makedirs(base, exist_ok=True)
  path = os.path.join(base, f"{TEMP_PREFIX}{int(version)}-{os.getpid()}")
  os.makedirs(path, exist_ok=False)
  return path


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
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def publish(tmp_dir: str, base: str, version: int) -> str:
  """Atomically renames the fully written `tmp_dir` to `<base>/<version>`; returns it.

  Refuses (PublishError) when `tmp_dir` has an integer name (TF Serving could already have
  picked it up), holds no saved_model.pb, or is on another filesystem; refuses
  (VersionExistsError) when the version exists.
  """
  version = int(version)
  if version < 0:
    raise PublishError(f"version must be a non-negative integer, got {version}")
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
  _rename_noreplace(tmp_dir, dst)
  _fsync_dir(base)
  return dst
