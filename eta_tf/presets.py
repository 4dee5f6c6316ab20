"""Named model presets: the names the train CLI (--preset), the benches and the results
files use, each a pinned set of ModelConfig fields, so that a name keeps its meaning
whatever ModelConfig's defaults become.

    config = presets.model_config("eta_paper", max_len=256)   # fields override the preset

Product presets build the product's blocks; experimental ones (`experimental=True`) name
an eta_tf/experimental block (ModelConfig.experiment): controls and options measured and
rejected (docs/DESIGN.md §5). Results rows record their preset and the full config.
"""
import dataclasses
from typing import Optional

from eta_tf import config as config_lib


@dataclasses.dataclass(frozen=True)
class Preset:
  name: str
  description: str
  fields: dict
  experimental: bool = False


_ITEM = dict(model="eta", signature_fields="item", signature_distance="sum", experiment="",
             history_summary="none")
_CATEGORY_FIRST = dict(model="eta", signature_fields="item_category",
                       signature_distance="category_first", experiment="",
                       history_summary="none")
_DEFAULT = {**_CATEGORY_FIRST, "history_summary": "attention", "summary_dropout": 0.5}

_PRESETS = [
    Preset("eta", "ETA, the default: SimHash(item) ‖ SimHash(category) signatures, "
           "Hamming top-k ranked category distance first, then attention over the k; and a "
           "per-user summary of the whole long history for the tower (masked mean and "
           "learned-query attention over all L), computed once per request, not per "
           "candidate, and zeroed for half of the training samples.", _DEFAULT),
    Preset("eta_no_summary", "eta without the per-user summary: the per-candidate "
           "retrieval and attention alone.", _CATEGORY_FIRST),
    Preset("eta_paper", "ETA as in the paper: SimHash of the item embedding alone, no "
           "summary.", _ITEM),
    Preset("eta_xla", "eta with the Hamming distance pass under XLA (TF Serving needs "
           "--xla_cpu_compilation_enabled=true).", {**_DEFAULT, "hamming_xla": True}),
    Preset("din", "DIN: attention over the short history only.", dict(model="din")),
    Preset("din_long", "DIN(long): full target attention over all L behaviors.",
           dict(model="din_long")),
    Preset("sim_hard", "SIM(hard): the k most recent behaviors of the candidate's "
           "category, then attention.", dict(model="sim_hard")),
    Preset("avg", "Mean pooling of the long history.", dict(model="avg")),
    Preset("sdim", "SDIM: hash-bucket sampling of behaviors, no attention.",
           dict(model="sdim")),
    Preset("eta_mean_summary", "Experiment: eta with the masked mean of the behaviors as "
           "its per-user summary (no learned-query attention; no summary dropout).",
           {**_DEFAULT, "history_summary": "mean", "summary_dropout": 0.0}, True),
    Preset("eta_interests", "Experiment: eta whose summary also reads its learned "
           "queries' pooled vectors out per candidate (history_summary=interests).",
           {**_DEFAULT, "history_summary": "interests"}, True),
    Preset("eta_summary_always", "Experiment: eta with the summary in every training "
           "sample (no summary dropout).", {**_DEFAULT, "summary_dropout": 0.0}, True),
    Preset("eta_fields", "eta's item ‖ category signatures, distances added (rejected "
           "ranking).", {**_CATEGORY_FIRST, "signature_distance": "sum"}, True),
    Preset("eta_random", "Control: exact-item matches, then a fixed pseudo-random k (the "
           "floor of retrieval); item signatures.", {**_ITEM, "experiment": "eta_random"},
           True),
    Preset("eta_oracle", "Control: the top-k by the block's own full attention (the "
           "ceiling of a k-behavior retrieval); item signatures.",
           {**_ITEM, "experiment": "eta_oracle"}, True),
    Preset("eta_oracle_default", "Control: the default eta (summary, summary dropout) "
           "with its Hamming top-k replaced by the top-k of the block's own full attention "
           "(the selection the Hamming top-k stands in for).",
           {**_DEFAULT, "experiment": "eta_oracle"}, True),
    Preset("eta_attention_hash", "Experiment: Hamming top-k on SimHash of the attention's "
           "projected query and keys.", {**_ITEM, "experiment": "eta_attention_hash"}, True),
    Preset("eta_attention_hash_default", "Experiment: the default eta (summary, summary "
           "dropout) with eta_attention_hash's retrieval.",
           {**_DEFAULT, "experiment": "eta_attention_hash"}, True),
    Preset("eta_attention_hash_category", "Experiment: the default eta with its item "
           "signature replaced by eta_attention_hash's (SimHash of the attention's "
           "projected query and keys) ‖ the category signature, ranked category first.",
           {**_DEFAULT, "experiment": "eta_attention_hash_category"}, True),
    Preset("eta_linear_readout", "Experiment: the default eta plus a linear-attention "
           "readout of the whole history per candidate (positive-feature attention whose "
           "L-long sum is done once per user).",
           {**_DEFAULT, "experiment": "eta_linear_readout"}, True),
    Preset("eta_linear_readout_dropped", "Experiment: eta_linear_readout with its readout "
           "zeroed in training for the summary dropout's share of the samples.",
           {**_DEFAULT, "experiment": "eta_linear_readout_dropped"}, True),
    Preset("eta_user_bias", "Experiment: the default eta plus one logit per user from "
           "the whole history (never dropped; a user's candidates keep their order).",
           {**_DEFAULT, "experiment": "eta_user_bias"}, True),
    Preset("eta_category_only", "Control: eta keeping only the retrieved of the "
           "candidate's category signature (SIM(hard)'s mask, ETA's order inside).",
           {**_CATEGORY_FIRST, "experiment": "eta_category_only"}, True),
    Preset("eta_category_bias", "Rejected: eta with a learned attention bias for the "
           "retrieved of the candidate's category.",
           {**_CATEGORY_FIRST, "experiment": "eta_category_bias"}, True),
    Preset("eta_category_sink", "Rejected: eta_category_bias plus an attention sink key.",
           {**_CATEGORY_FIRST, "experiment": "eta_category_sink"}, True),
    Preset("eta_category_split", "Rejected: eta attending over the retrieved of the "
           "candidate's category and over the rest separately.",
           {**_CATEGORY_FIRST, "experiment": "eta_category_split"}, True),
]
PRESETS = {p.name: p for p in _PRESETS}
PRODUCT = tuple(p.name for p in _PRESETS if not p.experimental)


def get(name: str) -> Preset:
  """The preset `name`; ConfigError naming it and the choices when unknown."""
  if name not in PRESETS:
    raise config_lib.ConfigError(f"preset={name!r}: unknown preset; choose one of "
                                 f"{', '.join(PRESETS)}")
  return PRESETS[name]


def model_config(name: str, **overrides) -> config_lib.ModelConfig:
  """ModelConfig of preset `name`, fields in `overrides` replacing the preset's."""
  return config_lib.ModelConfig(**{**get(name).fields, **overrides})


def preset_of(config: config_lib.ModelConfig) -> Optional[str]:
  """The preset pinning the most fields, all equal to `config`'s (None if none does)."""
  matches = [p for p in _PRESETS
             if all(getattr(config, k) == v for k, v in p.fields.items())]
  return max(matches, key=lambda p: len(p.fields)).name if matches else None


def legend(names=None) -> str:
  """Markdown lines `name`: description, for `names` (default: every preset)."""
  return "\n".join(f"* `{n}`: {get(n).description}" for n in (names or PRESETS))
