"""docker/: no Docker engine here, so parse the files and check paths, ports, flags, protos."""
import json
import os
import re
import shlex

import pytest

from serving import model_config_file
from serving import tfs_protos

yaml = pytest.importorskip("yaml")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKER = os.path.join(REPO, "docker")
CONTAINER_CONFIG_DIR = "/config"

# tensorflow_model_server flags (tensorflow_serving/model_servers/main.cc) we may use.
KNOWN_FLAGS = {
    "port", "rest_api_port", "model_config_file", "model_config_file_poll_wait_seconds",
    "file_system_poll_wait_seconds", "allow_version_labels_for_unavailable_models",
    "enable_batching", "batching_parameters_file", "enable_per_model_batching_parameters",
    "monitoring_config_file", "xla_cpu_compilation_enabled", "model_name", "model_base_path",
    "tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism",
    "enable_model_warmup", "grpc_channel_arguments", "rest_api_num_threads",
}
REQUIRED_FLAGS = {
    "port": "8500", "rest_api_port": "8501",
    "model_config_file": "/config/models.config",
    "model_config_file_poll_wait_seconds": None,
    "allow_version_labels_for_unavailable_models": "true",
    "enable_batching": "true",
    "batching_parameters_file": "/config/batching_parameters.txt",
    # score_candidates has a scalar input: it must not be batched (see batching_parameters.txt)
    "enable_per_model_batching_parameters": "true",
    "monitoring_config_file": "/config/monitoring.config",
    "xla_cpu_compilation_enabled": "true",
}


def _flags(args):
  out = {}
  for arg in args:
    m = re.fullmatch(r"--([a-z_0-9]+)(?:=(.*))?", arg)
    assert m, f"not a --flag=value argument: {arg!r}"
    out[m.group(1)] = m.group(2) if m.group(2) is not None else "true"
  return out


def _check_flags(flags, where):
  unknown = set(flags) - KNOWN_FLAGS
  assert not unknown, f"{where}: flags tensorflow_model_server does not have: {unknown}"
  for name, value in REQUIRED_FLAGS.items():
    assert name in flags, f"{where}: missing --{name}"
    if value is not None:
      assert flags[name] == value, f"{where}: --{name}={flags[name]}, expected {value}"
  assert float(flags["model_config_file_poll_wait_seconds"]) > 0


def _server_flags(compose):
  """The flags the compose service runs with: the image's CMD (compose must not repeat
  them, so the list lives in one place)."""
  assert "command" not in compose["services"]["serving"], \
      "docker-compose.yml repeats the server flags; keep them in docker/Dockerfile's CMD"
  cmd = next(l for l in _dockerfile("Dockerfile") if l.upper().startswith("CMD "))
  return json.loads(cmd[4:])


def _host_path(container_path):
  """/config/x in the container is docker/x in the repo (the compose volume)."""
  assert container_path.startswith(CONTAINER_CONFIG_DIR + "/")
  return os.path.join(DOCKER, container_path[len(CONTAINER_CONFIG_DIR) + 1:])


@pytest.fixture(scope="module")
def compose():
  with open(os.path.join(DOCKER, "docker-compose.yml"), encoding="utf-8") as f:
    return yaml.safe_load(f)


def _dockerfile(name):
  with open(os.path.join(DOCKER, name), encoding="utf-8") as f:
    text = f.read()
  lines = re.sub(r"\\\n", " ", text).splitlines()
  return [l.strip() for l in lines if l.strip() and not l.strip().startswith("#")]


def test_serving_dockerfile_pins_tf_serving_and_passes_the_flags():
  lines = _dockerfile("Dockerfile")
  froms = [l for l in lines if l.upper().startswith("FROM ")]
  assert len(froms) == 1
  image = froms[0].split()[1]
  m = re.fullmatch(r"tensorflow/serving:(\d+)\.(\d+)\.(\d+)", image)
  assert m, f"pin a released tensorflow/serving tag, got {image}"
  import tensorflow as tf  # the server must be at least as new as the exporting TF
  tf_major_minor = tuple(int(x) for x in tf.__version__.split(".")[:2])
  assert (int(m.group(1)), int(m.group(2))) >= tf_major_minor
  cmd = next(l for l in lines if l.upper().startswith("CMD "))
  _check_flags(_flags(json.loads(cmd[4:])), "Dockerfile CMD")
  assert any(l.startswith("EXPOSE") and "8500" in l and "8501" in l for l in lines)
  copies = [l for l in lines if l.upper().startswith("COPY ")]
  for src in shlex.split(copies[-1])[1:-1]:
    assert os.path.exists(os.path.join(REPO, src)), src


def test_compose_ports_volumes_and_flags(compose):
  serving = compose["services"]["serving"]
  assert set(serving["ports"]) == {"127.0.0.1:8500:8500", "127.0.0.1:8501:8501"}  # loopback
  assert serving["build"]["dockerfile"] == "docker/Dockerfile"
  assert os.path.exists(os.path.join(DOCKER, serving["build"]["context"],
                                     serving["build"]["dockerfile"]))
  volumes = {v.split(":")[-2] if v.count(":") > 1 else v.split(":")[1]: v
             for v in serving["volumes"]}
  assert "/models" in volumes and CONTAINER_CONFIG_DIR in volumes
  _check_flags(_flags(_server_flags(compose)), "docker-compose.yml")


def test_config_files_parse_with_tf_serving_protos(compose):
  flags = _flags(_server_flags(compose))
  config = model_config_file.read_config(_host_path(flags["model_config_file"]))
  for model in config.model_config_list.config:
    assert os.path.isabs(model.base_path) and model.base_path.startswith("/models/")
  model_config_file.validate_config(config)  # labels only on versions the policy loads
  batching = tfs_protos.parse_text(_host_path(flags["batching_parameters_file"]),
                                   tfs_protos.BatchingParameters)
  sizes = list(batching.allowed_batch_sizes)
  assert sizes == sorted(sizes) and sizes[-1] == batching.max_batch_size.value
  assert batching.num_batch_threads.value >= 1
  monitoring = tfs_protos.parse_text(_host_path(flags["monitoring_config_file"]),
                                     tfs_protos.MonitoringConfig)
  assert monitoring.prometheus_config.enable
  assert monitoring.prometheus_config.path.startswith("/")


def test_local_server_accepts_the_compose_command_line(compose):
  from serving import local_server
  args = local_server.build_parser().parse_args(_server_flags(compose))
  assert args.port == 8500 and args.enable_batching and args.enable_per_model_batching_parameters


def test_train_dockerfile():
  lines = _dockerfile("train.Dockerfile")
  assert next(l for l in lines if l.upper().startswith("FROM ")) == "FROM python:3.11-slim"
  assert any("pip install ." in l for l in lines if l.upper().startswith("RUN "))
  entry = next(l for l in lines if l.upper().startswith("ENTRYPOINT "))
  assert json.loads(entry[len("ENTRYPOINT "):]) == ["python", "-m", "eta_tf.train"]
  assert os.path.exists(os.path.join(REPO, "eta_tf", "train.py"))
  for copy in (l for l in lines if l.upper().startswith("COPY ")):
    for src in shlex.split(copy)[1:-1]:
      assert os.path.exists(os.path.join(REPO, src)), src
