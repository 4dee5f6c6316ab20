"""Loads one model version for the local server: session, batching parameters, warmup.

`load_version` is what TF Serving does between LOADING and AVAILABLE: the TF1 session
loader, the batching parameters that apply to the version (TF Serving's
GetPerModelBatchingParams), and the replay of its warmup file, bounded by a timeout so a
hanging graph fails the version (DEADLINE_EXCEEDED in its status) instead of blocking the
server. The caller holds no lock while this runs.
"""
import logging
import os
import threading
from typing import Optional

from serving import tfs_protos
from serving.predict import replay_warmup
from serving.servable import Servable
from serving.server_status import ServingError

import grpc  # pylint: disable=g-import-not-at-top,wrong-import-order

log = logging.getLogger("serving.local_server")

PER_MODEL_BATCHING_FILE = "batching_params.pbtxt"
DEFAULT_WARMUP_TIMEOUT_S = 60.0


class WarmupTimeout(ServingError):
  """The warmup did not finish in time; its thread still owns (and closes) the session."""


def batching_for(path: str, batching, per_model_batching: bool):
  """TF Serving's GetPerModelBatchingParams: which params batch this version, if any."""
  if batching is None:
    return None
  if not per_model_batching:
    return batching
  per_model = os.path.join(path, PER_MODEL_BATCHING_FILE)
  if not os.path.exists(per_model):
    return None
  return tfs_protos.parse_text(per_model, tfs_protos.BatchingParameters)


def warm_up(servable: Servable, timeout_s: float) -> int:
  """Replays the warmup file within `timeout_s` seconds; returns the requests run.

  Each replayed request carries the remaining time as its TF deadline, so a graph that
  blocks is cancelled by TensorFlow. As a backstop (a graph that ignores cancellation),
  the replay runs in a thread that is abandoned past the timeout; it closes the session
  itself when it ends. Raises ServingError (DEADLINE_EXCEEDED on timeout).
  """
  outcome = {}
  abandoned = threading.Event()

  def replay():
    try:
      outcome["count"] = replay_warmup(servable, timeout_s)
    except Exception as e:  # pylint: disable=broad-except
      outcome["error"] = e
    if abandoned.is_set():
      servable.close(0)

  thread = threading.Thread(target=replay, name=f"warmup-{servable.name}-{servable.version}",
                            daemon=True)
  thread.start()
  thread.join(timeout_s)
  if thread.is_alive():
    abandoned.set()
    raise WarmupTimeout(grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"Failed to warm up model: the warmup requests did not finish in "
                        f"{timeout_s:g} s (--warmup_timeout_seconds)")
  if "error" in outcome:
    raise outcome["error"]
  return outcome["count"]


def load_version(name: str, version: int, path: str, session_config=None, batching=None,
                 per_model_batching: bool = False, warmup: bool = True,
                 warmup_timeout_s: Optional[float] = DEFAULT_WARMUP_TIMEOUT_S) -> Servable:
  """A warmed-up Servable, or raises (the session is closed on failure)."""
  servable = Servable(name, version, path, session_config)
  try:
    servable.batching = batching_for(path, batching, per_model_batching)
    if warmup:
      count = warm_up(servable, warmup_timeout_s or DEFAULT_WARMUP_TIMEOUT_S)
      log.info("Finished warming up %s version %d with %d requests", name, version, count)
  except WarmupTimeout:  # the abandoned warmup thread closes the session when it ends
    raise
  except Exception:
    servable.close(0)
    raise
  return servable
