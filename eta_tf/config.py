"""One config object for every model hyperparameter; saved beside checkpoints and exports."""
import dataclasses
import json
import os
from typing import Tuple

MODEL_NAMES = ("eta", "din", "din_long", "sim_hard", "avg", "sdim")
SUPPORTED_HASH_BITS = (16, 32, 64, 128, 256)
RETRIEVALS = ("hamming", "random", "oracle")  # eta's selection; the last two are controls
SIGNATURE_FIELDS = ("item", "item_category")  # what eta's SimHash signature covers
CONFIG_FILE = "model_config.json"


class ConfigError(ValueError):
  """A hyperparameter is out of range; the message names the field and the value."""


@dataclasses.dataclass
class ModelConfig:
  """Hyperparameters of the ETA-Net family (DESIGN.md §1).

  Attributes:
    model: one of MODEL_NAMES; only the long-history block differs between them.
    max_len: L, behaviors of long history kept per sample (most recent L).
    short_len: S, the most recent behaviors that get short-term attention.
    item_dim: d, item embedding size; SimHash hashes item embeddings.
    category_dim / behavior_type_dim / time_dim: the other parts of a behavior embedding
      (behavior = item ⊕ category ⊕ behavior type ⊕ time-gap bucket).
    hash_bits: m, SimHash signature bits (16..256), packed into ceil(m/64) int64 words.
    top_k: k, behaviors retrieved by Hamming top-k (eta) or by category (sim_hard).
    num_heads / head_dim: multi-head target attention.
    item_buckets / category_buckets: in-graph hashing of raw int64 ids (0 = padding).
    time_buckets: log2 buckets of the behavior -> target time gap in minutes.
    cross_layers / mlp_units / dropout: the DCN-v2 + MLP tower.
    sdim_tau: bits per SDIM bucket signature group (m / tau groups).
    hash_seed: seed of the fixed SimHash projection.
    hamming_xla: jit-compile ETA's Hamming distance pass with XLA (eta only; same result).
      Faster from L ~ 1024 up (bench/serving_cost.py: din_long/eta 2.0x instead of 1.5x at
      L=4096, N=1000), but TF Serving must then run with
      --xla_cpu_compilation_enabled=true (docker/ sets it); off by default so that a stock
      TF Serving with default flags loads every export.
    target_stats: give the tower target-aware statistics of the long history (matches of
      the candidate's item and category, recency of the last match; for eta also counts
      of the retrieved at Hamming distance 0 / near); eta_tf/models/target_stats.py. Every
      model that reads the long history gets the same block (all but `din`), so the
      comparison stays fair.
    retrieval: eta's selection of the k behaviors: "hamming" (ETA), or the controls
      "random" (the candidate's exact-item matches first, then a fixed pseudo-random k:
      the floor of retrieval) and "oracle" (the top-k by the model's own full attention
      scores over all L: the ceiling).
    signature_fields: what eta's signature hashes: "item" (SimHash of the item
      embedding, m bits) or "item_category" (SimHash(item) ‖ SimHash(category), m bits
      each, distances add: same-category behaviors come closer); at export both are
      frozen tables.
  """
  model: str = "eta"
  max_len: int = 1024
  short_len: int = 48
  item_dim: int = 32
  category_dim: int = 16
  behavior_type_dim: int = 8
  time_dim: int = 8
  hash_bits: int = 64
  top_k: int = 48
  num_heads: int = 4
  head_dim: int = 16
  item_buckets: int = 1 << 18
  category_buckets: int = 1 << 14
  time_buckets: int = 24
  cross_layers: int = 1
  mlp_units: Tuple[int, ...] = (128, 64)
  dropout: float = 0.0
  sdim_tau: int = 4
  hash_seed: int = 1234
  hamming_xla: bool = False
  target_stats: bool = True
  retrieval: str = "hamming"
  signature_fields: str = "item"

  def __post_init__(self):
    self.mlp_units = tuple(int(u) for u in self.mlp_units)
    self.hamming_xla = bool(self.hamming_xla)
    self.target_stats = bool(self.target_stats)
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
    if self.hash_bits not in SUPPORTED_HASH_BITS:
      fail("hash_bits", f"must be one of {SUPPORTED_HASH_BITS}")
    for field in ("max_len", "short_len", "item_dim", "category_dim", "behavior_type_dim",
                  "time_dim", "top_k", "num_heads", "head_dim", "time_buckets"):
      if int(getattr(self, field)) < 1:
        fail(field, "must be >= 1")
    if self.short_len > self.max_len:
      fail("short_len", f"must be <= max_len ({self.max_len})")
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

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["mlp_units"] = list(self.mlp_units)
    return d

  @classmethod
  def from_dict(cls, d: dict) -> "ModelConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ConfigError(f"unknown config fields: {unknown}")
    return cls(**d)

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  def save(self, directory: str) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, CONFIG_FILE)
    with open(path, "w") as f:
      json.dump(self.to_dict(), f, indent=2, sort_keys=True)
    return path

  @classmethod
  def load(cls, directory: str) -> "ModelConfig":
    with open(os.path.join(directory, CONFIG_FILE)) as f:
      return cls.from_dict(json.load(f))
