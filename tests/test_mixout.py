"""Mixout: gradient checks (exact passes, the reference implementation's gradient fails by (1 - p)), the
statistics of the mask, apply_mixout on the BERT models, and the pull towards the target in training."""
import math

import numpy as np
import pytest

from minibert import functional as F
from minibert.finetuning.mixout import (MixoutLinear, apply_mixout, check_mixout, check_mixout_reference,
                                        reference_weight_gradient)
from minibert.gradcheck import TOLERANCE, tiny_config
from minibert.models import BertForPreTraining, BertModel
from minibert.nn import Dropout, Linear, Module, TiedLinear
from minibert.optim import AdamW, triples_from_model


def make_layer(p, in_features=20, out_features=3, seed=0, target_offset=0.5, dtype=np.float64):
    """A MixoutLinear with a random bias and target = w + target_offset * noise (target = w if offset 0)."""
    rng = np.random.default_rng(seed)
    linear = Linear(in_features, out_features, rng, std=1.0).astype(dtype)
    linear.bias.data[...] = rng.standard_normal(out_features)
    target = linear.weight.data + target_offset * rng.standard_normal(linear.weight.data.shape)
    return MixoutLinear(linear, p, np.random.default_rng(seed + 1), target), rng


def w_tilde_of(layer):
    return layer.cache[0][1]


# ---- gradient checks -----------------------------------------------------------------------------
def test_gradient_checks_pass():
    results = check_mixout(np.random.default_rng(0))
    assert {r.check for r in results} == {"MixoutLinear", "BertModel+mixout"}
    tensors = {(r.check, r.tensor) for r in results}
    assert {("MixoutLinear", "weight"), ("MixoutLinear", "x"), ("MixoutLinear", "bias"),
            ("BertModel+mixout", "encoder.layer.1.intermediate.dense.weight"),
            ("BertModel+mixout", "pooler.dense.weight")} <= tensors
    bad = [(r.check, r.tensor, r.max_rel_error) for r in results if not r.ok]
    assert not bad, f"mixout gradients off by more than {TOLERANCE}: {bad}"


def test_reference_gradient_fails_by_p_on_mixed_weights_only():
    p = 0.6   # check_mixout's probability
    results = check_mixout_reference(np.random.default_rng(0))
    failed = [r for r in results if not r.ok]
    # Every mixed weight fails with relative error p (analytic = (1 - p) * numeric on kept columns) ...
    assert {(r.check, r.tensor) for r in failed} == (
        {("MixoutLinear(reference)", "weight"), ("BertModel+mixout(reference)", "pooler.dense.weight")}
        | {("BertModel+mixout(reference)", f"encoder.layer.{i}.{m}.weight") for i in range(2)
           for m in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense", "intermediate.dense", "output.dense")})
    for r in failed:
        assert r.max_rel_error == pytest.approx(p, abs=1e-4), (r.tensor, r.max_rel_error)
    # ... and everything else (inputs, biases, LayerNorm, embeddings) passes.
    assert any(r.tensor == "x" and r.ok for r in results)


def test_exact_over_reference_gradient_is_one_over_one_minus_p():
    p = 0.7
    layer, rng = make_layer(p)
    x = rng.standard_normal((3, 5, 20))
    dy = rng.standard_normal((3, 5, 3))
    layer.forward(x)
    cache = layer.cache                                              # the backward releases it
    layer.backward(dy)
    _, keep, scale = cache
    assert keep.any() and not keep.all()
    dw_tilde = dy.reshape(-1, 3).T @ x.reshape(-1, 20)              # the Linear gradient at w_tilde
    reference = reference_weight_gradient(dw_tilde, keep)
    exact = layer.weight.grad
    np.testing.assert_allclose(exact[:, keep] / reference[:, keep], 1 / (1 - p), rtol=1e-12)
    assert np.all(exact[:, ~keep] == 0) and np.all(reference[:, ~keep] == 0)
    np.testing.assert_allclose(scale, keep / (1 - p), rtol=1e-15)
    # The flag on the layer gives the reference formula.
    layer.zero_grad()
    layer.reference_gradient = True
    layer.cache = cache
    layer.backward(dy)
    np.testing.assert_allclose(layer.weight.grad, reference, rtol=1e-12)


# ---- the mixed weight --------------------------------------------------------------------------
def test_expected_mixed_weight_is_w():
    """Averaged over N masks, column j of the mean w_tilde is u + k_j / (N (1-p)) * (w - u) with k_j ~
    Binomial(N, 1 - p), so mean - w = (w - u) * (k_j / (N (1-p)) - 1), whose standard deviation is
    |w - u| * sqrt(p / ((1-p) N)). Allowing 5 of them for every one of the 20 columns fails by chance with
    probability ~20 * 6e-7. A missing 1/(1-p) would be off by p |w - u|, 22x the allowance."""
    p, N = 0.6, 2000
    layer, rng = make_layer(p)
    x = rng.standard_normal((1, 1, 20))
    total = np.zeros_like(layer.weight.data)
    for _ in range(N):
        layer.forward(x)
        total += w_tilde_of(layer)
    w, u = layer.weight.data, layer.target
    allowed = 5 * np.abs(w - u) * math.sqrt(p / ((1 - p) * N))
    assert np.all(np.abs(total / N - w) <= allowed)


def test_mask_is_per_input_column_and_shared_by_the_batch():
    p = 0.5
    layer, rng = make_layer(p)
    row = rng.standard_normal(20)
    x = np.broadcast_to(row, (4, 6, 20)).copy()                    # every row of the batch the same
    y = layer.forward(x)
    assert np.all(y == y[0, 0]), "one mask for the whole batch: identical rows give identical outputs"
    (x_cached, w_tilde), keep, _ = layer.cache
    w, u = layer.weight.data, layer.target
    assert keep.shape == (20,) and keep.any() and not keep.all()
    assert np.array_equal(w_tilde[:, ~keep], u[:, ~keep])          # dropped columns: the target's
    np.testing.assert_allclose(w_tilde[:, keep], u[:, keep] + (w - u)[:, keep] / (1 - p), rtol=1e-13)
    np.testing.assert_allclose(y, x @ w_tilde.T + layer.bias.data, rtol=1e-12)


def test_fraction_of_dropped_columns_is_p():
    """n = 64 * 500 Bernoulli(p) draws: the fraction's standard deviation is sqrt(p (1-p) / n) = 0.0026."""
    p, draws = 0.3, 500
    layer, rng = make_layer(p, in_features=64)
    x = rng.standard_normal((1, 64))
    dropped = 0
    for _ in range(draws):
        layer.forward(x)
        dropped += (~layer.cache[1]).sum()
    n = 64 * draws
    assert abs(dropped / n - p) <= 5 * math.sqrt(p * (1 - p) / n)


def test_eval_mode_and_p_zero_are_a_plain_linear():
    for p, training in ((0.8, False), (0.0, True)):
        layer, rng = make_layer(p)
        layer.train(training)
        x, dy = rng.standard_normal((2, 3, 20)), rng.standard_normal((2, 3, 3))
        state = layer.rng.bit_generator.state
        y = layer.forward(x)
        dx = layer.backward(dy)
        assert layer.rng.bit_generator.state == state, "no mask is drawn"
        w, b = layer.weight.data, layer.bias.data
        y_ref, cache = F.linear_forward(x, w, b)
        dw, db = np.zeros_like(w), np.zeros_like(b)
        dx_ref = F.linear_backward(dy, cache, dw, db)
        assert np.array_equal(y, y_ref) and np.array_equal(dx, dx_ref)
        assert np.array_equal(layer.weight.grad, dw) and np.array_equal(layer.bias.grad, db)


def test_at_the_target_every_mask_gives_the_pretrained_layer():
    layer, rng = make_layer(0.9, target_offset=0.0)
    x = rng.standard_normal((2, 3, 20))
    y_pretrained = F.linear_forward(x, layer.weight.data, layer.bias.data)[0]
    masks = set()
    for _ in range(5):
        y = layer.forward(x)
        masks.add(layer.cache[1].tobytes())
        assert np.array_equal(y, y_pretrained)
    assert len(masks) > 1, "the masks must differ for the test to mean anything"


def test_backward_accumulates():
    layer, rng = make_layer(0.5)
    x, dy = rng.standard_normal((2, 3, 20)), rng.standard_normal((2, 3, 3))
    state = layer.rng.bit_generator.state
    layer.forward(x)
    layer.backward(dy)
    once_w, once_b = layer.weight.grad.copy(), layer.bias.grad.copy()
    layer.weight.grad[...] = 1.0
    layer.bias.grad[...] = 2.0
    layer.rng.bit_generator.state = state                         # the same mask again
    y = layer.forward(x)
    w_tilde = w_tilde_of(layer)
    layer.backward(dy)
    np.testing.assert_allclose(layer.weight.grad, 1.0 + once_w, rtol=1e-13)
    np.testing.assert_allclose(layer.bias.grad, 2.0 + once_b, rtol=1e-13)
    np.testing.assert_allclose(y, x @ w_tilde.T + layer.bias.data, rtol=1e-12)
    with pytest.raises(RuntimeError, match="MixoutLinear.backward: the last forward's cache was already used"):
        layer.backward(dy)                                           # a backward consumes its forward


def test_mixout_keeps_the_gelu_of_the_layer_it_wraps():
    """The intermediate dense layer carries GELU; its Mixout version must apply GELU to x w_tilde^T + b."""
    rng = np.random.default_rng(0)
    linear = Linear(20, 6, rng, std=1.0, activation="gelu").astype(np.float64)
    layer = MixoutLinear(linear, 0.5, np.random.default_rng(1), linear.weight.data + 0.5)
    x = rng.standard_normal((2, 3, 20))
    y = layer.forward(x)
    w_tilde, _ = layer.mixed_weight(layer.cache[1])                # the cache keeps the keep mask
    expected, _ = F.gelu_forward(x @ w_tilde.T + linear.bias.data)
    np.testing.assert_allclose(y, expected, rtol=1e-12)


def test_restoring_the_generator_replays_the_mask():
    layer, rng = make_layer(0.5)
    x = rng.standard_normal((2, 3, 20))
    state = layer.rng.bit_generator.state
    y1, keep1 = layer.forward(x), layer.cache[1]
    layer.forward(x)
    keep2 = layer.cache[1]
    layer.rng.bit_generator.state = state
    y3, keep3 = layer.forward(x), layer.cache[1]
    assert not np.array_equal(keep1, keep2)
    assert np.array_equal(keep1, keep3) and np.array_equal(y1, y3)


# ---- apply_mixout ----------------------------------------------------------------------------------
LAYER_WEIGHTS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                 "intermediate.dense", "output.dense")


def bert_weight_names(prefix=""):
    return [f"{prefix}encoder.layer.{i}.{m}.weight" for i in range(2) for m in LAYER_WEIGHTS] \
        + [f"{prefix}pooler.dense.weight"]


def test_apply_mixout_on_bert_model():
    model = BertModel(tiny_config(), np.random.default_rng(0))
    before = list(model.named_parameter_objects())
    keys = list(model.state_dict())
    weights = {n: p.data.copy() for n, p in before}
    names = apply_mixout(model, 0.7)
    assert names == bert_weight_names()                              # 6 per layer + pooler, in order
    after = list(model.named_parameter_objects())
    assert [n for n, _ in after] == [n for n, _ in before] and list(model.state_dict()) == keys
    assert all(a is b for (_, a), (_, b) in zip(after, before)), "the same Parameter objects"
    mixed = [m for m in model.modules() if isinstance(m, MixoutLinear)]
    assert len(mixed) == len(names)
    for m in mixed:
        assert m.rng is model.rng and m.p == 0.7
        assert not np.shares_memory(m.target, m.weight.data)
    names_of = {id(p): n for n, p in after}
    for m in mixed:
        assert np.array_equal(m.target, weights[names_of[id(m.weight)]])
    dropouts = [m for m in model.modules() if isinstance(m, Dropout)]
    assert len(dropouts) == 1 + 3 * 2 and all(d.p == 0.0 for d in dropouts)


def test_apply_mixout_at_start_computes_the_pretrained_function_in_float64():
    """At w = u with every dropout at 0 the mixed model in training mode equals the model in eval mode (even
    though masks are drawn); astype after apply_mixout converts the targets too."""
    model = BertModel(tiny_config(), np.random.default_rng(1))
    apply_mixout(model, 0.9)
    model.astype(np.float64)
    ids = np.random.default_rng(2).integers(0, 29, (2, 6))
    state = model.rng.bit_generator.state
    out_train = model.train().forward(ids)
    assert model.rng.bit_generator.state != state, "masks were drawn"
    out_eval = model.eval().forward(ids)
    assert out_train.last_hidden_state.dtype == np.float64
    assert all(m.target.dtype == np.float64 for m in model.modules() if isinstance(m, MixoutLinear))
    np.testing.assert_array_equal(out_train.last_hidden_state, out_eval.last_hidden_state)
    model.astype(np.float32).train()
    assert model.forward(ids).pooler_output.dtype == np.float32


def test_apply_mixout_leaves_the_tied_decoder_alone():
    model = BertForPreTraining(tiny_config(), np.random.default_rng(0))
    names = apply_mixout(model, 0.5)
    assert names == bert_weight_names("bert.") + ["cls.predictions.transform.dense.weight",
                                                  "cls.seq_relationship.weight"]
    decoder = model.cls.predictions.decoder
    assert type(decoder) is TiedLinear and decoder.weight is model.bert.embeddings.word_embeddings.weight
    ids = np.random.default_rng(1).integers(0, 29, (2, 6))
    out = model.train().forward(ids, masked_lm_positions=[[1, 2], [3, 4]], masked_lm_ids=[[5, 6], [7, 8]],
                                next_sentence_labels=[0, 1])
    model.zero_grad()
    model.backward(1.0)
    assert np.isfinite(out.loss) and np.abs(model.cls.seq_relationship.weight.grad).sum() > 0


def test_apply_mixout_targets():
    model = BertModel(tiny_config(), np.random.default_rng(0))
    state = {k: v.copy() for k, v in model.state_dict().items()}   # a whole state dict: biases etc. ignored
    key = "encoder.layer.1.attention.self.key.weight"
    state[key] = state[key] + 1.0
    apply_mixout(model, 0.5, targets=state)
    layer = model.encoder.layer[1].attention.self.key
    np.testing.assert_array_equal(layer.target, state[key])
    np.testing.assert_array_equal(layer.target, layer.weight.data + np.float32(1.0))
    assert np.array_equal(model.pooler.dense.target, model.pooler.dense.weight.data)


class _NoRng(Module):
    def __init__(self):
        self.head = Linear(4, 2, np.random.default_rng(0))


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan"), float("inf"), "0.5", None, True])
def test_bad_probability(p):
    model = BertModel(tiny_config(), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        apply_mixout(model, p)
    assert not any(isinstance(m, MixoutLinear) for m in model.modules())


def test_bad_calls_are_clear_errors_and_leave_the_model_untouched():
    model = BertModel(tiny_config(), np.random.default_rng(0))
    with pytest.raises(ValueError, match="does not have: bert.pooler.dense.weight"):
        apply_mixout(model, 0.5, targets={"bert.pooler.dense.weight": np.zeros((12, 12))})
    with pytest.raises(ValueError, match=r"pooler.dense.weight: expected shape \(12, 12\), got \(12, 11\)"):
        apply_mixout(model, 0.5, targets={"pooler.dense.weight": np.zeros((12, 11))})
    assert not any(isinstance(m, MixoutLinear) for m in model.modules())
    assert all(d.p > 0 for d in model.modules() if isinstance(d, Dropout))
    apply_mixout(model, 0.5)
    with pytest.raises(ValueError, match="already applied"):
        apply_mixout(model, 0.5)
    with pytest.raises(ValueError, match="no rng attribute"):
        apply_mixout(_NoRng(), 0.5)
    assert apply_mixout(_NoRng(), 0.5, rng=np.random.default_rng(0)) == ["head.weight"]
    with pytest.raises(ValueError, match=r"target must have the weight's shape \(2, 4\)"):
        MixoutLinear(Linear(4, 2, np.random.default_rng(0)), 0.5, np.random.default_rng(0), np.zeros((4, 2)))


# ---- direction: training stays near the target ---------------------------------------------------
class _Regression(Module):
    """y_hat = dropout(x) W^T + b: a linear regression whose W starts at the 'pretrained' u."""

    def __init__(self, rng, dropout):
        self.rng = rng
        self.dropout = Dropout(dropout, rng)
        self.head = Linear(16, 4, rng, std=0.5)

    def forward(self, x):
        return self.head.forward(self.dropout.forward(x))

    def backward(self, dy):
        self.dropout.backward(self.head.backward(dy))


def _distance_from_target(method, steps=300):
    """Fit y = x w*^T + noise, w* = u + delta, from w = u with AdamW; return ||w - u|| / ||w* - u||.
    Same start (seed 0) and same batches (seed 1) for every method."""
    data = np.random.default_rng(1)
    model = _Regression(np.random.default_rng(0), 0.1 if method == "dropout" else 0.0)
    u = model.head.weight.data.copy()
    delta = data.standard_normal(u.shape).astype(np.float32)
    if method.startswith("mixout"):
        apply_mixout(model, float(method.removeprefix("mixout")))
    optimizer = AdamW(triples_from_model(model), lr=2e-2, weight_decay=0.0)
    for _ in range(steps):
        x = data.standard_normal((32, 16)).astype(np.float32)
        y = x @ (u + delta).T + 0.1 * data.standard_normal((32, 4)).astype(np.float32)
        model.zero_grad()
        model.backward((model.forward(x) - y) / len(x))   # gradient of the mean squared error / 2
        optimizer.step()
    return float(np.linalg.norm(model.head.weight.data - u) / np.linalg.norm(delta))


def test_mixout_keeps_the_weights_near_the_target():
    """For squared loss, mixout adds p/(1-p) * sum_j x_j^2 (w_j - u_j)^2 to the expected loss (module
    docstring); with E[x x^T] = I the minimiser is w - u = (1 - p)(w* - u). Measured (seed 0/1): plain
    0.998, dropout 0.1 0.894, mixout 0.5 0.489, mixout 0.9 0.119; the assertions leave margins around these."""
    plain = _distance_from_target("plain")
    dropout = _distance_from_target("dropout")
    half = _distance_from_target("mixout0.5")
    strong = _distance_from_target("mixout0.9")
    assert plain > 0.9 and dropout > 0.8                        # both fit w* (dropout 0.1 pulls a bit to 0)
    assert abs(half - 0.5) < 0.08 and abs(strong - 0.1) < 0.06  # the fixed point (1 - p), with Adam's noise
    assert strong < 0.25 * min(plain, dropout)
