"""One loaded model version of the local server, shared by concurrent requests.

A `Servable` is a `SavedModelSession` (TF1 session loader, as TF Serving's C++ loader)
plus what the server needs around it: its model name and version, the batching parameters
that apply to its requests, and a count of in-flight requests so that unloading waits for
them before the session closes.
"""
import threading

from eta_tf.savedmodel_session import SavedModelSession


class Servable:
  """One model version loaded into its own Graph and tf.compat.v1.Session."""

  def __init__(self, name: str, version: int, path: str, session_config=None):
    self.name, self.version, self.path = name, int(version), path
    self.session = SavedModelSession(path, session_config)
    self.signatures = self.session.signatures
    self.batching = None  # BatchingParameters when requests go through TF's batcher
    self._inflight = 0
    self._cv = threading.Condition()

  def acquire(self) -> None:
    with self._cv:
      self._inflight += 1

  def release(self) -> None:
    with self._cv:
      self._inflight -= 1
      self._cv.notify_all()

  def close(self, drain_timeout_s: float = 30.0) -> None:
    """Waits (bounded) for in-flight requests, then closes the session."""
    with self._cv:
      self._cv.wait_for(lambda: self._inflight == 0, timeout=drain_timeout_s)
    self.session.close()
