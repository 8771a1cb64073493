"""BertModel behaviour: names, shapes, dtypes, padding, accumulation, state dicts and input errors."""
import numpy as np
import pytest

from minibert import kernels
from minibert.config import BertConfig
from minibert.models import BertModel
from minibert.nn import Module, Parameter

CONFIG = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=24, max_position_embeddings=12)


def make_model(seed=0, config=CONFIG):
    return BertModel(config, np.random.default_rng(seed))


def batch(rng, B=3, T=9):
    ids = rng.integers(5, CONFIG.vocab_size, (B, T))
    types = (np.arange(T)[None, :] >= 4).astype(np.int64).repeat(B, axis=0)
    mask = np.ones((B, T), np.int64)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    return ids, types, mask


def test_parameter_names_are_hugging_face_keys():
    names = [n for n, _ in make_model().named_parameters()]
    assert names[:5] == ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                         "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
                         "embeddings.LayerNorm.bias"]
    for key in ["encoder.layer.1.attention.self.query.weight", "encoder.layer.1.attention.self.key.bias",
                "encoder.layer.0.attention.output.dense.weight", "encoder.layer.0.attention.output.LayerNorm.bias",
                "encoder.layer.1.intermediate.dense.weight", "encoder.layer.1.output.dense.bias",
                "encoder.layer.1.output.LayerNorm.weight", "pooler.dense.weight", "pooler.dense.bias"]:
        assert key in names
    shapes = dict(make_model().named_parameters())
    assert shapes["encoder.layer.0.intermediate.dense.weight"].shape == (24, 16)   # [out, in] as in PyTorch
    assert shapes["encoder.layer.0.output.dense.weight"].shape == (16, 24)
    assert len(names) == 5 + 16 * 2 + 2
    assert [n for n, _ in make_model().named_grads()] == names


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_float32_stays_float32_everywhere(backend):
    """Every activation, output and gradient of the float32 model is float32 (no silent upcasts)."""
    model = make_model().train()
    ids, types, mask = batch(np.random.default_rng(1))
    with kernels.using(backend):
        out = model.forward(ids, types, mask, output_hidden_states=True, output_attentions=True)
        arrays = [out.last_hidden_state, out.pooler_output, *out.hidden_states, *out.attentions]
        for m in model.modules():        # every cached activation
            for value in vars(m).values():
                items = value if isinstance(value, tuple) else (value,)
                arrays += [a for a in items if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
        dx = model.backward(np.ones_like(out.last_hidden_state), np.ones_like(out.pooler_output))
    arrays += [dx] + [g for _, g in model.named_grads()]
    assert {a.dtype for a in arrays} == {np.dtype(np.float32)}


def test_output_shapes_and_hidden_states():
    model = make_model().eval()
    ids, types, mask = batch(np.random.default_rng(2))
    out = model.forward(ids, types, mask, output_hidden_states=True, output_attentions=True)
    assert out.last_hidden_state.shape == (3, 9, 16) and out.pooler_output.shape == (3, 16)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    assert out.attentions[0].shape == (3, 4, 9, 9)
    np.testing.assert_array_equal(out.hidden_states[-1], out.last_hidden_state)
    # Every real query's probabilities sum to 1; the rows of padded queries are zeros (not computed).
    rows = out.attentions[0].sum(-1).transpose(0, 2, 1)                  # (B, T, A)
    np.testing.assert_allclose(rows[mask == 1], 1, rtol=1e-5)
    assert not rows[mask == 0].any()
    plain = model.forward(ids, types, mask)
    assert plain.hidden_states is None and plain.attentions is None


def test_padded_keys_get_zero_attention_and_do_not_change_real_positions():
    model = make_model().eval()
    rng = np.random.default_rng(3)
    ids, types, mask = batch(rng)
    out = model.forward(ids, types, mask, output_attentions=True)
    for probs in out.attentions:
        assert np.all(probs[1, :, :, 6:] == 0) and np.all(probs[2, :, :, 3:] == 0)
    # Whatever sits in the padded positions, the real positions' outputs are unchanged.
    other = ids.copy()
    other[mask == 0] = rng.integers(5, CONFIG.vocab_size, (mask == 0).sum())
    out2 = model.forward(other, types, mask)
    np.testing.assert_allclose(out2.last_hidden_state[mask == 1], out.last_hidden_state[mask == 1], atol=1e-6)


def test_padded_positions_contribute_no_gradient():
    """With no upstream gradient at padded positions, nothing flows into them: their embedding gradient
    is exactly zero, and so is the gradient of embedding rows used only by padding."""
    model = make_model().eval()
    ids, types, mask = batch(np.random.default_rng(4))
    ids[mask == 0] = 1          # id 1 appears only at padded positions
    out = model.forward(ids, types, mask)
    d = np.random.default_rng(5).standard_normal(out.last_hidden_state.shape).astype(np.float32)
    d[mask == 0] = 0
    model.zero_grad()
    dx = model.backward(d)
    assert np.all(dx[mask == 0] == 0)
    grads = dict(model.named_grads())
    assert np.all(grads["embeddings.word_embeddings.weight"][1] == 0)
    assert np.any(grads["embeddings.word_embeddings.weight"][ids[0, 0]] != 0)


def test_backward_accumulates_and_zero_grad_clears():
    model = make_model().eval()
    ids, types, mask = batch(np.random.default_rng(6))
    out = model.forward(ids, types, mask)
    upstream = np.random.default_rng(7).standard_normal(out.last_hidden_state.shape).astype(np.float32)
    model.backward(upstream)
    once = {n: g.copy() for n, g in model.named_grads()}
    model.forward(ids, types, mask)
    model.backward(upstream)
    for n, g in model.named_grads():
        np.testing.assert_allclose(g, 2 * once[n], rtol=1e-5, atol=1e-7, err_msg=n)
    model.zero_grad()
    assert all(not g.any() for _, g in model.named_grads())


def test_dropout_is_on_in_train_and_off_in_eval_and_seeded():
    ids, types, mask = batch(np.random.default_rng(8))
    a = make_model(seed=1).train().forward(ids, types, mask).last_hidden_state
    b = make_model(seed=1).train().forward(ids, types, mask).last_hidden_state
    np.testing.assert_array_equal(a, b)             # same seed, same masks
    model = make_model(seed=1)
    e1 = model.eval().forward(ids, types, mask).last_hidden_state
    e2 = model.forward(ids, types, mask).last_hidden_state
    np.testing.assert_array_equal(e1, e2)           # eval is deterministic
    assert not np.allclose(a, e1)                   # and differs from training mode


def test_tied_parameters_are_listed_once_and_accumulate():
    class Tied(Module):
        def __init__(self):
            self.a = Module()
            self.a.weight = Parameter(np.ones(3))
            self.b = Module()
            self.b.weight = self.a.weight
    tied = Tied()
    assert [n for n, _ in tied.named_parameters()] == ["a.weight"]
    tied.a.weight.grad += 1
    tied.b.weight.grad += 2
    np.testing.assert_array_equal(tied.a.weight.grad, 3)


def test_state_dict_round_trip_and_errors():
    src, dst = make_model(seed=1), make_model(seed=2)
    dst.load_state_dict({k: v.copy() for k, v in src.state_dict().items()})
    for (n, a), (_, b) in zip(src.named_parameters(), dst.named_parameters()):
        np.testing.assert_array_equal(a, b, err_msg=n)
    state = {k: v.copy() for k, v in src.state_dict().items()}
    state["pooler.dense.weight"] = np.zeros((3, 3), np.float32)
    del state["pooler.dense.bias"]
    state["cls.extra"] = np.zeros(2)
    with pytest.raises(ValueError) as err:
        dst.load_state_dict(state)
    msg = str(err.value)
    assert "pooler.dense.weight: expected (16, 16), got (3, 3)" in msg
    assert "missing keys: pooler.dense.bias" in msg and "unexpected keys: cls.extra" in msg


@pytest.mark.parametrize("mutate, message", [
    (lambda ids, t, m: (ids.astype(np.float32), t, m), "integer"),
    (lambda ids, t, m: (np.where(ids == ids[0, 0], 50, ids), t, m), r"input_ids contains 50, outside \[0, 50\)"),
    (lambda ids, t, m: (ids - 100, t, m), "input_ids contains"),
    (lambda ids, t, m: (ids, t + 1, m), r"token_type_ids contains 2, outside \[0, 2\)"),
    (lambda ids, t, m: (ids, t, m[:, :5]), r"attention_mask must have shape \(3, 9\)"),
    (lambda ids, t, m: (ids, t[:2], m), r"token_type_ids must have shape \(3, 9\)"),
    (lambda ids, t, m: (ids, t, m * 2), "only 0"),
    (lambda ids, t, m: (np.tile(ids, 2), None, None), "exceeds max_position_embeddings 12"),
    (lambda ids, t, m: (ids[0], None, None), r"shape \(B, T\)"),
])
def test_bad_inputs_raise_clear_errors(mutate, message):
    ids, types, mask = batch(np.random.default_rng(9))
    with pytest.raises(ValueError, match=message):
        make_model().forward(*mutate(ids, types, mask))


def test_rng_must_be_a_generator():
    with pytest.raises(TypeError, match="Generator"):
        BertModel(CONFIG, 0)


def test_backward_before_forward_is_a_clear_error():
    from minibert.gradcheck import tiny_config
    from minibert.models import BertForPreTraining, BertForSequenceClassification

    with pytest.raises(RuntimeError, match=r"backward\(\) needs a forward\(\) first"):
        BertModel(tiny_config(), np.random.default_rng(0)).backward(np.zeros((3, 7, 12), np.float32))
    with pytest.raises(RuntimeError, match=r"needs a forward\(\)"):
        BertForPreTraining(tiny_config(), np.random.default_rng(0)).backward()
    with pytest.raises(RuntimeError, match=r"needs a forward\(\)"):
        BertForSequenceClassification(tiny_config(num_labels=2), np.random.default_rng(0)).backward()


@pytest.mark.parametrize("unpad", [True, False])
def test_backward_releases_what_the_forward_saved(unpad):
    """Each module's backward takes its cache and lets go of it, so a step's activations are freed as the
    backward passes each layer (the peak memory of training depends on it); a second backward without a
    forward is refused instead of adding every gradient twice."""
    from minibert.gradcheck import tiny_config
    from minibert.models import BertForPreTraining
    from minibert.models.bert import Unpadded

    def holds_activations(cache):
        if isinstance(cache, (tuple, list)):
            return any(holds_activations(c) for c in cache)
        return isinstance(cache, (np.ndarray, Unpadded))

    model = BertForPreTraining(tiny_config(), np.random.default_rng(0)).train()
    model.bert.unpad = unpad
    ids, types, mask = batch(np.random.default_rng(1), T=7)
    ids %= model.config.vocab_size
    out = model.forward(ids, types, mask, np.array([[1, 2]] * 3), np.ones((3, 2), np.int64), None, np.zeros(3, np.int64))
    holding = [type(m).__name__ for m in model.modules() if holds_activations(m.cache)]
    assert {"Linear", "LayerNorm", "BertSelfAttention", "BertForPreTraining"} <= set(holding)
    model.backward()
    assert [type(m).__name__ for m in model.modules() if holds_activations(m.cache)] == []
    assert np.isfinite(float(out.loss))
    with pytest.raises(RuntimeError, match="BertForPreTraining.backward: the last forward's cache was already used"):
        model.backward()


def test_padding_predictions_are_not_computed():
    """A prediction with weight 0 (padding: the sequence had fewer masked tokens than P) gets no row in
    the MLM head: its logits are 0, the other rows and the loss are what scoring every row gives, and
    a batch with no prediction at all has MLM loss 0 and a working backward."""
    from minibert.gradcheck import ids_and_types, padding_mask, tiny_config
    from minibert.models import BertForPreTraining

    model = BertForPreTraining(tiny_config(), np.random.default_rng(0)).astype(np.float64).eval()
    ids, types = ids_and_types()
    positions = np.array([[1, 4, 6], [2, 2, 0], [1, 2, 0]])
    labels = np.array([[3, 5, 7], [2, 4, 6], [1, 1, 9]])
    weights = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    nsp = np.array([0, 1, 1])
    every_row = model.forward(ids, types, padding_mask(), positions).prediction_logits      # (B, P, V)
    out = model.forward(ids, types, padding_mask(), positions, labels, weights, nsp)
    real = weights != 0
    assert not out.prediction_logits[~real].any()
    np.testing.assert_allclose(out.prediction_logits[real], every_row[real], rtol=1e-12, atol=1e-12)
    z = every_row - every_row.max(-1, keepdims=True)
    nll = -np.take_along_axis(z - np.log(np.exp(z).sum(-1, keepdims=True)), labels[..., None], -1)[..., 0]
    assert float(out.mlm_loss) == pytest.approx((nll * weights).sum() / (weights.sum() + 1e-5), rel=1e-12)
    model.backward()

    none = model.forward(ids, types, padding_mask(), positions, labels, np.zeros((3, 3)), nsp)
    assert float(none.mlm_loss) == 0 and not none.prediction_logits.any()
    model.zero_grad()
    model.backward()
    assert not model.cls.predictions.transform.dense.weight.grad.any()      # no row reached the head
    assert model.cls.seq_relationship.weight.grad.any()                     # NSP still trains
