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

import dataclasses

import numpy as np

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
        _, _, rel = entry_errors(loss_fn, x, grad, idx, step)
        results.append(CheckResult(check, name, float(rel.max(initial=0.0)), len(idx), x.size))
    return results


def entry_errors(loss_fn, x: np.ndarray, grad: np.ndarray, idx: np.ndarray, step: float = STEP):
    """At the entries ``idx`` of ``x`` (flat indices; each perturbed in place, then restored): the analytic
    gradient, the central difference of ``loss_fn`` and their relative error, as defined above.
    Returns three arrays of len(idx). The grader of ``minibert exercise`` reads the first bad entry."""
    flat = x.reshape(-1)
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
        # Rounding scales with the terms summed into the loss, not with the loss: a loss of ~1-sized
        # terms that cancel (to 0.03, say) still carries their rounding, hence the floor of 1.
        noise[j] = 64 * np.finfo(np.float64).eps * max(abs(plus), abs(minus), 1.0) / (2 * step)
    a = grad.reshape(-1)[idx]
    floor = 1e-3 * max(np.abs(grad).max(initial=0.0), np.abs(numeric).max(initial=0.0))
    denom = np.maximum(np.maximum(np.abs(a), np.abs(numeric)), floor)
    rel = np.abs(a - numeric) / np.where(denom > 0, denom, 1.0)
    rel[np.maximum(np.abs(a), np.abs(numeric)) <= noise] = 0.0
    return a, numeric, rel


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


def format_table(results: list[CheckResult]) -> str:
    rows = [("check", "tensor", "entries", "max rel error", "")]
    for r in results:
        rows.append((r.check, r.tensor, f"{r.checked}/{r.total}", f"{r.max_rel_error:.2e}", "ok" if r.ok else "FAIL"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The setting every check shares: small odd sizes, padding, a tiny model. The checks themselves, one per
# op, module and model, are registered in ``minibert.checks`` (which runs ``minibert gradcheck``).
# ----------------------------------------------------------------------------------------------
B, T, H, A, I, V = 3, 7, 12, 3, 20, 29      # small, odd sizes; several heads of size D = 4


def padding_mask():
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


def ids_and_types():
    """(B, T) token ids (every id used, some repeated) and segment ids (0 for the first 3 positions)."""
    ids = (np.arange(B * T).reshape(B, T) * 7) % V
    return ids, (np.arange(T)[None, :] >= 3).astype(np.int64).repeat(B, axis=0)


def check_encoder(check: str, model, rng: np.random.Generator) -> list[CheckResult]:
    """Check a float64 ``BertModel`` (as built, or after a change such as Mixout) on the shared padded batch:
    both outputs, the sequence and the pooled [CLS], get random upstream gradients."""
    ids, types = ids_and_types()
    mask = padding_mask()

    def forward():
        out = model.forward(ids, types, mask)
        return out.last_hidden_state, out.pooler_output

    def backward(g):
        model.backward(*g)
        return {}
    return check_module(check, model, forward, backward, {}, rng)
