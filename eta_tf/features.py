"""The one source of truth for feature names, dtypes and shapes.

The Beam pipeline writes user-sequence records with `RECORD_*` names, the tf.data reader
expands them into samples with `SAMPLE_*` names, the model, the export signatures, the
warmup writer and the gRPC client all read the names below. Nothing else spells them.

Two record/sample levels (docs/DESIGN.md §2):

* **User-sequence record** (one tf.train.Example per user and split, GZIP TFRecord):
  the user's behaviors, oldest first, stored once, plus the user's labelled targets.

  | name                 | dtype | shape | meaning                                   |
  |----------------------|-------|-------|-------------------------------------------|
  | user_id              | int64 | []    | raw user id                               |
  | hist_item_id         | int64 | [E]   | behavior item ids, sorted by time          |
  | hist_category_id     | int64 | [E]   | behavior category ids                      |
  | hist_behavior_type   | int64 | [E]   | 1=pv 2=cart 3=fav 4=buy (0 = padding)     |
  | hist_timestamp       | int64 | [E]   | unix seconds, non-decreasing              |
  | target_item_id       | int64 | [T]   | labelled candidate items                  |
  | target_category_id   | int64 | [T]   |                                           |
  | target_timestamp     | int64 | [T]   | time of the impression / behavior         |
  | target_label         | int64 | [T]   | 1 = click / positive, 0 = negative         |

* **Sample** (what the model sees, one per (user, target)): the last L behaviors strictly
  before the target's time, *left-padded* with zeros so the most recent behavior is at
  index L-1 (a static slice `[:, -S:]` is then the short history), plus the target.

Id 0 is padding everywhere; the pipeline rejects non-positive ids.
"""
import dataclasses
from typing import Dict, List

# Behavior types of the Taobao UserBehavior log; 0 is reserved for padding.
BEHAVIOR_TYPES: Dict[str, int] = {"pv": 1, "cart": 2, "fav": 3, "buy": 4}
NUM_BEHAVIOR_TYPES = len(BEHAVIOR_TYPES) + 1  # including padding

# --- raw log columns -------------------------------------------------------------------
BEHAVIOR_LOG_COLUMNS = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
IMPRESSION_LOG_COLUMNS = ("user_id", "item_id", "category_id", "timestamp", "label")

# --- names shared by records and samples ----------------------------------------------
USER_ID = "user_id"
HIST_ITEM_ID = "hist_item_id"
HIST_CATEGORY_ID = "hist_category_id"
HIST_BEHAVIOR_TYPE = "hist_behavior_type"
HIST_TIMESTAMP = "hist_timestamp"
HISTORY_FEATURES = (HIST_ITEM_ID, HIST_CATEGORY_ID, HIST_BEHAVIOR_TYPE, HIST_TIMESTAMP)

# --- record-only names -------------------------------------------------------------------
TARGET_ITEM_IDS = "target_item_id"
TARGET_CATEGORY_IDS = "target_category_id"
TARGET_TIMESTAMPS = "target_timestamp"
TARGET_LABELS = "target_label"
TARGET_FEATURES = (TARGET_ITEM_IDS, TARGET_CATEGORY_IDS, TARGET_TIMESTAMPS, TARGET_LABELS)

# --- sample names (model inputs) ---------------------------------------------------------
# In a sample the target columns are scalars with the same names as the record's lists.
TARGET_ITEM_ID = "target_item_id"
TARGET_CATEGORY_ID = "target_category_id"
TARGET_TIMESTAMP = "target_timestamp"
LABEL = "label"

# --- user-batched training batches (eta_tf.data.make_user_dataset) -------------------------
# A batch row is one chunk of a user's targets with the history slice they need; per target:
# how many of the row's behaviors are strictly before it (its causal window is the last L of
# them), and 1.0 for a real target / 0.0 for padding.
TARGET_HISTORY_END = "target_history_end"
TARGET_WEIGHT = "target_weight"

# Inputs of the model / of the `serving_default` signature, in a fixed order for display
# only (every interface passes them by name).
MODEL_INPUTS = HISTORY_FEATURES + (TARGET_ITEM_ID, TARGET_CATEGORY_ID, TARGET_TIMESTAMP)

# --- `score_candidates` signature (one user, N candidates) --------------------------------
REQUEST_TIMESTAMP = "request_timestamp"
CANDIDATE_ITEM_ID = "candidate_item_id"
CANDIDATE_CATEGORY_ID = "candidate_category_id"
SCORE_CANDIDATES_INPUTS = HISTORY_FEATURES + (
    REQUEST_TIMESTAMP, CANDIDATE_ITEM_ID, CANDIDATE_CATEGORY_ID)

# --- outputs / signature names -------------------------------------------------------
OUTPUT_CTR = "ctr"
SERVING_DEFAULT = "serving_default"
SCORE_CANDIDATES = "score_candidates"

# --- pipeline output layout ----------------------------------------------------------
TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"
SPLITS = (TRAIN_SPLIT, EVAL_SPLIT)
SCHEMA_FILE = "schema.json"
STATS_FILE = "stats.json"
COMPLETE_FILE = "_COMPLETE"  # written last by the pipeline: {"files": {path: bytes}}
DEAD_LETTER_PREFIX = "dead_letter"
SCHEMA_VERSION = 1


def split_file_pattern(data_dir: str, split: str) -> str:
  """Glob of the GZIP TFRecord shards of one split inside a pipeline output dir."""
  return f"{data_dir.rstrip('/')}/{split}/part-*.tfrecord.gz"


def split_file_prefix(data_dir: str, split: str) -> str:
  """Prefix handed to Beam's WriteToTFRecord for one split."""
  return f"{data_dir.rstrip('/')}/{split}/part"


@dataclasses.dataclass(frozen=True)
class Feature:
  name: str
  dtype: str  # numpy / tf dtype name
  shape: tuple  # None = variable length
  description: str


RECORD_FEATURES: List[Feature] = [
    Feature(USER_ID, "int64", (), "raw user id"),
    Feature(HIST_ITEM_ID, "int64", (None,), "behavior item ids, oldest first"),
    Feature(HIST_CATEGORY_ID, "int64", (None,), "behavior category ids"),
    Feature(HIST_BEHAVIOR_TYPE, "int64", (None,), "1=pv 2=cart 3=fav 4=buy"),
    Feature(HIST_TIMESTAMP, "int64", (None,), "behavior unix seconds, non-decreasing"),
    Feature(TARGET_ITEM_IDS, "int64", (None,), "labelled target item ids"),
    Feature(TARGET_CATEGORY_IDS, "int64", (None,), "labelled target category ids"),
    Feature(TARGET_TIMESTAMPS, "int64", (None,), "target unix seconds"),
    Feature(TARGET_LABELS, "int64", (None,), "1 = positive / click, 0 = negative"),
]


def sample_features(max_len: int) -> List[Feature]:
  """Model-input features of one sample for history length `max_len` (L)."""
  return [
      Feature(HIST_ITEM_ID, "int64", (max_len,), "left-padded behavior item ids"),
      Feature(HIST_CATEGORY_ID, "int64", (max_len,), "left-padded behavior categories"),
      Feature(HIST_BEHAVIOR_TYPE, "int64", (max_len,), "left-padded behavior types"),
      Feature(HIST_TIMESTAMP, "int64", (max_len,), "left-padded behavior timestamps"),
      Feature(TARGET_ITEM_ID, "int64", (), "candidate item id"),
      Feature(TARGET_CATEGORY_ID, "int64", (), "candidate category id"),
      Feature(TARGET_TIMESTAMP, "int64", (), "request / impression time, unix seconds"),
  ]


def score_candidates_features() -> List[Feature]:
  """Inputs of the `score_candidates` signature (one user, N candidates)."""
  return [
      Feature(HIST_ITEM_ID, "int64", (None,), "the user's behaviors, oldest first; "
              "longer than L is truncated to the most recent L"),
      Feature(HIST_CATEGORY_ID, "int64", (None,), "same length as hist_item_id"),
      Feature(HIST_BEHAVIOR_TYPE, "int64", (None,), "same length as hist_item_id"),
      Feature(HIST_TIMESTAMP, "int64", (None,), "same length as hist_item_id"),
      Feature(REQUEST_TIMESTAMP, "int64", (), "request time, unix seconds"),
      Feature(CANDIDATE_ITEM_ID, "int64", (None,), "N candidate item ids"),
      Feature(CANDIDATE_CATEGORY_ID, "int64", (None,), "N candidate categories"),
  ]


def record_parse_spec():
  """tf.io.parse_single_example spec of a user-sequence record."""
  # TensorFlow only when asked: Beam workers import this module and must not load it.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  spec = {}
  for f in RECORD_FEATURES:
    if f.shape == ():
      spec[f.name] = tf.io.FixedLenFeature([], tf.int64)
    else:
      spec[f.name] = tf.io.RaggedFeature(tf.int64)
  return spec


def schema_dict() -> dict:
  """The schema.json the pipeline writes and the trainer checks."""
  return {
      "schema_version": SCHEMA_VERSION,
      "record_format": "tfrecord_gzip_tf_example",
      "record_features": [dataclasses.asdict(f) for f in RECORD_FEATURES],
      "behavior_types": BEHAVIOR_TYPES,
      "splits": list(SPLITS),
      "history_order": "oldest_first",
  }


# --- exported signatures ------------------------------------------------------------------
SIGNATURE_NAMES = (SERVING_DEFAULT, SCORE_CANDIDATES)


def signature_input_features(signature_name: str, max_len=None) -> List[Feature]:
  """Inputs of an exported signature with the shapes of one whole request.

  `serving_default` takes a batch: the sample shapes of `sample_features(max_len)` with a
  leading batch dimension (None). `score_candidates` takes one user: the shapes of
  `score_candidates_features()`. `max_len=None` leaves the history width open. The
  warmup writer, the gRPC client and the local server validate requests against this.
  """
  if signature_name == SERVING_DEFAULT:
    return [dataclasses.replace(f, shape=(None,) + tuple(f.shape))
            for f in sample_features(max_len)]
  if signature_name == SCORE_CANDIDATES:
    return score_candidates_features()
  raise KeyError(f"unknown signature {signature_name!r}; "
                 f"expected one of {', '.join(SIGNATURE_NAMES)}")
