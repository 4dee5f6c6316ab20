"""Read and edit TF Serving's models.config (a text-format ModelServerConfig).

TF Serving reads the file given by --model_config_file and, with
--model_config_file_poll_wait_seconds, re-reads it periodically. Everything here writes the
file atomically (temp file + rename), so the server never reads half a config. Bind-mount
the *directory* holding the file into a container, not the file: a file bind mount keeps
the old inode after the rename.

A/B rollout with version labels (DESIGN.md §3):

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
import os
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

from google.protobuf import text_format

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


def write_config(config: model_server_config_pb2.ModelServerConfig, path: str) -> None:
  """Writes atomically (temp file in the same directory, then rename)."""
  validate_config(config)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".models.config.", dir=directory)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(format_config(config))
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def validate_config(config: model_server_config_pb2.ModelServerConfig) -> None:
  """The checks TF Serving makes before it accepts a config (ValidateModelConfigList)."""
  names = set()
  for model in config.model_config_list.config:
    if not model.name:
      raise ModelConfigError("a model entry has no name")
    if model.name in names:
      raise ModelConfigError(f"Illegal to list model {model.name} multiple times in "
                             "config list")
    names.add(model.name)
    if not model.base_path:
      raise ModelConfigError(f"model {model.name} has no base_path")
    policy = model.model_version_policy
    if policy.WhichOneof("policy_choice") == "specific":
      served = set(policy.specific.versions)
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
  base = os.path.join(export_base, model.name) if export_base else model.base_path
  return os.path.join(base, str(int(version)))


def _check_version_exists(model, version: int, export_base: Optional[str], what: str) -> None:
  path = version_dir(model, version, export_base)
  if not publish_lib.has_saved_model(path):
    reason = "is not there" if not os.path.exists(path) else "holds no saved_model.pb"
    raise VersionNotFoundError(
        f"{what}: version {version} of model {model.name}: {path} {reason}")


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


# --- edits (read, change, write atomically) ----------------------------------------------
def init_config(config_path: str, model_name: str, base_path: str,
                versions: Optional[Sequence[int]] = None, labels: Optional[Dict[str, int]] = None,
                latest: Optional[int] = None) -> model_server_config_pb2.ModelServerConfig:
  """Adds (or replaces) one model entry, creating the file when missing."""
  config = (read_config(config_path) if os.path.exists(config_path)
            else model_server_config_pb2.ModelServerConfig())
  entries = config.model_config_list.config
  keep = [m for m in entries if m.name != model_name]
  del entries[:]
  entries.extend(keep)
  entries.append(make_model_config(model_name, base_path, versions, labels, latest))
  write_config(config, config_path)
  return config


def add_version(config_path: str, model_name: str, version: int,
                export_base: Optional[str] = None) -> model_server_config_pb2.ModelServerConfig:
  """Adds `version` to the model's specific version policy (switching to specific).

  Refuses (VersionNotFoundError) when the version directory is not there. A model on the
  default/latest policy is switched to `specific` with the currently labelled versions
  plus `version`, so that no labelled version is unloaded.
  """
  version = int(version)
  config = read_config(config_path)
  model = get_model(config, model_name)
  _check_version_exists(model, version, export_base, "add_version")
  policy = model.model_version_policy
  if policy.WhichOneof("policy_choice") != "specific":
    # Keep what the server loads now: labelled versions plus the policy's current versions.
    current = set(model.version_labels.values()) | set(
        served_versions(model, export_base))
    policy.specific.versions.extend(sorted(current))  # setting `specific` clears the oneof
  versions = set(policy.specific.versions) | {version}
  del policy.specific.versions[:]
  policy.specific.versions.extend(sorted(versions))
  write_config(config, config_path)
  return config


def remove_version(config_path: str, model_name: str,
                   version: int) -> model_server_config_pb2.ModelServerConfig:
  """Drops `version` from the specific policy; refuses while a label points at it."""
  version = int(version)
  config = read_config(config_path)
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
  write_config(config, config_path)
  return config


def set_label(config_path: str, model_name: str, label: str, version: int,
              export_base: Optional[str] = None) -> model_server_config_pb2.ModelServerConfig:
  """Points `label` at `version` of `model_name`.

  Refuses with VersionNotFoundError when `<export_base>/<model_name>/<version>/` (or
  `<base_path>/<version>/` without export_base) holds no SavedModel, and with
  VersionNotServedError when the model's specific version policy does not load `version`
  (call add_version first and wait until it is AVAILABLE).
  """
  version = int(version)
  if not label:
    raise ModelConfigError("a version label must be a non-empty string")
  config = read_config(config_path)
  model = get_model(config, model_name)
  _check_version_exists(model, version, export_base, f"label {label!r}")
  policy = model.model_version_policy
  if (policy.WhichOneof("policy_choice") == "specific"
      and version not in set(policy.specific.versions)):
    raise VersionNotServedError(
        f"label {label!r}: version {version} of model {model_name} is not in its specific "
        f"version policy {sorted(policy.specific.versions)}; add_version it first")
  model.version_labels[label] = version
  write_config(config, config_path)
  return config


def get_label(config_path: str, model_name: str, label: str) -> int:
  model = get_model(read_config(config_path), model_name)
  if label not in model.version_labels:
    raise UnknownLabelError(f"model {model_name} has no label {label!r} (labels: "
                            f"{dict(model.version_labels) or 'none'})")
  return int(model.version_labels[label])


def promote(config_path: str, model_name: str, from_label: str = "canary",
            to_label: str = "stable",
            export_base: Optional[str] = None) -> model_server_config_pb2.ModelServerConfig:
  """Points `to_label` at the version `from_label` points at (e.g. canary -> stable)."""
  version = get_label(config_path, model_name, from_label)
  return set_label(config_path, model_name, to_label, version, export_base)


# --- CLI --------------------------------------------------------------------------------
_EPILOG = """\
examples:
  python -m serving.model_config init --model_config_file=models.config \\
      --model_name=eta --base_path=/models/eta --versions=1 --labels=stable=1
  python -m serving.model_config add_version --model_config_file=models.config \\
      --model_name=eta --version=2 --export_base=runs/export
  python -m serving.model_config label --model_config_file=models.config \\
      --model_name=eta --label=canary --version=2 --export_base=runs/export
  python -m serving.model_config promote --model_config_file=models.config \\
      --model_name=eta --from_label=canary --to_label=stable
  python -m serving.model_config show --model_config_file=models.config

--export_base is the export root as this machine sees it (versions are checked at
<export_base>/<model_name>/<version>); without it the config's base_path is used.
Move a label only after GetModelStatus shows the target version AVAILABLE.
"""


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m serving.model_config",
      description="Edit TF Serving's models.config (ModelServerConfig text proto) atomically.",
      epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  def common(p, model=True):
    p.add_argument("--model_config_file", default="models.config",
                   help="path of the models.config text proto (default: %(default)s)")
    if model:
      p.add_argument("--model_name", default="eta", help="model name (default: %(default)s)")

  def export_base(p):
    p.add_argument("--export_base", default=None,
                   help="export root holding <model_name>/<version>/ (default: the "
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

  p = sub.add_parser("promote", help="point to_label at from_label's version")
  common(p)
  export_base(p)
  p.add_argument("--from_label", default="canary", help="(default: %(default)s)")
  p.add_argument("--to_label", default="stable", help="(default: %(default)s)")

  p = sub.add_parser("show", help="print the config")
  common(p, model=False)
  return parser


def _parse_labels(text: str) -> Dict[str, int]:
  labels = {}
  for item in filter(None, (s.strip() for s in text.split(","))):
    if "=" not in item:
      raise ModelConfigError(f"--labels: expected label=version, got {item!r}")
    key, value = item.split("=", 1)
    labels[key.strip()] = int(value)
  return labels


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  path = args.model_config_file
  try:
    if args.command == "init":
      versions = [int(v) for v in args.versions.split(",") if v.strip()]
      init_config(path, args.model_name, args.base_path, versions, _parse_labels(args.labels),
                  args.latest)
    elif args.command == "add_version":
      add_version(path, args.model_name, args.version, args.export_base)
    elif args.command == "remove_version":
      remove_version(path, args.model_name, args.version)
    elif args.command == "label":
      set_label(path, args.model_name, args.label, args.version, args.export_base)
    elif args.command == "promote":
      promote(path, args.model_name, args.from_label, args.to_label, args.export_base)
    print(format_config(read_config(path)), end="")
  except (ModelConfigError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
