"""Experimental eta blocks: retrieval controls and options measured and rejected.

Not part of the product: each is an EtaBlock subclass named by ModelConfig.experiment
(and by an experimental preset of eta_tf/presets.py), kept to reproduce the comparisons
of docs/DESIGN.md §5. The product's EtaBlock has one serving path and knows none of them.
"""
from eta_tf.config import EXPERIMENTS
from eta_tf.experimental.category_attention import CategoryBiasBlock
from eta_tf.experimental.category_attention import CategoryOnlyBlock
from eta_tf.experimental.category_attention import CategorySinkBlock
from eta_tf.experimental.category_attention import CategorySplitBlock
from eta_tf.experimental.linear_readout import DroppedLinearReadoutBlock
from eta_tf.experimental.linear_readout import LinearReadoutBlock
from eta_tf.experimental.retrieval_controls import AttentionHashBlock
from eta_tf.experimental.retrieval_controls import AttentionHashCategoryFirstBlock
from eta_tf.experimental.retrieval_controls import OracleRetrievalBlock
from eta_tf.experimental.retrieval_controls import RandomRetrievalBlock
from eta_tf.experimental.user_bias import UserBiasBlock

EXPERIMENTAL_BLOCKS = {
    "eta_random": RandomRetrievalBlock,
    "eta_oracle": OracleRetrievalBlock,
    "eta_attention_hash": AttentionHashBlock,
    "eta_attention_hash_category": AttentionHashCategoryFirstBlock,
    "eta_category_only": CategoryOnlyBlock,
    "eta_category_bias": CategoryBiasBlock,
    "eta_category_sink": CategorySinkBlock,
    "eta_category_split": CategorySplitBlock,
    "eta_linear_readout": LinearReadoutBlock,
    "eta_linear_readout_dropped": DroppedLinearReadoutBlock,
    "eta_user_bias": UserBiasBlock,
}
assert tuple(EXPERIMENTAL_BLOCKS) == EXPERIMENTS, "eta_tf.config.EXPERIMENTS is the contract"
