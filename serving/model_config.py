"""Read and edit TF Serving's models.config (a text-format ModelServerConfig).

TF Serving reads the file given by --model_config_file and, with
--model_config_file_poll_wait_seconds, re-reads it periodically. Every edit is one
read-modify-write under an exclusive flock on a sidecar file (`<dir>/.<name>.lock`), so
concurrent editors (threads or processes) never lose each other's changes, and writes the
file atomically (temp file + rename, the file's mode and leading comment lines kept), so
the server never reads half a config. Bind-mount the *directory* holding the file into a
container, not the file: a file bind mount keeps the old inode after the rename.

Model names, versions and labels are checked by serving.names (InvalidNameError naming the
field and value): a name is one directory component, a version a positive integer, a label
TF Serving's [a-zA-Z0-9_]+.

A/B rollout with version labels (docs/DESIGN.md §3):

    add_version(cfg, "eta", 3, export_base)          # v3 starts loading beside v2
    # wait until GetModelStatus shows version 3 AVAILABLE, then:
    set_label(cfg, "eta", "canary", 3, export_base)
    promote(cfg, "eta", from_label="canary", to_label="stable")

TF Serving only accepts a label on a version that is not AVAILABLE yet for a *new* label
and with --allow_version_labels_for_unavailable_models; moving an existing label to an
unavailable version makes the whole config reload fail. So move labels only after both
versions serve.

CLI (see --help): `python -m serving.model_config {init,add_version,remove_version,label,
promote,show} --model_config_file=...`.

This module imports neither TensorFlow nor gRPC.
"""
import argparse
import contextlib
import fcntl
import os
import stat
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

from google.protobuf import text_format

from serving import names
from serving import publish as publish_lib
from tensorflow_serving.config import model_server_config_pb2

TENSORFLOW_PLATFORM = "tensorflow"


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


def _valid(check, value, field: str):
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
    _valid(names.check_model_name, model.name, "model name")
    if model.name in names_seen:
      raise ModelConfigError(f"Illegal to list model {model.name} multiple times in "
                             "config list")
    names_seen.add(model.name)
    if not model.base_path:
      raise ModelConfigError(f"model {model.name} has no base_path")
    for label, version in model.version_labels.items():
      _valid(names.check_label, label, f"version label of model {model.name}")
      _valid(names.check_version, version, f"label {label!r} of model {model.name}: version")
    policy = model.model_version_policy
    if policy.WhichOneof("policy_choice") == "specific":
      served = set(policy.specific.versions)
      for version in served:
        _valid(names.check_version, version,
               f"model {model.name}: specific version policy: version")
      for label, version in model.version_labels.items():
        if version not in served:
          raise VersionNotServedError(
              f"label {label!r} of model {model.name} points at version {version}, which "
              f"the specific version policy {sorted(served)} does not load")


# --- building blocks -------------------------------------------------------------------
def make_model_config(model_name: str, base_path: str, versions: Optional[Sequence[int]] = None,
                      labels: Optional[Dict[str, int]] = None,
                      latest: Optional[int] = None) -> model_server_config_pb2.ModelConfig:
  """One model entry: `versions` -> specific policy, else `latest` N (TF Serving's default 1)."""
  model = model_server_config_pb2.ModelConfig(
      name=model_name, base_path=base_path, model_platform=TENSORFLOW_PLATFORM)
  if versions:
    model.model_version_policy.specific.versions.extend(sorted(set(int(v) for v in versions)))
  elif latest:
    model.model_version_policy.latest.num_versions = int(latest)
  for label, version in (labels or {}).items():
    model.version_labels[label] = int(version)
  return model


def get_model(config, model_name: str) -> model_server_config_pb2.ModelConfig:
  for model in config.model_config_list.config:
    if model.name == model_name:
      return model
  known = ", ".join(m.name for m in config.model_config_list.config) or "none"
  raise UnknownModelError(f"model {model_name!r} is not in the config (models: {known})")


def version_dir(model: model_server_config_pb2.ModelConfig, version: int,
                export_base: Optional[str] = None) -> str:
  """`<export_base>/<model>/<version>` or, without export_base, `<base_path>/<version>`.

  export_base maps the config's (e.g. in-container) base_path to where the exports are
  visible to this process.
  """
  _valid(names.check_model_name, model.name, "model name")
  base = os.path.join(export_base, model.name) if export_base else model.base_path
  return os.path.join(base, str(int(version)))


def _check_version_exists(model, version: int, export_base: Optional[str], what: str) -> None:
  path = version_dir(model, version, export_base)
  if not publish_lib.has_saved_model(path):
    reason = "is not there" if not os.path.exists(path) else "holds no saved_model.pb"
    if export_base:
      hint = f"checked under --export_base={export_base}"
    else:
      hint = (f"checked under the config's base_path {model.base_path}, the path the server "
              "sees; if the server runs in a container, give --export_base=<the export root "
              "on this machine>, e.g. --export_base=runs/export")
    raise VersionNotFoundError(
        f"{what}: version {version} of model {model.name}: {path} {reason} ({hint})")


def policy_versions(policy, on_disk: Sequence[int]) -> List[int]:
  """The versions a ServableVersionPolicy loads out of `on_disk` (TF Serving's rules).

  latest N (default when unset: latest 1), all, or specific (only those present).
  """
  on_disk = sorted(set(int(v) for v in on_disk))
  choice = policy.WhichOneof("policy_choice")
  if choice == "all":
    return on_disk
  if choice == "specific":
    wanted = set(policy.specific.versions)
    return [v for v in on_disk if v in wanted]
  num = policy.latest.num_versions if choice == "latest" else 1
  return on_disk[-max(num, 1):] if on_disk else []


def served_versions(model: model_server_config_pb2.ModelConfig,
                    export_base: Optional[str] = None) -> List[int]:
  """The complete versions on disk that the model's version policy loads."""
  base = os.path.dirname(version_dir(model, 0, export_base))
  return policy_versions(model.model_version_policy,
                         publish_lib.list_versions(base, complete_only=True))


# --- edits (one locked read-modify-write each) ---------------------------------------------
def init_config(config_path: str, model_name: str, base_path: str,
                versions: Optional[Sequence[int]] = None, labels: Optional[Dict[str, int]] = None,
                latest: Optional[int] = None) -> model_server_config_pb2.ModelServerConfig:
  """Adds (or replaces) one model entry, creating the file when missing."""
  _valid(names.check_model_name, model_name, "model_name")
  for version in versions or ():
    _valid(names.check_version, version, "versions")
  for label, version in (labels or {}).items():
    _valid(names.check_label, label, "labels")
    _valid(names.check_version, version, f"labels: {label}")

  def change(config):
    entries = config.model_config_list.config
    keep = [m for m in entries if m.name != model_name]
    del entries[:]
    entries.extend(keep)
    entries.append(make_model_config(model_name, base_path, versions, labels, latest))
  return edit_config(config_path, change, create=True)


def _add_to_policy(model, version: int, export_base: Optional[str]) -> bool:
  """Adds `version` to the model's specific policy; False when it is already there.

  A model on the default/latest policy is switched to `specific` with the currently
  labelled and served versions plus `version`, so that no loaded version is unloaded.
  """
  policy = model.model_version_policy
  if policy.WhichOneof("policy_choice") == "specific" and version in policy.specific.versions:
    return False
  _check_version_exists(model, version, export_base, "add_version")
  if policy.WhichOneof("policy_choice") != "specific":
    current = set(model.version_labels.values()) | set(served_versions(model, export_base))
    policy.specific.versions.extend(sorted(current))  # setting `specific` clears the oneof
  versions = set(policy.specific.versions) | {version}
  del policy.specific.versions[:]
  policy.specific.versions.extend(sorted(versions))
  return True


def add_version(config_path: str, model_name: str, version: int,
                export_base: Optional[str] = None) -> model_server_config_pb2.ModelServerConfig:
  """Adds `version` to the model's specific version policy (switching to specific).

  Refuses with VersionNotFoundError when the version directory is not there, and with
  VersionAlreadyListedError (nothing written) when the policy lists it already.
  """
  _valid(names.check_model_name, model_name, "model_name")
  version = _valid(names.check_version, version, "version")

  def change(config):
    model = get_model(config, model_name)
    if not _add_to_policy(model, version, export_base):
      listed = ", ".join(str(v) for v in model.model_version_policy.specific.versions)
      raise VersionAlreadyListedError(
          f"add_version: version {version} of model {model_name} is already listed in "
          f"{config_path} (versions: {listed}); nothing changed")
  return edit_config(config_path, change)


def remove_version(config_path: str, model_name: str,
                   version: int) -> model_server_config_pb2.ModelServerConfig:
  """Drops `version` from the specific policy; refuses while a label points at it."""
  _valid(names.check_model_name, model_name, "model_name")
  version = _valid(names.check_version, version, "version")

  def change(config):
    model = get_model(config, model_name)
    labels = sorted(k for k, v in model.version_labels.items() if v == version)
    if labels:
      raise ModelConfigError(f"version {version} of model {model_name} is still labelled "
                             f"{', '.join(labels)}; move the label(s) first")
    policy = model.model_version_policy
    if policy.WhichOneof("policy_choice") != "specific":
      raise ModelConfigError(f"model {model_name} has no specific version policy")
    remaining = [v for v in policy.specific.versions if v != version]
    if not remaining:
      raise ModelConfigError(f"refusing to remove the last version of model {model_name}")
    del policy.specific.versions[:]
    policy.specific.versions.extend(remaining)
  return edit_config(config_path, change)


def _set_label(model, label: str, version: int, export_base: Optional[str]) -> None:
  _check_version_exists(model, version, export_base, f"label {label!r}")
  policy = model.model_version_policy
  if (policy.WhichOneof("policy_choice") == "specific"
      and version not in set(policy.specific.versions)):
    raise VersionNotServedError(
        f"label {label!r}: version {version} of model {model.name} is not in its specific "
        f"version policy {sorted(policy.specific.versions)}; add_version it first")
  model.version_labels[label] = version


def set_label(config_path: str, model_name: str, label: str, version: int,
              export_base: Optional[str] = None) -> model_server_config_pb2.ModelServerConfig:
  """Points `label` at `version` of `model_name`.

  Refuses with VersionNotFoundError when `<export_base>/<model_name>/<version>/` (or
  `<base_path>/<version>/` without export_base) holds no SavedModel, and with
  VersionNotServedError when the model's specific version policy does not load `version`
  (call add_version first and wait until it is AVAILABLE).
  """
  _valid(names.check_model_name, model_name, "model_name")
  _valid(names.check_label, label, "label")
  version = _valid(names.check_version, version, "version")
  return edit_config(config_path,
                     lambda config: _set_label(get_model(config, model_name), label, version,
                                               export_base))


def _label_version(model, label: str) -> int:
  if label not in model.version_labels:
    raise UnknownLabelError(f"model {model.name} has no label {label!r} (labels: "
                            f"{dict(model.version_labels) or 'none'})")
  return int(model.version_labels[label])


def get_label(config_path: str, model_name: str, label: str) -> int:
  return _label_version(get_model(read_config(config_path), model_name), label)


def promote(config_path: str, model_name: str, from_label: str = "canary",
            to_label: str = "stable",
            export_base: Optional[str] = None) -> model_server_config_pb2.ModelServerConfig:
  """Points `to_label` at the version `from_label` points at (e.g. canary -> stable)."""
  _valid(names.check_model_name, model_name, "model_name")
  _valid(names.check_label, from_label, "from_label")
  _valid(names.check_label, to_label, "to_label")

  def change(config):
    model = get_model(config, model_name)
    _set_label(model, to_label, _label_version(model, from_label), export_base)
  return edit_config(config_path, change)


def add_published_version(config_path: str, model_name: str, base_path: str, version: int,
                          label: Optional[str] = None) -> Optional[str]:
  """The exporter's change for a freshly published version, as ONE locked edit.

  No entry for the model yet (or no file): a new entry at `base_path` with `version` labelled
  `stable` (and `label`). Otherwise `version` joins the specific policy and `label` is set
  only if the model has no such label yet: TF Serving (with
  --allow_version_labels_for_unavailable_models) accepts a *new* label on a version that is
  not loaded yet, but rejects the whole config when an existing label moves to a version
  that is not AVAILABLE. Returns a note for the user when `label` was left in place (move it
  with `label`/`promote` once the version serves), else None.
  """
  _valid(names.check_model_name, model_name, "model_name")
  version = _valid(names.check_version, version, "version")
  if label:
    _valid(names.check_label, label, "label")
  notes = []

  def change(config):
    model = next((m for m in config.model_config_list.config if m.name == model_name), None)
    if model is None:
      labels = {"stable": version, **({label: version} if label else {})}
      config.model_config_list.config.append(
          make_model_config(model_name, base_path, [version], labels))
      return
    _add_to_policy(model, version, None)
    if label and label not in model.version_labels:
      _set_label(model, label, version, None)
    elif label:
      notes.append(f"models.config: version {version} added; once it is AVAILABLE, move the "
                   f"label with: python -m serving.model_config label "
                   f"--model_config_file={config_path} --model_name={model_name} "
                   f"--label={label} --version={version}")
  edit_config(config_path, change, create=True)
  return notes[0] if notes else None


# --- CLI --------------------------------------------------------------------------------
_EPILOG = """\
examples (docker/models.config names container paths, /models/eta, so every command that
checks a version directory needs --export_base, where the same versions are on this machine):
  M="--model_config_file=docker/models.config --model_name=eta"
  python -m serving.model_config add_version $M --version=2 --export_base=runs/export
  python -m serving.model_config label $M --label=canary --version=2 --export_base=runs/export
  python -m serving.model_config promote $M --from_label=canary --to_label=stable \\
      --export_base=runs/export
  python -m serving.model_config show $M
  python -m serving.model_config init --model_config_file=models.config \\
      --model_name=eta --base_path=/models/eta --versions=1 --labels=stable=1

runs/export/models.config (written by the export, host paths, read by serving.local_server)
needs no --export_base, and the export has already added each new version to it.
--export_base is the export root as this machine sees it (versions are checked at
<export_base>/<model_name>/<version>); without it the config's base_path is used.
Move a label only after GetModelStatus shows the target version AVAILABLE.
Every edit holds a lock (<dir>/.<file>.lock), keeps the file's mode and its leading comment
lines, and replaces the file atomically. Exit codes: 0 ok, 1 refused, 2 usage error.
"""


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m serving.model_config",
      description="Edit TF Serving's models.config (ModelServerConfig text proto) atomically.",
      epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  def common(p, model_default="eta"):
    p.add_argument("--model_config_file", default="models.config",
                   help="path of the models.config text proto (default: %(default)s)")
    p.add_argument("--model_name", default=model_default,
                   help="model name (default: %(default)s)")

  def export_base(p):
    p.add_argument("--export_base", default=None,
                   help="export root on this machine holding <model_name>/<version>/; needed "
                        "when the config's base_path is a container path, e.g. "
                        "--export_base=runs/export for docker/models.config (default: the "
                        "config's base_path)")

  p = sub.add_parser("init", help="add or replace a model entry (creates the file)")
  common(p)
  p.add_argument("--base_path", required=True, help="the model's base path as the server sees it")
  p.add_argument("--versions", default="", help="comma-separated versions -> specific policy")
  p.add_argument("--latest", type=int, default=None, help="latest N policy (default: latest 1)")
  p.add_argument("--labels", default="", help="comma-separated label=version pairs")

  p = sub.add_parser("add_version", help="add a version to the specific version policy")
  common(p)
  export_base(p)
  p.add_argument("--version", type=int, required=True)

  p = sub.add_parser("remove_version", help="drop an unlabelled version from the policy")
  common(p)
  p.add_argument("--version", type=int, required=True)

  p = sub.add_parser("label", help="point a version label at a version")
  common(p)
  export_base(p)
  p.add_argument("--label", default="canary", help="label (default: %(default)s)")
  p.add_argument("--version", type=int, required=True)

  p = sub.add_parser("promote", help="point to_label at from_label's version (needs "
                                     "--export_base for docker/models.config)")
  common(p)
  export_base(p)
  p.add_argument("--from_label", default="canary", help="(default: %(default)s)")
  p.add_argument("--to_label", default="stable", help="(default: %(default)s)")

  p = sub.add_parser("show", help="print the config (one model's entry with --model_name)")
  common(p, model_default=None)
  return parser


def _parse_labels(text: str) -> Dict[str, int]:
  labels = {}
  for item in filter(None, (s.strip() for s in text.split(","))):
    key, sep, value = item.partition("=")
    if not sep:
      raise InvalidNameError(f"--labels: expected label=version, got {item!r}")
    labels[key.strip()] = _valid(names.check_version, value.strip(), f"--labels: {key.strip()}")
  return labels


def _parse_versions(text: str) -> List[int]:
  return [_valid(names.check_version, v.strip(), "--versions") for v in text.split(",")
          if v.strip()]


def _show(path: str, model_name: Optional[str]) -> str:
  config = read_config(path)
  if model_name:
    only = model_server_config_pb2.ModelServerConfig()
    only.model_config_list.config.append(get_model(config, model_name))
    config = only
  return format_config(config)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  path = args.model_config_file
  try:
    if args.command == "init":
      init_config(path, args.model_name, args.base_path, _parse_versions(args.versions),
                  _parse_labels(args.labels), args.latest)
    elif args.command == "add_version":
      try:
        add_version(path, args.model_name, args.version, args.export_base)
      except VersionAlreadyListedError as e:
        print(e, file=sys.stderr)
    elif args.command == "remove_version":
      remove_version(path, args.model_name, args.version)
    elif args.command == "label":
      set_label(path, args.model_name, args.label, args.version, args.export_base)
    elif args.command == "promote":
      promote(path, args.model_name, args.from_label, args.to_label, args.export_base)
    print(_show(path, args.model_name if args.command == "show" else None), end="")
  except InvalidNameError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except (ModelConfigError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
