"""A local, TF-Serving-compatible gRPC model server for development and tests.

This is NOT a replacement for TensorFlow Serving: it is a small Python server that speaks
the same gRPC API and copies the behaviour our client, exporter and rollout procedure rely
on, so that they can be tested on a machine without Docker or the tensorflow_model_server
binary. Production serves with the tensorflow/serving image (docker/).

What it implements, after TF Serving:

* PredictionService.Predict and .GetModelMetadata (the `signature_def` field, as a packed
  SignatureDefMap), ModelService.GetModelStatus and .HandleReloadConfigRequest.
* Loading: each version goes through the TF1 session loader
  (`tf.compat.v1.saved_model.loader.load` into its own Graph and Session), as TF Serving's
  C++ SavedModelBundle loader does, so signatures run exactly as the C++ server runs them.
* Version discovery: polls every model's base path each --file_system_poll_wait_seconds;
  only directories with an integer name and a saved_model.pb count, so half-written
  `.tmp-*` directories are never loaded. Version policy from models.config: latest N
  (default 1), all, or specific versions. A version that fails to load or to warm up goes
  to END with its error and is not retried.
* Warmup: `assets.extra/tf_serving_warmup_requests` (at most 1000 PredictionLogs) is
  replayed before a version becomes AVAILABLE; a failing replay fails the load.
* Availability preserving: versions that leave the policy are unloaded only once the
  policy's new versions are AVAILABLE, and only after their in-flight requests finish.
  Requests for "latest" go to the highest AVAILABLE version, so a switch fails no request.
* Version labels from models.config, with TF Serving's rule: a label may only point at an
  AVAILABLE version, except that --allow_version_labels_for_unavailable_models allows a
  *new* label (not a moved one) to point at a version that is not loaded yet. A config
  that breaks the rule is rejected whole and the previous config stays in force.
* Status codes and messages as TF Serving's: NOT_FOUND "Servable not found for request:
  Latest(m)" / "Specific(m, v)" for unknown models and versions; INVALID_ARGUMENT
  "Unrecognized servable version label: x" for unknown labels (TF Serving's code, not
  NOT_FOUND); FAILED_PRECONDITION 'Serving signature key "x" not found.' for unknown
  signatures (TF Serving's code); INVALID_ARGUMENT for missing, extra, mistyped or
  misshapen inputs.

Additions of its own: --max_candidates and --max_history reject (INVALID_ARGUMENT)
requests with more candidates / rows or longer histories than configured, and a
per-request element cap rejects tensors that would not fit in memory, so a bad request
never takes the server down; --max_message_bytes (64 MiB) and --max_concurrent_rpcs bound
memory and load (RESOURCE_EXHAUSTED). It binds 127.0.0.1 unless --host says otherwise;
--ssl_config_file (TF Serving's SSLConfig) turns on TLS or mutual TLS;
--enable_reload_config_rpc=false / --model_base_path_root limit what a reload may do;
warmup is bounded by --warmup_timeout_seconds. With --enable_batching
(and --enable_per_model_batching_parameters: only versions shipping batching_params.pbtxt)
it applies TF Serving's batching preconditions to those versions' requests and warmup
(every input at least 1-D with one shared 0th dimension; at most max_batch_size rows)
without batching anything, so tests see what the batching server would refuse.

    python -m serving.local_server --port=8500 --model_config_file=models.config
    python -m serving.local_server --port=8500 --model_name=eta --model_base_path=/abs/eta


Modules: eta_tf.savedmodel_session (TF1 loader) -> serving.servable (one version) ->
serving.predict (request checks, warmup replay) -> serving.server_core (versions, labels)
-> serving.grpc_services -> serving.server (LocalServer) -> this CLI.
"""
import argparse
import logging
import signal
import sys
import threading
from typing import Optional, Sequence

from eta_tf import config_flags
from serving.predict import (DEFAULT_MAX_CANDIDATES, DEFAULT_MAX_HISTORY,
                             DEFAULT_MAX_REQUEST_ELEMENTS)
from serving.server import (DEFAULT_MAX_CONCURRENT_RPCS, DEFAULT_MAX_MESSAGE_BYTES,
                            LocalServer)
from serving.version_loader import DEFAULT_WARMUP_TIMEOUT_S
from serving.model_config_file import ModelConfigError
from serving.server_status import ServingError


# Accepted so that TF Serving's command line (docker-compose.yml) works as is.
IGNORED_FLAGS = ("rest_api_port", "monitoring_config_file", "xla_cpu_compilation_enabled")


def _bool(text):
  if isinstance(text, bool):
    return text
  if text.lower() in ("1", "true", "yes"):
    return True
  if text.lower() in ("0", "false", "no"):
    return False
  raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m serving.local_server",
      description="Local TF-Serving-compatible gRPC server (PredictionService.Predict/"
                  "GetModelMetadata, ModelService.GetModelStatus/HandleReloadConfigRequest) "
                  "for development and tests. Not a replacement for TensorFlow Serving.",
      epilog="Flags are named as tensorflow_model_server's. Boolean flags take "
             "--flag or --flag=true/false.")
  flag = parser.add_argument
  flag("--port", type=int, default=8500, help="gRPC port; 0 picks a free one (default: 8500)")
  flag("--host", default="127.0.0.1",
       help="address to bind (default: %(default)s, this machine only; --host=0.0.0.0 "
            "opens it to the network: then use --ssl_config_file)")
  flag("--ssl_config_file", default=None,
       help="TLS: a text-format SSLConfig (TF Serving's: server_key, server_cert, "
            "custom_ca as PEM contents; client_verify: true = mutual TLS)")
  flag("--model_config_file", default=None,
       help="models.config (ModelServerConfig text proto); overrides --model_name/base_path")
  flag("--model_config_file_poll_wait_seconds", type=float, default=0.0,
       help="re-read --model_config_file every N seconds; 0 = read once (default: 0)")
  flag("--model_name", default="default", help="model name (default: %(default)s)")
  flag("--model_base_path", default=None,
       help="absolute path holding <version>/ dirs; serves the latest version only, with "
            "no version labels (labels need --model_config_file)")
  flag("--file_system_poll_wait_seconds", type=float, default=1.0,
       help="poll the base paths for new versions every N seconds; 0 = once (default: 1)")
  flag("--max_candidates", type=int, default=DEFAULT_MAX_CANDIDATES,
       help="reject requests with more candidates / rows (INVALID_ARGUMENT); 0 = no limit "
            "(default: %(default)s)")
  flag("--max_request_elements", type=int, default=DEFAULT_MAX_REQUEST_ELEMENTS,
       help="reject requests whose inputs hold more elements (default: %(default)s)")
  flag("--max_history", type=int, default=DEFAULT_MAX_HISTORY,
       help="reject requests with longer history rows (INVALID_ARGUMENT); 0 = no limit "
            "(default: %(default)s)")
  flag("--max_message_bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES,
       help="largest gRPC message in or out; larger -> RESOURCE_EXHAUSTED "
            "(default: %(default)s = 64 MiB)")
  flag("--max_concurrent_rpcs", type=int, default=DEFAULT_MAX_CONCURRENT_RPCS,
       help="RPCs in flight (queued included); more -> RESOURCE_EXHAUSTED; 0 = no limit "
            "(default: %(default)s)")
  flag("--warmup_timeout_seconds", type=float, default=DEFAULT_WARMUP_TIMEOUT_S,
       help="a version whose warmup takes longer fails (END, DEADLINE_EXCEEDED in "
            "GetModelStatus) (default: %(default)s)")
  flag("--enable_reload_config_rpc", type=_bool, nargs="?", const=True, default=True,
       help="serve ModelService.HandleReloadConfigRequest (default: true; false -> "
            "PERMISSION_DENIED)")
  flag("--model_base_path_root", default=None,
       help="refuse (PERMISSION_DENIED) any config, file or reload RPC, whose base_path is "
            "outside this directory (default: no restriction)")
  flag("--allow_version_labels_for_unavailable_models", type=_bool, nargs="?", const=True,
       default=False, help="allow new labels on versions not loaded yet (default: false)")
  flag("--enable_batching", type=_bool, nargs="?", const=True, default=False,
       help="enforce TF Serving's batching preconditions on requests (default: false)")
  flag("--batching_parameters_file", default=None,
       help="BatchingParameters text proto (max_batch_size is enforced)")
  flag("--enable_per_model_batching_parameters", type=_bool, nargs="?", const=True,
       default=False, help="batch only versions that ship batching_params.pbtxt, with "
                           "those params (default: false)")
  flag("--enable_model_warmup", type=_bool, nargs="?", const=True, default=True,
       help="replay assets.extra/tf_serving_warmup_requests before serving (default: true)")
  flag("--grpc_max_threads", type=int, default=16, help="gRPC worker threads (default: 16)")
  flag("--tensorflow_intra_op_parallelism", type=int, default=0, help="0 = auto")
  flag("--tensorflow_inter_op_parallelism", type=int, default=0, help="0 = auto")
  for ignored in IGNORED_FLAGS:
    flag(f"--{ignored}", default=None, nargs="?", const="true",
         help="accepted for command-line compatibility with TF Serving; ignored")
  return config_flags.add_flag_suggestions(parser)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  if not args.model_config_file and not args.model_base_path:
    print("error: give --model_config_file or --model_base_path", file=sys.stderr)
    return 2
  settings = {k: v for k, v in vars(args).items() if k not in IGNORED_FLAGS}
  try:
    server = LocalServer(**settings)  # every other flag is a LocalServer argument
  except (OSError, ValueError) as e:  # unreadable / incomplete --ssl_config_file etc.
    print(f"error: {e}", file=sys.stderr)
    return 2
  stop = threading.Event()
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda *_: stop.set())
  try:
    server.start()
  except (ServingError, OSError, RuntimeError, ModelConfigError) as e:
    print(f"error: failed to start server: {getattr(e, 'message', e)}", file=sys.stderr)
    server.stop(0)
    return 1
  print(f"serving.local_server listening on {args.host}:{server.port}", flush=True)
  stop.wait()
  server.stop()
  return 0


if __name__ == "__main__":
  sys.exit(main())
