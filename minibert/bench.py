"""``minibert bench WHAT``: benchmarks.

    minibert bench kernels [--repeats N] [--batch-size 32] [--seq-len 128] [--preset mini]

``kernels`` times every kernel pair of ``minibert.kernels`` (NumPy reference vs Numba), forward and
backward separately, at the shapes one training step of the chosen preset meets, then one whole encoder
forward + backward through each path. Each number is the median over ``--repeats`` calls in this one
process, after one warm-up call (which also pays Numba's compilation, or loads it from the disk cache).

Adding a benchmark is one function ``bench_NAME(args) -> int`` and one entry in ``BENCHMARKS``;
``median_ms`` and ``print_table`` are meant to be shared by all of them.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Callable

import numpy as np

from minibert.config import PRESETS, BertConfig

# The sizes of a BERT pretraining step that are not in the model config. The MLM head scores about 15%
# of the tokens: max_predictions_per_seq = 20 for T = 128 in the original BERT, so P = 20 B rows.
VOCAB_SIZE = 8192
PREDICTIONS_PER_SEQUENCE = 20


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------
def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall-clock time of ``fn()`` in milliseconds over ``repeats`` calls, after ``warmup`` calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


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
        f"{numba.config.NUMBA_NUM_THREADS} threads), os.cpu_count()={os.cpu_count()}",
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

    def embedding(m):
        dweight = np.zeros((V, H), f32)
        return None, lambda: m.embedding_backward(dhidden, ids, dweight)

    def cross_entropy(m):
        _, cache = m.cross_entropy_forward(logits, targets, weights)
        return lambda: m.cross_entropy_forward(logits, targets, weights), lambda: m.cross_entropy_backward(1.0, cache)

    return [
        ("softmax", f"({B}, {A}, {T}, {T}) + mask ({B}, {T})", softmax),
        ("layernorm", f"({B}, {T}, {H})", layernorm),
        ("bias_gelu", f"({B}, {T}, {I}) erf", bias_gelu(False)),
        ("bias_gelu", f"({B}, {T}, {I}) tanh", bias_gelu(True)),
        ("embedding", f"({B}, {T}, {H}) -> ({V}, {H})", embedding),
        ("cross_entropy", f"({P}, {V}) weighted", cross_entropy),
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
            rows.append([f"{name}_{direction}", shape, f"{ms['numpy']:.2f}", f"{ms['numba']:.2f}",
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
# The command
# ----------------------------------------------------------------------------------------------
BENCHMARKS = {
    "kernels": (bench_kernels, "every Numba kernel against its NumPy reference, and one encoder step"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=list(BENCHMARKS),
                        help="; ".join(f"{name}: {help_text}" for name, (_, help_text) in BENCHMARKS.items()))
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per measurement (default 10)")
    parser.add_argument("--batch-size", type=int, default=32, help="B (default 32)")
    parser.add_argument("--seq-len", type=int, default=128, help="T (default 128)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="mini",
                        help="model sizes H, A, I, L (default mini)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs and weights")


def main(args) -> int:
    for name in ("repeats", "batch_size", "seq_len"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    run, _ = BENCHMARKS[args.what]
    return run(args)
