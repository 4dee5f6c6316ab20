"""The ETA-Net model family: one tfrs.Model, the long-history block chosen by name."""
from eta_tf.models.ctr_model import CtrModel
from eta_tf.models.ctr_model import build_model

__all__ = ["CtrModel", "build_model"]
