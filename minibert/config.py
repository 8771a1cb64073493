"""BertConfig: the model's sizes and hyper-parameters, with Hugging Face ``config.json`` field names."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from minibert.validation import positive_int

ACTIVATIONS = ("gelu", "gelu_new")  # exact erf GELU, tanh approximation (HF names)
# Other Hugging Face names for the same two functions. A config given one of them stores the name above
# (the models test ``hidden_act == "gelu_new"``), so a saved config.json says "gelu_new" instead:
# transformers computes the same tanh formula under both names.
ACTIVATION_ALIASES = {"gelu_pytorch_tanh": "gelu_new"}
# last: pooler([CLS] of the last layer), as BERT; mix: a learned scalar mix of every hidden state's [CLS];
# concat4: the [CLS] vectors of the last four hidden states side by side (4H inputs).
CLASSIFIER_LAYERS = ("last", "mix", "concat4")


@dataclasses.dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768                 # H
    num_hidden_layers: int = 12            # L
    num_attention_heads: int = 12          # A
    intermediate_size: int = 3072          # I
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    model_type: str = "bert"
    # Sequence classification (BertForSequenceClassification). num_labels and classifier_dropout are Hugging
    # Face's names; classifier_layers and layer_dropout are minibert's (transformers ignores them).
    num_labels: int = 2                    # 1 = regression (mean squared error)
    classifier_dropout: float | None = None   # None: hidden_dropout_prob
    classifier_layers: str = "last"        # what the classifier reads, one of CLASSIFIER_LAYERS
    layer_dropout: float = 0.0             # scalar mix only: probability of dropping a layer's weight

    def __post_init__(self):
        if isinstance(self.hidden_act, str):
            self.hidden_act = ACTIVATION_ALIASES.get(self.hidden_act, self.hidden_act)
        self.validate()

    @property
    def head_size(self) -> int:  # D
        return self.hidden_size // self.num_attention_heads

    def validate(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            # stored as a plain int: a NumPy integer would not survive json.dumps in to_json_file
            setattr(self, name, positive_int(f"BertConfig.{name}", getattr(self, name)))
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})")
        if self.hidden_act not in ACTIVATIONS:
            aliases = ", ".join(f"{a!r} = {b!r}" for a, b in ACTIVATION_ALIASES.items())
            raise ValueError(f"unknown hidden_act {self.hidden_act!r}; expected one of {ACTIVATIONS} (or {aliases})")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ValueError(f"BertConfig.{name} must be in [0, 1), got {p!r}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"layer_norm_eps must be positive, got {self.layer_norm_eps!r}")
        if not self.initializer_range > 0:
            raise ValueError(f"initializer_range must be positive, got {self.initializer_range!r}")
        self.num_labels = positive_int("BertConfig.num_labels", self.num_labels)
        if self.classifier_dropout is not None and not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError("BertConfig.classifier_dropout must be None or in [0, 1), "
                             f"got {self.classifier_dropout!r}")
        if self.classifier_layers not in CLASSIFIER_LAYERS:
            raise ValueError(f"unknown classifier_layers {self.classifier_layers!r}; "
                             f"expected one of {CLASSIFIER_LAYERS}")
        if not 0.0 <= self.layer_dropout < 1.0:
            raise ValueError(f"BertConfig.layer_dropout must be in [0, 1), got {self.layer_dropout!r}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id {self.pad_token_id} is outside the vocabulary [0, {self.vocab_size})")

    # ---- presets ---------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides) -> "BertConfig":
        """``tiny`` (L2 H128 A2 I512), ``mini`` (L4 H256 A4 I1024), ``small`` (L4 H512 A8 I2048), T=128."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    # ---- JSON round trip -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BertConfig":
        """Build from a ``config.json`` dict; fields minibert does not use (``architectures``, ...) are ignored."""
        if not isinstance(d, dict):
            raise ValueError(f"a BERT config must be a JSON object, got {type(d).__name__}")
        model_type = d.get("model_type", "bert")
        if model_type != "bert":
            raise ValueError(f"config.json has model_type {model_type!r}; minibert reads 'bert' configs")
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in d.items() if k in known}
        if "num_labels" not in d and isinstance(d.get("id2label"), dict):
            fields["num_labels"] = len(d["id2label"])   # transformers stores the labels, not their number
        return cls(**fields)

    def to_json_file(self, path, extra: dict | None = None) -> None:
        """Write the fields as JSON; ``extra`` adds keys for other readers (transformers' ``architectures``)."""
        Path(path).write_text(json.dumps({**self.to_dict(), **(extra or {})}, indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json_file(cls, path) -> "BertConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from None
        return cls.from_dict(d)


_SMALL_COMMON = dict(max_position_embeddings=128)
PRESETS = {
    "tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512, **_SMALL_COMMON),
    "mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024, **_SMALL_COMMON),
    "small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048, **_SMALL_COMMON),
}
