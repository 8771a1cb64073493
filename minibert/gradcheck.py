"""Finite-difference gradient checks, for the tests, the lessons and ``minibert gradcheck``.

For a function y = f(x, params) we pick a fixed random upstream gradient G (never all ones: a constant
G would hide errors that cancel across entries) and compare, entry by entry, the analytic gradient of
the scalar L = sum(y * G) from our backward with the central difference

    dL/dx_i ~ (L(x + h e_i) - L(x - h e_i)) / (2h),    h = 1e-5, in float64,

whose error is O(h^2 f''') from truncation plus O(eps |L| / h) from rounding (eps = 2.2e-16); h = 1e-5
balances the two at about 1e-10.

Error per entry: |analytic - numeric| / max(|analytic|, |numeric|, floor), the floor being 1e-3 of the
tensor's largest gradient. Without a floor, an entry whose true gradient is ~0 (a padded position, a
rarely used embedding row) would be judged by rounding noise alone; with it, such entries are judged
against the tensor's scale. Where both gradients are below the rounding noise of the difference itself
(64 eps |L| / 2h), they agree as far as can be measured and the error is 0: this is the case of the key
bias, whose exact gradient is zero (adding b to every key adds q.b to a whole row of scores, and
softmax ignores a constant shift). A tensor passes if its worst entry is at most 1e-6.

Every check runs with batch > 1, several heads, padding and dropout on; dropout masks are held fixed by
restoring the model's random generator before each forward, so every finite-difference evaluation sees
the same masks.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import sys

import numpy as np

from minibert import functional as F
from minibert import kernels
from minibert.config import BertConfig

TOLERANCE = 1e-6
STEP = 1e-5


@dataclasses.dataclass
class CheckResult:
    check: str          # what was checked (an op or a module)
    tensor: str         # which input or parameter, by name
    max_rel_error: float
    checked: int        # entries compared
    total: int          # entries in the tensor

    @property
    def ok(self) -> bool:
        return self.max_rel_error <= TOLERANCE


def compare(check: str, loss_fn, analytic: dict, tensors: dict, rng: np.random.Generator,
            max_entries: int = 40, step: float = STEP) -> list[CheckResult]:
    """Compare ``analytic[name]`` with central differences of ``loss_fn()`` for every tensor in ``tensors``.

    ``loss_fn`` must read the tensors' current values: entries are perturbed in place and restored.
    Tensors with at most ``max_entries`` entries are checked whole, larger ones on a seeded sample.
    """
    results = []
    for name, x in tensors.items():
        if x.dtype != np.float64:
            raise ValueError(f"gradient checks need float64 tensors; {name} is {x.dtype}")
        grad = analytic[name]
        if grad.shape != x.shape:
            raise ValueError(f"analytic gradient of {name} has shape {grad.shape}, tensor has {x.shape}")
        flat = x.reshape(-1)
        if not np.shares_memory(flat, x):
            raise ValueError(f"{name} must be contiguous so it can be perturbed in place")
        idx = np.arange(x.size) if x.size <= max_entries else rng.choice(x.size, max_entries, replace=False)
        numeric = np.empty(len(idx))
        noise = np.empty(len(idx))
        for j, i in enumerate(idx):
            old = flat[i]
            flat[i] = old + step
            plus = loss_fn()
            flat[i] = old - step
            minus = loss_fn()
            flat[i] = old
            numeric[j] = (plus - minus) / (2 * step)
            noise[j] = 64 * np.finfo(np.float64).eps * max(abs(plus), abs(minus)) / (2 * step)
        a = grad.reshape(-1)[idx]
        floor = 1e-3 * max(np.abs(grad).max(initial=0.0), np.abs(numeric).max(initial=0.0))
        denom = np.maximum(np.maximum(np.abs(a), np.abs(numeric)), floor)
        rel = np.abs(a - numeric) / np.where(denom > 0, denom, 1.0)
        rel[np.maximum(np.abs(a), np.abs(numeric)) <= noise] = 0.0
        err = float(rel.max(initial=0.0))
        results.append(CheckResult(check, name, err, len(idx), x.size))
    return results


def check_function(check: str, forward, backward, inputs: dict, rng: np.random.Generator,
                   params: dict | None = None, max_entries: int = 40) -> list[CheckResult]:
    """Check a forward/backward pair: ``forward(**inputs) -> y``; ``backward(G) -> dict`` of gradients
    for the names in ``inputs`` and ``params`` (the arrays ``forward`` reads)."""
    tensors = {**inputs, **(params or {})}
    y = forward()
    upstream = rng.standard_normal(np.shape(y))
    analytic = backward(upstream)
    return compare(check, lambda: float(np.sum(forward() * upstream)), analytic, tensors, rng, max_entries)


def check_module(check: str, module, forward, backward, inputs: dict, rng: np.random.Generator,
                 max_entries: int = 40) -> list[CheckResult]:
    """Check a module (already float64): ``forward()`` runs it on ``inputs`` (float arrays it reads) and
    returns the output (or a tuple of outputs); ``backward(upstream)`` runs its backward and returns the
    gradients of ``inputs`` by name. Parameter gradients are read from the module after a zero_grad.
    Dropout masks are replayed by restoring every generator the module's Dropouts use."""
    generators = {id(m.rng): m.rng for m in module.modules() if hasattr(m, "rng")}
    saved = {k: g.bit_generator.state for k, g in generators.items()}

    def run():
        for k, g in generators.items():
            g.bit_generator.state = saved[k]
        out = forward()
        return out if isinstance(out, tuple) else (out,)

    outputs = run()
    upstream = tuple(rng.standard_normal(o.shape) for o in outputs)
    module.zero_grad()
    analytic = dict(backward(upstream if len(upstream) > 1 else upstream[0]))
    params = {}
    for name, p in module.named_parameter_objects():
        params[name] = p.data
        analytic[name] = p.grad.copy()
    loss = lambda: float(sum(np.sum(o * u) for o, u in zip(run(), upstream)))  # noqa: E731
    return compare(check, loss, analytic, {**inputs, **params}, rng, max_entries)


# ----------------------------------------------------------------------------------------------
# The checks: every op and module of the encoder. Each takes a seeded Generator, returns results.
# ----------------------------------------------------------------------------------------------
B, T, H, A, I, V = 3, 7, 12, 3, 20, 29      # small, odd sizes; several heads of size D = 4


def _padding_mask():
    """(B, T) attention mask: sequence 0 full, 1 and 2 padded at the end."""
    lengths = np.array([T, T - 2, T - 4])[:B]
    return (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)


def tiny_config(**overrides) -> BertConfig:
    """A tiny config for float64 checks. Weights are drawn with std 0.3, not BERT's 0.02: at 0.02 the
    attention is almost uniform and the query/key gradients are ~1e-4, small enough for rounding noise
    to dominate the comparison; at 0.3 every path carries signal. The code checked is the same."""
    defaults = dict(vocab_size=V, hidden_size=H, num_hidden_layers=2, num_attention_heads=A,
                    intermediate_size=I, max_position_embeddings=16, hidden_dropout_prob=0.1,
                    attention_probs_dropout_prob=0.1, initializer_range=0.3)
    return BertConfig(**{**defaults, **overrides})


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


def _bias_gelu(rng):
    x, b = rng.standard_normal((B, T, I)) * 2, rng.standard_normal(I)

    def backward(g):
        db = np.zeros_like(b)
        dx = kernels.bias_gelu_backward(g, kernels.bias_gelu_forward(x, b)[1], db)
        return {"x": dx, "bias": db}
    return check_function("bias_gelu", lambda: kernels.bias_gelu_forward(x, b)[0], backward, {"x": x}, rng,
                          {"bias": b})


def _dropout(rng):
    x = rng.standard_normal((B, T, H))
    mask = F.dropout_forward(x, 0.3, rng)[1]
    return check_function("dropout", lambda: F.dropout_forward(x, 0.3, None, mask)[0],
                          lambda g: {"x": F.dropout_backward(g, mask)}, {"x": x}, rng)


def _softmax(rng):
    x = rng.standard_normal((B, A, T, T)) * 2
    mask_bias = (1 - _padding_mask()) * F.MASK_BIAS

    def backward(g):
        return {"x": kernels.softmax_backward(g, kernels.softmax_forward(x, mask_bias)[1])}
    return check_function("softmax", lambda: kernels.softmax_forward(x, mask_bias)[0], backward, {"x": x}, rng)


def _attention(rng):
    D = H // A
    q, k, v = (rng.standard_normal((B, A, T, D)) for _ in range(3))
    mask_bias = (1 - _padding_mask()) * F.MASK_BIAS
    drop_mask = F.dropout_forward(np.ones((B, A, T, T)), 0.2, rng)[1]

    def forward():
        return F.attention_forward(q, k, v, mask_bias, 0.2, None, drop_mask)[0]

    def backward(g):
        dq, dk, dv = F.attention_backward(g, F.attention_forward(q, k, v, mask_bias, 0.2, None, drop_mask)[2])
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
        from minibert.models import bert

        module = build(bert)(tiny_config(), np.random.default_rng(rng.integers(1 << 31)))
        module.astype(np.float64).train()
        inputs = make_inputs(rng)
        mask_bias = (1 - _padding_mask()).astype(np.float64) * F.MASK_BIAS
        return check_module(type(module).__name__, module, lambda: forward(module, inputs, mask_bias),
                            lambda g: backward(module, g), inputs, rng)
    return check


def _hidden(rng):
    return {"x": rng.standard_normal((B, T, H))}


def _ids_and_types():
    ids = (np.arange(B * T).reshape(B, T) * 7) % V
    return ids, (np.arange(T)[None, :] >= 3).astype(np.int64).repeat(B, axis=0)


def _model_check(rng):
    from minibert.models import BertModel

    config = tiny_config()
    model = BertModel(config, np.random.default_rng(rng.integers(1 << 31))).astype(np.float64).train()
    ids, types = _ids_and_types()
    mask = _padding_mask()

    def forward():
        out = model.forward(ids, types, mask)
        return out.last_hidden_state, out.pooler_output

    def backward(g):
        model.backward(*g)
        return {}
    return check_module("BertModel", model, forward, backward, {}, rng)


def _pretraining_check(rng):
    """The whole pretraining model: masked-LM loss at gathered positions (one padding prediction with
    weight 0, one position masked twice) + next-sentence loss; the tied word embeddings get both
    gradients."""
    from minibert.models import BertForPreTraining

    model = BertForPreTraining(tiny_config(), np.random.default_rng(rng.integers(1 << 31)))
    model.astype(np.float64).train()
    ids, types = _ids_and_types()
    mask = _padding_mask()
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
    from minibert.finetuning.scalar_mix import ScalarMix

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
        from minibert.models import BertForSequenceClassification

        config = tiny_config(num_labels=num_labels, classifier_layers=layers, layer_dropout=0.2)
        model = BertForSequenceClassification(config, np.random.default_rng(rng.integers(1 << 31)))
        model.astype(np.float64).train()
        if layers == "mix":
            model.scalar_mix.weights.data[:] = rng.standard_normal(config.num_hidden_layers + 1)
        ids, types = _ids_and_types()
        mask = _padding_mask()
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
    "bias_gelu": _bias_gelu,
    "dropout": _dropout,
    "softmax": _softmax,
    "attention": _attention,
    "cross_entropy": _cross_entropy(False),
    "cross_entropy_weighted": _cross_entropy(True),
    "BertEmbeddings": _module_check(
        lambda m: m.BertEmbeddings, lambda rng: {},
        lambda m, x, mb: m.forward(*_ids_and_types()), lambda m, g: (m.backward(g), {})[1]),
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
        lambda m: m.BertOutput,
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
    # The fine-tuning techniques keep their checks beside their code (imported late: they import this module).
    "mixout": lambda rng: _finetuning("mixout").check_mixout(rng),
    "symmetric_kl": lambda rng: _finetuning("adversarial").check_symmetric_kl(rng),
    "freelb": lambda rng: _finetuning("adversarial").check_freelb(rng),
    "smart": lambda rng: _finetuning("adversarial").check_smart(rng),
}


def _finetuning(module: str):
    return importlib.import_module(f"minibert.finetuning.{module}")


def run_check(name: str, seed: int = 0) -> list[CheckResult]:
    if name not in CHECKS:
        raise ValueError(f"unknown gradient check {name!r}; expected one of {list(CHECKS)}")
    return CHECKS[name](np.random.default_rng(seed))


def format_table(results: list[CheckResult]) -> str:
    rows = [("check", "tensor", "entries", "max rel error", "")]
    for r in results:
        rows.append((r.check, r.tensor, f"{r.checked}/{r.total}", f"{r.max_rel_error:.2e}", "ok" if r.ok else "FAIL"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


# ---- command line -------------------------------------------------------------------------------
def add_arguments(parser):
    parser.add_argument("--only", help="comma-separated names of checks to run (default: all): " + ", ".join(CHECKS))
    parser.add_argument("--kernels", choices=("numpy", "numba"), help="kernel backend (default: MINIBERT_KERNELS or numba)")
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
