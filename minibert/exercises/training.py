"""Exercises on training and data (lessons 06, 07, 08, 12): AdamW's step, Mixout's forward and
backward, the WordPiece tokenizer, and BERT's 80/10/10 masking."""

from __future__ import annotations

import random

import numpy as np

from minibert.exercises.base import Exercise
from minibert.exercises.grader import (
    Report,
    call,
    compare,
    fail_with_diagnosis,
    gradient_check,
    weighted_sum,
    unpack,
)
from minibert.finetuning.mixout import reference_weight_gradient
from minibert.optim import AdamW
from minibert.pretraining.data import DataConfig, InstanceMaker
from minibert.tokenization import WordpieceTokenizer

# -------------------------------------------------------------------------------------------- AdamW
ADAMW = '''
import math

import numpy as np


def adamw_step(param, grad, m, v, t, lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
               correct_bias=True):
    """One AdamW update of one parameter, IN PLACE (param, m and v are updated; nothing is
    returned).

    t is the number of this update: 1 for the first. m and v start at zero.
        m = b1 m + (1 - b1) g          v = b2 v + (1 - b2) g^2
        correct_bias:     m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)
        otherwise:        m_hat = m,               v_hat = v
        param = param - lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * param)
    The decay is decoupled: it is not part of g, so it never enters m or v, and it uses the param
    from before this step. Update arrays in place (param -= ..., m *= ...): the caller holds them.
    """
    raise NotImplementedError
'''


def _adamw_variant(param, grads, lr, wd, correct_bias, mistake):
    """The parameter after len(grads) steps of a deliberately wrong AdamW (for the diagnosis)."""
    p = param.copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    b1, b2, eps = 0.9, 0.999, 1e-6
    for t, g in enumerate(grads, 1):
        if mistake == "l2":
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mh, vh = m, v
        if correct_bias and mistake != "no_bias_correction":
            mh = m / (1 - b1**t)
            vh = v / (1 - b2**t) if mistake != "m_only" else v
        denom = np.sqrt(vh + eps) if mistake == "eps_inside" else np.sqrt(vh) + eps
        update = mh / denom
        if mistake == "decay_after":
            p = p - lr * update
            p = p - lr * wd * p
        elif mistake == "l2":
            p = p - lr * update
        else:
            p = p - lr * (update + wd * p)
    return p


def _grade_adamw(m, r: Report):
    rng = np.random.default_rng(9)
    lr, wd = 0.01, 0.1
    for correct_bias in (True, False):
        param0 = rng.standard_normal((4, 3))
        grads = [rng.standard_normal((4, 3)) * 10 ** rng.uniform(-3, 0) for _ in range(5)]
        p, mm, vv = param0.copy(), np.zeros_like(param0), np.zeros_like(param0)
        ref_p, ref_g = param0.copy(), np.zeros_like(param0)
        opt = AdamW([("weight", ref_p, ref_g)], lr=lr, weight_decay=wd, correct_bias=correct_bias)
        label = (
            "with bias correction" if correct_bias else "without bias correction (BERT's original)"
        )
        for t, g in enumerate(grads, 1):
            result = call(
                m, "adamw_step", p, g.copy(), mm, vv, t, lr, (0.9, 0.999), 1e-6, wd, correct_bias
            )
            if result is not None and not isinstance(result, tuple) and np.shape(result) == p.shape:
                raise_note = ("adamw_step returned an array: update param in place (param -= ...), "
                              "return nothing")
                r.add(f"{label}: step {t} updates param in place", False, raise_note)
                return
            ref_g[...] = g
            opt.step()
            if not compare(r, f"{label}: param after step {t}", "param", p, ref_p):
                def variant(mistake, correct_bias=correct_bias, t=t):
                    return _adamw_variant(param0, grads[:t], lr, wd, correct_bias, mistake)

                fail_with_diagnosis(r, p, {
                    "bias correction missing: divide m by (1 - b1^t) and v by (1 - b2^t)":
                        lambda: variant("no_bias_correction"),
                    "bias correction applied to m only, not to v":
                        lambda: variant("m_only"),
                    "weight decay added to the gradient (L2, Adam) instead of decoupled (AdamW)":
                        lambda: variant("l2"),
                    "eps inside the square root (sqrt(v_hat + eps)); AdamW adds it to sqrt(v_hat)":
                        lambda: variant("eps_inside"),
                    "the decay uses the already-updated param; decay the param from before the "
                    "step":
                        lambda: variant("decay_after"),
                    "bias correction applied although correct_bias=False":
                        lambda: variant(None, correct_bias=True)})
                break
        else:
            compare(r, f"{label}: first moment m after 5 steps", "m", mm, opt.m[0])
            compare(r, f"{label}: second moment v after 5 steps", "v", vv, opt.v[0])


# ------------------------------------------------------------------------------------------- Mixout
MIXOUT = '''
import numpy as np


def mixout_forward(x, weight, bias, target, p, keep):
    """Mixout on a linear layer: y = x w_tilde^T + b with
        w_tilde = u + (m / (1 - p)) * (w - u)       m = keep (in,), one 0/1 value per INPUT column
    x (N, in); weight w and target u (out, in); bias (out,); p in [0, 1); keep (in,) booleans
    (drawn by the caller, so the grader can replay them). A dropped column is the target's column,
    not zero.
    Returns (y (N, out), cache)."""
    raise NotImplementedError


def mixout_backward(dy, cache, dweight, dbias):
    """Return dx (N, in); ADD (+=) into dweight (out, in) and dbias (out,).
    Starting point: y = x w_tilde^T + b is an ordinary linear layer in w_tilde; then the chain rule
    through w_tilde_ij = u_ij + (m_j / (1 - p)) (w_ij - u_ij). The target u is a constant."""
    raise NotImplementedError
'''


def _mixed(w, u, keep, p, rescale=True):
    scale = keep / (1 - p) if rescale else keep.astype(np.float64)
    return u + scale * (w - u)


def _grade_mixout(m, r: Report):
    rng = np.random.default_rng(10)
    N, IN, OUT, p = 7, 6, 4, 0.4
    x, w, u, b = (rng.standard_normal(s) for s in ((N, IN), (OUT, IN), (OUT, IN), (OUT,)))
    keep = np.array([True, False, True, True, False, True])
    y, cache = unpack(call(m, "mixout_forward", x, w, b, u, p, keep), 2, "mixout_forward")
    w_tilde = _mixed(w, u, keep, p)
    if not compare(
        r,
        "forward, x (7, 6), W (4, 6), p = 0.4, columns 1 and 4 dropped",
        "y",
        y,
        x @ w_tilde.T + b,
    ):
        fail_with_diagnosis(r, y, {
            "not rescaled: kept columns must be u + (w - u) / (1 - p), so that E[w_tilde] = w":
                lambda: x @ _mixed(w, u, keep, p, False).T + b,
            "dropped columns become 0 (dropout), not the target's columns":
                lambda: x @ (keep / (1 - p) * w).T + b})
    dy = rng.standard_normal((N, OUT))
    dw, db = np.zeros_like(w), np.zeros_like(b)
    dx = call(m, "mixout_backward", dy, cache, dw, db)
    dw_tilde = dy.T @ x
    compare(r, "backward: dx = dy w_tilde (the weights the forward used)", "dx", dx, dy @ w_tilde)
    if not compare(
        r, "backward: dW = (dy^T x) * m / (1 - p)", "dweight", dw, dw_tilde * keep / (1 - p)
    ):
        fail_with_diagnosis(r, dw, {
            "the reference implementation's gradient: the 1/(1 - p) of the forward is missing "
            "from dW":
                lambda: reference_weight_gradient(dw_tilde, keep),
            "the mask is missing from dW: a dropped column's weight did not reach the output":
                lambda: dw_tilde})
    compare(r, "backward: db (the bias is not mixed)", "dbias", db, dy.sum(axis=0))
    gradient_check(r, "gradients agree with finite differences (fixed mask)",
                   weighted_sum(m, "mixout_forward", dy, x, w, b, u, p, keep),
                   {"x": x, "weight": w, "bias": b},
                   {"x": dx, "weight": dw, "bias": db})
    y0, _ = unpack(call(m, "mixout_forward", x, u.copy(), b, u, p, keep), 2, "mixout_forward")
    compare(
        r, "with w = u the layer is the pretrained one, whatever the mask", "y", y0, x @ u.T + b
    )


# ---------------------------------------------------------------------------------------- WordPiece
WORDPIECE = '''
def wordpiece_tokenize(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
    """Cut one word (no spaces) into WordPiece tokens, greedily taking the LONGEST piece that is in
    ``vocab`` (a set of strings) at each position. A piece that does not start the word carries the
    "##" prefix. If at some position no piece fits, the WHOLE word is [unk_token]; a word longer
    than max_input_chars_per_word is [unk_token] without trying. Returns a list of strings.

        wordpiece_tokenize("unaffable", {"un", "##aff", "##able"}) == ["un", "##aff", "##able"]
    """
    raise NotImplementedError
'''

_VOCAB = {
    "un",
    "##aff",
    "##able",
    "a",
    "##a",
    "play",
    "##ing",
    "##s",
    "runn",
    "##er",
    "p",
    "##l",
    "##ay",
    "##i",
    "##n",
    "##g",
    "the",
    "cat",
    "ca",
    "##t",
    "##ts",
    "x",
    "##xy",
}
_WORDS = [
    "unaffable",
    "playing",
    "plays",
    "cats",
    "cat",
    "the",
    "runner",
    "runners",
    "unplayable",
    "dog",
    "catz",
    "a",
    "aaa",
    "xxy",
    "play" * 30,
]


def _wp_variant(word, vocab, mistake, limit=100):
    if len(word) > limit and mistake != "long":
        return ["[UNK]"]
    pieces, start = [], 0
    while start < len(word):
        prefix = "" if start == 0 or mistake == "no_prefix" else "##"
        ends = (
            range(start + 1, len(word) + 1)
            if mistake == "shortest"
            else range(len(word), start, -1)
        )
        for end in ends:
            if prefix + word[start:end] in vocab:
                break
        else:
            if mistake == "partial":
                return pieces + ["[UNK]"]
            return ["[UNK]"]
        pieces.append(prefix + word[start:end])
        start = end
    return pieces


def _grade_wordpiece(m, r: Report):
    reference = WordpieceTokenizer(_VOCAB, max_input_chars_per_word=100)
    got = {}
    for word in _WORDS:
        pieces = call(m, "wordpiece_tokenize", word, set(_VOCAB), "[UNK]", 100)
        got[word] = list(pieces) if isinstance(pieces, (list, tuple)) else pieces
    wrong = [w for w in _WORDS if got[w] != list(reference.tokenize_word(w))]
    shown = lambda w: w if len(w) < 20 else w[:12] + f"... ({len(w)} characters)"
    detail = "; ".join(
        f"{shown(w)!r}: got {got[w] if len(str(got[w])) < 60 else str(got[w])[:60] + '...'}, "
        f"expected {list(reference.tokenize_word(w))}"
        for w in wrong[:3]
    )
    r.add(
        f"{len(_WORDS)} words against minibert's WordpieceTokenizer",
        not wrong,
        f"{len(wrong)} of {len(_WORDS)} words differ: {detail}",
    )
    if wrong:
        for mistake, text in (
            ("shortest", "shortest match first: WordPiece takes the LONGEST piece that fits"),
            ("partial", "only the part that failed became [UNK]; BERT makes the WHOLE word [UNK]"),
            ("no_prefix", "the '##' prefix is missing on pieces inside a word"),
            ("long", "words longer than max_input_chars_per_word must be [UNK]"),
        ):
            if all(got[w] == _wp_variant(w, _VOCAB, mistake) for w in _WORDS):
                r.checks[-1].diagnosis = text
                break
    short = call(m, "wordpiece_tokenize", "unaffable", set(_VOCAB), "[UNK]", 8)
    r.add(
        "a word longer than max_input_chars_per_word (9 > 8) is [UNK]",
        list(short) == ["[UNK]"],
        f"'unaffable' with max_input_chars_per_word=8 gave {short}, expected ['[UNK]']",
    )
    other = call(m, "wordpiece_tokenize", "dog", set(_VOCAB), "<unk>", 100)
    r.add(
        "the unk_token argument is used",
        list(other) == ["<unk>"],
        f"'dog' with unk_token='<unk>' gave {other}, expected ['<unk>']",
    )


# ----------------------------------------------------------------------------------------- 80/10/10
MASKING = '''
import random


def mask_tokens(ids, rng, vocab_size, mask_id, special_ids, num_to_predict):
    """BERT's masked-LM corruption of one sequence.

    ids: list of token ids ([CLS] A [SEP] B [SEP]); rng: a random.Random (draw everything from it);
    special_ids: ids never chosen ([CLS], [SEP]); num_to_predict: how many positions to choose.
    Choose num_to_predict positions uniformly among the non-special ones. At each chosen position:
        with probability 0.8 the token becomes mask_id,
        with probability 0.1 it stays itself,
        with probability 0.1 it becomes a random id in [0, vocab_size).
    The model must predict the ORIGINAL token at every chosen position, and only there.
    Returns (output ids, positions in increasing order, the original ids at those positions).
    """
    raise NotImplementedError
'''


def _grade_masking(m, r: Report):
    V, MASK, CLS, SEP = 500, 4, 2, 3
    base = random.Random(0)
    ids = (
        [CLS]
        + [base.randint(10, V - 1) for _ in range(40)]
        + [SEP]
        + [base.randint(10, V - 1) for _ in range(25)]
    )
    ids.append(SEP)
    special = {CLS, SEP}
    n_pred = 10
    counts = {"mask": 0, "same": 0, "other": 0}
    structural = None
    for seed in range(400):
        out = call(m, "mask_tokens", list(ids), random.Random(seed), V, MASK, special, n_pred)
        output, positions, labels = (
            list(x)
            for x in unpack(tuple(out) if isinstance(out, (tuple, list)) else out, 3, "mask_tokens")
        )
        if structural is None:
            structural = _masking_structure(ids, output, positions, labels, n_pred, special, MASK)
            if structural:
                r.add(
                    "positions, labels and the untouched tokens",
                    False,
                    structural[0],
                    structural[1],
                )
                return
        for pos in positions:
            if output[pos] == MASK:
                counts["mask"] += 1
            elif output[pos] == ids[pos]:
                counts["same"] += 1
            else:
                counts["other"] += 1
    r.add("positions, labels and the untouched tokens", True)
    total = sum(counts.values())
    share = {k: c / total for k, c in counts.items()}
    # 4,000 choices: the standard error of a 10% share is 0.5%; a random token equals the original
    # 1/V of the time, which moves 0.02% from "other" to "same".
    ok = (
        abs(share["mask"] - 0.8) < 0.025
        and abs(share["same"] - 0.1) < 0.02
        and abs(share["other"] - 0.1) < 0.02
    )
    detail = (
        f"of {total} chosen positions: [MASK] {share['mask']:.3f}, unchanged {share['same']:.3f}, "
        "random "
        f"{share['other']:.3f}; expected 0.8, 0.1, 0.1 (+- 0.02)"
    )
    diagnosis = None
    if not ok:
        if share["mask"] > 0.97:
            diagnosis = (
                "every chosen token became [MASK]: 10% must stay and 10% become random tokens"
            )
        elif abs(share["mask"] - 0.8) < 0.025 and share["same"] < 0.02:
            diagnosis = ("the 20% that are not [MASK] all became random tokens: half of them must "
                         "stay as they are")
        elif abs(share["mask"] - 0.8) < 0.025 and share["other"] < 0.02:
            diagnosis = (
                "the 20% that are not [MASK] all stayed: half of them must become random tokens"
            )
    r.add("80% [MASK], 10% unchanged, 10% random (400 draws)", ok, detail, diagnosis)
    reference = InstanceMaker.__new__(InstanceMaker)
    reference.config = DataConfig(max_predictions_per_seq=n_pred, masked_lm_prob=n_pred / len(ids))
    reference.cls_id, reference.sep_id, reference.mask_id, reference.vocab_size = CLS, SEP, MASK, V
    same_draws = all(
        list(
            map(list, call(m, "mask_tokens", list(ids), random.Random(s), V, MASK, special, n_pred))
        )
        == list(map(list, reference.mask(list(ids), random.Random(s))))
        for s in range(5)
    )
    print_note = (
        "the same draws as minibert.pretraining.data.InstanceMaker.mask"
        if same_draws
        else "not the same draws as minibert's InstanceMaker.mask, which is fine: the order of the "
             "draws "
        "is a choice (the package shuffles the candidates, then draws 0.8 / 0.5 per position)"
    )
    r.add(f"(note) {print_note}", True)


def _masking_structure(ids, output, positions, labels, n_pred, special, mask_id):
    """(message, diagnosis) for the first structural fault, or None."""
    if len(output) != len(ids):
        return f"the output has {len(output)} ids, the input {len(ids)}", None
    if len(positions) != len(labels):
        return f"{len(positions)} positions but {len(labels)} labels", None
    changed = [i for i in range(len(ids)) if output[i] != ids[i]]
    if len(positions) > n_pred:
        extra = "; it must hold only the chosen positions" if len(positions) == len(ids) else ""
        return (
            f"{len(positions)} positions for num_to_predict = {n_pred}{extra}",
            (
                "labels of unmasked tokens counted: the loss must only see the chosen positions"
                if len(positions) >= len(ids) - len(special)
                else None
            ),
        )
    if len(positions) < n_pred:
        return f"{len(positions)} positions, expected num_to_predict = {n_pred}", None
    if list(positions) != sorted(set(positions)):
        return f"positions must be distinct and increasing, got {list(positions)[:12]}", None
    bad = [p for p in positions if ids[p] in special]
    if bad:
        return (
            f"position {bad[0]} holds a special token ({ids[bad[0]]})",
            "[CLS] and [SEP] were chosen: they are never masked",
        )
    outside = [i for i in changed if i not in set(positions)]
    if outside:
        return f"position {outside[0]} changed but is not among the positions", None
    if list(labels) != [ids[p] for p in positions]:
        wrong = next(i for i, p in enumerate(positions) if labels[i] != ids[p])
        diagnosis = (
            "the labels are the corrupted tokens; they must be the ORIGINAL ones"
            if list(labels) == [output[p] for p in positions]
            else None
        )
        return (
            f"label {wrong} (position {positions[wrong]}) is {labels[wrong]}, the original token "
            "is "
            f"{ids[positions[wrong]]}"
        ), diagnosis
    return None


EXERCISES = [
    Exercise(
        "adamw",
        "AdamW's step, with and without bias correction",
        "08",
        ADAMW,
        (
            "Update m and v in place first: m *= b1; m += (1 - b1) * grad (and the same for v with "
            "grad**2).",
            "With correct_bias, m_hat = m / (1 - b1**t) and v_hat = v / (1 - b2**t); eps goes "
            "outside the "
            "square root: m_hat / (np.sqrt(v_hat) + eps).",
            "Decay from the old param, then the Adam step: param *= 1 - lr * weight_decay; param "
            "-= lr * "
            "m_hat / (np.sqrt(v_hat) + eps).",
        ),
        _grade_adamw,
    ),
    Exercise(
        "mixout",
        "Mixout's forward and backward (with a given mask)",
        "12",
        MIXOUT,
        (
            "scale = keep / (1 - p) has shape (in,), so it broadcasts over the rows of (out, in): "
            "w_tilde = u + scale * (w - u). Cache x, w_tilde and scale.",
            "As a linear layer in w_tilde: dx = dy w_tilde, dW_tilde = dy^T x, db = sum of dy over "
            "rows.",
            "d w_tilde_ij / d w_ij = scale_j: dweight += (dy.T @ x) * scale. Forgetting the 1/(1 - "
            "p) is the "
            "bug of the paper's reference code.",
        ),
        _grade_mixout,
    ),
    Exercise(
        "wordpiece",
        "the WordPiece tokenizer (greedy longest match)",
        "06",
        WORDPIECE,
        (
            "Loop with start = 0; at each start try end = len(word), len(word) - 1, ... down to "
            "start + 1.",
            "The candidate is word[start:end], with '##' in front when start > 0; take the first "
            "that is in "
            "vocab, append it, set start = end.",
            "If no end works, return [unk_token] for the whole word (not the pieces so far). Check "
            "the length "
            "limit before anything else.",
        ),
        _grade_wordpiece,
    ),
    Exercise(
        "masking",
        "BERT's 80/10/10 masking of one sequence",
        "07",
        MASKING,
        (
            "Candidates: every index whose id is not special; rng.shuffle them and take the first "
            "num_to_predict.",
            "For each chosen position: if rng.random() < 0.8 -> mask_id; else if rng.random() < "
            "0.5 keep it; "
            "else rng.randint(0, vocab_size - 1).",
            "Labels are ids[p] from the ORIGINAL list, for the sorted chosen positions only; copy "
            "ids before "
            "changing it.",
        ),
        _grade_masking,
    ),
]
