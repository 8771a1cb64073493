"""``minibert bench WHAT``: benchmarks.

    minibert bench kernels [--repeats N] [--batch-size 32] [--seq-len 128] [--preset mini]
    minibert bench train [--repeats N] [--batch-size 32] [--seq-len 128] [--preset mini] [--predictions 20]
                         [--workers N]
    minibert bench corpus [--steps 20] [--batch-size 32] [--seq-len 128] [--preset tiny|mini] [--lines 20000]
                          [--workers N]
    minibert bench profile [--repeats N] [--batch-size 32] [--seq-len 128] [--preset mini] [--corpus]
    minibert bench cost [--repeats N] [--batch-size 8] [--preset tiny|mini|small]
    minibert bench parity [--steps 200] [--batch-size 16] [--seq-len 128] [--preset tiny] [--lines 4000]
                          [--out DIR]

``kernels`` times every kernel pair of ``minibert.kernels`` (NumPy reference vs Numba), forward and
backward separately, at the shapes one training step of the chosen preset meets, then one whole encoder
forward + backward through each path. ``train`` times a whole pretraining step (forward, backward,
clipping, AdamW) of minibert's two paths and of Hugging Face's PyTorch model when it is installed, and
reports each one's share of the machine's matmul peak and its peak memory. Each number is the median
over ``--repeats`` calls in this one process, after one warm-up call (which also pays Numba's
compilation, or loads it from the disk cache). ``corpus`` is the real work: pretraining steps on the
bundled corpus, whose batches are about half padding, minibert's Trainer step against Hugging Face
with dynamic padding, counted in real (non-padding) tokens per second. ``train`` and ``corpus`` also
time minibert's step with the batch shared by N data-parallel threads (``--workers``, by default one
per core), as ``minibert pretrain --workers N`` takes it. ``profile`` splits one
training step into its operations (time, and the memory kept for the backward; see
``minibert.profiling``). ``parity`` is not a timing: it trains minibert and Hugging Face's
``BertForPreTraining`` (PyTorch) from the same weights on the same batches of the bundled corpus,
with dropout off, and plots the two loss curves.

Adding a benchmark is one function ``bench_NAME(args) -> int`` and one entry in ``BENCHMARKS``;
``median_ms``, ``timed_call`` and ``print_table`` are meant to be shared by all of them.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from minibert.config import PRESETS, BertConfig
from minibert.validation import positive_int

# The sizes of a BERT pretraining step that are not in the model config. The MLM head scores about 15%
# of the tokens: max_predictions_per_seq = 20 for T = 128 in the original BERT, so P = 20 B rows.
VOCAB_SIZE = 8192
PREDICTIONS_PER_SEQUENCE = 20


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------
def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall-clock time of ``fn()`` in milliseconds over ``repeats`` calls, after ``warmup`` calls."""
    positive_int("--repeats", repeats)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def timed_call(fn: Callable[[], object]) -> tuple[float, int | None]:
    """(seconds, minor page faults) of one ``fn()``; faults are None where ``resource`` is missing
    (Windows). A minor fault is a page the kernel had to map and zero because the allocator had given
    the memory back to the system: memory allocated afresh instead of reused, which costs time."""
    try:
        import resource
    except ImportError:
        resource = None
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    return seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults if resource else None)


def median_faults(faults: list[int | None]) -> str:
    return "-" if None in faults else f"{statistics.median(faults):,.0f}"


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """Print rows as columns: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def environment_lines() -> list[str]:
    """The versions and thread counts that a benchmark result depends on."""
    import numba

    try:
        layer = numba.threading_layer()     # known once a parallel kernel has run
    except ValueError:
        layer = "not started"
    return [
        f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__} "
        f"(threading layer {layer}, {numba.get_num_threads()} of NUMBA_NUM_THREADS="
        f"{numba.config.NUMBA_NUM_THREADS} threads), os.cpu_count()={os.cpu_count()}, "
        f"Hugging Face on {_threads()} thread(s), "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
        f"OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'unset')}",
    ]


# ----------------------------------------------------------------------------------------------
# bench kernels
# ----------------------------------------------------------------------------------------------
def _kernel_cases(config: BertConfig, B: int, T: int, rng: np.random.Generator):
    """(row label, shape text, make(module) -> (forward thunk or None, backward thunk)) per kernel pair.

    ``make`` builds the backward's cache with the same module's forward: caches are not interchangeable
    between the NumPy and the Numba path.
    """
    from minibert.functional import MASK_BIAS

    f32 = np.float32
    H, A, I = config.hidden_size, config.num_attention_heads, config.intermediate_size
    V, P = VOCAB_SIZE, PREDICTIONS_PER_SEQUENCE * B

    def randn(*shape):
        return rng.standard_normal(shape, dtype=f32)

    scores, dprobs = randn(B, A, T, T), randn(B, A, T, T)
    lengths = rng.integers(T // 2, T + 1, B)                    # padded batches, as in pretraining
    mask_bias = np.where(np.arange(T) < lengths[:, None], 0, MASK_BIAS).astype(f32)
    hidden, dhidden = randn(B, T, H), randn(B, T, H)
    gamma, beta = 1 + 0.1 * randn(H), 0.1 * randn(H)
    inter, dinter, inter_bias = randn(B, T, I), randn(B, T, I), 0.1 * randn(I)
    ids = rng.integers(0, V, (B, T))
    logits, targets = 3 * randn(P, V), rng.integers(0, V, P)
    weights = (rng.random(P) < 0.9).astype(f32)                 # some padding predictions, w = 0

    def softmax(m):
        _, cache = m.softmax_forward(scores, mask_bias)
        return lambda: m.softmax_forward(scores, mask_bias), lambda: m.softmax_backward(dprobs, cache)

    def layernorm(m):
        _, cache = m.layernorm_forward(hidden, gamma, beta)
        dgamma, dbeta = np.zeros(H, f32), np.zeros(H, f32)
        return (lambda: m.layernorm_forward(hidden, gamma, beta),
                lambda: m.layernorm_backward(dhidden, cache, dgamma, dbeta))

    def bias_gelu(approximate):
        def make(m):
            _, cache = m.bias_gelu_forward(inter, inter_bias, approximate)
            dbias = np.zeros(I, f32)
            return (lambda: m.bias_gelu_forward(inter, inter_bias, approximate),
                    lambda: m.bias_gelu_backward(dinter, cache, dbias))
        return make

    def linear_gelu(m):
        weight, dweight, dbias = 0.05 * randn(I, H), np.zeros((I, H), f32), np.zeros(I, f32)
        _, cache = m.linear_gelu_forward(hidden, weight, inter_bias)
        return (lambda: m.linear_gelu_forward(hidden, weight, inter_bias),
                lambda: m.linear_gelu_backward(dinter, cache, dweight, dbias))

    def dropout(m):              # each call draws from the same seed, as both paths draw the same bits
        _, cache = m.dropout_forward(hidden, 0.1, np.random.default_rng(0))
        return (lambda: m.dropout_forward(hidden, 0.1, np.random.default_rng(0)),
                lambda: m.dropout_backward(dhidden, cache))

    def dropout_add_layernorm(m):
        residual = randn(B, T, H)
        dgamma, dbeta = np.zeros(H, f32), np.zeros(H, f32)

        def forward():
            return m.dropout_add_layernorm_forward(hidden, residual, 0.1, np.random.default_rng(0), gamma, beta)
        _, cache = forward()
        return forward, lambda: m.dropout_add_layernorm_backward(dhidden, cache, dgamma, dbeta)

    def attention(m):            # with the attention dropout of training
        D = H // A
        q, k, v, dcontext = (randn(B, A, T, D) for _ in range(4))
        _, _, cache = m.attention_forward(q, k, v, mask_bias, 0.1, np.random.default_rng(0))
        return (lambda: m.attention_forward(q, k, v, mask_bias, 0.1, np.random.default_rng(0)),
                lambda: m.attention_backward(dcontext, cache))

    def unpadded_attention(m):   # the real tokens of the padded batch above, grouped by length
        from minibert.models.bert import Unpadded

        groups = Unpadded.from_mask(mask_bias == 0).groups
        q, k, v, dcontext = (randn(int(lengths.sum()), H) for _ in range(4))
        _, _, cache = m.unpadded_attention_forward(q, k, v, groups, A, 0.1, np.random.default_rng(0))
        return (lambda: m.unpadded_attention_forward(q, k, v, groups, A, 0.1, np.random.default_rng(0)),
                lambda: m.unpadded_attention_backward(dcontext, cache))

    def embedding(m):
        dweight = np.zeros((V, H), f32)
        return None, lambda: m.embedding_backward(dhidden, ids, dweight)

    def adamw(m):               # one step on an (I, H) weight; the moments keep moving, as in training
        weight, grad, m1, m2 = randn(I, H), 0.01 * randn(I, H), np.zeros((I, H), f32), np.zeros((I, H), f32)
        scratch = np.empty((I, H), f32)
        return None, lambda: m.adamw_update(weight, grad, m1, m2, 0.9, 0.999, 1e-6, 1e-4, 1.0, 1.0, scratch)

    def cross_entropy(m):
        _, cache = m.cross_entropy_forward(logits, targets, weights)
        return lambda: m.cross_entropy_forward(logits, targets, weights), lambda: m.cross_entropy_backward(1.0, cache)

    def log_softmax_normaliser(m):     # the held-out evaluation's, on the same logits
        return None, lambda: m.log_softmax_normaliser(logits)

    return [
        ("softmax", f"({B}, {A}, {T}, {T}) + mask ({B}, {T})", softmax),
        ("layernorm", f"({B}, {T}, {H})", layernorm),
        ("bias_gelu", f"({B}, {T}, {I}) erf", bias_gelu(False)),
        ("bias_gelu", f"({B}, {T}, {I}) tanh", bias_gelu(True)),
        ("linear_gelu", f"({B}, {T}, {H}) -> ({B}, {T}, {I})", linear_gelu),
        ("dropout", f"({B}, {T}, {H}) p 0.1", dropout),
        ("dropout_add_layernorm", f"({B}, {T}, {H}) + residual, p 0.1", dropout_add_layernorm),
        ("attention", f"({B}, {A}, {T}, {H // A}) + mask, dropout 0.1", attention),
        ("unpadded_attention", f"{B} sequences of {T // 2}-{T} tokens, dropout 0.1", unpadded_attention),
        ("embedding", f"({B}, {T}, {H}) -> ({V}, {H})", embedding),
        ("cross_entropy", f"({P}, {V}) weighted", cross_entropy),
        ("adamw_update", f"({I}, {H})", adamw),
        ("log_softmax_normaliser", f"({P}, {V}) in float64", log_softmax_normaliser),
    ]


def _encoder_step(config: BertConfig, B: int, T: int, rng: np.random.Generator):
    """A thunk running one BertModel forward + backward (training mode, padded batch) with random
    upstream gradients for both outputs, through whichever kernel backend is active."""
    from minibert.models.bert import BertModel

    model = BertModel(config, rng).train()
    input_ids = rng.integers(0, config.vocab_size, (B, T))
    token_type_ids = (np.arange(T) >= T // 2).astype(np.int64)[None].repeat(B, axis=0)
    attention_mask = (np.arange(T) < rng.integers(T // 2, T + 1, B)[:, None]).astype(np.int64)
    d_last = rng.standard_normal((B, T, config.hidden_size), dtype=np.float32)
    d_pooled = rng.standard_normal((B, config.hidden_size), dtype=np.float32)

    def step():
        model.zero_grad()
        model.forward(input_ids, token_type_ids, attention_mask)
        model.backward(d_last, d_pooled)

    return step


def bench_kernels(args) -> int:
    from minibert import functional, kernels
    from minibert.kernels import numba_kernels

    B, T = args.batch_size, args.seq_len
    config = BertConfig.preset(args.preset, vocab_size=VOCAB_SIZE)
    if T > config.max_position_embeddings:
        raise ValueError(f"--seq-len {T} exceeds max_position_embeddings {config.max_position_embeddings}")
    rng = np.random.default_rng(args.seed)
    print(f"minibert bench kernels: NumPy reference vs Numba kernels, float32, median of {args.repeats} "
          f"call{'s' if args.repeats > 1 else ''} after 1 warm-up")
    print(f"shapes of one training step of preset {args.preset!r}: B={B} T={T} H={config.hidden_size} "
          f"A={config.num_attention_heads} I={config.intermediate_size} L={config.num_hidden_layers}; "
          f"cross-entropy over P={PREDICTIONS_PER_SEQUENCE}*B={PREDICTIONS_PER_SEQUENCE * B} rows x "
          f"V={VOCAB_SIZE} classes; embedding scatter-add into V={VOCAB_SIZE} rows")

    rows = []
    for name, shape, make in _kernel_cases(config, B, T, rng):
        per_backend = {label: make(module) for label, module in (("numpy", functional), ("numba", numba_kernels))}
        for direction, index in (("forward", 0), ("backward", 1)):
            if per_backend["numpy"][index] is None:
                continue
            ms = {label: median_ms(thunks[index], args.repeats) for label, thunks in per_backend.items()}
            op = f"{name}_{direction}"
            op = op if op in kernels.KERNEL_NAMES else name          # an op with no pair (adamw_update, ...)
            rows.append([op, shape, f"{ms['numpy']:.2f}", f"{ms['numba']:.2f}",
                         f"{ms['numpy'] / ms['numba']:.2f}x"])

    step = _encoder_step(config, B, T, rng)
    ms = {}
    for label in ("numpy", "numba"):
        with kernels.using(label):
            ms[label] = median_ms(step, args.repeats)
    rows.append(["encoder forward+backward", f"L={config.num_hidden_layers} ({B}, {T}, {config.hidden_size})",
                 f"{ms['numpy']:.1f}", f"{ms['numba']:.1f}", f"{ms['numpy'] / ms['numba']:.2f}x"])

    for line in environment_lines():
        print(line)
    print()
    print_table(["op", "shape", "numpy ms", "numba ms", "speed-up"], rows)
    return 0


# ----------------------------------------------------------------------------------------------
# bench train
# ----------------------------------------------------------------------------------------------
def matmul_flops(config: BertConfig, B: int, T: int, P: int, huggingface: bool = False) -> float:
    """Analytic multiply-add FLOPs (2 per multiply-add) of the matrix products in one training step
    on a full-length batch: forward, plus twice that for the backward (the gradients of both
    operands). minibert scores the MLM decoder at the P masked positions of each sequence (gathered)
    and computes the last layer at those and the [CLS] only (``BertModel.forward``'s
    ``output_positions``; the P positions are distinct and never 0); Hugging Face computes all T of
    each for both."""
    if huggingface:
        return _step_flops(config, B * T, B * T * T, B, B * T)
    return _step_flops(config, B * T, B * T * T, B, B * P, last_layer=(B * (P + 1), B * (P + 1) * T))


def batch_flops(config: BertConfig, attention_mask: np.ndarray, mlm_rows: int,
                padded: bool, last_layer: tuple[int, int] | None = None) -> float:
    """``matmul_flops`` of one step on a real batch. ``padded``: the token-wise products run over
    all B T positions and attention over T x T per sequence; otherwise over the N real tokens and
    n_b x n_b per sequence of n_b tokens. ``mlm_rows``: positions the MLM decoder scores in the
    whole batch; ``last_layer``: (rows, query-key pairs) the last layer computes, if not all
    (``_last_layer_work``)."""
    B, T = attention_mask.shape
    lengths = attention_mask.sum(axis=1).astype(np.int64)
    if padded:
        return _step_flops(config, B * T, B * T * T, B, mlm_rows, last_layer)
    return _step_flops(config, int(lengths.sum()), int((lengths * lengths).sum()), B, mlm_rows, last_layer)


def _step_flops(config: BertConfig, rows: int, pairs: int, B: int, mlm_rows: int,
                last_layer: tuple[int, int] | None = None) -> float:
    """Forward + backward FLOPs with ``rows`` token rows through every linear layer and ``pairs``
    (query, key) pairs through attention's two products (scores and context), summed over
    sequences; ``last_layer`` = (rows, pairs): the last layer's queries and everything after its
    attention at those rows only (its keys and values at all ``rows``)."""
    H, I, L, V = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size

    def layer(queries, query_key_pairs):
        keys_values = 2 * rows * H * 2 * H
        after_attention = 2 * queries * H * H + 2 * 2 * queries * H * I    # output projection, feed-forward
        return keys_values + 2 * queries * H * H + 2 * 2 * query_key_pairs * H + after_attention
    layers = (L - 1) * layer(rows, pairs) + layer(*(last_layer or (rows, pairs)))
    heads = 2 * B * H * H + 2 * mlm_rows * H * H + 2 * mlm_rows * H * V + 2 * B * H * 2
    return 3.0 * (layers + heads)


def _last_layer_work(batch) -> tuple[int, int]:
    """(rows, query-key pairs) of the last layer in minibert's step on ``batch``: the rows its heads
    read (``BertModel.forward``'s output_positions), each a query over its sequence's n tokens."""
    from minibert.models.bert import BertModel

    mask = batch["attention_mask"]
    b, p = np.nonzero(batch["masked_lm_weights"])
    flat = BertModel.output_rows((b, batch["masked_lm_positions"][b, p]), mask)
    lengths = mask.sum(axis=1).astype(np.int64)
    return len(flat), int(lengths[flat // mask.shape[1]].sum())


def matmul_peak_gflops(repeats: int = 5) -> float:
    """The machine's float32 matrix-multiply rate through NumPy's BLAS, best of a few square products."""
    best = 0.0
    rng = np.random.default_rng(0)
    for n in (1024, 2048):
        a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
        ms = min(median_ms(lambda: a @ b, 1) for _ in range(repeats))
        best = max(best, 2 * n ** 3 / (ms * 1e-3) / 1e9)
    return best


def _pretraining_batch(config: BertConfig, B: int, T: int, P: int, rng: np.random.Generator) -> dict:
    """A full-length batch as ``minibert prepare`` writes it: P sorted masked positions per sequence."""
    ids = rng.integers(5, config.vocab_size, (B, T))
    positions = np.sort(np.stack([rng.choice(np.arange(1, T - 1), P, replace=False) for _ in range(B)]), axis=1)
    return {"input_ids": ids, "token_type_ids": (np.arange(T) >= T // 2).astype(np.int64)[None].repeat(B, 0),
            "attention_mask": np.ones((B, T), np.int64), "masked_lm_positions": positions,
            "masked_lm_ids": np.take_along_axis(ids, positions, 1), "masked_lm_weights": np.ones((B, P), np.float32),
            "next_sentence_labels": rng.integers(0, 2, B)}


def _minibert_trainer(config: BertConfig, seed: int, workers: int = 1):
    """step(batch): one minibert pretraining step (zero_grad, forward, backward, clip at 1, AdamW),
    as the Trainer takes it; with ``workers`` > 1, the batch shared by that many data-parallel
    threads (``distributed.Workers``, as ``minibert pretrain --workers``)."""
    from minibert.distributed import Workers
    from minibert.models import BertForPreTraining
    from minibert.optim import AdamW, clip_grad_norm, triples_from_model

    model = BertForPreTraining(config, np.random.default_rng(seed)).train()
    optimizer = AdamW(triples_from_model(model), lr=1e-4)
    grads = [g for _, g in model.named_grads()]
    threads = Workers(model, workers, seed) if workers > 1 else None

    def step(batch):
        if threads is None:
            model.zero_grad()
            model.forward(**batch)
            model.backward()
            clip_grad_norm(grads, 1.0)
        else:
            clip_grad_norm(grads, 1.0, norm=threads.forward_backward(batch)["grad_norm"])
        optimizer.step()
    return step


def _huggingface_trainer(config: BertConfig, seed: int):
    """step(batch): one step of Hugging Face ``BertForPreTraining`` (its own initialisation and
    default attention) with torch AdamW, on a minibert batch. The labels are laid out as
    transformers' MLM collator does: the original token at each real masked position, -100
    everywhere else; the model then scores all T positions, as it always does."""
    import torch
    import transformers

    torch.manual_seed(seed)
    torch.set_num_threads(_threads())
    hf_config = transformers.BertConfig(**{k: v for k, v in config.to_dict().items() if k != "model_type"})
    model = transformers.BertForPreTraining(hf_config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-6)

    def step(batch):
        positions, weights = batch["masked_lm_positions"], batch["masked_lm_weights"]
        labels = np.full(batch["input_ids"].shape, -100, dtype=np.int64)
        rows = np.nonzero(weights > 0)
        labels[rows[0], positions[rows]] = batch["masked_lm_ids"][rows]
        inputs = {name: torch.as_tensor(np.asarray(batch[name], dtype=np.int64))
                  for name in ("input_ids", "token_type_ids", "attention_mask")}
        optimizer.zero_grad()
        nsp_labels = torch.as_tensor(np.asarray(batch["next_sentence_labels"], np.int64))
        loss = model(**inputs, labels=torch.as_tensor(labels), next_sentence_label=nsp_labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    step.attention = model.config._attn_implementation
    return step


def _threads() -> int:
    """PyTorch's thread count: as many as minibert's side may use, OPENBLAS_NUM_THREADS or
    NUMBA_NUM_THREADS when set (to compare on one core: both = 1), else every core."""
    for name in ("OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        if os.environ.get(name, "").strip().isdigit():
            return max(1, int(os.environ[name]))
    return os.cpu_count() or 1


def _peak_memory_child(path: str, config_json: str, batch_file: str) -> None:
    """Run in a fresh process: print the peak resident memory (MiB) of building one path's model and
    taking two steps on the batch in ``batch_file``, above the resident size just before the model
    was built. ``path`` is "numpy", "numba" (minibert with those kernels), "numba:N" (N workers) or
    "huggingface".

    A small warm-up model runs first, so Numba's compilation (or PyTorch's lazy set-up) is not counted,
    and the kernel's high-water mark (VmHWM) is reset after it (``/proc/self/clear_refs``)."""
    import gc

    from minibert import kernels

    def resident(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024

    path, _, workers = path.partition(":")
    if path == "huggingface":
        make = _huggingface_trainer
    else:
        kernels.use(path)
        make = functools.partial(_minibert_trainer, workers=int(workers or 1))
    with np.load(batch_file) as stored:
        batch = {name: stored[name] for name in stored.files}
    config = BertConfig(**json.loads(config_json))
    B, T = batch["input_ids"].shape
    warm = BertConfig(vocab_size=config.vocab_size, hidden_size=16, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=32,
                      max_position_embeddings=config.max_position_embeddings)
    make(warm, 0)({name: a[:2] for name, a in batch.items()})
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    baseline = resident("VmRSS:")
    step = make(config, 0)
    step(batch)
    step(batch)
    print(resident("VmHWM:") - baseline)


def _peak_memory_mb(path: str, config: BertConfig, batch_file) -> float | None:
    """``_peak_memory_child`` in a fresh Python; None if it failed (the table then shows "-")."""
    import subprocess
    import sys

    config_json = json.dumps({k: v for k, v in config.to_dict().items() if k != "model_type"})
    code = (f"from minibert.bench import _peak_memory_child; "
            f"_peak_memory_child({path!r}, {config_json!r}, {str(batch_file)!r})")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return float(result.stdout.strip().splitlines()[-1])


def _have_torch() -> bool:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


FAULTS_NOTE = ("faults/step: minor page faults per step (median), pages the allocator had handed back to the "
               "system and took again, each mapped and zeroed by the kernel; a step's time moves with them "
               "from run to run.")


def bench_train(args) -> int:
    """One pretraining step (forward, backward, clipping, AdamW) of minibert's NumPy path, its Numba path
    and, when installed, Hugging Face ``BertForPreTraining`` in PyTorch, on the same batch, interleaved."""

    from minibert import kernels

    have_torch = _have_torch()
    B, T, P = args.batch_size, args.seq_len, args.predictions
    vocab_size = args.vocab_size
    config = BertConfig.preset(args.preset, vocab_size=vocab_size)
    if T > config.max_position_embeddings:
        raise ValueError(f"--seq-len {T} exceeds max_position_embeddings {config.max_position_embeddings}")
    if not 1 <= P <= T - 2:
        raise ValueError(f"--predictions must be in [1, {T - 2}], got {P}")
    batch = _pretraining_batch(config, B, T, P, np.random.default_rng(args.seed))
    print(f"minibert bench train: one pretraining step (forward, backward, clip, AdamW) of preset {args.preset!r} "
          f"(L={config.num_hidden_layers} H={config.hidden_size} A={config.num_attention_heads} "
          f"I={config.intermediate_size} V={vocab_size}), B={B} T={T}, {P} predictions per sequence, float32, "
          f"dropout 0.1; median of {args.repeats} steps, interleaved, after 1 warm-up")
    steps = {}
    for label in ("numpy", "numba"):
        with kernels.using(label):
            step = _minibert_trainer(config, args.seed)
            step(batch)                                  # warm-up (and Numba compilation)
        steps[label] = (label, step)
    if args.workers > 1:
        step = _minibert_trainer(config, args.seed, args.workers)
        step(batch)
        steps[f"numba:{args.workers}"] = ("numba", step)
    if have_torch:
        steps["huggingface"] = (None, _huggingface_trainer(config, args.seed))
        steps["huggingface"][1](batch)
    else:
        print("(PyTorch / transformers not installed: `pip install torch==2.13.0 transformers` adds the "
              "Hugging Face row)")
    times = {name: [] for name in steps}
    faults = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, (backend, step) in steps.items():
            with kernels.using(backend or kernels.backend()):
                seconds, step_faults = timed_call(lambda: step(batch))
            times[name].append(1e3 * seconds)
            faults[name].append(step_faults)
    peak = matmul_peak_gflops()
    ours_flops = matmul_flops(config, B, T, P)
    hf_flops = matmul_flops(config, B, T, P, huggingface=True)
    reference = statistics.median(times["huggingface"]) if have_torch else statistics.median(times["numpy"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        batch_file = Path(tmp) / "batch.npz"
        np.savez(batch_file, **batch)
        for name, (backend, _) in steps.items():
            ms = statistics.median(times[name])
            flops = hf_flops if name == "huggingface" else ours_flops
            memory = _peak_memory_mb(name, config, batch_file)
            if name == "huggingface":
                label = f"Hugging Face BertForPreTraining ({steps[name][1].attention})"
            else:
                label = {"numpy": "minibert, NumPy kernels", "numba": "minibert, Numba kernels"}.get(
                    name, f"minibert, Numba, {args.workers} workers")
            rate = flops / (ms * 1e-3) / 1e9
            rows.append([label, f"{ms:.0f}", f"{ms / reference:.2f}", f"{flops / 1e9:.1f}",
                         f"{rate:.1f}", f"{100 * rate / peak:.0f}%",
                         "-" if memory is None else f"{memory:.0f}", median_faults(faults[name])])
    for line in environment_lines():
        print(line)
    print(f"float32 matmul peak (NumPy BLAS, square 1024/2048): {peak:.1f} GFLOP/s\n")
    print_table(["path", "ms/step", "x " + ("HF" if have_torch else "numpy"), "GFLOP", "GFLOP/s", "of peak",
                 "peak MiB", "faults/step"], rows)
    print("\nGFLOP counts the matrix products (forward + 2x backward). minibert scores the MLM head at the "
          f"{P} masked positions of each sequence (as the original BERT) and computes the last layer's "
          f"queries and feed-forward at those and the [CLS]; Hugging Face computes all {T} for both.")
    print(FAULTS_NOTE)
    return 0


# ----------------------------------------------------------------------------------------------
# bench corpus
# ----------------------------------------------------------------------------------------------
CORPUS_DEFAULTS = {"steps": 20, "lines": 20000, "dupe_factor": 5}


def _corpus_dataset(args, tmp, needed: int, command: str):
    """The first ``--lines`` lines of the bundled corpus prepared in ``tmp`` as `minibert pretrain`
    prepares its data (its DataConfig with ``--seq-len`` and ``--dupe-factor``, seed ``--seed``)."""
    from minibert.paths import data_path
    from minibert.pretraining.data import DataConfig, PretrainingDataset, prepare

    for name in ("steps", "lines", "dupe_factor"):
        positive_int("--" + name.replace("_", "-"), getattr(args, name))
    lines = _corpus_head(args.lines)
    (tmp / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    t0 = time.perf_counter()
    # The bundled held-out file is evaluation's, not training's: it plays no part here.
    prepare([tmp / "corpus.txt"], data_path("vocab.txt"), tmp / "data",
            DataConfig(max_seq_length=args.seq_len, dupe_factor=args.dupe_factor), seed=args.seed)
    dataset = PretrainingDataset(tmp / "data")
    if len(dataset) < needed:
        raise ValueError(f"{len(lines):,} lines give {len(dataset):,} instances, fewer than the "
                         f"{needed:,} that --steps {args.steps} with --batch-size "
                         f"{args.batch_size} need: raise --lines")
    print(f"minibert bench {command}: {len(lines):,} lines of data/corpus/train.txt -> "
          f"{len(dataset):,} instances as `minibert pretrain` prepares them (T={args.seq_len}, "
          f"dupe factor {args.dupe_factor}, seed {args.seed}; {time.perf_counter() - t0:.1f} s); "
          f"batches of {args.batch_size} trimmed to their longest sequence")
    return dataset


def bench_corpus(args) -> int:
    """Pretraining throughput on the bundled corpus: minibert's Trainer step against Hugging Face
    ``BertForPreTraining`` + torch AdamW with dynamic padding, tiny and mini, on the same batches,
    interleaved; real (non-padding) tokens per second."""

    from minibert import kernels
    from minibert.pretraining.trainer import Trainer, TrainConfig, build_model

    have_torch = _have_torch()
    presets = [args.preset] if args.preset else ["tiny", "mini"]
    B, T, n_steps = args.batch_size, args.seq_len, args.steps
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset = _corpus_dataset(args, tmp, needed=B * (n_steps + 1), command="corpus")
        paths = {}              # name -> (preset, config, step(batch))
        trainer = None
        for preset in presets:
            model = build_model(preset, dataset.vocab_size, args.seed, T).train()
            train_config = TrainConfig(steps=n_steps + 1, batch_size=B, seed=args.seed)
            preset_trainer = Trainer(model, dataset, train_config, tmp / f"out-{preset}",
                                     log=lambda message: None)
            trainer = trainer or preset_trainer                # one batch stream for every path
            paths[f"minibert {preset}"] = (preset, model.config, preset_trainer.train_step)
            if args.workers > 1:
                workers_model = build_model(preset, dataset.vocab_size, args.seed, T).train()
                paths[f"minibert {preset} x{args.workers}"] = (preset, model.config, Trainer(
                    workers_model, dataset, train_config, tmp / f"out-{preset}-workers",
                    log=lambda message: None, workers=args.workers).train_step)
            if have_torch:
                paths[f"huggingface {preset}"] = (preset, model.config,
                                                  _huggingface_trainer(model.config, args.seed))
        if not have_torch:
            print("(PyTorch / transformers not installed: `pip install torch==2.13.0 transformers` "
                  "adds the Hugging Face rows)")
        warm = trainer.next_batch()
        for _, _, step in paths.values():                      # warm-up (and Numba compilation)
            step(warm)
        names = list(paths)
        seconds = {name: [] for name in names}
        faults = {name: [] for name in names}
        batches = []
        for k in range(n_steps):
            batch = trainer.next_batch()
            batches.append(batch)
            for name in names[k % len(names):] + names[:k % len(names)]:     # rotate the order
                step_seconds, step_faults = timed_call(lambda: paths[name][2](batch))
                seconds[name].append(step_seconds)
                faults[name].append(step_faults)
        peak = matmul_peak_gflops()

        masks = [b["attention_mask"] for b in batches]
        real = np.array([m.sum() for m in masks], dtype=np.float64)
        slots = np.array([m.size for m in masks], dtype=np.float64)
        widths = [m.shape[1] for m in masks]
        largest = batches[int(np.argmax(widths))]
        batch_file = tmp / "largest.npz"
        np.savez(batch_file, **largest)
        rows = []
        for name in names:
            preset, config, _ = paths[name]
            hf = name.startswith("huggingface")
            # Hugging Face computes every position (and the MLM head at all of them); minibert the
            # real tokens (BertModel.unpad), the MLM head at the real (w != 0) masked positions and
            # the last layer at those and the [CLS] (output_positions).
            flops = sum(batch_flops(config, b["attention_mask"], b["input_ids"].size, padded=True) if hf
                        else batch_flops(config, b["attention_mask"], int(np.count_nonzero(b["masked_lm_weights"])),
                                         padded=False, last_layer=_last_layer_work(b))
                        for b in batches)
            total = sum(seconds[name])
            tokens_per_s = real.sum() / total
            reference = f"huggingface {preset}"
            ratio = "-"
            if reference in seconds:
                ratio = f"{tokens_per_s / (real.sum() / sum(seconds[reference])):.2f}"
            workers = f":{args.workers}" if name.endswith(f" x{args.workers}") else ""
            memory = _peak_memory_mb("huggingface" if hf else kernels.backend() + workers, config, batch_file)
            rate = flops / total / 1e9
            ms = 1e3 * statistics.median(seconds[name])
            rows.append([name, f"{ms:.0f}", f"{tokens_per_s:,.0f}", ratio,
                         f"{flops / n_steps / 1e9:.2f}", f"{rate:.1f}", f"{100 * rate / peak:.0f}%",
                         "-" if memory is None else f"{memory:.0f}", median_faults(faults[name])])
    for line in environment_lines():
        print(line)
    attention = next((s.attention for _, _, s in paths.values() if hasattr(s, "attention")), None)
    print(f"minibert kernels: {kernels.backend()}"
          + (f"; Hugging Face attention: {attention}" if attention else ""))
    print(f"float32 matmul peak (NumPy BLAS, square 1024/2048): {peak:.1f} GFLOP/s")
    print(f"{n_steps} timed steps per path, the same batches for all, the order rotated each step, "
          f"after 1 warm-up step: fill {real.sum() / slots.sum():.2f} (real tokens / B x T), "
          f"mean T {np.mean(widths):.1f}, {real.mean():.0f} real tokens per batch\n")
    print_table(["path", "ms/step", "real tok/s", "x HF", "GFLOP/step", "GFLOP/s", "of peak",
                 "peak MiB", "faults/step"], rows)
    print("\nGFLOP counts the matrix products each path computes (forward + 2x backward): minibert "
          "on the real tokens, the MLM head at the real masked positions, the last layer at those and the "
          "[CLS] (its keys and values at all); Hugging Face on all B x T "
          "positions, the MLM head at all of them. Peak MiB: a fresh process, two steps on the "
          f"widest timed batch (T={max(widths)}), above its resident size before the model was "
          "built.")
    if args.workers > 1:
        print(f"minibert P x{args.workers}: the same step with the batch shared by {args.workers} "
              "data-parallel threads, one per core (`minibert pretrain --workers "
              f"{args.workers}`); its dropout streams are those of {args.workers} ranks.")
    print(FAULTS_NOTE)
    return 0


# ----------------------------------------------------------------------------------------------
# bench profile
# ----------------------------------------------------------------------------------------------
def bench_profile(args) -> int:
    """Per-operation time and the memory held between forward and backward, for minibert's training
    step
    on the synthetic full-length batch of ``bench train`` or (``--corpus``) on bundled-corpus
    batches."""

    from minibert import kernels, profiling
    from minibert.models import BertForPreTraining
    from minibert.optim import AdamW, clip_grad_norm, triples_from_model
    from minibert.pretraining.trainer import Trainer, TrainConfig, build_model

    B, T, repeats = args.batch_size, args.seq_len, args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        if args.corpus:
            dataset = _corpus_dataset(args, Path(tmp), needed=B * (2 * repeats + 3),
                                      command="profile --corpus")
            model = build_model(args.preset, dataset.vocab_size, args.seed, T).train()
            train_config = TrainConfig(steps=2 * repeats + 3, batch_size=B, seed=args.seed)
            trainer = Trainer(model, dataset, train_config, Path(tmp) / "out",
                              log=lambda message: None)
            batches = [trainer.next_batch() for _ in range(repeats + 1)]
            what = f"{repeats} bundled-corpus batches of {B}"
        else:
            config = BertConfig.preset(args.preset, vocab_size=args.vocab_size)
            model = BertForPreTraining(config, np.random.default_rng(args.seed)).train()
            rng = np.random.default_rng(args.seed)
            batches = [_pretraining_batch(config, B, T, args.predictions, rng)]
            what = (f"the synthetic full-length batch B={B} T={T} ({args.predictions} "
                    f"predictions per sequence)")
        optimizer = AdamW(triples_from_model(model), lr=1e-4)
        grads = [g for _, g in model.named_grads()]
        position = [0]

        def step():
            batch = batches[position[0] % len(batches)]
            position[0] += 1
            model.zero_grad()
            model.forward(**batch)
            model.backward()
            clip_grad_norm(grads, 1.0)
            optimizer.step()

        plain = [median_ms(step, 1, warmup=1 if k == 0 else 0) for k in range(repeats)]
        timer, instrumented = profiling.profile_step(step, repeats)
        model.forward(**batches[0])
        held = profiling.held_arrays(model)
        model.backward()
        peak = profiling.peak_traced_bytes(step)
    c = model.config
    print(f"minibert bench profile: preset {args.preset!r} (L={c.num_hidden_layers} "
          f"H={c.hidden_size} A={c.num_attention_heads} I={c.intermediate_size} V={c.vocab_size}), "
          f"kernels {kernels.backend()}, {what}; float32, dropout 0.1")
    for line in environment_lines():
        print(line)
    total = sum(timer.seconds.values())
    print(f"\nstep: {statistics.median(plain):.0f} ms (median of {repeats}), "
          f"{1e3 * instrumented:.0f} ms with every operation timed; exclusive time per "
          f"operation, per step (wrapped calls inside excluded):\n")
    rows = [[name, f"{timer.calls[name] / repeats:g}", f"{1e3 * sec / repeats:.1f}",
             f"{100 * sec / total:.1f}%"]
            for name, sec in sorted(timer.seconds.items(), key=lambda item: -item[1])]
    other = 1e3 * (instrumented * repeats - total) / repeats
    rows.append(["(outside the wrapped calls: clip, AdamW, zero_grad)", "", f"{other:.1f}", ""])
    print_table(["operation", "calls", "ms/step", "share"], rows)
    params = sum(p.data.nbytes for _, p in model.named_parameter_objects())
    print(f"\nmemory: parameters {params / 2**20:.1f} MiB, gradients the same, AdamW moments "
          f"twice that; peak of NumPy's allocations during one step (tracemalloc) "
          f"{peak / 2**20:.1f} MiB\n"
          f"arrays held between forward and backward ({sum(held.values()) / 2**20:.1f} MiB in "
          f"all):\n")
    print_table(["module.attribute", "MiB", "share"],
                [[key, f"{n / 2**20:.2f}", f"{100 * n / max(sum(held.values()), 1):.1f}%"]
                 for key, n in sorted(held.items(), key=lambda item: -item[1]) if n >= 2**16])
    return 0


# ----------------------------------------------------------------------------------------------
# bench cost
# ----------------------------------------------------------------------------------------------
COST_GRID = [("mini", 64), ("mini", 128), ("mini", 256), ("mini", 512), ("tiny", 128),
             ("small", 128)]


def bench_cost(args) -> int:
    """How step time and peak memory grow with the sequence length T (mini) and the model size
    (T = 128): minibert's pretraining step beside Hugging Face's on full-length synthetic batches of
    ``--batch-size`` (default 8), 15% of the positions predicted; the two paths interleaved, median
    of ``--repeats``."""

    from minibert import kernels

    have_torch = _have_torch()
    B = args.batch_size
    grid = [(preset, T) for preset, T in COST_GRID if args.preset in (None, preset)]
    print(f"minibert bench cost: one pretraining step (forward, backward, clip, AdamW), "
          f"B={B}, full-length synthetic batches, V={args.vocab_size}, 15% of positions "
          f"predicted; minibert ({kernels.backend()} kernels) and Hugging Face interleaved, median "
          f"of {args.repeats} after 1 warm-up; peak MiB in a fresh process (two steps) above its "
          "resident size before the model was built")
    for line in environment_lines():
        print(line)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset, T in grid:
            config = BertConfig.preset(preset, vocab_size=args.vocab_size,
                                       max_position_embeddings=max(128, T))
            P = max(1, round(0.15 * T))
            batch = _pretraining_batch(config, B, T, P, np.random.default_rng(args.seed))
            steps = {"minibert": _minibert_trainer(config, args.seed)}
            if have_torch:
                steps["huggingface"] = _huggingface_trainer(config, args.seed)
            times = {name: [] for name in steps}
            for step in steps.values():
                step(batch)
            for _ in range(args.repeats):
                for name, step in steps.items():
                    times[name].append(median_ms(lambda: step(batch), 1, warmup=0))
            batch_file = Path(tmp) / f"{preset}-{T}.npz"
            np.savez(batch_file, **batch)
            ms = {name: statistics.median(t) for name, t in times.items()}
            mib = {name: _peak_memory_mb(kernels.backend() if name == "minibert" else name, config,
                                         batch_file) for name in steps}
            row = [preset, str(T), f"{ms['minibert']:.0f}", "-", "-",
                   "-" if mib["minibert"] is None else f"{mib['minibert']:.0f}", "-", "-"]
            if have_torch:
                row[3:5] = [f"{ms['huggingface']:.0f}", f"{ms['minibert'] / ms['huggingface']:.2f}"]
                if mib["minibert"] is not None and mib["huggingface"] is not None:
                    ratio = mib["minibert"] / mib["huggingface"]
                    row[6:8] = [f"{mib['huggingface']:.0f}", f"{ratio:.2f}"]
            rows.append(row)
            print("  " + "  ".join(row), flush=True)
    print()
    print_table(["preset", "T", "minibert ms", "HF ms", "time ratio", "minibert MiB", "HF MiB",
                 "memory ratio"], rows)
    return 0


# ----------------------------------------------------------------------------------------------
# bench parity
# ----------------------------------------------------------------------------------------------
PARITY_DEFAULTS = {"preset": "tiny", "batch_size": 16, "steps": 200, "lines": 4000,
                   "dupe_factor": 2}


def _corpus_head(lines: int) -> list[str]:
    """The first ``lines`` lines of the bundled corpus, continued to the end of the document they are in."""
    from minibert.paths import data_path

    out = []
    with open(data_path("corpus", "train.txt"), encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if len(out) >= lines and not line.strip():
                break
            out.append(line)
    return out


def bench_parity(args) -> int:
    """Train minibert's BertForPreTraining and Hugging Face's from the same weights on the same batches
    (dropout off, the same AdamW, schedule and clipping), print both losses and plot the two curves."""

    from minibert import interop
    from minibert.models import BertForPreTraining
    from minibert.optim import AdamW, clip_grad_norm, linear_warmup_decay, triples_from_model
    from minibert.paths import data_path
    from minibert.plots import plot_parity
    from minibert.pretraining.data import DataConfig, PretrainingDataset, prepare

    try:
        torch, transformers = interop.import_torch_and_transformers("minibert bench parity")
    except ImportError as exc:
        raise ValueError(str(exc)) from None
    for name in ("steps", "lines"):
        positive_int(f"--{name}", getattr(args, name))
    if not args.lr > 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")
    B, T, steps = args.batch_size, args.seq_len, args.steps
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    warmup = steps // 10
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lines = _corpus_head(args.lines)
        (tmp / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        t0 = time.perf_counter()
        prepare([tmp / "corpus.txt"], data_path("vocab.txt"), tmp / "data",
                       DataConfig(max_seq_length=T, dupe_factor=args.dupe_factor), seed=args.seed)
        dataset = PretrainingDataset(tmp / "data")
        config = BertConfig.preset(args.preset, vocab_size=dataset.vocab_size, max_position_embeddings=max(T, 128),
                                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        ours = BertForPreTraining(config, np.random.default_rng(args.seed)).train()
        hf = interop.hf_from_minibert(ours, tmp / "initial").train()       # the same weights, via save_pretrained
        print(f"minibert bench parity: {len(lines):,} lines of data/corpus/train.txt -> {len(dataset):,} instances "
              f"(T={T}, dupe factor {args.dupe_factor}, {time.perf_counter() - t0:.1f} s); preset {args.preset!r} "
              f"(L={config.num_hidden_layers} H={config.hidden_size} A={config.num_attention_heads} "
              f"I={config.intermediate_size} V={config.vocab_size}), dropout off, float32")
        print(f"{steps} steps of batch {B}: AdamW lr {args.lr} (warmup {warmup} steps, linear decay), eps 1e-6, "
              f"weight decay 0.01 except LayerNorm and biases, bias correction, clipping at 1.0; "
              f"transformers {transformers.__version__}, torch {torch.__version__} (eager attention)\n")

        ours_opt = AdamW(triples_from_model(ours), lr=args.lr, eps=1e-6, weight_decay=0.01, correct_bias=True)
        hf_opt = interop.torch_adamw_like(hf, lr=args.lr, weight_decay=0.01, eps=1e-6)
        ours_grads = [g for _, g in ours.named_grads()]
        losses = {"minibert": [], "huggingface": []}
        seconds = {"minibert": 0.0, "huggingface": 0.0}
        pad_steps = []      # steps whose batch has [PAD] at a real position (see the note printed below)

        def batches():
            epoch = 0
            while True:
                yield from dataset.batches(B, args.seed, epoch=epoch, drop_last=True, trim_padding=True)
                epoch += 1

        stream = batches()
        for step in range(steps):
            batch = next(stream)
            lr = linear_warmup_decay(step, args.lr, warmup, steps)
            if ((batch["input_ids"] == config.pad_token_id) & (batch["attention_mask"] == 1)).any():
                pad_steps.append(step + 1)
            t0 = time.perf_counter()
            ours.zero_grad()
            loss = float(ours.forward(**batch).loss)
            ours.backward()
            clip_grad_norm(ours_grads, 1.0)
            ours_opt.step(lr)
            t1 = time.perf_counter()
            hf_opt.zero_grad()
            hf_loss, _, _ = interop.hf_pretraining_loss(interop.hf_forward(hf, batch), batch)
            hf_loss.backward()
            torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
            for group in hf_opt.param_groups:
                group["lr"] = lr
            hf_opt.step()
            t2 = time.perf_counter()
            seconds["minibert"] += t1 - t0
            seconds["huggingface"] += t2 - t1
            losses["minibert"].append(loss)
            losses["huggingface"].append(hf_loss.item())
            if step == 0 or (step + 1) % max(1, steps // 10) == 0:
                print(f"step {step + 1:5d}  minibert {loss:.6f}  huggingface {hf_loss.item():.6f}  "
                      f"|diff| {abs(loss - hf_loss.item()):.2e}")

    diff = np.abs(np.array(losses["minibert"]) - np.array(losses["huggingface"]))
    figure = plot_parity(losses["minibert"], losses["huggingface"], out / "parity_loss.png",
                         title=f"preset {args.preset}, batch {B}, T {T}: same weights, same batches")
    (out / "parity_losses.json").write_text(json.dumps(losses) + "\n")
    print(f"\nmax |loss difference| over {steps} steps: {diff.max():.2e} (step {int(diff.argmax()) + 1}); "
          f"first 10 steps {diff[:10].max():.2e}; final losses {losses['minibert'][-1]:.4f} / "
          f"{losses['huggingface'][-1]:.4f}")
    print(f"time in training steps: minibert {seconds['minibert']:.1f} s, Hugging Face {seconds['huggingface']:.1f} s")
    if pad_steps:
        print(f"note: the batches of steps {pad_steps} have [PAD] at a real position (MLM's random replacement "
              "can draw it). transformers' word embedding has padding_idx, which withholds the input-lookup "
              "gradient of the [PAD] row, and minibert (like the original BERT) does not: a real difference, "
              "small, from that step on. Elsewhere the two differ by float32 rounding only.")
    print(f"figure: {figure}\nlosses: {out / 'parity_losses.json'}")
    return 0


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------
def bench_scaling(args) -> int:
    """1 and 2 MPI ranks here and the N-machine arithmetic: ``minibert.bench_scaling``."""
    from minibert import bench_scaling as scaling
    return scaling.main(args)


BENCHMARKS = {
    "scaling": (bench_scaling, "data parallelism: step time, communication and real tokens/s on 1 and "
                               "2 MPI ranks, and what N machines would give (needs the mpi extra)"),
    "corpus": (bench_corpus, "pretraining throughput (real tokens/s) on the bundled corpus, tiny "
                             "and mini, against Hugging Face when installed"),
    "profile": (bench_profile, "where a training step's time and memory go, operation by operation "
                               "(--corpus: on bundled-corpus batches)"),
    "cost": (bench_cost, "how step time and peak memory grow with T (64-512) and model size "
                         "(tiny, mini, small), minibert beside Hugging Face"),
    "kernels": (bench_kernels, "every Numba kernel against its NumPy reference, and one encoder step"),
    "train": (bench_train, "one pretraining step: NumPy path, Numba path and (if installed) Hugging Face"),
    "parity": (bench_parity, "train minibert and Hugging Face from the same weights on the same batches; "
                             "plot both loss curves (needs torch and transformers)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=list(BENCHMARKS),
                        help="; ".join(f"{name}: {help_text}" for name, (_, help_text) in BENCHMARKS.items()))
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per measurement (default 10; profile 5, cost 3)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="B (default 32; parity 16; cost 8)")
    parser.add_argument("--seq-len", type=int, default=128, help="T (default 128)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="model sizes H, A, I, L (default mini; parity tiny; corpus both tiny "
                             "and mini)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs and weights")
    parser.add_argument("--predictions", type=int, default=PREDICTIONS_PER_SEQUENCE,
                        help="train: masked positions per sequence (default 20)")
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE, help="train: V (default 8192)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"parity: training steps (default {PARITY_DEFAULTS['steps']}); "
                             f"corpus: timed steps per path (default {CORPUS_DEFAULTS['steps']})")
    parser.add_argument("--lines", type=int, default=None,
                        help=f"parity, corpus: first lines of data/corpus/train.txt to use "
                             f"(default {PARITY_DEFAULTS['lines']}; corpus "
                             f"{CORPUS_DEFAULTS['lines']})")
    parser.add_argument("--dupe-factor", type=int, default=None,
                        help=f"parity, corpus: passes of instance creation (default "
                             f"{PARITY_DEFAULTS['dupe_factor']}; corpus "
                             f"{CORPUS_DEFAULTS['dupe_factor']}, as `minibert pretrain`)")
    parser.add_argument("--lr", type=float, default=1e-3, help="parity: peak learning rate (default 1e-3)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="train, corpus: also time the step with the batch shared by N "
                             "data-parallel threads, as `minibert pretrain --workers N` (default: "
                             "the number of cores; 1 leaves those rows out)")
    parser.add_argument("--corpus", action="store_true",
                        help="profile: bundled-corpus batches instead of the synthetic "
                             "full-length batch")
    parser.add_argument("--out", default="runs/bench-parity", help="parity: folder for the figure and losses")


def main(args) -> int:
    if args.what == "scaling":          # its own defaults (preset mini, batch 32, 10 steps)
        return bench_scaling(args)
    per_command = {"parity": PARITY_DEFAULTS, "corpus": CORPUS_DEFAULTS,
                   "cost": {"batch_size": 8, "repeats": 3},
                   "profile": {**CORPUS_DEFAULTS, "repeats": 5}}
    defaults = per_command.get(args.what, {})
    if args.preset is None and args.what not in ("corpus", "cost"):
        args.preset = defaults.get("preset", "mini")
    fallback = {**PARITY_DEFAULTS, "batch_size": 32, "repeats": 10}
    for name in ("batch_size", "steps", "lines", "dupe_factor", "repeats"):
        if getattr(args, name) is None:
            setattr(args, name, defaults.get(name, fallback[name]))
    if args.workers is None:
        args.workers = os.cpu_count() or 1
    for name in ("repeats", "batch_size", "seq_len", "workers"):
        positive_int("--" + name.replace("_", "-"), getattr(args, name))
    run, _ = BENCHMARKS[args.what]
    return run(args)
