"""The two configs of a run: `ModelConfig` (the graph) and `TrainConfig` (the fitting).

Each hyperparameter is one dataclass field with its help text in the field's metadata
(`option`); `eta_tf.config_flags` turns the fields into absl flags and back, so a new
hyperparameter is one line here. Both are saved together into a model_dir (`save_configs`)
and compared on restart (`config_differences`).
"""
import dataclasses
import json
import numbers
import os
from typing import Optional, Tuple

from eta_tf import io_utils

MODEL_NAMES = ("eta", "din", "din_long", "sim_hard", "avg", "sdim")
SUPPORTED_HASH_BITS = (16, 32, 64, 128, 256)
SIGNATURE_FIELDS = ("item", "item_category")  # what eta's SimHash signature covers
# How item_category's field distances rank behaviors.
SIGNATURE_DISTANCES = ("sum", "category_first")
# Experimental eta blocks (controls and measured, rejected options): eta_tf/experimental
# registers one EtaBlock subclass per name; they are not part of the product.
EXPERIMENTS = ("eta_random", "eta_oracle", "eta_attention_hash",
               "eta_attention_hash_category", "eta_category_only", "eta_category_bias",
               "eta_category_sink", "eta_category_split", "eta_linear_readout",
               "eta_linear_readout_dropped", "eta_user_bias")
# Options that were ModelConfig fields and are experimental blocks now: a saved config
# naming one loads as that block (field -> {value: experiment}); the product values
# (None key) load as the product block.
MOVED_OPTIONS = {
    "retrieval": {"hamming": None, "random": "eta_random", "oracle": "eta_oracle",
                  "attention_hash": "eta_attention_hash"},
    "signature_distance": {"category_only": "eta_category_only"},
    "category_bias": {False: None, True: "eta_category_bias"},
    "attention_sink": {False: None, True: "attention_sink"},
    "category_split": {False: None, True: "eta_category_split"},
}
# Moved options that were not read with item-only signatures.
_CATEGORY_OPTIONS = ("signature_distance", "category_bias", "category_split")


def _moved_options_to_experiment(d: dict, item_only: bool) -> dict:
  """A saved config dict with MOVED_OPTIONS fields -> the same model named by
  `experiment`; ConfigError naming the field and value when no block is what it was."""
  d, chosen = dict(d), []
  for field, experiments in MOVED_OPTIONS.items():
    if field not in d or (field == "signature_distance" and d[field] in SIGNATURE_DISTANCES):
      continue
    value = d.pop(field)
    if field == "signature_distance":
      d[field] = "category_first"
    if value not in experiments:
      raise ConfigError(f"{field}={value!r}: not an option of this version (choose one "
                        f"of {', '.join(repr(v) for v in experiments)})")
    if experiments[value] and not (item_only and field in _CATEGORY_OPTIONS):
      chosen.append((field, value, experiments[value]))
  names = {experiment for _, _, experiment in chosen}
  if names == {"eta_category_bias", "attention_sink"}:
    names = {"eta_category_sink"}
  if not names:
    return d
  given = ", ".join(f"{field}={value!r}" for field, value, _ in chosen)
  if len(names) > 1 or d.get("experiment") or not names <= set(EXPERIMENTS):
    raise ConfigError(f"{given}: no experimental block (eta_tf/experimental) is this "
                      f"combination; blocks: {', '.join(EXPERIMENTS)}")
  d["experiment"] = names.pop()
  return d
STRATEGIES = ("default", "mirrored", "multi_worker")
# eta's per-user summary of the whole history (eta_tf/models/history_summary.py).
HISTORY_SUMMARIES = ("none", "mean", "attention", "interests")
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
    if cls is ModelConfig:
      known |= set(MOVED_OPTIONS)
    unknown = sorted(set(d) - known)
    if unknown:
      raise ConfigError(f"unknown config fields: {unknown}")
    added_later = getattr(cls, "FIELDS_ADDED_LATER", {})
    d = {**{k: v for k, v in added_later.items() if k not in d}, **d}
    if cls is ModelConfig:
      d = _moved_options_to_experiment(d, d.get("signature_fields") == "item")
    return cls(**d)

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
  """Hyperparameters of the ETA-Net family (docs/DESIGN.md §1): the product's models.

  hamming_xla runs the Hamming distance pass under XLA; TF Serving must then run with
  --xla_cpu_compilation_enabled=true (docker/ sets it), so it is off by default and a
  stock TF Serving with default flags loads every export. `experiment` names an
  experimental eta block (eta_tf/experimental: controls and rejected options); named
  configurations are presets (eta_tf/presets.py).
  """
  FILE_NAME = CONFIG_FILE
  # Fields added after configs were first saved, with the value that rebuilds the model a
  # config without them was trained as (not today's default, which may differ): a saved
  # model must load as what it was. Fields that moved out (MOVED_OPTIONS) map to
  # `experiment` in from_dict.
  FIELDS_ADDED_LATER = {"target_stats": False, "signature_fields": "item",
                        "signature_distance": "category_first", "experiment": "",
                        "history_summary": "none", "summary_dropout": 0.0}

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
                                   "it; docs/DESIGN.md §5) or sum (item + category "
                                   "Hamming distance). Not read with "
                                   "signature_fields=item (one field, one distance).",
                                   choices=SIGNATURE_DISTANCES)
  experiment: str = option("", "An experimental eta block instead of the product's "
                           "(eta_tf/experimental: retrieval controls and options measured "
                           "and rejected; docs/DESIGN.md §5). Empty: the product.")

  history_summary: str = option("attention", "eta: a per-user summary of the whole long "
                                "history for the tower, computed once per request (not per "
                                "candidate; eta_tf/models/history_summary.py): attention "
                                "(masked mean of the behaviors and num_heads learned queries "
                                "attending over all L), interests (attention, and per "
                                "candidate a softmax readout of the learned queries' pooled "
                                "vectors by the candidate), mean (the masked mean only) or "
                                "none. Other models have none.",
                                choices=HISTORY_SUMMARIES)
  summary_dropout: float = option(0.5, "eta: the share of training samples whose per-user "
                                  "summary is zeros (what a user without history gets), so "
                                  "that the tower keeps scoring from the retrieved "
                                  "behaviors and does not lean on the summary alone; "
                                  "never at serving. Not read with history_summary=none.")

  def __post_init__(self):
    self.mlp_units = tuple(int(u) for u in self.mlp_units)
    self.hamming_xla = bool(self.hamming_xla)
    self.target_stats = bool(self.target_stats)
    if self.model != "eta":  # the summary is eta's: a saved config says what was built
      self.history_summary = "none"
    if self.history_summary == "none":  # nothing to drop: a saved config says so
      self.summary_dropout = 0.0
    self.validate()
    self.summary_dropout = float(self.summary_dropout)

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
    if self.experiment and self.experiment not in EXPERIMENTS:
      fail("experiment", f"choose one of {', '.join(EXPERIMENTS)} (or empty)")
    if self.experiment and self.model != "eta":
      fail("experiment", f"experimental blocks are eta's; model={self.model!r}")
    if self.experiment.startswith("eta_category_") and (
        self.signature_fields != "item_category"):
      fail("experiment", "needs signature_fields='item_category' (category signatures)")
    if self.signature_fields not in SIGNATURE_FIELDS:
      fail("signature_fields", f"choose one of {', '.join(SIGNATURE_FIELDS)}")
    if self.history_summary not in HISTORY_SUMMARIES:
      fail("history_summary", f"choose one of {', '.join(HISTORY_SUMMARIES)}")
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
    for field in ("dropout", "summary_dropout"):  # rates: a number in [0, 1)
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
          0.0 <= value < 1.0):
        fail(field, "must be a number in [0, 1)")
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
  weight_average: float = option(0.99, "Decay of the moving average of the weights that "
                                 "is evaluated after each epoch, saved and exported (each "
                                 "step: average <- decay * average + (1 - decay) * weights; "
                                 "eta_tf/models/weight_average.py). It narrows the spread of "
                                 "eval AUC between seeds; 0 = the last step's weights.")
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
    if not 0.0 <= self.weight_average < 1.0:
      fail("weight_average", "must be in [0, 1) (0 = no average)")


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
    if isinstance(config, ModelConfig) and set(saved) & set(MOVED_OPTIONS):
      saved = ModelConfig.from_dict(saved).to_dict()  # moved options as `experiment`
    for key, value in config.to_dict().items():
      if key in saved and saved[key] != value:
        differences.append((key, saved[key], value))
      elif key not in saved:
        differences.append((key, "<missing>", value))
  return differences
