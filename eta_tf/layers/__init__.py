"""Keras layers of the ETA-Net family."""
from eta_tf.layers.attention import TargetAttention
from eta_tf.layers.hashing import HammingTopK
from eta_tf.layers.hashing import SimHash

__all__ = ["SimHash", "HammingTopK", "TargetAttention"]
