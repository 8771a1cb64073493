"""ScalarMix: the forward formula, layer dropout, and that training finds the informative layer.
(Its gradient check, and the whole model's with a mix, are in tests/test_gradcheck.py.)"""
import numpy as np
import pytest

from minibert.nn import ScalarMix
from minibert.functional import cross_entropy_backward, cross_entropy_forward, linear_backward, linear_forward


def test_forward_is_gamma_times_the_softmax_weighted_sum():
    rng = np.random.default_rng(0)
    mix = ScalarMix(3, 0.0, rng).astype(np.float64)
    mix.weights.data[:] = [0.5, -1.0, 2.0]
    mix.gamma.data[:] = 1.5
    states = [rng.standard_normal((4, 5)) for _ in range(3)]
    s = np.exp(mix.weights.data) / np.exp(mix.weights.data).sum()
    np.testing.assert_allclose(mix.forward(states), 1.5 * sum(si * x for si, x in zip(s, states)), rtol=1e-12)
    np.testing.assert_allclose(mix.mixing_weights(), s, rtol=1e-12)


def test_starts_as_the_plain_average_and_stays_float32():
    mix = ScalarMix(4, 0.0, np.random.default_rng(0))
    states = [np.full((2, 3), float(i), np.float32) for i in range(4)]
    out = mix.forward(states)
    assert out.dtype == np.float32 and np.allclose(out, 1.5)


def test_layer_dropout_drops_layers_in_training_only_and_never_all():
    rng = np.random.default_rng(0)
    mix = ScalarMix(3, 0.9, rng)
    states = [np.full((1, 1), float(10 ** i), np.float32) for i in range(3)]
    dropped_some = False
    for _ in range(200):
        mix.forward(states)
        _, s = mix.cache
        assert np.isclose(s.sum(), 1) and (s > 0).any()
        dropped_some |= bool((s == 0).any())
    assert dropped_some
    mix.eval()
    assert np.isclose(float(mix.forward(states)[0, 0]), 111 / 3)


def test_dropped_layer_gets_no_gradient():
    rng = np.random.default_rng(3)
    mix = ScalarMix(5, 0.5, rng).astype(np.float64)
    states = [rng.standard_normal((2, 3)) for _ in range(5)]
    mix.forward(states)
    _, s = mix.cache
    grads = mix.backward(np.ones((2, 3)))
    for si, g, w in zip(s, grads, mix.weights.grad):
        if si == 0:
            assert not g.any() and w == 0


def test_training_puts_the_weight_on_the_informative_layer():
    """Four 'layers' of features; only layer 2 carries the label. A scalar mix + linear classifier trained
    by gradient descent moves most of the mixing weight to layer 2."""
    rng = np.random.default_rng(0)
    n, h = 256, 8
    labels = rng.integers(0, 2, n)
    states = [rng.standard_normal((n, h)) for _ in range(4)]
    states[2][:, 0] += 3.0 * (2 * labels - 1)          # the signal
    mix = ScalarMix(4, 0.0, rng).astype(np.float64)
    w, b = np.zeros((2, h)), np.zeros(2)
    for _ in range(300):
        mix.zero_grad()
        dw, db = np.zeros_like(w), np.zeros_like(b)
        logits, lin_cache = linear_forward(mix.forward(states), w, b)
        _, ce_cache = cross_entropy_forward(logits, labels)
        mix.backward(linear_backward(cross_entropy_backward(1.0, ce_cache), lin_cache, dw, db))
        for p, g in ((w, dw), (b, db), (mix.weights.data, mix.weights.grad), (mix.gamma.data, mix.gamma.grad)):
            p -= 0.5 * g
    s = mix.mixing_weights()
    assert s.argmax() == 2 and s[2] > 0.5, s


@pytest.mark.parametrize("args, message", [((0, 0.0), "at least one layer"), ((3, 1.0), "layer_dropout")])
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        ScalarMix(*args, np.random.default_rng(0))


def test_wrong_number_of_states():
    with pytest.raises(ValueError, match="3 layers got 2 states"):
        ScalarMix(3, 0.0, np.random.default_rng(0)).forward([np.zeros((1, 2))] * 2)
