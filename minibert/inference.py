"""Using a pretrained model: fill in [MASK] tokens."""
from __future__ import annotations

import numpy as np

from minibert.models import BertForPreTraining
from minibert.tokenization import BertTokenizer


def fill_mask(model: BertForPreTraining, tokenizer: BertTokenizer, text: str, top_k: int = 5):
    """The ``top_k`` most probable tokens at every ``[MASK]`` of ``text``.

    Returns one list per [MASK], in order, of (token, probability) pairs. The model runs in eval mode
    and the MLM head reads only the masked positions.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("fill_mask needs a non-empty text containing [MASK]")
    enc = tokenizer.encode(text, max_length=model.config.max_position_embeddings)
    ids = np.array([enc.input_ids])
    positions = np.flatnonzero(ids[0] == tokenizer.mask_token_id)
    if len(positions) == 0:
        raise ValueError(f"no [MASK] token in {text!r}")
    was_training = model.training
    model.eval()
    out = model.forward(ids, np.array([enc.token_type_ids]), np.array([enc.attention_mask]), positions[None, :])
    model.train(was_training)
    logits = out.prediction_logits[0].astype(np.float64)                     # (P, V)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    results = []
    for row in probs:
        best = np.argsort(-row)[:top_k]
        results.append([(tokenizer.convert_ids_to_tokens(int(i)), float(row[i])) for i in best])
    return results
