"""A progress line every so many elements, for long local runs (the chain of per-user work).

Beam's local runner shows nothing while a stage runs; this pass-through DoFn logs
`<label>: <n> of <total> users (<rate>/s, ~<eta> s to go)` every `every` elements. On a
distributed runner each worker counts its own elements (the line goes to its worker log).
"""
import logging
import time
from typing import Optional

import apache_beam as beam

_LOG = logging.getLogger("pipelines.progress")


class _ProgressFn(beam.DoFn):

  def __init__(self, label: str, every: int, total: Optional[int]):
    self._label, self._every, self._total = label, every, total

  def setup(self):
    self._seen, self._started = 0, None

  def process(self, element):
    if self._started is None:
      self._started = time.time()
    self._seen += 1
    if self._seen % self._every == 0:
      elapsed = max(time.time() - self._started, 1e-9)
      rate = self._seen / elapsed
      of = f" of {self._total}" if self._total else ""
      to_go = (f", ~{(self._total - self._seen) / rate:.0f} s to go"
               if self._total and self._total > self._seen else "")
      _LOG.info("%s: %d%s users (%.0f/s%s)", self._label, self._seen, of, rate, to_go)
    yield element


class LogProgress(beam.PTransform):
  """Pass-through; logs a progress line every `every` elements (`total` if known)."""

  def __init__(self, label: str, every: int = 20000, total: Optional[int] = None):
    super().__init__()
    self._fn = _ProgressFn(label, every, total)

  def expand(self, pcoll):
    return pcoll | "Progress" >> beam.ParDo(self._fn)
