"""BertForPreTraining: the encoder with BERT's two pretraining heads.

    masked LM:  h = LayerNorm(GELU(seq[masked positions] W_t^T + b_t));  logits = h E^T + b_out
    next sentence:  logits = pooled W_nsp^T + b_nsp
    loss = sum_p w_p nll_p / (sum_p w_p + 1e-5)  +  mean_b nll_b

E is the word-embedding matrix itself (tied weights): it receives gradient from the input lookup and
from the decoder, and the `+=` of every backward adds the two. Following the original BERT, the MLM
head runs only at the P masked positions (gathered), not at all T: for P = 20 and T = 128 that is 6x
fewer decoder FLOPs. (Hugging Face computes all T positions; its ``prediction_logits`` is (B, T, V),
ours is (B, P, V).) Parameter names are the Hugging Face ``BertForPreTraining`` keys.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from minibert import kernels
from minibert.checkpoint import PreTrainedModel
from minibert.config import BertConfig
from minibert.models.bert import BertModel
from minibert.nn import LayerNorm, Linear, Module, Parameter, TiedLinear


class BertPredictionHeadTransform(Module):
    """(N, H) -> (N, H): LayerNorm(GELU(x W_t^T + b_t)); the GELU belongs to the Linear (see nn.Linear)."""

    def __init__(self, config: BertConfig, rng: np.random.Generator):
        self.dense = Linear(config.hidden_size, config.hidden_size, rng, config.initializer_range,
                            activation=config.hidden_act)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm.forward(self.dense.forward(x))

    def backward(self, dy):
        return self.dense.backward(self.LayerNorm.backward(dy))


class BertLMPredictionHead(Module):
    """(N, H) -> (N, V) logits over the vocabulary; the decoder weight is the word-embedding matrix and
    its bias is ``cls.predictions.bias`` (Hugging Face ties ``decoder.bias`` to it the same way)."""

    def __init__(self, config: BertConfig, rng: np.random.Generator, word_embeddings: Parameter):
        self.transform = BertPredictionHeadTransform(config, rng)
        self.bias = Parameter(np.zeros(config.vocab_size, np.float32))
        self.decoder = TiedLinear(word_embeddings, self.bias)        # weight (V, H), shared

    def forward(self, x):
        return self.decoder.forward(self.transform.forward(x))

    def backward(self, dlogits):
        return self.transform.backward(self.decoder.backward(dlogits))


class BertPreTrainingHeads(Module):
    def __init__(self, config: BertConfig, rng: np.random.Generator, word_embeddings: Parameter):
        self.predictions = BertLMPredictionHead(config, rng, word_embeddings)
        self.seq_relationship = Linear(config.hidden_size, 2, rng, config.initializer_range)


@dataclasses.dataclass
class BertForPreTrainingOutput:
    loss: np.ndarray | None                  # () total, when labels were given
    scored_logits: np.ndarray                # (R, V) at the R real predictions, in row order of (B, P)
    scored: np.ndarray                       # (R,) their flat indices into the B P predictions
    num_predictions: tuple                   # (B, P)
    seq_relationship_logits: np.ndarray      # (B, 2): 0 = B follows A, 1 = B is random
    mlm_loss: np.ndarray | None = None
    nsp_loss: np.ndarray | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None

    @functools.cached_property
    def prediction_logits(self) -> np.ndarray:
        """(B, P, V) at the masked positions, 0 at padding predictions. Built on first read: training
        reads only the scored rows, and on the bundled corpus the zero-filled (B, P, V) array was ~1 ms
        of a tiny model's ~60 ms step."""
        B, P = self.num_predictions
        if self.scored.size == B * P:
            return self.scored_logits.reshape(B, P, -1)
        logits = np.zeros((B * P, self.scored_logits.shape[1]), dtype=self.scored_logits.dtype)
        logits[self.scored] = self.scored_logits
        return logits.reshape(B, P, -1)


class BertForPreTraining(Module, PreTrainedModel):
    def __init__(self, config: BertConfig, rng: np.random.Generator):
        self.config = config
        self.bert = BertModel(config, rng)
        self.cls = BertPreTrainingHeads(config, rng, self.bert.embeddings.word_embeddings.weight)

    @property
    def rng(self):
        return self.bert.rng

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, masked_lm_positions=None,
                masked_lm_ids=None, masked_lm_weights=None, next_sentence_labels=None,
                output_hidden_states=False, output_attentions=False) -> BertForPreTrainingOutput:
        """masked_lm_positions (B, P) indices into T (all T positions if None); masked_lm_ids (B, P) the
        original tokens there; masked_lm_weights (B, P) 1 for a real prediction, 0 for padding (all ones
        if None; a padding prediction is not computed and its prediction_logits are 0);
        next_sentence_labels (B,) 0 = continuation, 1 = random. The loss needs both labels."""
        input_ids, token_type_ids, attention_mask = self.bert.check_inputs(input_ids, token_type_ids, attention_mask)
        B, T = input_ids.shape
        positions = self._check_positions(masked_lm_positions, B, T)          # (B, P)
        P = positions.shape[1]
        weights = np.ones((B, P)) if masked_lm_weights is None else np.asarray(masked_lm_weights)
        if weights.shape != (B, P):
            raise ValueError(f"masked_lm_weights must have shape {(B, P)}, got {weights.shape}")
        # The head runs on the predictions that count: a padding prediction (w = 0; on the bundled
        # corpus 62% of the B P rows) adds nothing to the loss, so its row is not computed, and its
        # prediction_logits are 0, as the unpadded encoder's outputs are 0 at padded positions.
        scored = np.flatnonzero(weights.reshape(-1) != 0)                    # (R,) of B P rows
        rows = (scored // P, positions.reshape(-1)[scored])                   # (b, t) of each scored row
        # The heads read the last layer at these rows and at every [CLS] only, so the last layer's
        # feed-forward half runs on those (BertModel.forward's output_positions): 13% of the rows on the
        # bundled corpus, 16% in a full-length batch of 20 predictions per 128 tokens.
        out = self.bert.forward(input_ids, token_type_ids, attention_mask, output_hidden_states, output_attentions,
                                output_positions=rows)
        seq = out.last_hidden_state                                           # (B, T, H)
        scored_logits = self.cls.predictions.forward(seq[rows])              # (R, H) -> (R, V)
        nsp_logits = self.cls.seq_relationship.forward(out.pooler_output)      # (B, 2)

        result = BertForPreTrainingOutput(None, scored_logits, scored, (B, P), nsp_logits,
                                          hidden_states=out.hidden_states, attentions=out.attentions)
        self.cache = None            # (scored rows' (b, t), seq shape, MLM loss cache, NSP loss cache) with labels
        if masked_lm_ids is not None and next_sentence_labels is not None:
            targets = self._check_labels("masked_lm_ids", masked_lm_ids, (B, P), self.config.vocab_size)
            nsp_targets = self._check_labels("next_sentence_labels", next_sentence_labels, (B,), 2)
            mlm_loss, mlm_cache = kernels.cross_entropy_forward(
                scored_logits, targets.reshape(-1)[scored], weights.reshape(-1)[scored].astype(seq.dtype))
            nsp_loss, nsp_cache = kernels.cross_entropy_forward(nsp_logits, nsp_targets)
            self.cache = (rows, seq.shape, mlm_cache, nsp_cache)
            result.loss, result.mlm_loss, result.nsp_loss = mlm_loss + nsp_loss, mlm_loss, nsp_loss
        elif masked_lm_ids is not None or next_sentence_labels is not None:
            raise ValueError("the pretraining loss needs both masked_lm_ids and next_sentence_labels")
        return result

    def backward(self, dloss=1.0, dmlm_loss=None, dnsp_loss=None):
        """Fill every gradient from d(total loss). The total is mlm_loss + nsp_loss, so both get dloss;
        ``dmlm_loss`` / ``dnsp_loss`` give one of them its own upstream gradient (data-parallel training
        weighs a shard's two losses by the shard's share of the global batch: ``minibert.distributed``)."""
        if self.cache is None:
            raise RuntimeError("backward() needs a forward() with masked_lm_ids and next_sentence_labels")
        dmlm = dloss if dmlm_loss is None else dmlm_loss
        dnsp = dloss if dnsp_loss is None else dnsp_loss
        rows, seq_shape, mlm_cache, nsp_cache = self.take_cache()
        dmlm_logits = kernels.cross_entropy_backward(dmlm, mlm_cache)                  # (R, V)
        del mlm_cache                         # the (R, V) probabilities: not held through the encoder
        dgathered = self.cls.predictions.backward(dmlm_logits)                          # (R, H)
        del dmlm_logits
        dpooled = self.cls.seq_relationship.backward(kernels.cross_entropy_backward(dnsp, nsp_cache))
        # Scatter the gathered rows back; add.at because two predictions may name one position.
        dseq = np.zeros(seq_shape, dtype=dgathered.dtype)                              # (B, T, H)
        np.add.at(dseq, rows, dgathered)
        return self.bert.backward(dseq, dpooled)

    @staticmethod
    def _check_positions(positions, B, T):
        if positions is None:
            return np.broadcast_to(np.arange(T), (B, T))
        positions = np.asarray(positions)
        if not np.issubdtype(positions.dtype, np.integer) or positions.ndim != 2 or positions.shape[0] != B:
            raise ValueError(f"masked_lm_positions must be an integer array of shape ({B}, P), "
                             f"got {positions.dtype} {positions.shape}")
        if positions.size and (positions.min() < 0 or positions.max() >= T):
            raise ValueError(f"masked_lm_positions must be in [0, {T}), got values in "
                             f"[{positions.min()}, {positions.max()}]")
        return positions

    @staticmethod
    def _check_labels(name, labels, shape, limit):
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.integer) or labels.shape != shape:
            raise ValueError(f"{name} must be an integer array of shape {shape}, got {labels.dtype} {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= limit):
            raise ValueError(f"{name} must be in [0, {limit}), got values in [{labels.min()}, {labels.max()}]")
        return labels
