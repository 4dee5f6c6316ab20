"""The local server's version manager, after TF Serving's ServerCore.

`ServerCore` holds the models of the current ModelServerConfig, their versions and states
(START/LOADING/AVAILABLE/UNLOADING/END with an error status), and their labels:

* `reload_config(config)` applies a new config (validated whole; the old one stays on
  error), with TF Serving's label rule; unlike TF Serving, it also refuses a config that
  would leave a model that serves now with nothing to serve (a missing base_path, no
  version the policy selects, or none of them loads), logging the path;
* `poll_once()` is one pass of TF Serving's file-system source: loads the versions the
  policy wants (after warmup, bounded by a timeout, with no lock held so status, requests
  and other polls go on) and unloads the retired ones only once the wanted ones are
  AVAILABLE (availability preserving); a version that fails to load or warm up goes to
  END with its error in GetModelStatus and is not retried;
* `servable(model_spec)` resolves a request's version / label / latest to a held
  Servable; `model_status(model_spec)` answers GetModelStatus.
"""
import contextlib
import logging
import os
import threading
from typing import Dict, Optional

from serving import model_config as model_config_lib
from serving.model_config_file import ModelConfigError, validate_config
from serving import publish as publish_lib
from serving import version_loader
from serving.errors import UNKNOWN_LABEL_MESSAGE as UNKNOWN_LABEL
from serving.servable import Servable
from serving.server_status import ServingError, invalid, status_proto

import grpc  # pylint: disable=g-import-not-at-top,wrong-import-order
from tensorflow_serving.apis import get_model_status_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.config import model_server_config_pb2  # pylint: disable=g-import-not-at-top

log = logging.getLogger("serving.local_server")

State = get_model_status_pb2.ModelVersionStatus.State


class _Model:
  def __init__(self, config: model_server_config_pb2.ModelConfig):
    self.config = config
    self.available: Dict[int, Servable] = {}
    self.failed: Dict[int, str] = {}
    self.labels: Dict[str, int] = {}

  @property
  def name(self):
    return self.config.name


class ServerCore:
  """Models, versions, labels and their states; thread-safe."""

  def __init__(self, allow_version_labels_for_unavailable_models: bool = False,
               enable_model_warmup: bool = True, session_config=None, batching=None,
               per_model_batching: bool = False,
               warmup_timeout_s: float = version_loader.DEFAULT_WARMUP_TIMEOUT_S,
               model_base_path_root: Optional[str] = None):
    self.allow_unavailable_labels = allow_version_labels_for_unavailable_models
    self.enable_model_warmup = enable_model_warmup
    self.session_config = session_config
    self.batching = batching  # global BatchingParameters (--enable_batching) or None
    self.per_model_batching = per_model_batching
    self.warmup_timeout_s = warmup_timeout_s
    self.base_path_root = (os.path.realpath(model_base_path_root) if model_base_path_root
                           else None)
    self._models: Dict[str, _Model] = {}
    self._states: Dict[str, Dict[int, tuple]] = {}  # name -> version -> (State, StatusProto)
    self._loading = set()  # (name, version) being loaded, by whichever poll started it
    self._lock = threading.RLock()  # models, available maps, labels, states, _loading
    self._sync_lock = threading.RLock()  # one config change / load plan at a time
    self.config = model_server_config_pb2.ModelServerConfig()

  # -- config ------------------------------------------------------------------------------
  def reload_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
    """Applies a new ModelServerConfig, or raises ServingError and keeps the old one.

    An empty config (no `model_config_list`) changes nothing, as TF Serving's
    ServerCore::ReloadConfig ("Taking no action for empty config."). Returns once the
    config's versions are loaded (or failed), as TF Serving's ReloadConfig.
    """
    with self._sync_lock:
      if config.WhichOneof("config") is None:
        log.info("Taking no action for empty config.")
        return
      if config.WhichOneof("config") != "model_config_list":
        raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                           "only model_config_list configs are supported")
      try:
        validate_config(config)
      except ModelConfigError as e:
        raise invalid(str(e)) from e
      for m in config.model_config_list.config:
        self._check_model_entry(m)
      new_labels = self._check_labels(config)
      self._check_servable(config)
      with self._lock:
        names = {m.name for m in config.model_config_list.config}
        removed = [self._models[n] for n in self._models if n not in names]
        for m in config.model_config_list.config:
          model = self._models.get(m.name)
          if model is None:
            model = self._models[m.name] = _Model(m)
            self._states.setdefault(m.name, {})
          model.config = m
          model.labels = new_labels.get(m.name, {})
        for model in removed:
          del self._models[model.name]
        self.config = config
      for model in removed:
        for version in sorted(model.available):
          self._unload(model, version)
    self.poll_once()

  def _check_model_entry(self, m) -> None:
    if m.model_platform not in ("", model_config_lib.TENSORFLOW_PLATFORM):
      raise invalid(f"Model {m.name} requests unsupported platform {m.model_platform}")
    if not os.path.isabs(m.base_path):
      raise invalid(f"Expected model {m.name} to have an absolute path or URI; got "
                    f"base_path()={m.base_path}")
    if self.base_path_root:
      real = os.path.realpath(m.base_path)
      if os.path.commonpath([real, self.base_path_root]) != self.base_path_root:
        raise ServingError(grpc.StatusCode.PERMISSION_DENIED,
                           f"model {m.name}: base_path {m.base_path} is outside "
                           f"--model_base_path_root={self.base_path_root}")

  def _check_servable(self, config) -> None:
    """Refuses (ServingError, old config kept) a config that would take a model that
    serves now down to nothing: its base_path is missing, holds no version its policy
    wants, or every such version fails to load (tried here, then closed). Without this,
    the availability-preserving unload would retire the served versions for nothing."""
    with self._lock:
      serving = {name: (model.config.base_path, set(model.available))
                 for name, model in self._models.items() if model.available}
    for m in config.model_config_list.config:
      if m.name not in serving:
        continue
      old_path, available = serving[m.name]
      if not os.path.isdir(m.base_path):
        raise self._unservable(m, f"base_path {m.base_path} does not exist")
      on_disk = publish_lib.list_versions(m.base_path, complete_only=True)
      wanted = model_config_lib.policy_versions(m.model_version_policy, on_disk)
      if not wanted:
        raise self._unservable(m, f"no version under base_path {m.base_path} that its "
                                  f"version policy selects (complete versions: "
                                  f"{on_disk or 'none'})")
      if old_path == m.base_path and available & set(wanted):
        continue
      errors = []
      for version in sorted(wanted, reverse=True):
        path = os.path.join(m.base_path, str(version))
        try:
          version_loader.load_version(
              m.name, version, path, self.session_config, self.batching,
              self.per_model_batching, self.enable_model_warmup,
              self.warmup_timeout_s).close(0)
          break
        except Exception as e:  # pylint: disable=broad-except
          errors.append(f"{path}: {e}")
      else:
        raise self._unservable(m, "none of its versions loads: " + "; ".join(errors))

  def _unservable(self, m, reason: str) -> ServingError:
    message = (f"model {m.name}: {reason}; keeping the current config, which serves it "
               "(fix the path or publish a version, then save the config again)")
    log.error("Rejected config: %s", message)
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)

  def _check_labels(self, config) -> Dict[str, Dict[str, int]]:
    """TF Serving's UpdateModelVersionLabelMap rule; returns the new label map."""
    labels = {}
    with self._lock:
      for m in config.model_config_list.config:
        model = self._models.get(m.name)
        current = model.labels if model else {}
        available = set(model.available) if model else set()
        for label, version in m.version_labels.items():
          moved = label in current and current[label] != version
          if version not in available and (moved or not self.allow_unavailable_labels):
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Request to assign label to version {version} of model {m.name}, which is "
                "not currently available for inference")
          labels.setdefault(m.name, {})[label] = int(version)
    return labels

  # -- versions ----------------------------------------------------------------------------
  def poll_once(self) -> None:
    """One pass of the file-system source: load new versions, unload retired ones.

    The plan (which versions to load) is made under the sync lock; the loads and warmups
    run with no lock held; a version another pass is loading is left to that pass.
    """
    with self._sync_lock:
      with self._lock:
        models = list(self._models.values())
      plan = [(model, version) for model in models for version in self._to_load(model)]
    for model, version in plan:
      self._load(model, version)
    with self._sync_lock:
      for model in models:
        self._retire(model)

  def _aspired(self, model: _Model):
    """The versions the policy wants now; forgets failures of versions no longer on disk.

    Scans the file system with no lock held, so requests are not held up by the scan.
    """
    on_disk = publish_lib.list_versions(model.config.base_path, complete_only=True)
    with self._lock:
      for version in [v for v in model.failed if v not in on_disk]:
        del model.failed[version]
    return model_config_lib.policy_versions(model.config.model_version_policy, on_disk)

  def _to_load(self, model: _Model) -> list:
    """Marks LOADING (and returns) the wanted versions nobody has loaded or is loading."""
    aspired = self._aspired(model)
    versions = []
    with self._lock:
      for version in aspired:
        key = (model.name, version)
        if (version not in model.available and version not in model.failed
            and key not in self._loading):
          self._loading.add(key)
          self._states.setdefault(model.name, {})[version] = (State.LOADING, status_proto())
          versions.append(version)
    return versions

  def _retire(self, model: _Model) -> None:
    """Unloads versions out of the policy once one the policy wants is AVAILABLE."""
    aspired = self._aspired(model)
    with self._lock:
      available = set(model.available)
    retired = [v for v in available if v not in aspired]
    if retired and (not aspired or any(v in available for v in aspired)):
      for version in sorted(retired):
        self._unload(model, version)

  def _set_state(self, name, version, state, status=None):
    with self._lock:
      self._states.setdefault(name, {})[version] = (state, status or status_proto())

  def _load(self, model: _Model, version: int) -> None:
    path = os.path.join(model.config.base_path, str(version))
    log.info("Loading servable: {name: %s version: %d} from %s", model.name, version, path)
    try:
      servable = version_loader.load_version(
          model.name, version, path, self.session_config, self.batching,
          self.per_model_batching, self.enable_model_warmup, self.warmup_timeout_s)
    except Exception as e:  # pylint: disable=broad-except
      code = e.code if isinstance(e, ServingError) else grpc.StatusCode.UNKNOWN
      message = f"Loading servable: {{name: {model.name} version: {version}}} failed: {e}"
      log.error(message)
      with self._lock:
        model.failed[version] = message
        self._loading.discard((model.name, version))
        self._states[model.name][version] = (State.END, status_proto(code, message))
      return
    with self._lock:
      self._loading.discard((model.name, version))
      current = self._models.get(model.name) is model
      if current:
        model.available[version] = servable
        self._states[model.name][version] = (State.AVAILABLE, status_proto())
    if not current:  # the model left the config while this version loaded
      servable.close(0)
      self._set_state(model.name, version, State.END)
      return
    log.info("Successfully loaded servable version {name: %s version: %d}", model.name,
             version)

  def _unload(self, model: _Model, version: int) -> None:
    with self._lock:
      servable = model.available.pop(version, None)
      if servable is None:
        return
      self._states[model.name][version] = (State.UNLOADING, status_proto())
    servable.close()
    self._set_state(model.name, version, State.END)
    log.info("Unloaded servable version {name: %s version: %d}", model.name, version)

  def unload_all(self) -> None:
    with self._sync_lock:
      with self._lock:
        models = list(self._models.values())
      for model in models:
        for version in sorted(model.available):
          self._unload(model, version)

  # -- requests ----------------------------------------------------------------------------
  def _label_error(self, model: Optional[_Model], name: str, label: str) -> ServingError:
    """TF Serving's message for an unknown label, plus what does exist."""
    message = f"{UNKNOWN_LABEL}: {label}"
    if model is None:
      served = ", ".join(sorted(self._models)) or "none"
      return invalid(f"{message} (no model named {name} is served; models: {served})")
    if not model.labels:
      return invalid(f"{message} (model {name} has no version labels: a server started "
                     "with --model_base_path serves the latest version without labels; "
                     "labels come from --model_config_file)")
    labels = ", ".join(f"{k}={v}" for k, v in sorted(model.labels.items()))
    return invalid(f"{message} (labels of model {name}: {labels})")

  @contextlib.contextmanager
  def servable(self, model_spec):
    """Resolves a ModelSpec (version, label or latest) to a held Servable."""
    name = model_spec.name
    if not name:
      raise invalid("ModelSpec has no name specified.")
    with self._lock:
      model = self._models.get(name)
      choice = model_spec.WhichOneof("version_choice")
      version = None
      if choice == "version_label":
        label = model_spec.version_label
        if model is None or label not in model.labels:
          raise self._label_error(model, name, label)
        version = model.labels[label]
      elif choice == "version":
        version = model_spec.version.value
      request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
      if model is not None and version is None and model.available:
        version = max(model.available)
      servable = model.available.get(version) if model is not None else None
      if servable is None:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"Servable not found for request: {request}")
      servable.acquire()
    try:
      yield servable
    finally:
      servable.release()

  def model_status(self, model_spec) -> get_model_status_pb2.GetModelStatusResponse:
    name = model_spec.name
    with self._lock:
      states = dict(self._states.get(name, {}))
    response = get_model_status_pb2.GetModelStatusResponse()
    if model_spec.HasField("version"):
      version = model_spec.version.value
      if version not in states:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"Could not find version {version} of model {name}")
      versions = [version]
    else:
      if not states:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"Could not find any versions of model {name}")
      versions = sorted(states)
    for version in versions:
      state, status = states[version]
      response.model_version_status.add(version=version, state=state, status=status)
    return response

  def state(self, name: str, version: int):
    with self._lock:
      entry = self._states.get(name, {}).get(version)
    return entry[0] if entry else None


def single_model_config(model_name: str, model_base_path: str):
  """The ModelServerConfig of `--model_name --model_base_path` (latest version, no labels)."""
  config = model_server_config_pb2.ModelServerConfig()
  config.model_config_list.config.append(model_config_lib.make_model_config(
      model_name, os.path.abspath(model_base_path)))
  return config
