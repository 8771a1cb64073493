"""AdamW, gradient clipping and the learning-rate schedule against hand computation in float64."""
import math

import numpy as np
import pytest

from minibert import kernels, optim
from minibert.optim import AdamW, clip_grad_norm, default_no_decay, linear_warmup_decay, triples_from_model

B1, B2, EPS, WD, LR = 0.9, 0.999, 1e-6, 0.01, 1e-3


def reference_adamw(w, grads, lr, wd, correct_bias, b1=B1, b2=B2, eps=EPS):
    """The docstring formulas written out plainly, one new array per line, in float64."""
    w = w.astype(np.float64)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        if correct_bias:
            m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        else:
            m_hat, v_hat = m, v
        w = w - lr * (m_hat / (np.sqrt(v_hat) + eps) + wd * w)
    return w


def make_param(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype), np.zeros(shape, dtype=dtype)


@pytest.mark.parametrize("correct_bias", [True, False])
@pytest.mark.parametrize("name", ["bert.encoder.layer.0.intermediate.dense.weight",
                                  "bert.encoder.layer.0.output.LayerNorm.weight"])
def test_three_steps_match_hand_computation(correct_bias, name):
    rng = np.random.default_rng(0)
    w, g = make_param(rng, (4, 3))
    w0 = w.copy()
    # gradients of very different scales, including tiny ones where eps matters
    grads = [rng.standard_normal(w.shape) * s for s in (1.0, 1e-3, 1e-7)]
    opt = AdamW([(name, w, g)], lr=LR, eps=EPS, weight_decay=WD, correct_bias=correct_bias)
    for gi in grads:
        g[...] = gi
        opt.step()
    wd = 0.0 if default_no_decay(name) else WD
    np.testing.assert_allclose(w, reference_adamw(w0, grads, LR, wd, correct_bias), rtol=1e-12, atol=1e-15)
    assert opt.t == 3


def test_first_step_by_hand():
    # t=1: m = 0.1 g, v = 0.001 g^2.  Corrected: m_hat/sqrt(v_hat) = sign(g); uncorrected: 0.1/sqrt(0.001) sign(g).
    w = np.array([0.5, -2.0])
    g = np.array([3.0, -0.25])
    expected = {
        True: w - LR * (g / (np.abs(g) + EPS) + WD * w),
        False: w - LR * (0.1 * g / (math.sqrt(0.001) * np.abs(g) + EPS) + WD * w),
    }
    for correct_bias, exp in expected.items():
        p = w.copy()
        AdamW([("dense.weight", p, g.copy())], lr=LR, correct_bias=correct_bias).step()
        np.testing.assert_allclose(p, exp, rtol=1e-14)
    # the uncorrected first step is (1 - b1) / sqrt(1 - b2) ~ 3.16x the corrected one (decay and eps off)
    steps = {}
    for correct_bias in (True, False):
        p = w.copy()
        AdamW([("dense.weight", p, g.copy())], lr=LR, eps=0.0, weight_decay=0.0, correct_bias=correct_bias).step()
        steps[correct_bias] = w - p
    np.testing.assert_allclose(steps[False] / steps[True], 0.1 / math.sqrt(0.001), rtol=1e-12)


def test_step_uses_given_lr():
    # both the Adam term and the decay term are multiplied by lr, so the step is proportional to it
    g = np.random.default_rng(1).standard_normal(5)
    moves = []
    for lr in (None, 2e-3):  # None -> the base lr 1e-3
        w = np.linspace(-1.0, 1.0, 5)
        AdamW([("x.weight", w, g.copy())], lr=1e-3).step(lr=lr)
        moves.append(np.linspace(-1.0, 1.0, 5) - w)
    np.testing.assert_allclose(moves[1], 2 * moves[0], rtol=1e-12)


def test_update_in_pieces_is_the_step_to_the_bit():
    rng = np.random.default_rng(2)
    params = [rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (7,))]
    grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
    whole = AdamW([(f"w{i}.weight", p.copy(), g) for i, (p, g) in enumerate(zip(params, grads))])
    pieces = AdamW([(f"w{i}.weight", p.copy(), g) for i, (p, g) in enumerate(zip(params, grads))])
    for lr in (1e-3, 2e-3):
        whole.step(lr)
        constants = pieces.advance(lr)
        for share in ([(1, 4, 7), (0, 0, 5)], [(0, 5, 12), (1, 0, 4)]):   # any order, own scratch
            pieces.update(constants, share, np.empty(7, np.float32))
        for a, b in zip(whole.params + whole.m + whole.v, pieces.params + pieces.m + pieces.v):
            np.testing.assert_array_equal(a, b)
    assert pieces.t == whole.t == 2
    strided = AdamW([("w.weight", np.zeros((4, 4), np.float32)[:, ::2], np.ones((4, 2), np.float32))])
    with pytest.raises(ValueError, match="w.weight: a piece of an array needs a C-contiguous array"):
        strided.update(strided.advance(), [(0, 0, 3)])
    strided.update(strided.advance(), [(0, 0, 8)])                  # the whole of it takes any layout
    assert strided.params[0].all()


def test_element_shares_cover_every_element_once_cut_at_chunk_multiples(monkeypatch):
    monkeypatch.setattr(optim, "CHUNK", 4)
    sizes = [10, 0, 3, 25, 2]                                       # 40 elements
    for n in (1, 2, 3, 7):
        shares = optim.element_shares(sizes, n)
        assert len(shares) == n
        flat = [(i, k) for share in shares for i, lo, hi in share for k in range(lo, hi)]
        assert flat == [(i, k) for i, size in enumerate(sizes) for k in range(size)]    # in order, once
        assert all(lo % 4 == 0 and (hi % 4 == 0 or hi == sizes[i]) for share in shares for i, lo, hi in share)
        counts = [sum(hi - lo for _, lo, hi in share) for share in shares]
        assert max(abs(c - 40 / n) for c in counts) <= 4, counts       # each cut within a chunk of equal
    assert optim.element_shares([3], 2) == [[], [(0, 0, 3)]]             # less than a chunk: one share has it all


@pytest.mark.parametrize("cores", [2, 3])
def test_clipping_and_adamw_on_threads_give_the_one_thread_bits(monkeypatch, cores):
    monkeypatch.setattr(optim, "CHUNK", 64)
    monkeypatch.setattr(optim, "PARALLEL_FROM", 0)
    calls = []
    real = kernels.on_threads

    def spy(fn, items):
        items = list(items)
        calls.append(len(items))
        return real(fn, items)
    monkeypatch.setattr(kernels, "on_threads", spy)
    shapes = [(40, 30), (7,), (0,), (300,), (16, 16)]
    start = np.random.default_rng(3)
    params = [start.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [start.standard_normal(s).astype(np.float32) for s in shapes]
    runs = {}
    for n in (1, cores):
        monkeypatch.setattr(kernels, "cores", lambda n=n: n)
        ps, gs = [p.copy() for p in params], [g.copy() for g in grads]
        opt = AdamW([(f"w{i}.weight", p, g) for i, (p, g) in enumerate(zip(ps, gs))], lr=1e-2)
        calls.clear()
        norms = [clip_grad_norm(gs, 1e-2), opt.step(), clip_grad_norm(gs, 1e3), opt.step()][::2]
        assert calls == [n] * 5          # shares: norm, scale, step; norm, step
        runs[n] = (norms, ps + gs + opt.m + opt.v)
    assert runs[1][0] == runs[cores][0] and runs[1][0][0] > 1e-2
    for x, y in zip(runs[1][1], runs[cores][1]):
        np.testing.assert_array_equal(x, y)
    strided = [np.ones((64, 64), np.float32)[:, ::2]]                   # a piece of it would be a copy
    assert len(optim._shares([(g,) for g in strided])) == 1
    assert clip_grad_norm(strided, 1.0) == pytest.approx(math.sqrt(64 * 32)) and strided[0].max() < 1


def test_no_decay_rule_on_bert_names():
    decayed = ["bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
               "bert.encoder.layer.3.attention.self.query.weight", "bert.encoder.layer.0.output.dense.weight",
               "bert.pooler.dense.weight", "cls.predictions.transform.dense.weight", "cls.seq_relationship.weight"]
    not_decayed = ["bert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.bias",
                   "bert.encoder.layer.0.attention.output.LayerNorm.weight",
                   "bert.encoder.layer.11.output.LayerNorm.bias", "bert.encoder.layer.0.attention.self.key.bias",
                   "bert.encoder.layer.0.intermediate.dense.bias", "cls.predictions.bias",
                   "cls.predictions.transform.LayerNorm.weight", "cls.seq_relationship.bias",
                   "bert.embeddings.LayerNorm.gamma", "bert.embeddings.LayerNorm.beta"]
    assert [n for n in decayed if default_no_decay(n)] == []
    assert [n for n in not_decayed if not default_no_decay(n)] == []


def test_weight_decay_only_where_allowed():
    # zero gradient: the Adam term is 0, so only the decay moves the weights
    names = ["bert.pooler.dense.weight", "bert.pooler.dense.bias", "bert.embeddings.LayerNorm.weight"]
    triples = [(n, np.full(3, 2.0), np.zeros(3)) for n in names]
    AdamW(triples, lr=0.1, weight_decay=0.5).step()
    np.testing.assert_allclose(triples[0][1], 2.0 * (1 - 0.1 * 0.5))
    np.testing.assert_array_equal(triples[1][1], 2.0)
    np.testing.assert_array_equal(triples[2][1], 2.0)


def test_float32_stays_float32_and_tracks_float64():
    rng = np.random.default_rng(2)
    w64 = rng.standard_normal((8, 8))
    grads = [rng.standard_normal((8, 8)) for _ in range(3)]
    w32, g32 = w64.astype(np.float32), np.zeros((8, 8), np.float32)
    b32, gb32 = np.zeros(8, np.float32), np.zeros(8, np.float32)
    opt = AdamW([("a.weight", w32, g32), ("a.bias", b32, gb32)], lr=LR)
    for gi in grads:
        g32[...] = gi
        gb32[...] = gi[0]
        opt.step(lr=np.float64(LR))  # a float64 scalar lr must not upcast anything
    assert w32.dtype == b32.dtype == np.float32
    assert all(a.dtype == np.float32 for a in opt.m + opt.v)
    ref = reference_adamw(w64.astype(np.float32), [gi.astype(np.float32) for gi in grads], LR, WD, True)
    np.testing.assert_allclose(w32, ref, rtol=1e-5, atol=1e-6)


def test_mapping_input_and_model_triples():
    class FakeModel:
        def __init__(self, grad_names):
            self.p = {n: np.ones(2) for n in ("a.weight", "a.bias")}
            self.grad_names = grad_names

        def named_parameters(self):
            return iter(self.p.items())

        def named_grads(self):
            return ((n, np.zeros(2)) for n in self.grad_names)

    triples = triples_from_model(FakeModel(["a.weight", "a.bias"]))
    assert [t[0] for t in triples] == ["a.weight", "a.bias"]
    with pytest.raises(ValueError, match="only in grads: \\['b.weight'\\]"):
        triples_from_model(FakeModel(["a.weight", "b.weight"]))
    with pytest.raises(ValueError, match="different order"):
        triples_from_model(FakeModel(["a.bias", "a.weight"]))
    w, g = np.ones(2), np.full(2, 0.5)
    AdamW({"a.weight": (w, g)}, lr=0.1, weight_decay=0.0).step()
    np.testing.assert_allclose(w, 1 - 0.1 * 0.5 / (0.5 + EPS), rtol=1e-14)


def test_state_dict_round_trip_continues_identically(tmp_path):
    rng = np.random.default_rng(3)
    shapes = {"enc.dense.weight": (3, 4), "enc.dense.bias": (3,), "enc.LayerNorm.weight": (4,)}
    grads = [{n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()} for _ in range(6)]

    def build():
        ps = {n: np.random.default_rng(4).standard_normal(s).astype(np.float32) for n, s in shapes.items()}
        gs = {n: np.zeros(s, np.float32) for n, s in shapes.items()}
        return ps, gs, AdamW([(n, ps[n], gs[n]) for n in shapes], lr=1e-2, correct_bias=True)

    def run(ps, gs, opt, steps):
        for k in steps:
            for n in shapes:
                gs[n][...] = grads[k][n]
            opt.step(lr=linear_warmup_decay(k, 1e-2, 2, 6))

    ps, gs, opt = build()
    run(ps, gs, opt, range(3))
    saved_params = {n: p.copy() for n, p in ps.items()}
    state = opt.state_dict()
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    np.savez(tmp_path / "opt.npz", **arrays)
    run(ps, gs, opt, range(3, 6))
    assert state["step"] == 3 and not np.array_equal(state["m.enc.dense.weight"], opt.m[0])  # a copy

    ps2, gs2, opt2 = build()
    for n in shapes:
        ps2[n][...] = saved_params[n]
    with np.load(tmp_path / "opt.npz") as f:
        loaded = {k: f[k] for k in f.files}
    opt2.load_state_dict({"step": state["step"], **loaded})
    run(ps2, gs2, opt2, range(3, 6))
    for n in shapes:
        np.testing.assert_array_equal(ps2[n], ps[n])
    assert opt2.t == opt.t == 6


def test_load_state_dict_reports_every_mismatch():
    w, g = np.zeros((2, 3)), np.zeros((2, 3))
    opt = AdamW([("x.weight", w, g)])
    state = opt.state_dict()
    state["m.x.weight"] = np.zeros((3, 2))
    del state["v.x.weight"]
    state["m.y.weight"] = np.zeros(1)
    with pytest.raises(ValueError) as err:
        opt.load_state_dict(state)
    msg = str(err.value)
    assert "missing 'v.x.weight'" in msg and "unexpected 'm.y.weight'" in msg and "(3, 2)" in msg
    with pytest.raises(ValueError, match="non-negative integer"):
        opt.load_state_dict({**opt.state_dict(), "step": -1})


def test_bad_inputs_raise_clear_errors():
    w = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"grad shape \(3, 2\) does not match param shape \(2, 3\)"):
        AdamW([("x.weight", w, np.zeros((3, 2)))])
    with pytest.raises(ValueError, match="dtype"):
        AdamW([("x.weight", w, np.zeros((2, 3), np.float32))])
    with pytest.raises(ValueError, match="lr must be"):
        AdamW([("x.weight", w, np.zeros((2, 3)))], lr=-1e-3)
    opt = AdamW([("x.weight", w, np.zeros((2, 3)))])
    for bad in (-1e-4, float("nan")):
        with pytest.raises(ValueError, match="lr must be"):
            opt.step(lr=bad)
    assert opt.t == 0  # a refused step changes nothing
    with pytest.raises(ValueError, match="given twice"):
        AdamW([("x.weight", w, np.zeros((2, 3))), ("x.weight", np.zeros(1), np.zeros(1))])
    with pytest.raises(ValueError, match="share memory"):
        AdamW([("a.weight", w, np.zeros((2, 3))), ("b.weight", w[0], np.zeros(3))])
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        AdamW([("x.weight", w, np.zeros((2, 3)))], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="no parameters"):
        AdamW([])


def test_clip_grad_norm_below_and_above():
    g1, g2 = np.array([3.0, 0.0]), np.array([[0.0], [4.0]])  # global norm 5
    norm = clip_grad_norm([g1, g2], max_norm=10.0)
    assert norm == 5.0
    np.testing.assert_array_equal(g1, [3.0, 0.0])  # untouched below the threshold
    norm = clip_grad_norm([g1, g2], max_norm=1.0)
    assert norm == 5.0  # the norm before clipping
    np.testing.assert_allclose(g1, [3.0 / (5.0 + 1e-6), 0.0], rtol=1e-15)
    np.testing.assert_allclose(g2[1, 0], 4.0 / (5.0 + 1e-6), rtol=1e-15)
    assert clip_grad_norm([g1, g2], max_norm=1e3) == pytest.approx(5.0 / (5.0 + 1e-6), rel=1e-14)


def test_clip_grad_norm_accumulates_in_float64():
    rng = np.random.default_rng(5)
    g = rng.standard_normal(300_000).astype(np.float32)  # more than one chunk
    exact = math.sqrt(float(np.sum(g.astype(np.float64) ** 2)))
    norm = clip_grad_norm([g, np.zeros(0, np.float32)], max_norm=1e9)
    assert norm == pytest.approx(exact, rel=1e-12)
    clip_grad_norm([g], max_norm=1.0)
    assert g.dtype == np.float32
    assert math.sqrt(float(np.sum(g.astype(np.float64) ** 2))) == pytest.approx(1.0, rel=1e-5)


def test_clip_grad_norm_non_finite_left_alone():
    g = np.array([1.0, np.inf, 2.0])
    h = np.array([5.0, 5.0])
    assert clip_grad_norm([g, h], 1.0) == math.inf
    np.testing.assert_array_equal(h, [5.0, 5.0])
    assert math.isnan(clip_grad_norm([np.array([np.nan]), h], 1.0))
    np.testing.assert_array_equal(h, [5.0, 5.0])
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm([h], 0.0)


def test_schedule_key_steps():
    lr, warm, total = 1e-4, 10, 110
    f = lambda s: linear_warmup_decay(s, lr, warm, total)  # noqa: E731
    assert f(0) == 0.0                       # first update: lr 0 (as HF)
    assert f(5) == pytest.approx(0.5 * lr)   # mid-warmup
    assert f(10) == pytest.approx(lr)        # warmup end: the peak
    assert f(60) == pytest.approx(0.5 * lr)  # mid-decay
    assert f(110) == 0.0 and f(500) == 0.0   # end and beyond
    assert f(9) < f(10) > f(11)
    assert linear_warmup_decay(0, lr, 0, 4) == lr  # no warmup: starts at the peak
    assert linear_warmup_decay(4, lr, 4, 4) == 0.0  # warmup == total


def test_schedule_bad_arguments():
    with pytest.raises(ValueError, match=r"warmup_steps \(20\) must not exceed total_steps \(10\)"):
        linear_warmup_decay(0, 1e-4, 20, 10)
    with pytest.raises(ValueError, match="step must be"):
        linear_warmup_decay(-1, 1e-4, 2, 10)
    with pytest.raises(ValueError, match="base_lr"):
        linear_warmup_decay(0, -1e-4, 2, 10)
    with pytest.raises(ValueError, match="total_steps must be positive"):
        linear_warmup_decay(0, 1e-4, 0, 0)
    with pytest.raises(ValueError, match="warmup_steps must be"):
        linear_warmup_decay(0, 1e-4, 2.5, 10)


def test_matches_torch_adamw():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    w, g = make_param(rng, (6, 5))
    grads = [rng.standard_normal(w.shape) for _ in range(3)]
    tw = torch.tensor(w.copy(), dtype=torch.float64, requires_grad=True)
    topt = torch.optim.AdamW([tw], lr=LR, betas=(B1, B2), eps=EPS, weight_decay=WD)
    opt = AdamW([("x.weight", w, g)], lr=LR, betas=(B1, B2), eps=EPS, weight_decay=WD, correct_bias=True)
    for gi in grads:
        g[...] = gi
        opt.step()
        tw.grad = torch.tensor(gi, dtype=torch.float64)
        topt.step()
    np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-12, atol=1e-15)
