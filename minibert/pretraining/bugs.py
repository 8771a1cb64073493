"""The bug zoo: real BERT bugs, planted one at a time, and the diagnostic that finds each.

Every bug here was reported against some BERT implementation ("NSP accuracy stuck at 50%", "MLM loss
plateaus", "results change with the batch size", "eval numbers differ run to run"). None of them is
a flag inside the model: a bug is planted from outside, by a context manager that wraps or replaces
one function, method or instance attribute and puts everything back on exit:

    with bugs.planted("no_sqrt_scale"):            # every model built or run inside has the bug
        ...
    with bugs.planted("dropout_at_eval", model):   # or just this model instance
        ...

(``minibert pretrain --bug NAME`` runs a whole pretraining under one.) The patches touch only public
names: the kernel switch's pairs (``kernels.attention_forward`` and its unpadded twin,
``kernels.cross_entropy_forward``), the data pipeline's ``InstanceMaker`` methods, ``AdamW``, and model
instances through their Hugging Face attribute paths (``embeddings.position_embeddings``,
``embeddings.word_embeddings``, ``dropout``).

Each bug has a diagnostic, a function that returns a ``Diagnosis`` (passed or not, and the numbers):
the diagnostic fails with the bug planted and passes without it (``tests/test_bugs.py``). Lesson 16
shows each bug's symptom and its diagnostic.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path
from typing import Callable

import numpy as np

from minibert import kernels
from minibert.config import BertConfig
from minibert.models import BertForPreTraining, BertModel
from minibert.nn import Dropout
from minibert.optim import AdamW
from minibert.pretraining.data import InstanceMaker

# Positions restart every RESTART tokens under the "position_ids_restart" bug.
RESTART = 16


# ----------------------------------------------------------------------------------------- patching
class _Patches:
    """Attribute replacements, undone in reverse order. An instance attribute that shadowed nothing
    (a method looked up on the class) is deleted again, so the instance is exactly as before."""

    def __init__(self):
        self._undo: list[Callable[[], None]] = []

    def set(self, obj, name: str, value) -> None:
        own = name in vars(obj)
        old = vars(obj)[name] if own else None
        setattr(obj, name, value)
        self._undo.append(lambda: setattr(obj, name, old) if own else delattr(obj, name))

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()


def _bert_of(model) -> BertModel:
    if isinstance(model, BertModel):
        return model
    bert = getattr(model, "bert", None)
    if not isinstance(bert, BertModel):
        raise ValueError(
            f"a bug planted in a model needs a BertModel or a model with .bert, got "
            f"{type(model).__name__}"
        )
    return bert


# ----------------------------------------------------------------------------------------- the bugs
def _nsp_ignore_index(patches: _Patches, model) -> None:
    """cross_entropy(..., ignore_index=0) reused for NSP: [PAD] is id 0, but so is the label
    IsNext."""
    original = kernels.cross_entropy_forward

    def cross_entropy_forward(logits, targets, weights=None):
        if logits.shape[1] == 2 and weights is None:  # the next-sentence head (MLM passes weights)
            weights = (targets != 0).astype(logits.dtype)  # rows with label 0 are "ignored"
        return original(logits, targets, weights)

    patches.set(kernels, "cross_entropy_forward", cross_entropy_forward)


class _OtherIsAlwaysOne:
    """documents as instances_from_document sees them under the bug: A's own document where it asks
    for A's, and one fixed document wherever it asks for "a random other document"."""

    def __init__(self, documents, index):
        self.documents, self.index = documents, index
        self.fixed = 1 if index == 0 else 0

    def __len__(self):
        return len(self.documents)

    def __getitem__(self, i):
        return self.documents[i if i == self.index else self.fixed]


def _nsp_same_document(patches: _Patches, model) -> None:
    """Every random B (label 1) is drawn from one and the same document (a generator re-seeded per
    call, a cached index): remembering that document's sentences solves NSP without reading A."""
    original = InstanceMaker.instances_from_document

    def instances_from_document(self, documents, index, rng):
        return original(self, _OtherIsAlwaysOne(documents, index), index, rng)

    patches.set(InstanceMaker, "instances_from_document", instances_from_document)


def _mask_wrong_axis(patches: _Patches, model) -> None:
    """The padding mask added to the padded QUERIES' rows of the scores instead of the padded KEYS'
    columns. A constant added to a whole row changes no softmax probability, so this is exactly no
    mask at all: real tokens attend to padding, and outputs depend on how much padding a batch has.
    """
    original = kernels.attention_forward

    def attention_forward(q, k, v, mask_bias, *args, **kwargs):
        return original(
            q, k, v, None if mask_bias is None else np.zeros_like(mask_bias), *args, **kwargs
        )

    patches.set(kernels, "attention_forward", attention_forward)
    # Only the padded computation has a mask to get wrong (the unpadded one attends within each
    # sequence).
    patches.set(BertModel, "unpad", False)


def _no_sqrt_scale(patches: _Patches, model) -> None:
    """Scores q k^T without the 1/sqrt(D): feeding q * sqrt(D) to the correct pair gives exactly
    that, and the chain rule through q' = q sqrt(D) multiplies dq by sqrt(D). Forward and backward
    stay consistent, so a gradient check passes; only a comparison with the formula (a parity check)
    fails."""
    forward, backward = kernels.attention_forward, kernels.attention_backward
    unpadded_forward, unpadded_backward = kernels.unpadded_attention_forward, kernels.unpadded_attention_backward

    def attention_forward(q, k, v, mask_bias, *args, **kwargs):
        return forward(q * q.dtype.type(math.sqrt(q.shape[-1])), k, v, mask_bias, *args, **kwargs)

    def attention_backward(dcontext, cache):
        dq, dk, dv = backward(dcontext, cache)
        return dq * dq.dtype.type(math.sqrt(dq.shape[-1])), dk, dv

    def unpadded_attention_forward(q, k, v, groups, num_heads, *args, **kwargs):    # q (N, H): D = H / A
        context, probs, cache = unpadded_forward(q * q.dtype.type(math.sqrt(q.shape[-1] // num_heads)), k, v,
                                                 groups, num_heads, *args, **kwargs)
        return context, probs, (num_heads, cache)

    def unpadded_attention_backward(dcontext, cache):
        num_heads, cache = cache
        dq, dk, dv = unpadded_backward(dcontext, cache)
        return dq * dq.dtype.type(math.sqrt(dq.shape[-1] // num_heads)), dk, dv

    patches.set(kernels, "attention_forward", attention_forward)
    patches.set(kernels, "attention_backward", attention_backward)
    patches.set(kernels, "unpadded_attention_forward", unpadded_attention_forward)
    patches.set(kernels, "unpadded_attention_backward", unpadded_attention_backward)


def _no_bias_correction(patches: _Patches, model) -> None:
    """AdamW without bias correction although it was asked for (BERT's original AdamWeightDecay, or
    a hand-written Adam that forgets the 1/(1 - b^t)): early steps are up to 3.2x too large."""
    original = AdamW.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.correct_bias = False

    patches.set(AdamW, "__init__", __init__)


def _mlm_unmasked_labels(patches: _Patches, model) -> None:
    """The 80/10/10 corruption is applied at the chosen positions, but the predictions (positions
    and labels) are drawn again, independently, over all tokens: most labels sit on tokens the model
    can see, so it learns to copy its input, and the [MASK]ed tokens mostly carry no label."""
    original = InstanceMaker.mask

    def mask(self, ids, rng):
        output, positions, _ = original(self, ids, rng)
        candidates = [i for i, t in enumerate(ids) if t != self.cls_id and t != self.sep_id]
        picked = sorted(rng.sample(candidates, len(positions)))
        return output, picked, [ids[i] for i in picked]

    patches.set(InstanceMaker, "mask", mask)


def _position_ids_restart(patches: _Patches, model) -> None:
    """Position ids that restart every RESTART tokens (a counter kept per chunk): tokens t and t +
    16 get the same position embedding, and the model cannot tell them apart by position."""
    embedding = _bert_of(model).embeddings.position_embeddings
    original = embedding.forward
    patches.set(embedding, "forward", lambda ids: original(np.asarray(ids) % RESTART))


def _tied_by_assignment(patches: _Patches, model) -> None:
    """The word-embedding lookup's backward writes its gradient with '=' instead of '+=': the
    decoder's share of the tied matrix's gradient, added first, is overwritten."""
    embedding = _bert_of(model).embeddings.word_embeddings
    original = embedding.backward

    def backward(dy):
        embedding.weight.grad[...] = 0
        return original(dy)

    patches.set(embedding, "backward", backward)


def _dropout_at_eval(patches: _Patches, model) -> None:
    """eval() forgotten by the dropout: every module that draws dropout masks keeps drawing them."""
    for module in _bert_of(model).modules():
        if isinstance(module, Dropout) or isinstance(getattr(module, "dropout", None), Dropout):
            original = module.forward

            def forward(*args, _module=module, _original=original, **kwargs):
                was = _module.training
                _module.training = True
                try:
                    return _original(*args, **kwargs)
                finally:
                    _module.training = was

            patches.set(module, "forward", forward)


@dataclasses.dataclass(frozen=True)
class Bug:
    name: str
    title: str
    # "model" (a model instance), "data" (instance creation), "loss", "optimizer", "attention"
    where: str
    symptom: str
    diagnostic: str  # the name of the diagnostic in DIAGNOSTICS that finds it
    plant: Callable


BUGS = {
    b.name: b
    for b in [
        Bug(
            "nsp_ignore_index",
            "an ignore_index=0 (meant for [PAD]) that also swallows NSP label 0",
            "loss",
            "the NSP loss falls towards 0 while NSP accuracy stays at the share of label 1 (about "
            "50%)",
            "loss_at_init",
            _nsp_ignore_index,
        ),
        Bug(
            "nsp_same_document",
            "NSP trivially solvable: every random B taken from the same document",
            "data",
            "NSP accuracy near 100% within a few hundred steps on the training data, near chance "
            "on honest pairs",
            "nsp_shortcut_probe",
            _nsp_same_document,
        ),
        Bug(
            "mask_wrong_axis",
            "the padding mask applied over the queries instead of the keys",
            "attention",
            "outputs (and the loss) change with the amount of padding in a batch; evaluation "
            "depends on batch size",
            "padding_parity",
            _mask_wrong_axis,
        ),
        Bug(
            "no_sqrt_scale",
            "attention scores without the 1/sqrt(D) scale",
            "attention",
            "a checkpoint trained correctly loses accuracy; from scratch, attention saturates as "
            "weights grow",
            "attention_parity",
            _no_sqrt_scale,
        ),
        Bug(
            "no_bias_correction",
            "AdamW without bias correction (fine-tuning)",
            "optimizer",
            "first updates 3.2x (step 1) to 1.3x (step 1000) too large: more failed fine-tuning "
            "runs",
            "first_step_size",
            _no_bias_correction,
        ),
        Bug(
            "mlm_unmasked_labels",
            "wrong 80/10/10: labels of unmasked tokens counted",
            "data",
            "training MLM loss falls fast (copying visible tokens is easy), held-out masked "
            "accuracy stays low",
            "mask_share_probe",
            _mlm_unmasked_labels,
        ),
        Bug(
            "position_ids_restart",
            f"position ids that restart (every {RESTART} tokens)",
            "model",
            "a little worse MLM; word order beyond 16 tokens lost; a position probe fails",
            "position_probe",
            _position_ids_restart,
        ),
        Bug(
            "tied_by_assignment",
            "weight tying broken by '=' instead of '+='",
            "model",
            "the decoder's learning signal never reaches the embeddings: MLM learns more slowly",
            "gradient_check",
            _tied_by_assignment,
        ),
        Bug(
            "dropout_at_eval",
            "dropout left on at evaluation",
            "model",
            "evaluating the same checkpoint twice gives different numbers, and lower ones",
            "eval_determinism",
            _dropout_at_eval,
        ),
    ]
}


def get(name: str) -> Bug:
    if name not in BUGS:
        raise ValueError(f"unknown bug {name!r}; expected one of: {', '.join(BUGS)}")
    return BUGS[name]


@contextlib.contextmanager
def planted(name: str, model=None):
    """Plant bug ``name`` for the duration of the ``with`` block; everything is restored on exit.

    Bugs that live in a model (position ids, tying, dropout) go into ``model`` if given, else into
    every BertModel constructed inside the block (``BertModel.__init__`` is wrapped). The others
    patch the kernel switch, the data pipeline or the optimiser, and ``model`` is not needed."""
    bug = get(name)
    patches = _Patches()
    try:
        if bug.where == "model":
            if model is not None:
                bug.plant(patches, model)
            else:
                original = BertModel.__init__

                def __init__(self, *args, **kwargs):
                    original(self, *args, **kwargs)
                    bug.plant(patches, self)

                patches.set(BertModel, "__init__", __init__)
        else:
            bug.plant(patches, model)
        yield bug
    finally:
        patches.undo()


def data_folder(out: Path, name: str | None) -> Path:
    """Where ``minibert pretrain`` keeps prepared instances: a bug planted in the data pipeline gets
    its own folder, so buggy instances are never reused by a clean run (nor clean ones by a buggy
    run)."""
    if name and get(name).where == "data":
        return Path(out) / f"data-bug-{name}"
    return Path(out) / "data"


# -------------------------------------------------------------------------------------- diagnostics
@dataclasses.dataclass
class Diagnosis:
    name: str
    passed: bool
    detail: str
    values: dict = dataclasses.field(default_factory=dict)

    def __str__(self):
        return f"{self.name}: {'pass' if self.passed else 'FAIL'} -- {self.detail}"


def tiny_config(vocab_size: int = 64, **overrides) -> BertConfig:
    """A model small enough to train in a second, for the diagnostics and tests."""
    fields = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return BertConfig(**{**fields, **overrides})


def tiny_model(seed: int = 0, **overrides) -> BertForPreTraining:
    return BertForPreTraining(tiny_config(**overrides), np.random.default_rng(seed))


def random_batch(vocab_size: int, B: int = 8, T: int = 24, P: int = 4, seed: int = 0) -> dict:
    """A batch of random ids in BertForPreTraining.forward's names: ids from 5 up ([PAD]=0 ..
    [MASK]=4 in the bundled vocabulary), the last sequences padded, NSP labels half 0, half 1."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, (B, T))
    lengths = np.linspace(T, T // 2, B).astype(int)
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
    ids = ids * mask
    types = ((np.arange(T)[None, :] >= lengths[:, None] // 2) & (mask == 1)).astype(np.int64)
    positions = np.stack([np.sort(rng.choice(np.arange(1, n), P, replace=False)) for n in lengths])
    labels = ids[np.arange(B)[:, None], positions]
    return {
        "input_ids": ids,
        "token_type_ids": types,
        "attention_mask": mask,
        "masked_lm_positions": positions,
        "masked_lm_ids": labels,
        "masked_lm_weights": np.ones((B, P), np.float32),
        "next_sentence_labels": np.arange(B) % 2,
    }


def loss_at_init(model=None, batch=None) -> Diagnosis:
    """At initialisation every prediction is close to uniform, so the MLM loss is close to ln V and
    the NSP loss to ln 2, for EACH class of labels separately. A loss far below that before any
    training means some labels are not counted."""
    model = model or tiny_model()
    V = model.config.vocab_size
    batch = batch or random_batch(V)
    model.eval()
    values = {}
    for label in (0, 1):
        b = dict(batch, next_sentence_labels=np.full(len(batch["input_ids"]), label))
        out = model.forward(**b)
        values[f"nsp_loss_label{label}"] = float(out.nsp_loss)
        values["mlm_loss"] = float(out.mlm_loss)
    ok = (
        all(abs(values[f"nsp_loss_label{c}"] - math.log(2)) < 0.2 for c in (0, 1))
        and abs(values["mlm_loss"] - math.log(V)) < 0.5
    )
    return Diagnosis(
        "loss at initialisation",
        ok,
        f"MLM {values['mlm_loss']:.3f} (ln V = {math.log(V):.3f}); NSP with every label 0 "
        f"{values['nsp_loss_label0']:.3f}, with every label 1 {values['nsp_loss_label1']:.3f} "
        f"(ln 2 = {math.log(2):.3f})",
        values,
    )


def overfit_one_batch(model=None, batch=None, steps: int = 60, lr: float = 3e-3) -> Diagnosis:
    """Train on one batch until it is memorised: a correct model and loss reach (near) 100% accuracy
    on both tasks. A loss that falls while an accuracy stays put is a loss that does not measure the
    task."""
    from minibert.optim import triples_from_model

    model = model or tiny_model()
    batch = batch or random_batch(model.config.vocab_size)
    optimizer = AdamW(triples_from_model(model), lr=lr, weight_decay=0.0)
    model.eval()  # no dropout: memorising one batch should not fight the noise
    for _ in range(steps):
        model.zero_grad()
        model.forward(**batch)
        model.backward()
        optimizer.step()
    out = model.forward(**batch)
    w = batch["masked_lm_weights"] > 0
    mlm_acc = float((out.prediction_logits.argmax(-1) == batch["masked_lm_ids"])[w].mean())
    nsp_acc = float(
        (out.seq_relationship_logits.argmax(-1) == batch["next_sentence_labels"]).mean()
    )
    ok = mlm_acc >= 0.95 and nsp_acc >= 0.95
    return Diagnosis(
        "overfit one batch",
        ok,
        f"after {steps} steps on one batch: loss {float(out.loss):.3f} (MLM "
        f"{float(out.mlm_loss):.3f}, "
        f"NSP {float(out.nsp_loss):.3f}), MLM accuracy {mlm_acc:.2f}, NSP accuracy {nsp_acc:.2f}",
        {"mlm_accuracy": mlm_acc, "nsp_accuracy": nsp_acc, "loss": float(out.loss)},
    )


def padding_parity(model=None, length: int = 10, pad: int = 6) -> Diagnosis:
    """Parity check: a sequence alone and the same sequence followed by padding must give the same
    outputs at its real tokens (padding is invisible to them)."""
    model = model or tiny_model()
    bert = _bert_of(model)
    bert.eval()
    ids = np.random.default_rng(1).integers(5, bert.config.vocab_size, (1, length))
    alone = bert.forward(ids).last_hidden_state[0]
    padded_ids = np.concatenate([ids, np.zeros((1, pad), ids.dtype)], axis=1)
    mask = (padded_ids != 0).astype(np.int64)
    mask[0, :length] = 1
    padded = bert.forward(padded_ids, None, mask).last_hidden_state[0, :length]
    diff = float(np.abs(alone - padded).max())
    tol = 1e-4 if alone.dtype == np.float32 else 1e-10
    return Diagnosis(
        "padding parity",
        diff <= tol,
        f"max |output alone - output with {pad} padding tokens| at the real tokens = {diff:.2e} "
        f"(tolerance {tol:g})",
        {"max_diff": diff},
    )


def attention_parity(model=None) -> Diagnosis:
    """Parity check: the first layer's attention probabilities, recomputed from the formula
    softmax(q k^T / sqrt(D) + mask) with the layer's own weights and input, must equal the model's.
    """
    model = model or tiny_model()
    bert = _bert_of(model)
    bert.eval()
    rng = np.random.default_rng(2)
    B, T = 2, 12
    ids = rng.integers(5, bert.config.vocab_size, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, 8:] = 0
    out = bert.forward(ids, None, mask, output_hidden_states=True, output_attentions=True)
    x = out.hidden_states[0].astype(np.float64)
    params = dict(bert.named_parameters())
    prefix = "encoder.layer.0.attention.self."
    A = bert.config.num_attention_heads
    D = bert.config.hidden_size // A

    def heads(name):
        y = (
            x @ params[prefix + name + ".weight"].T.astype(np.float64)
            + params[prefix + name + ".bias"]
        )
        return y.reshape(B, T, A, D).transpose(0, 2, 1, 3)

    scores = heads("query") @ heads("key").swapaxes(-1, -2) / math.sqrt(D)
    scores = scores + ((1 - mask) * -10000.0)[:, None, None, :]
    e = np.exp(scores - scores.max(-1, keepdims=True))
    probs = e / e.sum(-1, keepdims=True)
    real = mask.astype(bool)  # the rows of padded queries are read by nothing (zeros unpadded)
    diff = float(np.abs(probs - out.attentions[0]).transpose(0, 2, 1, 3)[real].max())
    return Diagnosis(
        "attention parity",
        diff <= 1e-4,
        f"max |model's attention - softmax(q k^T / sqrt(D) + mask)| in layer 0, real queries "
        f"= {diff:.2e} (tolerance 1e-4)",
        {"max_diff": diff},
    )


def first_step_size(lr: float = 1e-3, seed: int = 0) -> Diagnosis:
    """With bias correction Adam's first update is lr * g / |g| = +-lr per entry (m_hat /
    sqrt(v_hat) = g / |g|), whatever the gradient's size. Without, it is (1 - b1) / sqrt(1 - b2) =
    3.16 times that."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(1000)
    g = rng.standard_normal(1000) * 0.1
    before = w.copy()
    AdamW([("weight", w, g)], lr=lr, weight_decay=0.0, correct_bias=True).step()
    ratio = float(np.sqrt(np.mean((w - before) ** 2)) / lr)
    return Diagnosis(
        "first AdamW step",
        abs(ratio - 1) < 0.05,
        f"RMS of the first update / lr = {ratio:.3f} (1 with bias correction; "
        f"{0.1 / math.sqrt(0.001):.2f} without)",
        {"ratio": ratio},
    )


def _small_corpus(n_lines: int = 3000):
    """The bundled vocabulary and the first documents of the bundled corpus, as token ids."""
    from minibert.paths import data_path
    from minibert.pretraining.data import documents_from_lines
    from minibert.tokenization import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(data_path("vocab.txt"))
    lines = data_path("corpus", "train.txt").read_text(encoding="utf-8").splitlines()[:n_lines]
    return tokenizer, documents_from_lines(lines, tokenizer)


def make_instances(
    tokenizer, documents, seed: int = 0, max_seq_length: int = 64, dupe_factor: int = 2
):
    """Pretraining instances built by the package's pipeline (with whatever bug is planted)."""
    import random

    from minibert.pretraining.data import DataConfig

    maker = InstanceMaker(
        tokenizer, DataConfig(max_seq_length=max_seq_length, dupe_factor=dupe_factor)
    )
    return maker.create_instances(documents, random.Random(seed))


def nsp_shortcut_probe(tokenizer=None, documents=None, seed: int = 0) -> Diagnosis:
    """A probe that sees ONLY segment B (a naive Bayes classifier on B's tokens) tries to predict
    the NSP label. Whether B follows A cannot be read from B alone, so the probe should do little
    better than always answering the majority label; if it does much better, NSP has a shortcut."""
    if documents is None:
        tokenizer, documents = _small_corpus()
    instances = make_instances(tokenizer, documents, seed)
    V = tokenizer.vocab_size
    X = np.zeros((len(instances), V))
    for i, inst in enumerate(instances):
        b = inst.original_ids()[inst.num_a + 2 : -1]
        np.add.at(X[i], b, 1.0)
    y = np.array([inst.is_random_next for inst in instances], dtype=int)
    n_train = len(y) * 2 // 3
    log_prior = np.log(np.bincount(y[:n_train], minlength=2) + 1.0)
    counts = np.stack([X[:n_train][y[:n_train] == c].sum(0) + 1.0 for c in (0, 1)])
    log_like = np.log(counts / counts.sum(1, keepdims=True))
    pred = (X[n_train:] @ log_like.T + log_prior).argmax(1)
    accuracy = float((pred == y[n_train:]).mean())
    majority = float(max(y[n_train:].mean(), 1 - y[n_train:].mean()))
    return Diagnosis(
        "NSP shortcut probe (segment B alone)",
        accuracy - majority < 0.1,
        f"B-only probe accuracy {accuracy:.3f} vs majority label {majority:.3f} on "
        f"{len(y) - n_train} "
        f"held-out pairs",
        {"accuracy": accuracy, "majority": majority},
    )


def mask_share_probe(tokenizer=None, documents=None, seed: int = 0) -> Diagnosis:
    """At the prediction positions the input must be [MASK] 80% of the time, the original token 10%
    and a random one 10%. Measured on instances made by the pipeline."""
    if documents is None:
        tokenizer, documents = _small_corpus(1500)
    instances = make_instances(tokenizer, documents, seed, dupe_factor=1)
    shares = np.zeros(3)
    for inst in instances:
        original = inst.original_ids()
        for p in inst.masked_lm_positions:
            token = inst.input_ids[p]
            shares[0 if token == tokenizer.mask_token_id else 1 if token == original[p] else 2] += 1
    shares /= shares.sum()
    ok = abs(shares[0] - 0.8) < 0.04 and abs(shares[1] - 0.1) < 0.04 and abs(shares[2] - 0.1) < 0.04
    return Diagnosis(
        "80/10/10 at the prediction positions",
        ok,
        f"[MASK] {shares[0]:.3f}, unchanged {shares[1]:.3f}, random {shares[2]:.3f} (expected 0.8 "
        "/ "
        f"0.1 / 0.1)",
        {"mask": shares[0], "same": shares[1], "random": shares[2]},
    )


def position_probe(model=None, T: int = 40) -> Diagnosis:
    """Every position must be told apart: feed one token repeated T times (so only the position
    differs) and count pairs of positions whose embedding outputs are identical."""
    model = model or tiny_model()
    bert = _bert_of(model)
    bert.eval()
    ids = np.full((1, T), 7)
    h = (
        bert.forward(ids, output_hidden_states=True).hidden_states[0][0].astype(np.float64)
    )  # (T, H)
    dist = np.sqrt(((h[:, None, :] - h[None, :, :]) ** 2).sum(-1)) + np.eye(T)
    same = np.argwhere(np.triu(dist < 1e-6 * np.abs(h).max(), 1))
    pairs = [tuple(int(i) for i in p) for p in same]
    return Diagnosis(
        "position probe",
        not pairs,
        f"{len(pairs)} pairs of positions with identical embeddings"
        + (f", e.g. {pairs[:3]}" if pairs else f" among {T} positions"),
        {"pairs": len(pairs)},
    )


def gradient_check(model=None, entries: int = 12) -> Diagnosis:
    """Central finite differences (float64) of the whole pretraining loss against the backward, on a
    sample of every tensor's entries; names the tensors that disagree."""
    from minibert.gradcheck import compare

    # Weights of std 0.3, not 0.02, as in minibert.gradcheck: at 0.02 the query and key gradients
    # are so small that rounding noise dominates their finite differences.
    model = model or tiny_model(initializer_range=0.3, num_hidden_layers=1)
    model.astype(np.float64).eval()
    batch = random_batch(model.config.vocab_size, B=3, T=10, P=3)

    def loss():
        return float(model.forward(**batch).loss)

    model.zero_grad()
    model.forward(**batch)
    model.backward()
    grads = {name: g.copy() for name, g in model.named_grads()}
    tensors = dict(model.named_parameters())
    results = compare("BertForPreTraining", loss, grads, tensors, np.random.default_rng(0), entries)
    bad = [r for r in results if not r.ok]
    worst = max(results, key=lambda r: r.max_rel_error)
    return Diagnosis(
        "gradient check",
        not bad,
        (
            (
                f"{len(bad)} of {len(results)} tensors disagree: "
                + ", ".join(f"{r.tensor} ({r.max_rel_error:.1e})" for r in bad[:3])
            )
            if bad
            else f"{len(results)} tensors agree (worst {worst.tensor}, {worst.max_rel_error:.1e})"
        ),
        {"failed": [r.tensor for r in bad]},
    )


def eval_determinism(model=None) -> Diagnosis:
    """In eval mode a model is a function: the same batch twice gives the same outputs."""
    model = model or tiny_model()
    model.eval()
    batch = random_batch(model.config.vocab_size)
    a = model.forward(**batch).prediction_logits
    b = model.forward(**batch).prediction_logits
    diff = float(np.abs(a - b).max())
    return Diagnosis(
        "eval determinism",
        diff == 0.0,
        f"max |difference| between two eval-mode passes over the same batch = {diff:.2e}",
        {"max_diff": diff},
    )


DIAGNOSTICS = {
    "loss_at_init": loss_at_init,
    "overfit_one_batch": overfit_one_batch,
    "padding_parity": padding_parity,
    "attention_parity": attention_parity,
    "first_step_size": first_step_size,
    "nsp_shortcut_probe": nsp_shortcut_probe,
    "mask_share_probe": mask_share_probe,
    "position_probe": position_probe,
    "gradient_check": gradient_check,
    "eval_determinism": eval_determinism,
}


def diagnose(name: str) -> Diagnosis:
    """Run the diagnostic of bug ``name`` on a fresh tiny model or data (call it inside ``planted``
    to see it fail, outside to see it pass)."""
    return DIAGNOSTICS[get(name).diagnostic]()
