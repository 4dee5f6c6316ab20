"""TF Serving's models.config as a file: errors, validation, atomic writes, locked edits.

TF Serving reads the file given by --model_config_file and, with
--model_config_file_poll_wait_seconds, re-reads it periodically. Every edit is one
read-modify-write under an exclusive flock on a sidecar file (`<dir>/.<name>.lock`), so
concurrent editors (threads or processes) never lose each other's changes, and writes the
file atomically (temp file + rename, the file's mode and leading comment lines kept), so
the server never reads half a config. Bind-mount the *directory* holding the file into a
container, not the file: a file bind mount keeps the old inode after the rename.

Model names, versions and labels are checked by serving.names (InvalidNameError naming the
field and value): a name is one directory component, a version a positive integer, a label
TF Serving's [a-zA-Z0-9_]+. The edits themselves (versions, labels, promote) are in
serving.model_config.

This module imports neither TensorFlow nor gRPC.
"""
import contextlib
import fcntl
import os
import stat
import tempfile
from typing import Optional

from google.protobuf import text_format

from serving import names
from tensorflow_serving.config import model_server_config_pb2


class ModelConfigError(ValueError):
  """The config or the requested change is invalid; the message says what and why."""


class UnknownModelError(ModelConfigError):
  """The config lists no model of that name."""


class UnknownLabelError(ModelConfigError):
  """The model has no such version label."""


class VersionNotFoundError(ModelConfigError):
  """A label or version would point at a version directory that is not there."""


class VersionNotServedError(ModelConfigError):
  """A label would point at a version the model's version policy does not load."""


class VersionAlreadyListedError(ModelConfigError):
  """add_version of a version the model's specific policy already lists (nothing changed)."""


class InvalidNameError(ModelConfigError, names.InvalidNameError):
  """A model name, version or label is not valid (serving.names); a usage error."""



# --- read / write ----------------------------------------------------------------------
def parse_config(text: str) -> model_server_config_pb2.ModelServerConfig:
  config = model_server_config_pb2.ModelServerConfig()
  try:
    text_format.Parse(text, config)
  except text_format.ParseError as e:
    raise ModelConfigError(f"not a ModelServerConfig text proto: {e}") from e
  return config


def read_config(path: str) -> model_server_config_pb2.ModelServerConfig:
  with open(path, encoding="utf-8") as f:
    try:
      return parse_config(f.read())
    except ModelConfigError as e:
      raise ModelConfigError(f"{path}: {e}") from e


def format_config(config: model_server_config_pb2.ModelServerConfig) -> str:
  return text_format.MessageToString(config)


def header_comments(text: str) -> str:
  """The leading `#` comment (and blank) lines of a models.config, newline-terminated.

  They are the only comments an edit keeps: the text proto printer drops the others.
  """
  header = []
  for line in text.splitlines(keepends=True):
    if line.strip() and not line.lstrip().startswith("#"):
      break
    header.append(line if line.endswith("\n") else line + "\n")
  while header and not header[-1].strip():
    header.pop()
  return "".join(header)


def write_config(config: model_server_config_pb2.ModelServerConfig, path: str,
                 header: Optional[str] = None) -> None:
  """Writes atomically (temp file in the same directory, then rename).

  An existing file keeps its permission bits (a 0600 config stays 0600) and, unless
  `header` is given, its leading comment lines; a new file gets 0644.
  """
  validate_config(config)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  mode = 0o644
  if os.path.exists(path):
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if header is None:
      with open(path, encoding="utf-8") as f:
        header = header_comments(f.read())
  fd, tmp = tempfile.mkstemp(prefix=".models.config.", dir=directory)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write((header or "") + format_config(config))
      f.flush()
      os.fchmod(f.fileno(), mode)
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def lock_file(config_path: str) -> str:
  """The sidecar lock of `config_path`: `<dir>/.<name>.lock` (the config itself is replaced
  by rename at every edit, so it cannot carry the lock)."""
  directory, name = os.path.split(os.path.abspath(config_path))
  return os.path.join(directory, f".{name}.lock")


@contextlib.contextmanager
def locked(config_path: str):
  """Holds an exclusive flock(2) on the config's sidecar lock file (threads and processes).

  Each holder opens its own descriptor, so two threads of one process exclude each other
  too (flock locks belong to the open file description).
  """
  path = lock_file(config_path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)  # closing the last descriptor releases the lock


def edit_config(config_path: str, change, create: bool = False
                ) -> model_server_config_pb2.ModelServerConfig:
  """One locked read-modify-write: `change(config)` edits the parsed config in place.

  Nothing is written when `change` raises. With `create`, a missing file starts empty.
  """
  with locked(config_path):
    if os.path.exists(config_path) or not create:
      with open(config_path, encoding="utf-8") as f:
        text = f.read()
      try:
        config = parse_config(text)
      except ModelConfigError as e:
        raise ModelConfigError(f"{config_path}: {e}") from e
    else:
      text, config = "", model_server_config_pb2.ModelServerConfig()
    change(config)
    write_config(config, config_path, header_comments(text))
  return config



def checked(check, value, field: str):
  """`check(value, field)` of serving.names, raising this module's InvalidNameError."""
  try:
    return check(value, field)
  except names.InvalidNameError as e:
    raise InvalidNameError(str(e)) from None


def validate_config(config: model_server_config_pb2.ModelServerConfig) -> None:
  """The checks TF Serving makes before it accepts a config (ValidateModelConfigList), plus
  valid model names, versions and labels (serving.names)."""
  names_seen = set()
  for model in config.model_config_list.config:
    if not model.name:
      raise ModelConfigError("a model entry has no name")
    checked(names.check_model_name, model.name, "model name")
    if model.name in names_seen:
      raise ModelConfigError(f"Illegal to list model {model.name} multiple times in "
                             "config list")
    names_seen.add(model.name)
    if not model.base_path:
      raise ModelConfigError(f"model {model.name} has no base_path")
    for label, version in model.version_labels.items():
      checked(names.check_label, label, f"version label of model {model.name}")
      checked(names.check_version, version, f"label {label!r} of model {model.name}: version")
    policy = model.model_version_policy
    if policy.WhichOneof("policy_choice") == "specific":
      served = set(policy.specific.versions)
      for version in served:
        checked(names.check_version, version,
               f"model {model.name}: specific version policy: version")
      for label, version in model.version_labels.items():
        if version not in served:
          raise VersionNotServedError(
              f"label {label!r} of model {model.name} points at version {version}, which "
              f"the specific version policy {sorted(served)} does not load")
