"""A SavedModel loaded the way TF Serving loads it: the TF1 session loader.

TF Serving's C++ SavedModelBundle loader imports the MetaGraph tagged "serve" into its own
Graph and Session and runs a signature by feeding and fetching the signature's tensor
names. `SavedModelSession` does exactly that from Python, so the exporter's validation,
the local server and the serving benchmark all run a signature the way production does.

    with SavedModelSession("/models/eta/3") as model:
      ctr = model.run("score_candidates", inputs)          # one output -> ndarray [N]
      outs = model.run_outputs("serving_default", inputs)  # {output alias: ndarray}

Layer: above the contracts (eta_tf.features), below export and serving; it imports
neither `serving` nor `pipelines`.
"""
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from eta_tf import features

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order

SERVE_TAG = "serve"  # tf.saved_model.SERVING, the tag TF Serving loads


class SavedModelSession:
  """One SavedModel in its own tf.Graph and tf.compat.v1.Session.

  `signatures` maps a signature name to its SignatureDef; `meta_graph_def` is the loaded
  MetaGraphDef. Not thread-safe to close while another thread runs; callers that share one
  across threads count their in-flight calls (serving.servable does).
  """

  def __init__(self, saved_model_dir: str, session_config=None):
    self.path = saved_model_dir
    self.graph = tf.Graph()
    self.session = tf.compat.v1.Session(graph=self.graph, config=session_config)
    try:
      with self.graph.as_default():
        self.meta_graph_def = tf.compat.v1.saved_model.loader.load(
            self.session, [SERVE_TAG], saved_model_dir)
    except Exception:
      self.session.close()
      raise
    self.signatures = dict(self.meta_graph_def.signature_def)

  def op_types(self) -> set:
    """Every op type in the graph and in its function library."""
    graph_def = self.meta_graph_def.graph_def
    ops = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
      ops |= {node.op for node in function.node_def}
    return ops

  def run_outputs(self, signature_name: str, inputs: Mapping[str, np.ndarray],
                  output_aliases: Optional[Sequence[str]] = None,
                  timeout_s: Optional[float] = None) -> Dict[str, np.ndarray]:
    """Runs a signature: {input alias: array} in, {output alias: array} out.

    `output_aliases` defaults to every output of the signature. `timeout_s` bounds the
    run (tf.errors.DeadlineExceededError past it). Raises KeyError for an unknown
    signature or alias; input validation is the caller's job.
    """
    signature = self.signatures[signature_name]
    aliases = list(output_aliases) if output_aliases else sorted(signature.outputs)
    feeds = {signature.inputs[alias].name: value for alias, value in inputs.items()}
    fetches = [signature.outputs[alias].name for alias in aliases]
    options = None
    if timeout_s is not None:
      options = tf.compat.v1.RunOptions(timeout_in_ms=max(1, int(timeout_s * 1000)))
    values = self.session.run(fetches, feed_dict=feeds, options=options)
    return dict(zip(aliases, values))

  def run(self, signature_name: str, inputs: Mapping[str, np.ndarray],
          output_alias: str = features.OUTPUT_CTR) -> np.ndarray:
    """One output (default: the CTR) of a signature, e.g. float32 [B] or [N]."""
    return self.run_outputs(signature_name, inputs, [output_alias])[output_alias]

  def close(self) -> None:
    self.session.close()

  def __enter__(self) -> "SavedModelSession":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
