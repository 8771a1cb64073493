"""Scalar mix: a learned weighted average of every layer's representation (ELMo; Tenney et al. 2019).

For N = L + 1 hidden states X_0 (the embedding output) ... X_L, each (B, H) here (the [CLS] vector):

    s = softmax(w)                      w: (N,) learned, starts at 0 (equal weights)
    h = gamma * sum_l s_l X_l           gamma: a learned scale, starts at 1

Layer dropout (Kondratyuk and Straka 2019) sets w_l to -inf with probability ``layer_dropout`` during
training, so the classifier cannot lean on one layer alone. (If every layer is dropped, none is.)

Backward, with G = dL/dh (B, H) and <., .> the sum over batch and features:

    dX_l = gamma s_l G                  h is linear in each X_l
    dgamma = sum_l s_l <G, X_l>         h is linear in gamma
    ds_l = gamma <G, X_l>
    dw = s * (ds - <ds, s>)             the softmax Jacobian diag(s) - s s^T applied to ds

A dropped layer has s_l = 0, so it receives no gradient, and neither does its weight.
"""
from __future__ import annotations

import numpy as np

from minibert.nn import Module, Parameter


class ScalarMix(Module):
    def __init__(self, num_layers: int, layer_dropout: float, rng: np.random.Generator):
        if num_layers < 1:
            raise ValueError(f"a scalar mix needs at least one layer, got {num_layers}")
        if not 0.0 <= layer_dropout < 1.0:
            raise ValueError(f"layer_dropout must be in [0, 1), got {layer_dropout!r}")
        self.weights = Parameter(np.zeros(num_layers, np.float32))    # w
        self.gamma = Parameter(np.ones(1, np.float32))
        self.layer_dropout = layer_dropout
        self.rng = rng

    def forward(self, states):
        """states: N arrays (B, H) -> (B, H)."""
        if len(states) != self.weights.data.size:
            raise ValueError(f"scalar mix of {self.weights.data.size} layers got {len(states)} states")
        w = self.weights.data
        keep = np.ones(w.size, dtype=bool)
        if self.training and self.layer_dropout > 0:
            keep = self.rng.random(w.size) >= self.layer_dropout
            if not keep.any():
                keep[:] = True
        e = np.where(keep, np.exp(w - w[keep].max()), 0).astype(w.dtype)
        s = e / e.sum()                                                     # (N,)
        X = np.stack(states)                                                # (N, B, H)
        self.cache = (X, s)
        return self.gamma.data[0] * np.tensordot(s, X, axes=1)

    def backward(self, G):
        """G (B, H) -> list of N gradients (B, H), one per state."""
        X, s = self.cache
        gamma = self.gamma.data[0]
        inner = np.tensordot(X, G, axes=([1, 2], [0, 1]))                  # (N,) <G, X_l>
        self.gamma.grad[0] += s @ inner
        ds = gamma * inner
        self.weights.grad += s * (ds - ds @ s)
        return [gamma * s_l * G for s_l in s]

    def mixing_weights(self) -> np.ndarray:
        """softmax(w) without layer dropout: how much each layer counts at evaluation."""
        e = np.exp(self.weights.data - self.weights.data.max())
        return e / e.sum()
