"""Edit TF Serving's models.config: model entries, versions, labels, A/B promote.

Every edit here is one locked, atomic read-modify-write of the file
(serving.model_config_file, which also holds the errors, the validation and the file
format; import those from there).

A/B rollout with version labels (docs/DESIGN.md §3):

    add_version(cfg, "eta", 3, export_base)          # v3 starts loading beside v2
    # wait until GetModelStatus shows version 3 AVAILABLE, then:
    set_label(cfg, "eta", "canary", 3, export_base)
    promote(cfg, "eta", from_label="canary", to_label="stable")

TF Serving only accepts a label on a version that is not AVAILABLE yet for a *new* label
and with --allow_version_labels_for_unavailable_models; moving an existing label to an
unavailable version makes the whole config reload fail. So move labels only after both
versions serve.

CLI (see --help; in Python: serving.model_config_cli.main(argv)): `python -m
serving.model_config {init,add_version,remove_version,label,promote,show}
--model_config_file=...`.

This module imports neither TensorFlow nor gRPC.
"""
import os
import runpy
from typing import Dict, List, Optional, Sequence

from serving import names
from serving import publish as publish_lib
from serving.model_config_file import (
    ModelConfigError, UnknownLabelError, UnknownModelError, VersionAlreadyListedError,
    VersionNotFoundError, VersionNotServedError, checked, edit_config, read_config)
from tensorflow_serving.config import model_server_config_pb2

TENSORFLOW_PLATFORM = "tensorflow"


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
  checked(names.check_model_name, model.name, "model name")
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
  checked(names.check_model_name, model_name, "model_name")
  for version in versions or ():
    checked(names.check_version, version, "versions")
  for label, version in (labels or {}).items():
    checked(names.check_label, label, "labels")
    checked(names.check_version, version, f"labels: {label}")

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
  checked(names.check_model_name, model_name, "model_name")
  version = checked(names.check_version, version, "version")

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
  checked(names.check_model_name, model_name, "model_name")
  version = checked(names.check_version, version, "version")

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
  checked(names.check_model_name, model_name, "model_name")
  checked(names.check_label, label, "label")
  version = checked(names.check_version, version, "version")
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
  checked(names.check_model_name, model_name, "model_name")
  checked(names.check_label, from_label, "from_label")
  checked(names.check_label, to_label, "to_label")

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
  checked(names.check_model_name, model_name, "model_name")
  version = checked(names.check_version, version, "version")
  if label:
    checked(names.check_label, label, "label")
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


if __name__ == "__main__":
  # `python -m serving.model_config` is the command line, serving.model_config_cli: run,
  # not imported (the command line imports this module, never the reverse).
  runpy.run_module("serving.model_config_cli", run_name="__main__", alter_sys=True)
