"""Unpadded computation (the real tokens only) against the padded one: same outputs at real
positions, same gradients, on a batch that is mostly padding; and the layout's gather / scatter."""
import numpy as np
import pytest

from minibert import kernels
from minibert.config import BertConfig
from minibert.models import BertForPreTraining, BertForSequenceClassification, BertModel
from minibert.models.bert import Unpadded


def heavy_padding_batch(rng, B=6, T=24, vocab=50, P=4):
    # lengths 3 ... T with repeats (two length groups of 2) and one full row; fill about 0.5
    lengths = np.array([3, 7, 7, 12, 12, T])[:B]
    mask = (np.arange(T) < lengths[:, None]).astype(np.int64)
    ids = rng.integers(5, vocab, (B, T)) * mask
    types = ((np.arange(T) >= lengths[:, None] // 2) & (mask == 1)).astype(np.int64)
    positions = np.stack([np.sort(rng.choice(n, P, replace=n < P)) for n in lengths])
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
            "masked_lm_positions": positions,
            "masked_lm_ids": rng.integers(5, vocab, (B, P)),
            "masked_lm_weights": (rng.random((B, P)) < 0.8).astype(np.float32),
            "next_sentence_labels": rng.integers(0, 2, B)}


def config(**overrides):
    sizes = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=32)
    return BertConfig(**{**sizes, **overrides})


def run(model, batch, unpad, seed=3):
    """Forward + backward, dropout masks drawn from the same seed; returns outputs and gradients."""
    model.bert.unpad = unpad
    model.bert.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
    model.zero_grad()
    out = model.forward(**batch, output_hidden_states=True, output_attentions=True)
    model.backward()
    return out, {name: g.copy() for name, g in model.named_grads()}


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unpadded_equals_padded_outputs_and_every_gradient(backend, dtype):
    rng = np.random.default_rng(0)
    batch = heavy_padding_batch(rng)
    mask = batch["attention_mask"].astype(bool)
    assert mask.mean() < 0.6
    # dropout off: the two paths draw their masks over different shapes, so only p = 0 compares
    # exactly
    model = BertForPreTraining(config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                               np.random.default_rng(1)).astype(dtype)
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    with kernels.using(backend):
        padded, grads_padded = run(model, batch, unpad=False)
        unpadded, grads_unpadded = run(model, batch, unpad=True)
    np.testing.assert_allclose(unpadded.loss, padded.loss, **tol)
    np.testing.assert_allclose(unpadded.prediction_logits, padded.prediction_logits, **tol)
    np.testing.assert_allclose(unpadded.seq_relationship_logits, padded.seq_relationship_logits,
                               **tol)
    for h_unpadded, h_padded in zip(unpadded.hidden_states, padded.hidden_states):
        np.testing.assert_allclose(h_unpadded[mask], h_padded[mask], **tol)
        assert not h_unpadded[~mask].any()                       # zeros at padding
    real_pairs = mask[:, None, :, None] & mask[:, None, None, :]
    for a_unpadded, a_padded in zip(unpadded.attentions, padded.attentions):
        np.testing.assert_allclose(a_unpadded * real_pairs, a_padded * real_pairs, **tol)
        rows = a_unpadded.sum(-1).transpose(0, 2, 1)                          # (B, T, A)
        np.testing.assert_allclose(rows[mask], 1, **tol)                        # real queries
    assert grads_padded.keys() == grads_unpadded.keys()
    # Each gradient compared relative to its own size, with a floor: the key bias's true gradient is
    # 0 (q . b_k is the same for every key of a query, and softmax ignores it), so both are
    # rounding.
    floor = 1e-3 * max(np.abs(g).max() for g in grads_padded.values())
    for name in grads_padded:
        scale = max(np.abs(grads_padded[name]).max(), floor)
        np.testing.assert_allclose(grads_unpadded[name] / scale, grads_padded[name] / scale,
                                   rtol=0, atol=tol["rtol"], err_msg=name)
        assert np.abs(grads_padded[name]).max() > 0, name


def test_unpadded_dropout_draws_masks_for_real_tokens_only():
    """With dropout on, the unpadded path draws masks over (N, H), not (B, T, H): different masks,
    the same distribution. A step still trains, and replaying the generator replays the step
    exactly."""
    batch = heavy_padding_batch(np.random.default_rng(0))
    model = BertForPreTraining(config(), np.random.default_rng(1))
    out1, grads1 = run(model, batch, unpad=True)
    out2, grads2 = run(model, batch, unpad=True)
    assert out1.loss == out2.loss
    for name in grads1:
        np.testing.assert_array_equal(grads1[name], grads2[name])
    assert np.isfinite(out1.loss)


def test_classifier_with_layer_mixing_matches_on_both_paths():
    rng = np.random.default_rng(2)
    batch = heavy_padding_batch(rng)
    cfg = config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3,
                 classifier_layers="mix")
    model = BertForSequenceClassification(cfg, np.random.default_rng(4)).astype(np.float64).eval()
    labels = rng.integers(0, 3, len(batch["input_ids"]))
    results = []
    for unpad in (False, True):
        model.bert.unpad = unpad
        model.zero_grad()
        out = model.forward(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                            labels=labels)
        dembed = model.backward()
        results.append((out.logits, dembed, {n: g.copy() for n, g in model.named_grads()}))
    (logits0, d0, g0), (logits1, d1, g1) = results
    np.testing.assert_allclose(logits1, logits0, rtol=1e-10)
    mask = batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(d1[mask], d0[mask], rtol=1e-9, atol=1e-14)
    assert not d1[~mask].any()
    for name in g0:
        np.testing.assert_allclose(g1[name], g0[name], rtol=1e-9, atol=1e-14, err_msg=name)


def test_layout_orders_rows_by_length_and_inverts():
    mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0], [0, 0, 0, 0]])
    layout = Unpadded.from_mask(mask)
    # shortest first (b = 1), then the two of length 3 (b = 0, 3), then b = 2; the empty row has no
    # group
    assert layout.groups == ((0, 1, 1), (1, 2, 3), (7, 1, 4))
    np.testing.assert_array_equal(layout.index, [4, 0, 1, 2, 12, 13, 14, 8, 9, 10, 11])
    a = np.arange(5 * 4 * 2).reshape(5, 4, 2)
    back = layout.scatter(layout.gather(a))
    np.testing.assert_array_equal(back[mask == 1], a[mask == 1])
    assert not back[mask == 0].any()


def test_full_batch_unpadded_is_one_group_and_equals_padded():
    rng = np.random.default_rng(5)
    model = BertModel(config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                      np.random.default_rng(6)).astype(np.float64)
    ids = rng.integers(0, 50, (3, 10))
    assert Unpadded.from_mask(np.ones((3, 10))).groups == ((0, 3, 10),)
    outs = []
    for unpad in (False, True):
        model.unpad = unpad
        outs.append(model.forward(ids).last_hidden_state)
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("unpad", [True, False])
def test_the_last_layer_computes_only_the_rows_the_heads_read(backend, unpad, monkeypatch):
    """Pretraining reads the last layer at the masked positions and the [CLS] only, so that layer
    computes those rows (BertModel.forward's output_positions): with dropout on and the same seed,
    the loss, the logits and every gradient are those of the whole last layer (output_hidden_states=True
    asks for all of it; the dropout draws for every row and keeps those rows' bits), the generator
    ends where it would, and the feed-forward really saw only those rows."""
    rng = np.random.default_rng(0)
    batch = heavy_padding_batch(rng)
    model = BertForPreTraining(config(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2),
                               np.random.default_rng(1)).astype(np.float64).train()
    last = model.bert.encoder.layer[-1].intermediate
    seen = []
    forward = type(last).forward
    monkeypatch.setattr(last, "forward", lambda x: seen.append(x.size // x.shape[-1]) or forward(last, x))

    def run_once(everything):
        model.bert.unpad = unpad
        model.bert.rng.bit_generator.state = np.random.default_rng(3).bit_generator.state
        model.zero_grad()
        out = model.forward(**batch, output_hidden_states=everything)
        model.backward()
        return out, {name: g.copy() for name, g in model.named_grads()}, model.bert.rng.integers(1 << 40)

    with kernels.using(backend):
        whole, grads_whole, next_whole = run_once(True)
        part, grads_part, next_part = run_once(False)
    mask = batch["attention_mask"]
    B, T = mask.shape
    b, p = np.nonzero(batch["masked_lm_weights"])
    wanted = set(zip(b, batch["masked_lm_positions"][b, p])) | {(i, 0) for i in range(B)}
    assert seen == [int(mask.sum()) if unpad else B * T, len(wanted)] and len(wanted) < mask.sum() / 2
    assert next_part == next_whole
    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(part.loss, whole.loss, **tol)
    np.testing.assert_allclose(part.prediction_logits, whole.prediction_logits, **tol)
    np.testing.assert_allclose(part.seq_relationship_logits, whole.seq_relationship_logits, **tol)
    for name in grads_whole:
        np.testing.assert_allclose(grads_part[name], grads_whole[name], err_msg=name, **tol)
        assert np.abs(grads_whole[name]).max() > 0 or "key.bias" in name, name


def test_output_positions_must_name_positions_of_the_batch():
    model = BertModel(config(), np.random.default_rng(0))
    ids = np.ones((2, 5), np.int64)
    with pytest.raises(ValueError, match=r"output_positions must name positions of the \(B, T\) = \(2, 5\)"):
        model.forward(ids, output_positions=(np.array([0, 1]), np.array([0, 5])))
    with pytest.raises(ValueError, match="two integer arrays"):
        model.forward(ids, output_positions=(np.array([0.5]), np.array([1])))
    out = model.forward(ids, output_positions=(np.array([1]), np.array([3])))
    computed = np.abs(out.last_hidden_state).sum(-1) != 0
    assert computed.tolist() == [[True, False, False, False, False], [True, False, False, True, False]]


@pytest.mark.parametrize("unpad", [True, False])
def test_a_pooler_classifier_runs_the_last_layers_feed_forward_half_on_the_cls_rows(unpad, monkeypatch):
    """Classifying from the pooler reads the last layer at each [CLS] only: the logits, the gradient
    of the embedding output and every parameter gradient are those of the whole last layer."""
    rng = np.random.default_rng(2)
    batch = heavy_padding_batch(rng)
    cfg = config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3)
    model = BertForSequenceClassification(cfg, np.random.default_rng(4)).astype(np.float64).eval()
    model.bert.unpad = unpad
    last = model.bert.encoder.layer[-1].intermediate
    seen = []
    forward = type(last).forward
    monkeypatch.setattr(last, "forward", lambda x: seen.append(x.size // x.shape[-1]) or forward(last, x))
    labels = rng.integers(0, 3, len(batch["input_ids"]))
    results = []
    for everything in (True, False):
        model.zero_grad()
        out = model.forward(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], labels=labels,
                            output_hidden_states=everything)
        results.append((out.logits, model.backward(), {n: g.copy() for n, g in model.named_grads()}))
    B, T = batch["input_ids"].shape
    assert seen == [int(batch["attention_mask"].sum()) if unpad else B * T, B]
    (logits0, d0, g0), (logits1, d1, g1) = results
    np.testing.assert_allclose(logits1, logits0, rtol=1e-10)
    np.testing.assert_allclose(d1, d0, rtol=1e-9, atol=1e-14)
    for name in g0:
        np.testing.assert_allclose(g1[name], g0[name], rtol=1e-9, atol=1e-14, err_msg=name)


def test_a_sequence_with_nothing_to_read_in_the_last_layer():
    """A sequence whose [CLS] is padding and that has no real prediction asks the last layer for no
    row: its tokens are still keys and values of nothing, and every gradient is the whole layer's."""
    rng = np.random.default_rng(5)
    batch = heavy_padding_batch(rng)
    batch["attention_mask"][1, :2] = 0                      # sequence 1: its first two positions are padding
    batch["masked_lm_weights"][1] = 0
    model = BertForPreTraining(config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                               np.random.default_rng(1)).astype(np.float64)
    results = []
    for everything in (True, False):
        model.zero_grad()
        out = model.forward(**batch, output_hidden_states=everything)
        model.backward()
        results.append((float(out.loss), {n: g.copy() for n, g in model.named_grads()}))
    assert abs(results[0][0] - results[1][0]) < 1e-12
    for name in results[0][1]:
        np.testing.assert_allclose(results[1][1][name], results[0][1][name], rtol=1e-10, atol=1e-12, err_msg=name)
