"""Every gradient check, by name, and the ``minibert gradcheck`` command.

The checker itself (``compare``, ``check_function``, ``check_module``) and the setting the checks share
(sizes, padding mask, tiny config) are in ``minibert.gradcheck``, which imports no model and no
fine-tuning code; this registry imports them all, so it sits at the top with the commands.
Ops and modules run through ``minibert.kernels``, so ``--kernels numpy|numba`` checks either backend.
"""
from __future__ import annotations

import contextlib
import sys

import numpy as np

from minibert import functional as F
from minibert import kernels
from minibert.finetuning import adversarial, mixout
from minibert.gradcheck import (STEP, TOLERANCE, A, B, CheckResult, H, I, T, V, check_encoder, check_function,
                                check_module, format_table, ids_and_types, padding_mask, tiny_config)
from minibert.models import BertForPreTraining, BertForSequenceClassification, BertModel, bert
from minibert.nn import ScalarMix


def _linear(rng):
    x, w, b = rng.standard_normal((B, T, H)), rng.standard_normal((I, H)), rng.standard_normal(I)

    def backward(g):
        dw, db = np.zeros_like(w), np.zeros_like(b)
        dx = F.linear_backward(g, F.linear_forward(x, w, b)[1], dw, db)
        return {"x": dx, "weight": dw, "bias": db}
    return check_function("linear", lambda: F.linear_forward(x, w, b)[0], backward, {"x": x}, rng,
                          {"weight": w, "bias": b})


def _embedding(rng):
    ids = rng.integers(0, V, (B, T))
    ids[0, :3] = 5  # a repeated id: its row must receive the sum of all its positions' gradients
    w = rng.standard_normal((V, H))

    def backward(g):
        dw = np.zeros_like(w)
        kernels.embedding_backward(g, ids, dw)
        return {"weight": dw}
    return check_function("embedding", lambda: F.embedding_forward(ids, w)[0], backward, {}, rng,
                          {"weight": w}, max_entries=V * H)


def _layernorm(rng):
    x = rng.standard_normal((B, T, H)) * 3 + 1
    g, b = rng.standard_normal(H), rng.standard_normal(H)

    def backward(dy):
        dg, db = np.zeros_like(g), np.zeros_like(b)
        dx = kernels.layernorm_backward(dy, kernels.layernorm_forward(x, g, b)[1], dg, db)
        return {"x": dx, "weight": dg, "bias": db}
    return check_function("layernorm", lambda: kernels.layernorm_forward(x, g, b)[0], backward, {"x": x}, rng,
                          {"weight": g, "bias": b})


def _gelu(approximate):
    def check(rng):
        x = rng.standard_normal((B, T, I)) * 3

        def backward(g):
            return {"x": F.gelu_backward(g, F.gelu_forward(x, approximate)[1])}
        name = "gelu_tanh" if approximate else "gelu"
        return check_function(name, lambda: F.gelu_forward(x, approximate)[0], backward, {"x": x}, rng)
    return check


def _linear_gelu(rng):
    x, w, b = rng.standard_normal((B, T, H)), rng.standard_normal((I, H)) * 0.5, rng.standard_normal(I)

    def backward(g):
        dw, db = np.zeros_like(w), np.zeros_like(b)
        dx = kernels.linear_gelu_backward(g, kernels.linear_gelu_forward(x, w, b)[1], dw, db)
        return {"x": dx, "weight": dw, "bias": db}
    return check_function("linear_gelu", lambda: kernels.linear_gelu_forward(x, w, b)[0], backward, {"x": x},
                          rng, {"weight": w, "bias": b})


def _dropout(rng):
    x = rng.standard_normal((B, T, H))
    mask = F.dropout_forward(x, 0.3, rng)[1]
    return check_function("dropout", lambda: F.dropout_forward(x, 0.3, None, mask)[0],
                          lambda g: {"x": F.dropout_backward(g, mask)}, {"x": x}, rng)


def _dropout_add_layernorm(rng):
    x, residual = rng.standard_normal((B, T, H)), rng.standard_normal((B, T, H))
    g, b = rng.standard_normal(H), rng.standard_normal(H)

    def forward_pass():     # a fresh generator with one seed per call: every pass drops the same elements
        return kernels.dropout_add_layernorm_forward(x, residual, 0.3, np.random.default_rng(7), g, b)

    def backward(dy):
        dg, db = np.zeros_like(g), np.zeros_like(b)
        dx, dresidual = kernels.dropout_add_layernorm_backward(dy, forward_pass()[1], dg, db)
        return {"x": dx, "residual": dresidual, "weight": dg, "bias": db}
    return check_function("dropout_add_layernorm", lambda: forward_pass()[0], backward,
                          {"x": x, "residual": residual}, rng, {"weight": g, "bias": b})


def _softmax(rng):
    x = rng.standard_normal((B, A, T, T)) * 2
    mask_bias = (1 - padding_mask()) * F.MASK_BIAS

    def backward(g):
        return {"x": kernels.softmax_backward(g, kernels.softmax_forward(x, mask_bias)[1])}
    return check_function("softmax", lambda: kernels.softmax_forward(x, mask_bias)[0], backward, {"x": x}, rng)


def _attention(rng):
    D = H // A
    q, k, v = (rng.standard_normal((B, A, T, D)) for _ in range(3))
    mask_bias = (1 - padding_mask()) * F.MASK_BIAS
    drop_mask = F.dropout_forward(np.ones((B, A, T, T)), 0.2, rng)[1]

    def forward():
        return kernels.attention_forward(q, k, v, mask_bias, 0.2, None, drop_mask)[0]

    def backward(g):
        cache = kernels.attention_forward(q, k, v, mask_bias, 0.2, None, drop_mask)[2]
        dq, dk, dv = kernels.attention_backward(g, cache)
        return {"q": dq, "k": dk, "v": dv}
    return check_function("attention", forward, backward, {"q": q, "k": k, "v": v}, rng)


def _cross_entropy(weighted):
    def check(rng):
        # Few rows: every entry's gradient is scaled by 1/N, and a small N keeps it well above rounding noise.
        N, C = 2 * B, 11
        logits = rng.standard_normal((N, C)) * 2
        targets = rng.integers(0, C, N)
        weights = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])[:N] if weighted else None

        def forward():
            return kernels.cross_entropy_forward(logits, targets, weights)[0]

        def backward(g):
            return {"logits": kernels.cross_entropy_backward(float(g), kernels.cross_entropy_forward(
                logits, targets, weights)[1])}
        name = "cross_entropy_weighted" if weighted else "cross_entropy"
        return check_function(name, forward, backward, {"logits": logits}, rng)
    return check


def _module_check(build, make_inputs, forward, backward):
    """A check for one BERT module built from a tiny float64 config, in training mode (dropout on).
    ``forward(module, inputs, mask_bias)`` returns the output; ``backward(module, upstream)`` the
    gradients of ``inputs`` by name."""
    def check(rng):
        module = build(bert)(tiny_config(), np.random.default_rng(rng.integers(1 << 31)))
        module.astype(np.float64).train()
        inputs = make_inputs(rng)
        mask_bias = (1 - padding_mask()).astype(np.float64) * F.MASK_BIAS
        return check_module(type(module).__name__, module, lambda: forward(module, inputs, mask_bias),
                            lambda g: backward(module, g), inputs, rng)
    return check


def _hidden(rng):
    return {"x": rng.standard_normal((B, T, H))}


def _model_check(rng):
    model = BertModel(tiny_config(), np.random.default_rng(rng.integers(1 << 31))).astype(np.float64).train()
    return check_encoder("BertModel", model, rng)


def _pretraining_check(rng):
    """The whole pretraining model: masked-LM loss at gathered positions (one padding prediction with
    weight 0, one position masked twice) + next-sentence loss; the tied word embeddings get both
    gradients."""
    model = BertForPreTraining(tiny_config(), np.random.default_rng(rng.integers(1 << 31)))
    model.astype(np.float64).train()
    ids, types = ids_and_types()
    mask = padding_mask()
    positions = np.array([[1, 4, 6], [2, 2, 0], [1, 2, 0]])
    labels = rng.integers(0, V, positions.shape)
    weights = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    nsp = np.array([0, 1, 1])

    def forward():
        return model.forward(ids, types, mask, positions, labels, weights, nsp).loss

    def backward(g):
        model.backward(float(g))
        return {}
    return check_module("BertForPreTraining", model, forward, backward, {}, rng)


def _scalar_mix_check(rng):
    """Five (B, H) states mixed, with layer dropout on (replayed), so one weight gets no gradient."""
    mix = ScalarMix(5, 0.3, np.random.default_rng(3)).astype(np.float64).train()
    mix.weights.data[:] = rng.standard_normal(5)
    mix.gamma.data[:] = 1.7
    inputs = {f"X{l}": rng.standard_normal((B, H)) for l in range(5)}
    return check_module("ScalarMix", mix, lambda: mix.forward(list(inputs.values())),
                        lambda g: dict(zip(inputs, mix.backward(g))), inputs, rng)


def _classification_check(layers: str, num_labels: int = 3):
    """The whole fine-tuning model, loss included: classification (cross-entropy) or regression (MSE),
    reading the pooler, a scalar mix (layer dropout on) or the last four hidden states. An extra
    gradient on the logits (as SMART adds) and the word-embedding perturbation (FreeLB, SMART) are
    checked too."""
    def check(rng):
        config = tiny_config(num_labels=num_labels, classifier_layers=layers, layer_dropout=0.2)
        model = BertForSequenceClassification(config, np.random.default_rng(rng.integers(1 << 31)))
        model.astype(np.float64).train()
        if layers == "mix":
            model.scalar_mix.weights.data[:] = rng.standard_normal(config.num_hidden_layers + 1)
        ids, types = ids_and_types()
        mask = padding_mask()
        labels = rng.standard_normal(B) if num_labels == 1 else rng.integers(0, num_labels, B)
        inputs = {"inputs_embeds_delta": 0.1 * rng.standard_normal((B, T, H))}
        extra = rng.standard_normal((B, num_labels))     # L = loss * g + sum(logits * extra * g)

        def forward():
            out = model.forward(ids, types, mask, labels, inputs["inputs_embeds_delta"])
            return out.loss + np.sum(out.logits * extra)

        def backward(g):
            return {"inputs_embeds_delta": model.backward(float(g), extra * float(g))}
        name = f"BertForSequenceClassification[{layers}{', regression' if num_labels == 1 else ''}]"
        return check_module(name, model, forward, backward, inputs, rng)
    return check


CHECKS = {
    "linear": _linear,
    "embedding": _embedding,
    "layernorm": _layernorm,
    "gelu": _gelu(False),
    "gelu_tanh": _gelu(True),
    "linear_gelu": _linear_gelu,
    "dropout": _dropout,
    "dropout_add_layernorm": _dropout_add_layernorm,
    "softmax": _softmax,
    "attention": _attention,
    "cross_entropy": _cross_entropy(False),
    "cross_entropy_weighted": _cross_entropy(True),
    "BertEmbeddings": _module_check(
        lambda m: m.BertEmbeddings, lambda rng: {},
        lambda m, x, mb: m.forward(*ids_and_types()), lambda m, g: (m.backward(g), {})[1]),
    "BertSelfAttention": _module_check(
        lambda m: m.BertSelfAttention, _hidden,
        lambda m, x, mb: m.forward(x["x"], mb)[0], lambda m, g: {"x": m.backward(g)}),
    "BertAttention": _module_check(
        lambda m: m.BertAttention, _hidden,
        lambda m, x, mb: m.forward(x["x"], mb)[0], lambda m, g: {"x": m.backward(g)}),
    "BertIntermediate": _module_check(
        lambda m: m.BertIntermediate, _hidden,
        lambda m, x, mb: m.forward(x["x"]), lambda m, g: {"x": m.backward(g)}),
    "BertOutput": _module_check(
        lambda m: lambda config, rng: m.BertOutput(config.intermediate_size, config, rng),
        lambda rng: {"h": rng.standard_normal((B, T, I)), "residual": rng.standard_normal((B, T, H))},
        lambda m, x, mb: m.forward(x["h"], x["residual"]),
        lambda m, g: dict(zip(("h", "residual"), m.backward(g)))),
    "BertLayer": _module_check(
        lambda m: m.BertLayer, _hidden,
        lambda m, x, mb: m.forward(x["x"], mb)[0], lambda m, g: {"x": m.backward(g)}),
    "BertEncoder": _module_check(
        lambda m: m.BertEncoder, _hidden,
        lambda m, x, mb: m.forward(x["x"], mb)[0], lambda m, g: {"x": m.backward(g)}),
    "BertPooler": _module_check(
        lambda m: m.BertPooler, _hidden,
        lambda m, x, mb: m.forward(x["x"]), lambda m, g: {"x": m.backward(g)}),
    "BertModel": _model_check,
    "BertForPreTraining": _pretraining_check,
    "ScalarMix": _scalar_mix_check,
    "BertForSequenceClassification": _classification_check("last"),
    "BertForSequenceClassification_mix": _classification_check("mix"),
    "BertForSequenceClassification_concat4": _classification_check("concat4"),
    "BertForSequenceClassification_regression": _classification_check("last", num_labels=1),
    # The fine-tuning techniques keep their checks beside their code.
    "mixout": mixout.check_mixout,
    "symmetric_kl": adversarial.check_symmetric_kl,
    "freelb": adversarial.check_freelb,
    "smart": adversarial.check_smart,
}


def run_check(name: str, seed: int = 0) -> list[CheckResult]:
    if name not in CHECKS:
        raise ValueError(f"unknown gradient check {name!r}; expected one of {list(CHECKS)}")
    return CHECKS[name](np.random.default_rng(seed))


# ---- command line -------------------------------------------------------------------------------
def add_arguments(parser):
    parser.add_argument("--only", help="comma-separated names of checks to run (default: all): "
                        + ", ".join(CHECKS))
    parser.add_argument("--kernels", choices=("numpy", "numba"),
                        help="kernel backend (default: MINIBERT_KERNELS or numba)")
    parser.add_argument("--seed", type=int, default=0)


def main(args) -> int:
    names = [n.strip() for n in args.only.split(",")] if args.only else list(CHECKS)
    context = kernels.using(args.kernels) if args.kernels else contextlib.nullcontext()
    with context:
        print(f"Gradient checks: float64 central differences (h = {STEP:g}), tolerance {TOLERANCE:g}, "
              f"kernels = {kernels.backend()}, seed = {args.seed}\n")
        results = []
        for name in names:
            results += run_check(name, args.seed)
    print(format_table(results))
    failed = [r for r in results if not r.ok]
    print(f"\n{len(results) - len(failed)} of {len(results)} tensors within {TOLERANCE:g}"
          + (f"; FAILED: {', '.join(f'{r.check}/{r.tensor}' for r in failed)}" if failed else ""))
    sys.stdout.flush()
    return 1 if failed else 0
