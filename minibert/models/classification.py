"""BertForSequenceClassification: the encoder with a classifier on top, for fine-tuning.

    features = pooled                             classifier_layers = "last"  (BERT, Hugging Face)
             = gamma sum_l softmax(w)_l CLS_l     "mix"      (a learned scalar mix of every hidden state)
             = [CLS_{L-3}; ...; CLS_L]            "concat4"  (the last four hidden states, 4H features)
    logits = dropout(features) W_c^T + b_c        (B, num_labels)
    loss = mean_b CE(logits_b, y_b)               num_labels >= 2
         = mean_b (logits_b - y_b)^2              num_labels == 1 (regression)

CLS_l is the [CLS] vector of hidden state l (l = 0 is the embedding output). The pooler was trained
(by next-sentence prediction) on the last layer only, so the mixing heads read the [CLS] vectors directly.
With fewer than four hidden states, "concat4" concatenates all of them.

Parameter names are Hugging Face's (``bert.*``, ``classifier.weight``, ``classifier.bias``) plus
``scalar_mix.weights`` and ``scalar_mix.gamma`` for the mix. A pretraining checkpoint loads with
``allow_missing_heads=True``: the encoder is copied, the classifier starts from its initialisation and
the MLM/NSP heads are left out.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from minibert import kernels
from minibert.checkpoint import PreTrainedModel
from minibert.config import BertConfig
from minibert.models.bert import BertModel
from minibert.nn import Dropout, Linear, Module, ScalarMix


_NO_MORE_POSITIONS = (np.zeros(0, np.int64), np.zeros(0, np.int64))     # (b, t): none besides the [CLS]


class PooledFeatures:
    """classifier_layers = "last": the pooler's output, as BERT and Hugging Face classify.  -> (B, H)"""

    hidden_states = False             # whether the encoder must return every hidden state

    def forward(self, out):
        return out.pooler_output

    def backward(self, dfeatures, num_layers):
        return {"d_pooler_output": dfeatures}


class MixedFeatures:
    """classifier_layers = "mix": gamma sum_l softmax(w)_l CLS_l, a learned mix of every layer's [CLS].
    The parameters live in the model's ``scalar_mix``, so they keep their names.  -> (B, H)"""

    hidden_states = True

    def __init__(self, scalar_mix: ScalarMix):
        self.scalar_mix = scalar_mix

    def forward(self, out):
        self.cache = out.last_hidden_state.shape
        return self.scalar_mix.forward([h[:, 0] for h in out.hidden_states])

    def backward(self, dfeatures, num_layers):
        return {"d_hidden_states": _at_cls(self.scalar_mix.backward(dfeatures), self.cache)}


class ConcatFeatures:
    """classifier_layers = "concat4": [CLS_{L-3}; ...; CLS_L], the last four [CLS] vectors side by side
    (all of them if there are fewer).  -> (B, kH)"""

    hidden_states = True

    def __init__(self, n_concat: int):
        self.n_concat = n_concat

    def forward(self, out):
        self.cache = out.last_hidden_state.shape
        return np.concatenate([h[:, 0] for h in out.hidden_states[-self.n_concat:]], axis=-1)

    def backward(self, dfeatures, num_layers):
        """The concatenation's backward splits the gradient back into its k pieces; the earlier hidden
        states were not read (None)."""
        dcls = [None] * (num_layers + 1 - self.n_concat) + np.split(dfeatures, self.n_concat, axis=1)
        return {"d_hidden_states": _at_cls(dcls, self.cache)}


def _at_cls(dcls, seq_shape):
    """Gradients (B, H) of [CLS] vectors -> gradients (B, T, H) of whole hidden states: only position 0
    was read, so every other position gets zero. None (a state not read) stays None."""
    d_hidden = []
    for d in dcls:
        if d is not None:
            dh = np.zeros(seq_shape, dtype=d.dtype)
            dh[:, 0] = d
            d = dh
        d_hidden.append(d)
    return d_hidden


@dataclasses.dataclass
class SequenceClassifierOutput:
    loss: np.ndarray | None          # () when labels were given
    logits: np.ndarray               # (B, num_labels)
    hidden_states: tuple | None = None
    attentions: tuple | None = None


class BertForSequenceClassification(Module, PreTrainedModel):
    def __init__(self, config: BertConfig, rng: np.random.Generator):
        self.config = config
        self.bert = BertModel(config, rng)
        n_states = config.num_hidden_layers + 1
        n_concat = min(4, n_states)
        if config.classifier_layers == "mix":
            self.scalar_mix = ScalarMix(n_states, config.layer_dropout, rng)
            self.features = MixedFeatures(self.scalar_mix)
        elif config.classifier_layers == "concat4":
            self.features = ConcatFeatures(n_concat)
        else:
            self.features = PooledFeatures()
        p = config.hidden_dropout_prob if config.classifier_dropout is None else config.classifier_dropout
        self.dropout = Dropout(p, rng)
        n_features = config.hidden_size * (n_concat if config.classifier_layers == "concat4" else 1)
        self.classifier = Linear(n_features, config.num_labels, rng, config.initializer_range)

    @property
    def rng(self):
        return self.bert.rng

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                inputs_embeds_delta=None, output_hidden_states=False,
                output_attentions=False) -> SequenceClassifierOutput:
        """labels (B,): class ids in [0, num_labels), or real targets when num_labels == 1.
        ``inputs_embeds_delta`` (B, T, H) perturbs the word-embedding output (FreeLB, SMART)."""
        # Classifying from the pooler reads the last layer at each [CLS] only, so that layer computes
        # those B rows only (BertModel.forward's output_positions: the [CLS] are always among them, so
        # no other position is named).
        out = self.bert.forward(input_ids, token_type_ids, attention_mask,
                                output_hidden_states=output_hidden_states or self.features.hidden_states,
                                output_attentions=output_attentions, inputs_embeds_delta=inputs_embeds_delta,
                                output_positions=None if self.features.hidden_states else _NO_MORE_POSITIONS)
        features = self.features.forward(out)                                         # (B, H) or (B, kH)
        logits = self.classifier.forward(self.dropout.forward(features))              # (B, num_labels)

        self.cache = None            # the loss cache, when labels were given
        loss = None
        if labels is not None:
            loss, self.cache = self._loss(logits, labels)
        return SequenceClassifierOutput(loss, logits, out.hidden_states if output_hidden_states else None,
                                        out.attentions)

    def _loss(self, logits, labels):
        B, C = logits.shape
        labels = np.asarray(labels)
        if labels.shape != (B,):
            raise ValueError(f"labels must have shape ({B},) like the batch, got {labels.shape}")
        if C == 1:
            if not np.issubdtype(labels.dtype, np.number):
                raise ValueError(f"regression labels must be numbers, got dtype {labels.dtype}")
            diff = logits[:, 0] - labels.astype(logits.dtype)                         # (B,)
            return np.mean(diff * diff), ("mse", diff)
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"class labels must be integers, got dtype {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() >= C):
            raise ValueError(f"labels must be in [0, {C}), got values in [{labels.min()}, {labels.max()}]")
        loss, cache = kernels.cross_entropy_forward(logits, labels)
        return loss, ("ce", cache)

    def backward(self, dloss: float | None = None, dlogits=None):
        """Accumulate every parameter gradient from ``dloss`` (default 1) times the gradient of the loss
        plus ``dlogits`` (B, num_labels) if given, e.g. a regulariser's gradient; return the gradient with
        respect to the word-embedding output (B, T, H), which is also that of ``inputs_embeds_delta``.

        The caches are those of the last forward. If it had no labels there is no loss to differentiate:
        ``backward(dlogits=...)`` is then the only valid call, and passing ``dloss`` is an error rather
        than a gradient that silently lacks the loss term (an easy mistake when passes are interleaved,
        as in SMART)."""
        if self.cache is None and dloss is not None:
            raise RuntimeError("backward(dloss=...) needs the last forward() to have had labels: it computed no "
                               "loss (run forward with labels again, or pass only dlogits)")
        dloss = 1.0 if dloss is None else dloss
        g = None
        if self.cache is not None and dloss:
            kind, cache = self.cache
            if kind == "ce":
                g = kernels.cross_entropy_backward(dloss, cache)
            else:                                   # d mean(diff^2) / d logits = 2 diff / B
                g = (2 * dloss / cache.size * cache)[:, None].astype(cache.dtype)
        if dlogits is not None:
            g = dlogits if g is None else g + dlogits
        if g is None:
            raise RuntimeError("backward() needs a forward() with labels, or dlogits")
        dfeatures = self.dropout.backward(self.classifier.backward(g))
        return self.bert.backward(**self.features.backward(dfeatures, len(self.bert.encoder.layer)))
