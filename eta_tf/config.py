"""The two configs of a run: `ModelConfig` (the graph) and `TrainConfig` (the fitting).

Each hyperparameter is one dataclass field with its help text in the field's metadata
(`option`); `eta_tf.config_flags` turns the fields into absl flags and back, so a new
hyperparameter is one line here. Both are saved together into a model_dir (`save_configs`)
and compared on restart (`config_differences`).
"""
import dataclasses
import json
import os
from typing import Optional, Tuple

from eta_tf import io_utils

MODEL_NAMES = ("eta", "din", "din_long", "sim_hard", "avg", "sdim")
SUPPORTED_HASH_BITS = (16, 32, 64, 128, 256)
# eta's selection; random and oracle are controls, attention_hash an experiment.
RETRIEVALS = ("hamming", "random", "oracle", "attention_hash")
SIGNATURE_FIELDS = ("item", "item_category")  # what eta's SimHash signature covers
# How item_category's field distances rank behaviors (category_only: a control).
SIGNATURE_DISTANCES = ("sum", "category_first", "category_only")
STRATEGIES = ("default", "mirrored", "multi_worker")
BATCHINGS = ("user", "sample")  # how training batches are formed (eta_tf.data)
CONFIG_FILE = "model_config.json"
TRAIN_CONFIG_FILE = "train_config.json"


class ConfigError(ValueError):
  """A hyperparameter is out of range; the message names the field and the value."""


def option(default, help_text: str, **metadata):
  """A dataclass field whose metadata carries its flag help (and `choices`, and the
  `embedded` value used by `python -m eta_tf.train` without --data_dir). One line per
  hyperparameter: eta_tf.config_flags makes the flag from it."""
  return dataclasses.field(default=default, metadata={"help": help_text, **metadata})


class _Config:
  """Shared dict/JSON round trip of the config dataclasses."""

  def to_dict(self) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_dict(cls, d: dict):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ConfigError(f"unknown config fields: {unknown}")
    added_later = getattr(cls, "FIELDS_ADDED_LATER", {})
    return cls(**{**{k: v for k, v in added_later.items() if k not in d}, **d})

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)

  def save(self, directory: str) -> str:
    path = os.path.join(directory, self.FILE_NAME)
    io_utils.atomic_write_json(path, self.to_dict())
    return path

  @classmethod
  def load(cls, directory: str):
    with open(os.path.join(directory, cls.FILE_NAME)) as f:
      return cls.from_dict(json.load(f))


@dataclasses.dataclass
class ModelConfig(_Config):
  """Hyperparameters of the ETA-Net family (docs/DESIGN.md §1).

  hamming_xla is faster from L ~ 1024 up (bench/serving_cost.py: din_long/eta 2.0x instead
  of 1.5x at L=4096, N=1000), but TF Serving must then run with
  --xla_cpu_compilation_enabled=true (docker/ sets it); off by default so that a stock TF
  Serving with default flags loads every export.
  """
  FILE_NAME = CONFIG_FILE
  # Fields added after configs were first saved, with the value that rebuilds the model a
  # config without them was trained as (not today's default, which may differ): a saved
  # model must load as what it was.
  FIELDS_ADDED_LATER = {"target_stats": False, "signature_fields": "item",
                        "signature_distance": "category_first", "retrieval": "hamming",
                        "category_bias": False, "attention_sink": False,
                        "category_split": False}

  model: str = option("eta", "Which model to train; only the long-history block differs.",
                      choices=MODEL_NAMES)
  max_len: int = option(1024, "L: long history length (most recent L behaviors).",
                        embedded=256)
  short_len: int = option(48, "S: short history length (short-term attention).",
                          embedded=16)
  item_dim: int = option(32, "d: item embedding size; SimHash hashes item embeddings.")
  category_dim: int = option(16, "Category embedding size.")
  behavior_type_dim: int = option(8, "Behavior type embedding size.")
  time_dim: int = option(8, "Time-gap bucket embedding size.")
  hash_bits: int = option(64, "m: SimHash bits, one of "
                          f"{SUPPORTED_HASH_BITS} (packed into ceil(m/64) int64 words).")
  top_k: int = option(48, "k: behaviors retrieved per candidate (Hamming top-k for eta, "
                      "by category for sim_hard).")
  num_heads: int = option(4, "Attention heads.")
  head_dim: int = option(16, "Size of each attention head.")
  item_buckets: int = option(1 << 18, "Hash buckets for item ids (0 = padding).")
  category_buckets: int = option(1 << 14, "Hash buckets for category ids (0 = padding).")
  time_buckets: int = option(24, "Time-gap log2 buckets (minutes).")
  cross_layers: int = option(1, "DCN-v2 cross layers.")
  mlp_units: Tuple[int, ...] = option((128, 64), "MLP layer sizes.")
  dropout: float = option(0.0, "MLP dropout rate.")
  sdim_tau: int = option(4, "SDIM bits per bucket group (m / tau groups).")
  hash_seed: int = option(1234, "Seed of the SimHash projection.")
  hamming_xla: bool = option(False, "eta: jit-compile the Hamming distance pass (faster "
                             "for long histories; TF Serving then needs "
                             "--xla_cpu_compilation_enabled=true, which docker/ sets).")
  target_stats: bool = option(True, "Give the tower target-aware statistics of the long "
                              "history (matches of the candidate's item and category, "
                              "recency of the last match; for eta also counts of the "
                              "retrieved at Hamming distance 0 / near; "
                              "eta_tf/models/target_stats.py). Every model that reads the "
                              "long history gets the same block (all but din).")
  retrieval: str = option("hamming", "eta's selection of the k behaviors: hamming (ETA), "
                          "or the controls random (the candidate's exact-item matches "
                          "first, then a fixed pseudo-random k: the floor of retrieval) "
                          "and oracle (the top-k by the model's own full attention scores "
                          "over all L: the ceiling), and the experiment attention_hash "
                          "(SimHash of the attention's own projected, per-head "
                          "normalised query and keys: ETA's Hamming top-k in the space the "
                          "oracle ranks in, computed per request, no frozen table).",
                          choices=RETRIEVALS)
  signature_fields: str = option("item_category", "What eta's signature hashes: "
                                 "item_category (SimHash(item) ‖ SimHash(category), m bits "
                                 "each; two frozen tables at export) or item (SimHash of "
                                 "the item embedding alone, the paper's ETA).",
                                 choices=SIGNATURE_FIELDS)
  signature_distance: str = option("category_first", "How eta ranks by an item_category "
                                   "signature: category_first (category distance x "
                                   "(m + 1) + item distance: behaviors whose category "
                                   "signature is nearest come first, by item nearness "
                                   "among them; SIM(hard)'s key with ETA's order inside "
                                   "it; docs/DESIGN.md §5), sum (item + category Hamming "
                                   "distance), or the control category_only "
                                   "(category_first keeping only behaviors at category "
                                   "distance 0, as SIM(hard) masks other categories). "
                                   "Not read with signature_fields=item (one field, one "
                                   "distance).",
                                   choices=SIGNATURE_DISTANCES)
  category_bias: bool = option(False, "eta with signature_fields=item_category: a learned "
                               "per-head attention bias for the retrieved behaviors whose "
                               "category signature equals the candidate's (category "
                               "distance 0), so attention can learn SIM(hard)'s category "
                               "mask, softly, without losing the other retrieved "
                               "(docs/DESIGN.md §5). Not read with signature_fields=item.")
  category_split: bool = option(False, "eta with signature_fields=item_category: attend "
                                "over the retrieved of the candidate's category (category "
                                "distance 0) and over the other retrieved separately, two "
                                "long-term interests for the tower: SIM(hard)'s category "
                                "mask without dropping what ETA retrieved beyond it "
                                "(docs/DESIGN.md §5). Not read with signature_fields=item.")
  attention_sink: bool = option(False, "eta: one more, zero-valued key per head with a "
                                "learned score in the attention over the retrieved k, so "
                                "that when none of them scores above it the long-term "
                                "interest shrinks towards zero (as SIM(hard)'s does when "
                                "no behavior has the candidate's category) instead of "
                                "averaging whatever was retrieved.")

  def __post_init__(self):
    self.mlp_units = tuple(int(u) for u in self.mlp_units)
    self.hamming_xla = bool(self.hamming_xla)
    self.target_stats = bool(self.target_stats)
    self.category_bias = bool(self.category_bias)
    self.attention_sink = bool(self.attention_sink)
    self.category_split = bool(self.category_split)
    self.validate()

  @property
  def behavior_dim(self) -> int:
    return self.item_dim + self.category_dim + self.behavior_type_dim + self.time_dim

  @property
  def hash_words(self) -> int:
    return (self.hash_bits + 63) // 64

  def validate(self):
    def fail(field, why):
      raise ConfigError(f"{field}={getattr(self, field)!r}: {why}")
    if self.model not in MODEL_NAMES:
      fail("model", f"unknown model; choose one of {', '.join(MODEL_NAMES)}")
    if self.retrieval not in RETRIEVALS:
      fail("retrieval", f"unknown retrieval; choose one of {', '.join(RETRIEVALS)}")
    if self.signature_fields not in SIGNATURE_FIELDS:
      fail("signature_fields", f"choose one of {', '.join(SIGNATURE_FIELDS)}")
    if self.signature_distance not in SIGNATURE_DISTANCES:
      fail("signature_distance", f"choose one of {', '.join(SIGNATURE_DISTANCES)}")
    if self.hash_bits not in SUPPORTED_HASH_BITS:
      fail("hash_bits", f"must be one of {SUPPORTED_HASH_BITS}")
    for field in ("max_len", "short_len", "item_dim", "category_dim", "behavior_type_dim",
                  "time_dim", "top_k", "num_heads", "head_dim", "time_buckets"):
      if int(getattr(self, field)) < 1:
        fail(field, "must be >= 1")
    if self.short_len > self.max_len:
      fail("short_len", f"must be <= max_len ({self.max_len})")
    if self.category_split and (self.category_bias or self.attention_sink):
      fail("category_split", "attends over each category part with its own softmax; "
                             "category_bias and attention_sink act on one softmax: turn "
                             "them off")
    if self.top_k > self.max_len:
      fail("top_k", f"must be <= max_len ({self.max_len})")
    if self.item_buckets < 2:
      fail("item_buckets", "must be >= 2 (bucket 0 is padding)")
    if self.category_buckets < 2:
      fail("category_buckets", "must be >= 2 (bucket 0 is padding)")
    if self.cross_layers < 0:
      fail("cross_layers", "must be >= 0")
    if any(u < 1 for u in self.mlp_units):
      fail("mlp_units", "every layer needs >= 1 unit")
    if not 0.0 <= self.dropout < 1.0:
      fail("dropout", "must be in [0, 1)")
    if self.sdim_tau < 1 or self.hash_bits % self.sdim_tau:
      fail("sdim_tau", f"must divide hash_bits ({self.hash_bits})")
    if self.sdim_tau > 16:
      fail("sdim_tau", "must be <= 16 (bucket codes are compared as int32)")


@dataclasses.dataclass
class TrainConfig(_Config):
  """How a model is fitted: budget, optimiser, seeds, checkpoint cadence, distribution."""
  FILE_NAME = TRAIN_CONFIG_FILE

  epochs: int = option(3, "Epochs over the train split.", embedded=2)
  steps: Optional[int] = option(None, "Steps per epoch (default: the whole train split).",
                                embedded=200)
  eval_steps: Optional[int] = option(None, "Eval batches (default: the whole eval split).",
                                     embedded=60)
  batch_size: int = option(256, "Global batch size in targets (examples). With "
                           "--batching=user a batch holds batch_size / 32 chunks of up to 32 "
                           "targets of one user each, so at most batch_size targets.")
  batching: str = option("user", "user: a batch holds a few users' target chunks and each "
                         "history is embedded, hashed and projected once for all of them, "
                         "every target on its own causal window (same logits as per "
                         "sample, several times faster; eta_tf/models/user_batched.py); "
                         "sample: one copy of the history per target. Evaluation is per "
                         "sample either way.", choices=BATCHINGS)
  learning_rate: float = option(2e-3, "Adam learning rate (all dense weights).")
  embedding_learning_rate: float = option(0.5, "Adagrad learning rate of the embedding "
                                          "tables (sparse updates: only the rows a batch "
                                          "touches).")
  seed: int = option(0, "Seed for initialisation and shuffling.")
  checkpoint_every_steps: int = option(100, "Checkpoint frequency (steps).")
  strategy: str = option("default", "tf.distribute strategy; multi_worker reads TF_CONFIG.",
                         choices=STRATEGIES)
  num_threads: int = option(0, "Intra- and inter-op threads (0 = TF default). 1 gives "
                            "bitwise-reproducible runs.")

  def __post_init__(self):
    def fail(field, why):
      raise ConfigError(f"{field}={getattr(self, field)!r}: {why}")
    for field in ("epochs", "batch_size", "checkpoint_every_steps"):
      if getattr(self, field) < 1:
        fail(field, "must be >= 1")
    for field in ("steps", "eval_steps"):
      if getattr(self, field) is not None and getattr(self, field) < 1:
        fail(field, "must be >= 1 (or unset: the whole split)")
    if self.batching not in BATCHINGS:
      fail("batching", f"choose one of {', '.join(BATCHINGS)}")
    if self.strategy not in STRATEGIES:
      fail("strategy", f"choose one of {', '.join(STRATEGIES)}")
    if self.num_threads < 0:
      fail("num_threads", "must be >= 0")


def save_configs(directory: str, model_config: ModelConfig, train_config: TrainConfig):
  """Writes model_config.json and train_config.json into `directory` (each atomically)."""
  os.makedirs(directory, exist_ok=True)
  model_config.save(directory)
  train_config.save(directory)


def config_differences(directory: str, model_config: ModelConfig,
                       train_config: TrainConfig):
  """[(field, saved value, requested value)] between the configs saved in `directory`
  and these; [] when nothing was saved there yet."""
  differences = []
  for config in (model_config, train_config):
    path = os.path.join(directory, config.FILE_NAME)
    if not os.path.exists(path):
      continue
    with open(path) as f:
      saved = json.load(f)
    for key, value in config.to_dict().items():
      if key in saved and saved[key] != value:
        differences.append((key, saved[key], value))
      elif key not in saved:
        differences.append((key, "<missing>", value))
  return differences
