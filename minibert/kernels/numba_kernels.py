"""Numba kernels for the hot non-matmul pairs, with the signatures of ``minibert.functional``.

Each public function is a thin Python wrapper that validates its input like the NumPy reference, makes
the arrays C-contiguous and reshapes the leading dimensions away (to rows of length N, H, I or C), then
calls a compiled kernel that does the whole operation row by row, while the row sits in the L1 cache,
instead of the reference's chain of whole-array NumPy operations. The math is the reference's; each
docstring points at the derivation there.

Why it is faster, and what it takes:

* Fusion: the reference makes 5-10 passes over (B*T, I)-sized arrays per operation, each allocating a
  temporary; a kernel reads its inputs once and writes its outputs once.
* Vectorisation: NumPy's ``exp`` and ``tanh`` are SIMD code, while Numba calls the scalar C library
  for ``math.exp``, ``math.tanh`` and ``math.erfc`` (6x, 45x and 25x slower per element than NumPy's
  float32 exp / tanh here).
  ``_exp`` below is a plain-arithmetic exp that LLVM turns into SIMD code, and ``_normal_cdf`` builds
  the exact GELU's Phi on it, so the exp- and erf-heavy kernels (softmax, cross-entropy, GELU) win.
  Loops that sum use four independent accumulators (``_row_sum`` ...): a single running sum is one
  long dependency chain, which LLVM may not split without ``fastmath`` (that would reorder additions).
* Threads: every kernel but the embedding scatter-add spreads its rows over the cores with ``prange``,
  on Numba's ``workqueue`` threading layer, for calls above ``SERIAL_UP_TO`` elements (see the comments
  at ``_kernel`` and ``SERIAL_UP_TO`` for why, with measurements). Every kernel releases the GIL
  (``nogil``), so Python threads that each run their own computation (``minibert.distributed.Workers``,
  inside ``kernels.single_threaded()``, where every call runs the serial copy) run at once.

Conventions shared by every kernel:

* dtype follows the input. Numba compiles one specialisation per dtype; every output is allocated in
  the input dtype, so float32 in gives float32 out. Elementwise math runs in the input precision (exp
  and Phi have float32 and float64 versions, like ``minibert.special``), but row statistics (sums,
  means, variances, parameter-gradient sums) are accumulated in float64 whatever the input dtype, and
  variances are two-pass (mean first, then the mean of squared deviations). Float32 results are
  therefore at least as accurate as the reference's.
* ``fastmath`` is off: float64 results must agree with the reference to ~1e-10 and keep NaN/inf
  semantics.
* Parameter gradients (dgamma, dbeta, dbias) are summed over fixed blocks of ``_ROWS_PER_BLOCK`` rows
  and the block sums are then added in order, so the result does not depend on the number of threads.
  They are ADDED into the buffers passed in, like the reference does; so is the embedding scatter-add.
* Caches differ from the reference's where that saves work (layer norm keeps x, mean and 1/std instead
  of xhat; GELU keeps its slope GELU'(a) instead of a, so the backward does not evaluate erfc again). Only the
  matching backward reads them: ``minibert.kernels`` binds every cache to the backend that made it.
"""
from __future__ import annotations

import functools
import math
import os
import threading

import numba
import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from minibert import functional as F
from minibert import special
from minibert.special import _COEFFS as _ERFC_SERIES

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_ROWS_PER_BLOCK = 64           # rows per partial sum of a parameter gradient (fixed: reproducible results)
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TANH_K = math.sqrt(2.0 / math.pi)
_TANH_C = 0.044715

# Every kernel: compiled per dtype, with and without threads (see SERIAL_UP_TO), and cached on disk;
# fastmath off; NumPy's error model, so that x / 0 gives inf or nan like NumPy instead of raising, which
# also lets LLVM vectorise loops that divide (Python's ZeroDivisionError check is a branch in the loop
# body); parallel over rows.
#
# Threads, measured on 2 cores (mini shapes, float32). Alone, the kernels run 1.4-2.4x faster on two
# threads than on one with Numba's default OpenMP layer, 1.2-1.8x with its workqueue layer. In a
# training step each kernel follows a matmul, whose OpenBLAS threads keep spinning on the cores for a
# while after it returns, so a kernel's second thread mostly waits: a whole mini-BERT forward + backward
# took the same time on one or two kernel threads (750 vs 770 ms at B=32, T=128; NumPy path 1400 ms).
# With the OpenMP layer, whose idle threads spin in turn and slow the next matmul, it took 1080 ms, on
# one thread or two. Hence the workqueue layer (idle threads sleep), unless NUMBA_THREADING_LAYER says
# otherwise; it cannot run kernels from several Python threads at once, which minibert never does.
# The results do not depend on the number of threads (see _ROWS_PER_BLOCK).
if "NUMBA_THREADING_LAYER" not in os.environ:   # takes effect only if no Numba threads were started yet
    numba.config.THREADING_LAYER = "workqueue"
_parallel_kernel = njit(cache=True, parallel=True, nogil=True, fastmath=False, error_model="numpy")
_serial_kernel = njit(cache=True, nogil=True, fastmath=False, error_model="numpy")

# Waking the workqueue's sleeping second thread costs 60-150 us per launch on this 2-core machine,
# whatever the size (serial, `a[i] += 1` over 210,000 float32 takes 15-25 us). So every kernel is
# compiled twice, and a call whose first array holds at most SERIAL_UP_TO elements runs the serial copy
# (prange is then range): the same operations in the same order (see _ROWS_PER_BLOCK), so the same bits
# either way. The bound, measured: interleaved training steps (tiny corpus / mini corpus) took 52.0 /
# 240 ms with every call on the threads, 51.5 / 237 ms with this bound, 51.9 / 233 ms serial up to 4 M
# elements; but `minibert probe --model mini --limit 200` (mostly inference) took 64-68 s serial up to
# 4 M against 59-62 s on the threads, and 60-61 s with this bound. Set SERIAL_UP_TO = -1 to run every
# call on the threads (lesson 05 compares the two).
SERIAL_UP_TO = 1 << 18


class _Kernel:
    """A kernel compiled with threads (``parallel``) and without (``serial``); a call picks by size."""

    def __init__(self, func):
        self.parallel = _parallel_kernel(func)
        # A second function object with its own name: Numba's on-disk cache is keyed by the function's
        # qualified name, not by the parallel flag, so the two versions need two names.
        twin = type(func)(func.__code__, func.__globals__, func.__name__ + "_serial", func.__defaults__,
                          func.__closure__)
        twin.__qualname__ = func.__qualname__ + "_serial"
        self.serial = _serial_kernel(twin)
        functools.update_wrapper(self, func)

    def __call__(self, *args):
        return (self.serial if args[0].size <= SERIAL_UP_TO else self.parallel)(*args)


_kernel = _Kernel


# ----------------------------------------------------------------------------------------------
# Building blocks (compiled into the kernels that call them)
# ----------------------------------------------------------------------------------------------
@intrinsic
def _bits_as_float64(typingctx, bits):
    """The float64 whose IEEE-754 bit pattern is the int64 ``bits`` (an LLVM bitcast: no instruction)."""
    if bits != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return types.float64(types.int64), codegen


@intrinsic
def _select(typingctx, condition, if_true, if_false):
    """``if_true if condition else if_false`` for two floats of one type, as one LLVM ``select``. The
    helpers inlined into the kernels end with it instead of Python's conditional expression: Numba's
    inliner renames the variable that such an expression assigns on two paths, and when ``_exp`` is
    inlined into ``_normal_cdf``, itself inlined into a kernel, its SSA check then warns (at every
    compilation, a NumbaIRAssumptionWarning asking for a bug report). LLVM made the same select of the
    conditional expression, so the compiled loops, and every result bit, are as before."""
    if condition != types.boolean or if_true != if_false or if_true not in (types.float32, types.float64):
        return None

    def codegen(context, builder, signature, args):
        return builder.select(args[0], args[1], args[2])

    return if_true(types.boolean, if_true, if_true), codegen


@intrinsic
def _times_pow2_float32(typingctx, p, kf):
    """(p 2^h) 2^(k - h) for the integer-valued float32 kf = k, h = k >> 1, each power of two built from
    its exponent bits. Written in LLVM IR because Numba does integer arithmetic in int64, and int64
    lanes would halve the vector width of the float32 loops around it (``_exp_float32``: 3.0 -> 2.4 ms
    per 4 M elements); the arithmetic, and so every result bit, is the same."""
    if p != types.float32 or kf != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32, f32 = llvm_ir.IntType(32), context.get_value_type(types.float32)

        def power_of_two(e):                                  # 2^e as the float32 bits (e + 127) << 23
            biased = builder.add(e, llvm_ir.Constant(i32, 127))
            return builder.bitcast(builder.shl(biased, llvm_ir.Constant(i32, 23)), f32)

        k = builder.fptosi(args[1], i32)
        h = builder.ashr(k, llvm_ir.Constant(i32, 1))
        return builder.fmul(builder.fmul(args[0], power_of_two(h)), power_of_two(builder.sub(k, h)))

    return types.float32(types.float32, types.float32), codegen


# exp(x) = 2^k exp(r), k = round(x / ln 2), |r| <= ln(2) / 2. ln 2 is split into a high part with few
# significant bits (so k * HI is exact) and the remainder, so that r is accurate. exp(r) is its Taylor
# series, to r^13 in float64 and r^7 in float32 (the first omitted term is below half an ulp). 2^k is
# built from its exponent bits, as two factors 2^h 2^(k-h) so that subnormal results come out right.
# x is clamped first to where exp underflows to 0 / overflows to inf; NaN stays NaN. Error ~1-2 ulp.
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_F32 = np.float32
_LOG2E_F32 = _F32(_LOG2E)
_LN2_HI_F32 = _F32(0.693359375)
_LN2_LO_F32 = _F32(math.log(2.0) - 0.693359375)
_INV_FACTORIAL_F32 = tuple(_F32(1.0 / math.factorial(n)) for n in range(8))


def _exp_float64(x):
    xc = min(max(x, -746.0), 710.0)
    kf = math.floor(xc * _LOG2E + 0.5)
    r = (xc - kf * _LN2_HI) - kf * _LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    k = np.int64(kf)
    h = k >> 1
    y = p * _bits_as_float64((h + 1023) << 52) * _bits_as_float64((k - h + 1023) << 52)
    return _select(x == x, y, x)


def _exp_float32(x):
    c = _INV_FACTORIAL_F32
    xc = min(max(x, _F32(-104.0)), _F32(89.0))
    kf = np.floor(xc * _LOG2E_F32 + _F32(0.5))
    r = (xc - kf * _LN2_HI_F32) - kf * _LN2_LO_F32
    p = c[7]
    p = p * r + c[6]
    p = p * r + c[5]
    p = p * r + c[4]
    p = p * r + c[3]
    p = p * r + c[2]
    p = p * r + c[1]
    p = p * r + c[0]
    y = _times_pow2_float32(p, kf)
    return _select(x == x, y, x)


def _exp(x):
    """exp(x) in x's precision, float32 or float64, in plain arithmetic that LLVM vectorises.

    Compiled code gets ``_exp_float32`` / ``_exp_float64`` through the overload below; called from
    Python this is just ``np.exp``.
    """
    return np.exp(x)


@overload(_exp, inline="always")
def _exp_overload(x):
    if x == types.float64:
        return _exp_float64
    if x == types.float32:
        return _exp_float32
    return None


# Phi(x) uses the erfc series of ``minibert.special`` (the reference's): for z = |x| / sqrt 2,
#     erfc(z) = t exp(-z^2 + g(u)),  t = 2 / (2 + z),  u = 2t - 1,  g = sum_k c_k T_k(u),
# with 25 coefficients in float64 (~1e-14 relative) and 13 in float32 (~1e-8), in both tails. The
# coefficients are passed to the kernels as an argument (a global array would be frozen into the
# on-disk cache) but their number is a compile-time constant, so LLVM unrolls the Clenshaw recurrence
# and vectorises the loop around it: 2.5x (float64) to 5x (float32) faster than calling the C library's
# erfc (math.erfc), which stays scalar.
_CDF_COEFFS = {dtype: np.ascontiguousarray(c, dtype=dtype) for dtype, c in _ERFC_SERIES.items()}
_CDF_TERMS_F64, _CDF_TERMS_F32 = 25, 13
if (_CDF_COEFFS[np.dtype(np.float64)].size, _CDF_COEFFS[np.dtype(np.float32)].size) != (_CDF_TERMS_F64, _CDF_TERMS_F32):
    raise RuntimeError("minibert.special changed the length of its erfc series; update the Numba kernels")


def _normal_cdf_float64(x, coeffs):
    z = abs(x) * _SQRT_HALF
    t = 2.0 / (2.0 + z)
    two_u = 2.0 * (2.0 * t - 1.0)
    b1 = 0.0
    b2 = 0.0
    for k in range(_CDF_TERMS_F64 - 1, 0, -1):      # Clenshaw: sum_k c_k T_k(u)
        b1, b2 = two_u * b1 - b2 + coeffs[k], b1
    tail = 0.5 * t * _exp(-z * z + (0.5 * two_u * b1 - b2 + coeffs[0]))    # P(N > |x|)
    return _select(x < 0.0, tail, 1.0 - tail)


def _normal_cdf_float32(x, coeffs):
    one, two, half = _F32(1.0), _F32(2.0), _F32(0.5)
    z = abs(x) * _F32(_SQRT_HALF)
    t = two / (two + z)
    two_u = two * (two * t - one)
    b1 = _F32(0.0)
    b2 = _F32(0.0)
    for k in range(_CDF_TERMS_F32 - 1, 0, -1):
        b1, b2 = two_u * b1 - b2 + coeffs[k], b1
    tail = half * t * _exp(-z * z + (half * two_u * b1 - b2 + coeffs[0]))
    return _select(x < _F32(0.0), tail, one - tail)


def _normal_cdf(x, coeffs):
    """Phi(x) = P(N(0, 1) <= x) = erfc(-x / sqrt 2) / 2 in x's precision, computed from the upper tail
    on the far side of zero, so it keeps full relative accuracy in both tails. ``coeffs`` is
    ``_CDF_COEFFS[x.dtype]``. Called from Python this is ``minibert.special.normal_cdf``."""
    return special.normal_cdf(np.asarray(x))


@overload(_normal_cdf, inline="always")
def _normal_cdf_overload(x, coeffs):
    if x == types.float64:
        return _normal_cdf_float64
    if x == types.float32:
        return _normal_cdf_float32
    return None


@njit(inline="always")
def _row_sum(v):
    """sum_j v[j] in float64, with four interleaved partial sums (independent chains run in parallel)."""
    n = v.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    j = 0
    while j + 4 <= n:
        s0 += v[j]
        s1 += v[j + 1]
        s2 += v[j + 2]
        s3 += v[j + 3]
        j += 4
    while j < n:
        s0 += v[j]
        j += 1
    return (s0 + s1) + (s2 + s3)


@njit(inline="always")
def _row_dot(u, v):
    """sum_j u[j] v[j] in float64, four partial sums as in ``_row_sum``."""
    n = v.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    j = 0
    while j + 4 <= n:
        s0 += np.float64(u[j]) * v[j]
        s1 += np.float64(u[j + 1]) * v[j + 1]
        s2 += np.float64(u[j + 2]) * v[j + 2]
        s3 += np.float64(u[j + 3]) * v[j + 3]
        j += 4
    while j < n:
        s0 += np.float64(u[j]) * v[j]
        j += 1
    return (s0 + s1) + (s2 + s3)


@njit(inline="always")
def _row_centered_sumsq(v, mu):
    """sum_j (v[j] - mu)^2 in float64 (the second pass of a two-pass variance)."""
    n = v.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    j = 0
    while j + 4 <= n:
        d0 = v[j] - mu
        d1 = v[j + 1] - mu
        d2 = v[j + 2] - mu
        d3 = v[j + 3] - mu
        s0 += d0 * d0
        s1 += d1 * d1
        s2 += d2 * d2
        s3 += d3 * d3
        j += 4
    while j < n:
        d0 = v[j] - mu
        s0 += d0 * d0
        j += 1
    return (s0 + s1) + (s2 + s3)


@njit(inline="always")
def _row_max(v):
    """max_j v[j] (exact in any order; four running maxima for speed)."""
    n = v.shape[0]
    m0 = m1 = m2 = m3 = v[0]
    j = 0
    while j + 4 <= n:
        m0 = max(m0, v[j])
        m1 = max(m1, v[j + 1])
        m2 = max(m2, v[j + 2])
        m3 = max(m3, v[j + 3])
        j += 4
    while j < n:
        m0 = max(m0, v[j])
        j += 1
    return max(max(m0, m1), max(m2, m3))


def _float_array(name, a, dtype=None):
    """a as a C-contiguous float32/float64 array (converted to ``dtype`` if given)."""
    a = np.ascontiguousarray(a, dtype=dtype)
    if a.dtype not in _FLOATS:
        raise ValueError(f"{name} must be float32 or float64 for the Numba kernels, got {a.dtype}")
    return a


def _check_buffer(name, buffer, shape):
    if not isinstance(buffer, np.ndarray) or buffer.shape != shape:
        raise ValueError(f"{name} must be an array of shape {shape}, got {getattr(buffer, 'shape', buffer)}")


def _add_into(buffer, total):
    """buffer += total (the in-place accumulation), in buffer's dtype, whatever buffer's memory layout."""
    buffer += total.astype(buffer.dtype, copy=False)


def _n_blocks(rows):
    return max(1, -(-rows // _ROWS_PER_BLOCK))


# ----------------------------------------------------------------------------------------------
# Softmax with an additive mask
# ----------------------------------------------------------------------------------------------
@_kernel
def _softmax_forward_kernel(x, mask_bias, scale, p):
    """x (B, M, N), mask_bias (B or 1, N) -> p (B, M, N) = softmax(x scale + mask_bias) per row of N.
    (Attention's scores arrive unscaled; for softmax_forward, scale = 1 changes no bit.)"""
    B, M, N = x.shape
    per_batch = mask_bias.shape[0] > 1
    for r in prange(B * M):
        b = r // M
        xr = x[b, r - b * M]
        pr = p[b, r - b * M]
        mb = mask_bias[b if per_batch else 0]
        # The mask is added in the input dtype, as in the reference: for a fully padded float32 row
        # x - 10000 rounds, and the result must round the same way.
        for j in range(N):
            pr[j] = xr[j] * scale + mb[j]
        _softmax_row(pr)


@njit(inline="always")
def _softmax_row(pr):
    """pr = softmax(pr) in place: subtract the max, exponentiate, divide by the float64 sum."""
    n = pr.shape[0]
    top = _row_max(pr)
    for j in range(n):
        pr[j] = _exp(pr[j] - top)
    inv_total = 1.0 / _row_sum(pr)
    for j in range(n):
        pr[j] = pr[j] * inv_total


def softmax_forward(x, mask_bias=None):
    """p = softmax(x + mask_bias) over the last axis; see ``functional.softmax_forward``.

    x (B, ..., N), mask_bias (B, N) or None -> p (B, ..., N) in x's dtype; the cache is p.
    """
    p = _softmax(x, mask_bias, None)
    return p, p


def _softmax(x, mask_bias, scale):
    """softmax(x scale + mask_bias) (scale None: 1, in x's dtype)."""
    x = _float_array("x", x)
    scale = x.dtype.type(1 if scale is None else scale)
    shape = x.shape
    N = shape[-1] if x.ndim else 1
    if mask_bias is None:
        x3 = x.reshape(1, -1, N)
        mask = np.zeros((1, N), dtype=x.dtype)
    else:
        mask = _float_array("mask_bias", mask_bias, dtype=x.dtype)
        if x.ndim < 2 or mask.ndim != 2 or mask.shape[1] != N or mask.shape[0] not in (1, shape[0]):
            raise ValueError(f"mask_bias must have shape (B, N) = ({shape[0] if x.ndim else '?'}, {N}) "
                             f"for x of shape {shape} = (B, ..., N), got {mask.shape}")
        x3 = x.reshape(shape[0], -1, N)
    p = np.empty_like(x3)
    if x3.size:
        _softmax_forward_kernel(x3, mask, scale, p)
    return p.reshape(shape)


@_kernel
def _softmax_backward_kernel(dp, p, dx):
    """Per row of N: dx_i = p_i (dp_i - sum_j dp_j p_j) (derived in functional.softmax_backward)."""
    R, N = p.shape
    for r in prange(R):
        s = _row_dot(dp[r], p[r])
        for j in range(N):
            dx[r, j] = p[r, j] * (dp[r, j] - s)


def softmax_backward(dp, p):
    """dx = p (dp - sum(dp p)) over the last axis; see ``functional.softmax_backward``."""
    p = _float_array("p", p)
    dp = _float_array("dp", dp, dtype=p.dtype)
    if dp.shape != p.shape:
        raise ValueError(f"dp must have the shape of p {p.shape}, got {dp.shape}")
    N = p.shape[-1] if p.ndim else 1
    dx = np.empty_like(p)
    if p.size:
        _softmax_backward_kernel(dp.reshape(-1, N), p.reshape(-1, N), dx.reshape(-1, N))
    return dx


# ----------------------------------------------------------------------------------------------
# Layer normalisation, and the sublayer end LayerNorm(dropout(x) + residual)
# ----------------------------------------------------------------------------------------------
@njit(inline="always")
def _layernorm_row(xr, gamma, beta, eps, yr, mean, rstd, r):
    """yr = gamma (xr - mean) rstd + beta for row r; mean[r], rstd[r] = (var + eps)^-1/2, two-pass."""
    H = xr.shape[0]
    mu = _row_sum(xr) / H
    mean[r] = mu
    rstd[r] = 1.0 / math.sqrt(_row_centered_sumsq(xr, mu) / H + eps)
    mu, rs = mean[r], rstd[r]          # as rounded to x's dtype: the backward sees the same xhat
    for j in range(H):
        yr[j] = (xr[j] - mu) * rs * gamma[j] + beta[j]


@_kernel
def _layernorm_forward_kernel(x, gamma, beta, eps, y, mean, rstd):
    """x (R, H) -> y = gamma (x - mean) rstd + beta; mean (R,), rstd (R,)."""
    for r in prange(x.shape[0]):
        _layernorm_row(x[r], gamma, beta, eps, y[r], mean, rstd, r)


@_kernel
def _dropout_add_layernorm_forward_kernel(x, bits, threshold, scale, residual, gamma, beta, eps, s, keep, y,
                                          mean, rstd):
    """Per row: keep = bits >= threshold, s = (x scale where kept, x 0 elsewhere) + residual, then layer
    norm of s into y; the row of s is still in the L1 cache when the norm reads it twice. x, residual,
    s, y (R, H)."""
    R, H = x.shape
    zero = x.dtype.type(0.0)
    for r in prange(R):
        sr = s[r]
        for j in range(H):
            kept = bits[r, j] >= threshold
            keep[r, j] = kept
            sr[j] = (x[r, j] * scale if kept else x[r, j] * zero) + residual[r, j]
        _layernorm_row(sr, gamma, beta, eps, y[r], mean, rstd, r)


def _layernorm_params(gamma, beta, H, dtype):
    gamma = _float_array("gamma", gamma, dtype=dtype)
    beta = _float_array("beta", beta, dtype=dtype)
    if gamma.shape != (H,) or beta.shape != (H,):
        raise ValueError(f"gamma and beta must have shape ({H},), got {gamma.shape} and {beta.shape}")
    return gamma, beta


def layernorm_forward(x, gamma, beta, eps=1e-12):
    """y = gamma * xhat + beta over the last axis; see ``functional.layernorm_forward``.

    x (..., H), gamma (H,), beta (H,) -> y (..., H). The cache keeps x (R, H), the row means and 1/std
    ((R,) each, computed in float64, stored in x's dtype) and gamma; the backward recomputes xhat from
    them rather than storing it.
    x is kept by reference when it is already C-contiguous (as the reference keeps gamma): it must not
    be modified in place between forward and backward.
    """
    x = _float_array("x", x)
    H = x.shape[-1]
    gamma, beta = _layernorm_params(gamma, beta, H, x.dtype)
    x2 = x.reshape(-1, H)
    y = np.empty_like(x2)
    mean = np.empty(x2.shape[0], x2.dtype)
    rstd = np.empty(x2.shape[0], x2.dtype)
    if x2.size:
        _layernorm_forward_kernel(x2, gamma, beta, float(eps), y, mean, rstd)
    return y.reshape(x.shape), (x2, mean, rstd, gamma, x.shape)


def dropout_add_layernorm_forward(x, residual, p, rng, gamma, beta, eps=1e-12, drawn_rows=None):
    """y = LayerNorm(dropout(x) + residual) in one pass per row; see
    ``functional.dropout_add_layernorm_forward`` (the same draws; the same bits as this module's dropout,
    sum and layer norm one after the other). The cache is ((keep, scale) or None for p = 0, layer norm's
    cache of the sum)."""
    x = _float_array("x", x)
    residual = _float_array("residual", residual, dtype=x.dtype)
    if residual.shape != x.shape:
        raise ValueError(f"residual must have the shape of x {x.shape}, got {residual.shape}")
    if p == 0:
        y, layernorm_cache = layernorm_forward(x + residual, gamma, beta, eps)
        return y, (None, layernorm_cache)
    H = x.shape[-1]
    gamma, beta = _layernorm_params(gamma, beta, H, x.dtype)
    x2 = x.reshape(-1, H)
    bits, threshold, scale = F.dropout_bits(x2.shape, p, rng, x.dtype, drawn_rows)
    s, y = np.empty_like(x2), np.empty_like(x2)
    keep = np.empty(x2.shape, dtype=np.bool_)
    mean = np.empty(x2.shape[0], x2.dtype)
    rstd = np.empty(x2.shape[0], x2.dtype)
    if x2.size:
        _dropout_add_layernorm_forward_kernel(x2, bits, threshold, scale, residual.reshape(-1, H), gamma, beta,
                                              float(eps), s, keep, y, mean, rstd)
    return y.reshape(x.shape), ((keep, scale), (s, mean, rstd, gamma, x.shape))


@_kernel
def _layernorm_backward_kernel(dy, x, mean, rstd, gamma, dx, dgamma_blocks, dbeta_blocks, rows_per_block,
                               keep, scale, dz):
    """Per row, with xhat = (x - mean) rstd and g = dy gamma (derived in functional.layernorm_backward):
        dx = rstd (g - mean(g) - xhat mean(g xhat))
    Block k of ``rows_per_block`` rows adds its sums of dy xhat and of dy to row k of dgamma_blocks and
    dbeta_blocks. If ``keep`` has rows (x was dropout(z) + residual), also dz = dx scale where kept, dx 0
    elsewhere, from the row of dx while it is in the L1 cache."""
    R, H = x.shape
    dropout = keep.shape[0] > 0
    zero = x.dtype.type(0.0)
    for blk in prange(dgamma_blocks.shape[0]):
        dg = dgamma_blocks[blk]
        db = dbeta_blocks[blk]
        xh = np.empty(H)       # per-task scratch rows (each prange task gets its own)
        gr = np.empty(H)
        for r in range(blk * rows_per_block, min(R, (blk + 1) * rows_per_block)):
            mu = mean[r]
            rs = rstd[r]
            for j in range(H):
                xh[j] = (x[r, j] - mu) * rs
                gr[j] = dy[r, j] * np.float64(gamma[j])
            mg = _row_sum(gr) / H
            mgx = _row_dot(gr, xh) / H
            for j in range(H):
                dx[r, j] = rs * (gr[j] - mg - xh[j] * mgx)
                dg[j] += dy[r, j] * xh[j]
                db[j] += dy[r, j]
            if dropout:
                for j in range(H):
                    dz[r, j] = dx[r, j] * scale if keep[r, j] else dx[r, j] * zero


def _layernorm_backward(dy, cache, dgamma, dbeta, keep, scale):
    """dx (R, H) and, when ``keep`` has rows, dz (R, H) (else an empty array); adds into dgamma, dbeta."""
    x2, mean, rstd, gamma, shape = cache
    dy = _float_array("dy", dy, dtype=x2.dtype)
    if dy.shape != shape:
        raise ValueError(f"dy must have the shape of the forward input {shape}, got {dy.shape}")
    H = x2.shape[1]
    _check_buffer("dgamma", dgamma, (H,))
    _check_buffer("dbeta", dbeta, (H,))
    dx = np.empty_like(x2)
    dz = np.empty(keep.shape, x2.dtype)
    blocks = _n_blocks(x2.shape[0])
    dgamma_blocks = np.zeros((blocks, H))
    dbeta_blocks = np.zeros((blocks, H))
    if x2.size:
        _layernorm_backward_kernel(dy.reshape(-1, H), x2, mean, rstd, gamma, dx, dgamma_blocks, dbeta_blocks,
                                   _ROWS_PER_BLOCK, keep, scale, dz)
    _add_into(dgamma, dgamma_blocks.sum(axis=0))
    _add_into(dbeta, dbeta_blocks.sum(axis=0))
    return dx, dz


def layernorm_backward(dy, cache, dgamma, dbeta):
    """dx of layer norm; dgamma += sum dy xhat, dbeta += sum dy. See ``functional.layernorm_backward``."""
    x2 = cache[0]
    dx, _ = _layernorm_backward(dy, cache, dgamma, dbeta, np.empty((0, x2.shape[1]), np.bool_),
                                x2.dtype.type(1))
    return dx.reshape(cache[4])


def dropout_add_layernorm_backward(dy, cache, dgamma, dbeta):
    """(dx, dresidual): layer norm's backward gives ds = dresidual, and the same pass gives dx = ds
    through the dropout. See ``functional.dropout_add_layernorm_backward``."""
    dropout, layernorm_cache = cache
    if dropout is None:
        ds = layernorm_backward(dy, layernorm_cache, dgamma, dbeta)
        return ds, ds
    ds, dx = _layernorm_backward(dy, layernorm_cache, dgamma, dbeta, *dropout)
    shape = layernorm_cache[4]
    return dx.reshape(shape), ds.reshape(shape)


# ----------------------------------------------------------------------------------------------
# Bias + GELU
# ----------------------------------------------------------------------------------------------
# The forward evaluates GELU'(a) beside GELU(a) and caches only that slope: the backward is then
# da = dy * slope, one multiply, and the cache is one (R, I) array instead of the pre-activation a and
# Phi(a). The slope's expression is the one the backward used to evaluate, so results are unchanged
# to the bit. The kernels write the output over their input: inside ``linear_gelu_forward`` that is the
# matmul's result, which nothing else holds (one (R, I) array fewer allocated per call). They take one
# array for both, not an input and an output that may be the same array: LLVM vectorises a loop only
# where it can rule out overlap, and for two arguments that are one array it cannot (the serial
# compilation then ran 8x slower in place than into a separate output).
@_kernel
def _bias_gelu_exact_forward_kernel(x, bias, coeffs, slope):
    """a = x + bias, x <- a Phi(a), slope = Phi(a) + a phi(a) with phi(a) = exp(-a^2 / 2) / sqrt(2 pi)
    (functional.gelu_backward). x, slope (R, I)."""
    R, I = x.shape
    half, inv_sqrt_2pi = x.dtype.type(0.5), x.dtype.type(_INV_SQRT_2PI)
    for r in prange(R):
        for j in range(I):
            v = x[r, j] + bias[j]
            c = _normal_cdf(v, coeffs)
            x[r, j] = v * c
            slope[r, j] = c + v * _exp(-half * v * v) * inv_sqrt_2pi


@_kernel
def _bias_gelu_tanh_forward_kernel(x, bias, slope):
    """a = x + bias, x <- 0.5 a (1 + tanh(u)), u = k (a + c a^3), evaluated as a / (1 + exp(-2u)):
    0.5 (1 + tanh u) = sigmoid(2u) exactly, and this form avoids the cancellation of 1 + tanh(u) for
    u << 0 and needs only the vectorised exp. With s = sigmoid(2u) and 1 - tanh(u)^2 = 4 s (1 - s),
    the reference's GELU' = 0.5 (1 + t) + 0.5 a (1 - t^2) k (1 + 3 c a^2) becomes
        slope = s + 2 a s (1 - s) k (1 + 3 c a^2)."""
    R, I = x.shape
    dt = x.dtype.type            # constants in the input dtype keep float32 arithmetic float32
    k, c, one, two, three = dt(_TANH_K), dt(_TANH_C), dt(1.0), dt(2.0), dt(3.0)
    for r in prange(R):
        for j in range(I):
            v = x[r, j] + bias[j]
            u = k * (v + c * v * v * v)
            x[r, j] = v / (one + _exp(-two * u))
            s = one / (one + _exp(-two * k * (v + c * v * v * v)))
            slope[r, j] = s + two * v * s * (one - s) * k * (one + three * c * v * v)


def _bias_gelu(x, bias, approximate):
    """x <- GELU(x + bias) in place, x C-contiguous; returns the cache (slope, shape)."""
    I = x.shape[-1]
    bias = _float_array("bias", bias, dtype=x.dtype)
    if bias.shape != (I,):
        raise ValueError(f"bias must have shape ({I},), got {bias.shape}")
    x2 = x.reshape(-1, I)
    slope = np.empty_like(x2)
    if x2.size:
        if approximate:
            _bias_gelu_tanh_forward_kernel(x2, bias, slope)
        else:
            _bias_gelu_exact_forward_kernel(x2, bias, _CDF_COEFFS[x2.dtype], slope)
    return slope, x.shape


def bias_gelu_forward(x, bias, approximate=False):
    """y = GELU(x + b); see ``functional.bias_gelu_forward``. x (..., I), bias (I,) -> y (..., I).

    The cache is (GELU'(x + b) as (R, I), the input shape): see the note above.
    """
    y = np.array(_float_array("x", x), order="C")          # a copy: the kernel writes over its input
    return y, _bias_gelu(y, bias, approximate)


@_kernel
def _bias_gelu_backward_kernel(dy, slope, da, dbias_blocks, rows_per_block):
    """da = dy * slope; block k of rows adds its column sums of da to row k of dbias_blocks."""
    R, I = slope.shape
    for blk in prange(dbias_blocks.shape[0]):
        acc = dbias_blocks[blk]
        for r in range(blk * rows_per_block, min(R, (blk + 1) * rows_per_block)):
            for j in range(I):
                g = dy[r, j] * slope[r, j]
                da[r, j] = g
                acc[j] += g


def bias_gelu_backward(dy, cache, dbias):
    """da = dy GELU'(a), returned as dx; dbias += sum over rows of da. See ``functional.bias_gelu_backward``."""
    slope, shape = cache
    dy = _float_array("dy", dy, dtype=slope.dtype)
    if dy.shape != shape:
        raise ValueError(f"dy must have the shape of the forward input {shape}, got {dy.shape}")
    I = slope.shape[1]
    _check_buffer("dbias", dbias, (I,))
    da = np.empty_like(slope)
    blocks = np.zeros((_n_blocks(slope.shape[0]), I))
    if slope.size:
        _bias_gelu_backward_kernel(dy.reshape(-1, I), slope, da, blocks, _ROWS_PER_BLOCK)
    _add_into(dbias, blocks.sum(axis=0))
    return da.reshape(shape)


def linear_gelu_forward(x, weight, bias, approximate=False):
    """h = GELU(x W^T + b); see ``functional.linear_gelu_forward``. The matmul (BLAS) runs without the
    bias; the fused kernel adds it while it evaluates GELU, in place of the matmul's output."""
    a, linear_cache = F.linear_forward(x, weight)
    a = _float_array("x W^T", a)
    return a, (linear_cache, _bias_gelu(a, bias, approximate))


def linear_gelu_backward(dh, cache, dweight, dbias):
    """The fused kernel returns da and adds its row sums into dbias; the matmul backward does the rest."""
    linear_cache, gelu_cache = cache
    return F.linear_backward(bias_gelu_backward(dh, gelu_cache, dbias), linear_cache, dweight)


# ----------------------------------------------------------------------------------------------
# Dropout
# ----------------------------------------------------------------------------------------------
# The draws are the reference's (``functional.dropout_bits``), so a seed drops the same elements on
# both backends and the outputs agree to the bit. What changes is the work around them: the reference
# compares, builds a float mask and multiplies, three passes and two temporaries; the kernel does one
# pass, and the cache keeps the survivors as one byte each instead of the float mask (a quarter of
# the memory). The backward multiplies by the same scale or 0. (The loops are plain loops over the
# elements: an outer loop over blocks of elements, with computed bounds, kept LLVM from vectorising the
# serial compilation, which then took 0.9 instead of 0.33 ms per million elements.)


@_kernel
def _dropout_draw_kernel(x, bits, threshold, scale, y, keep):
    """keep = bits >= threshold; y = x scale where kept, x 0 elsewhere (the reference's x * mask to
    the bit: the zero keeps x's sign, and NaN stays NaN). Flat arrays of n elements."""
    n = x.shape[0]
    zero = x.dtype.type(0.0)
    for i in prange(n):
        kept = bits[i] >= threshold
        keep[i] = kept
        y[i] = x[i] * scale if kept else x[i] * zero


@_kernel
def _dropout_apply_kernel(x, keep, scale, y):
    """y = x scale where kept, x 0 elsewhere (the backward, and attention's dropped probabilities)."""
    n = x.shape[0]
    zero = x.dtype.type(0.0)
    for i in prange(n):
        y[i] = x[i] * scale if keep[i] else x[i] * zero


def _dropout_draw(x, p, rng):
    """(y, (keep, scale)) for a C-contiguous float array x and p > 0."""
    bits, threshold, scale = F.dropout_bits(x.shape, p, rng, x.dtype)
    y = np.empty_like(x)
    keep = np.empty(x.shape, dtype=np.bool_)
    if x.size:
        _dropout_draw_kernel(x.reshape(-1), bits.reshape(-1), threshold, scale, y.reshape(-1), keep.reshape(-1))
    return y, (keep, scale)


def _dropout_apply(x, keep, scale, out=None):
    x = _float_array("dy", x, dtype=scale.dtype)
    if x.shape != keep.shape:
        raise ValueError(f"dy must have the shape of the dropout's input {keep.shape}, got {x.shape}")
    y = np.empty_like(x) if out is None else out
    if x.size:
        _dropout_apply_kernel(x.reshape(-1), keep.reshape(-1), scale, y.reshape(-1))
    return y


def dropout_forward(x, p, rng):
    """Inverted dropout; see ``functional.dropout_forward`` (same draws, same result). The cache is
    None for p = 0 (the identity), else (keep as bool, scale)."""
    if p == 0:
        return x, None
    return _dropout_draw(_float_array("x", x), p, rng)


def dropout_backward(dy, cache):
    """dx = dy scale where kept, 0 elsewhere."""
    return dy if cache is None else _dropout_apply(dy, *cache)


# ----------------------------------------------------------------------------------------------
# Attention: NumPy's batched matmuls around Numba's softmax and dropout
# ----------------------------------------------------------------------------------------------
def attention_forward(q, k, v, mask_bias, dropout_p=0.0, rng=None, dropout_mask=None):
    """``functional.attention_forward`` with this module's softmax (which applies the 1 / sqrt(D) as it
    reads the scores) and dropout. q, k, v (B, A, T, D), mask_bias (B, T) -> context (B, A, T, D),
    probs (B, A, T, T). A replayed ``dropout_mask`` must hold 0 and one scale, as the reference makes."""
    scale = q.dtype.type(1 / math.sqrt(q.shape[-1]))
    probs = _softmax(q @ k.swapaxes(-1, -2), mask_bias, scale)                     # (B, A, T, T)
    if dropout_mask is not None:
        dropout = _replayed_dropout(dropout_mask, probs)
        dropped = _dropout_apply(probs, *dropout)
    elif dropout_p > 0:
        dropped, dropout = _dropout_draw(probs, dropout_p, rng)
    else:
        dropped, dropout = probs, None
    return dropped @ v, probs, (q, k, v, probs, dropout, scale)     # dropped: recomputed in backward


def _replayed_dropout(mask, probs):
    """A scaled float mask (functional.dropout_forward's cache) as (keep, scale)."""
    mask = np.asarray(mask)
    if mask.shape != probs.shape:
        raise ValueError(f"dropout_mask must have the shape of the attention probabilities {probs.shape}, "
                         f"got {mask.shape}")
    keep = mask != 0
    values = np.unique(mask[keep])
    if values.size > 1:
        raise ValueError("dropout_mask must hold 0 and one scale 1 / (1 - p), as functional.dropout_forward "
                         f"makes it; got {values.size} different non-zero values")
    return keep, probs.dtype.type(values[0] if values.size else 1)


@_kernel
def _attention_scores_backward_kernel(g, p, row_start, row_len, has_dropout, keep, dropout_scale, scale):
    """In place, per row of g = dP' (the gradient of the dropped probabilities):
        dP = dropout'(dP')            where keep: dP' dropout_scale, elsewhere dP' 0
        dS = scale p (dP - sum_j dP_j p_j)       softmax's backward, then the 1 / sqrt(D) of the scores
    in the order of the unfused ops (dropout, softmax_backward, then the scale), so the result is the
    same to the bit. g, p, keep are flat; row r is [row_start[r], row_start[r] + row_len[r]) (see
    ``_score_rows``). Without dropout, keep is not read."""
    dt = p.dtype.type
    zero = dt(0.0)
    for r in prange(row_start.shape[0]):
        a, n = row_start[r], row_len[r]
        gr, pr = g[a:a + n], p[a:a + n]
        if has_dropout:
            kr = keep[a:a + n]
            for j in range(n):
                gr[j] = gr[j] * dropout_scale if kr[j] else gr[j] * zero
        s = _row_dot(gr, pr)
        for j in range(n):
            gr[j] = dt(pr[j] * (gr[j] - s)) * scale


def _scores_backward(g, probs, rows, dropout, scale):
    """dS from dP' in place in the flat g (see the kernel); rows = (row_start, row_len)."""
    keep, dropout_scale = (np.ones(1, np.bool_), scale) if dropout is None else dropout
    if g.size:
        _attention_scores_backward_kernel(g.reshape(-1), probs.reshape(-1), *rows, dropout is not None,
                                          keep.reshape(-1), dropout_scale, scale)


def _uniform_rows(R, N):
    """(row_start, row_len) of R rows of N in a flat buffer."""
    return np.arange(R, dtype=np.int64) * N, np.full(R, N, dtype=np.int64)


def attention_backward(dcontext, cache):
    """``functional.attention_backward`` with one fused kernel from dP' to dS; returns dq, dk, dv."""
    q, k, v, probs, dropout, scale = cache
    dropped = probs if dropout is None else _dropout_apply(probs, *dropout)
    dv = dropped.swapaxes(-1, -2) @ dcontext
    del dropped
    dscores = np.ascontiguousarray(dcontext @ v.swapaxes(-1, -2))                 # dP', then dS in place
    N = probs.shape[-1]
    _scores_backward(dscores, probs, _uniform_rows(probs.size // max(N, 1), N), dropout, scale)
    return dscores @ k, dscores.swapaxes(-1, -2) @ q, dv


# ----------------------------------------------------------------------------------------------
# Unpadded attention: every length group's scores in one flat buffer
# ----------------------------------------------------------------------------------------------
# The reference attends group by group (``functional.unpadded_attention_forward``): on the bundled
# corpus a batch of 32 has some 25 distinct lengths, so a layer made 25 calls to each of softmax,
# dropout and the fused backward, each a parallel kernel launch on mostly small blocks; the launches
# cost more than the work (softmax: 2.9 ms per layer for 0.47 M probabilities). Here the matmuls still
# run per group (BLAS on each (c, A, n, D) view, writing straight into the strided (N, H) rows), but
# they read and write one flat buffer that holds every group's (c, A, n, n) block, and softmax,
# dropout and the backward each run once over all its rows. Dropout's bits are the reference's
# (``functional.attention_bits``), so the masks, and every result, are the same to the bit.
_SCRATCH = threading.local()    # each thread its own buffers: data-parallel workers attend at once


def _scratch(slot, size, dtype):
    """A flat array of ``size`` elements that stays allocated from one call to the next, for the
    transient blocks as large as the attention probabilities. A new array of that size is new memory,
    and its first touch costs a page fault per 4 KiB page: on (32, 4, 128, 128) that was 4 of the
    forward's 8 ms of dropout. Kept, it is paid for once. Only the two attention functions below use
    it, and never hold one slot twice (the dropout bits, the dropped probabilities and the score
    gradients each have their own). (The same for da in the GELU layer's backward measured no gain.)"""
    buffers = _SCRATCH.__dict__
    buffer = buffers.get((slot, np.dtype(dtype)))
    if buffer is None or buffer.size < size:
        buffer = buffers[slot, np.dtype(dtype)] = np.empty(size, dtype=dtype)
    return buffer[:size]


def _score_rows(blocks, num_heads):
    """Offsets of each block's (c, A, m, n) scores in the flat buffer (one more entry: the total) and
    (row_start, row_len) of its c A m rows of n; blocks as ``functional.attention_blocks``."""
    sizes = [c * num_heads * m * n for (_, c, n), (_, _, m) in blocks]
    offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
    starts = [o + n * np.arange(c * num_heads * m, dtype=np.int64)
              for o, ((_, c, n), (_, _, m)) in zip(offsets, blocks)]
    lengths = [np.full(c * num_heads * m, n, dtype=np.int64) for (_, c, n), (_, _, m) in blocks]
    empty = np.zeros(0, dtype=np.int64)
    return offsets, (np.concatenate(starts) if starts else empty, np.concatenate(lengths) if lengths else empty)


def _block_views(offsets, blocks, num_heads, flat):
    """The (c, A, m, n) view of each block's scores in the flat buffer."""
    return [flat[o:o + c * num_heads * m * n].reshape(c, num_heads, m, n)
            for o, ((_, c, n), (_, _, m)) in zip(offsets, blocks)]


@_kernel
def _unpadded_softmax_kernel(x, row_start, row_len, scale):
    """In place, per ragged row of the flat x: softmax(x scale), as ``_softmax_forward_kernel`` with
    a zero mask (+ 0 kept: it is the reference's arithmetic, to the bit)."""
    zero = x.dtype.type(0.0)
    for r in prange(row_start.shape[0]):
        a = row_start[r]
        xr = x[a:a + row_len[r]]
        for j in range(xr.shape[0]):
            xr[j] = xr[j] * scale + zero
        _softmax_row(xr)


def unpadded_attention_forward(q, k, v, groups, num_heads, dropout_p=0.0, rng=None, queries=None):
    """``functional.unpadded_attention_forward`` with one flat buffer of scores; q (N or R, H), k, v
    (N, H) -> context (like q), probs (one (c, A, m, n) view per block), cache."""
    q, k, v = (_float_array(name, a) for name, a in (("q", q), ("k", k), ("v", v)))
    A = num_heads
    scale = q.dtype.type(1 / math.sqrt(q.shape[1] // A))
    blocks = F.attention_blocks(groups, queries)
    offsets, rows = _score_rows(blocks, A)
    probs = np.empty(offsets[-1], dtype=q.dtype)                    # scores, then probs in place
    views = functools.partial(_block_views, offsets, blocks, A)     # flat -> its (c, A, m, n) views
    for (k_group, q_group), block in zip(blocks, views(probs)):
        np.matmul(F.heads_view(q, q_group, A), F.heads_view(k, k_group, A).swapaxes(-1, -2), out=block)
    if probs.size:
        _unpadded_softmax_kernel(probs, *rows, scale)
    dropout = None
    dropped = probs
    if dropout_p > 0 and probs.size:
        draws, threshold, dropout_scale = F.attention_bits(groups, queries, A, dropout_p, rng, q.dtype)
        bits = np.concatenate([b.reshape(-1) for b in draws], out=_scratch("bits", probs.size, np.uint16))
        dropped, keep = _scratch("dropped", probs.size, probs.dtype), np.empty(probs.shape, dtype=np.bool_)
        _dropout_draw_kernel(probs, bits, threshold, dropout_scale, dropped, keep)
        dropout = (keep, dropout_scale)
    context = np.empty_like(q)                                                      # (N or R, H)
    for (k_group, q_group), block in zip(blocks, views(dropped)):
        np.matmul(block, F.heads_view(v, k_group, A), out=F.heads_view(context, q_group, A))
    return context, tuple(views(probs)), (q, k, v, blocks, A, probs, dropout, scale, offsets, rows)


def unpadded_attention_backward(dcontext, cache):
    """dcontext (like q) -> dq (like q), dk, dv (N, H): the per-block matmuls of ``attention_backward``
    around one fused dP' -> dS pass over the flat buffer."""
    q, k, v, blocks, A, probs, dropout, scale, offsets, rows = cache
    dcontext = _float_array("dcontext", dcontext, dtype=q.dtype)
    if dcontext.shape != q.shape:
        raise ValueError(f"dcontext must have the shape of the attention's queries {q.shape}, got {dcontext.shape}")
    views = functools.partial(_block_views, offsets, blocks, A)
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    dropped = probs if dropout is None else _dropout_apply(probs, *dropout, _scratch("dropped", probs.size,
                                                                                   probs.dtype))
    dscores = _scratch("dscores", probs.size, probs.dtype)         # dP', then dS in place
    for (k_group, q_group), p_block, g_block in zip(blocks, views(dropped), views(dscores)):
        dc = F.heads_view(dcontext, q_group, A)
        np.matmul(p_block.swapaxes(-1, -2), dc, out=F.heads_view(dv, k_group, A))
        np.matmul(dc, F.heads_view(v, k_group, A).swapaxes(-1, -2), out=g_block)
    del dropped
    _scores_backward(dscores, probs, rows, dropout, scale)
    for (k_group, q_group), g_block in zip(blocks, views(dscores)):
        np.matmul(g_block, F.heads_view(k, k_group, A), out=F.heads_view(dq, q_group, A))
        np.matmul(g_block.swapaxes(-1, -2), F.heads_view(q, q_group, A), out=F.heads_view(dk, k_group, A))
    return dq, dk, dv


# ----------------------------------------------------------------------------------------------
# Embedding scatter-add
# ----------------------------------------------------------------------------------------------
@_serial_kernel
def _embedding_backward_kernel(dout, ids, dweight):
    """dweight[ids[n]] += dout[n] for every row n, in row order: bit-identical to np.add.at, whose
    per-element bookkeeping is what makes the reference slow. One thread: rows with the same id would
    race, and giving each thread a block of columns instead measured no faster (and broke LLVM's
    vectorisation of the inner loop)."""
    N, H = dout.shape
    for n in range(N):
        v = ids[n]
        for j in range(H):
            dweight[v, j] += dout[n, j]


def embedding_backward(dout, ids, dweight):
    """dweight[v] += sum of dout[n] over the n with ids[n] = v, in place; see ``functional.embedding_backward``.

    dout (..., H), ids (...) integer, dweight (V, H). Ids index like NumPy: -V <= id < V.
    """
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be an integer array, got dtype {ids.dtype}")
    if not isinstance(dweight, np.ndarray) or dweight.ndim != 2 or dweight.dtype not in _FLOATS:
        raise ValueError(f"dweight must be a float32 or float64 array (V, H), got {getattr(dweight, 'dtype', dweight)} "
                         f"{getattr(dweight, 'shape', '')}")
    V, H = dweight.shape
    dout = _float_array("dout", dout, dtype=dweight.dtype)
    if dout.shape != ids.shape + (H,):
        raise ValueError(f"dout must have shape ids.shape + (H,) = {ids.shape + (H,)}, got {dout.shape}")
    flat = ids.reshape(-1).astype(np.int64)
    if flat.size:
        lo, hi = flat.min(), flat.max()
        if lo < -V or hi >= V:       # the IndexError np.add.at raises
            raise IndexError(f"index {hi if hi >= V else lo} is out of bounds for axis 0 with size {V}")
        if lo < 0:
            flat = np.where(flat < 0, flat + V, flat)
        target = dweight if dweight.flags.c_contiguous else np.zeros(dweight.shape, dweight.dtype)
        _embedding_backward_kernel(dout.reshape(-1, H), flat, target)
        if target is not dweight:
            dweight += target


# ----------------------------------------------------------------------------------------------
# Softmax cross-entropy with per-row weights
# ----------------------------------------------------------------------------------------------
@_kernel
def _cross_entropy_forward_kernel(logits, targets, probs, nll):
    """Per row n of C: m = max, e = exp(l - m), Z = sum e, probs = e / Z, nll = log Z - (l[target] - m)."""
    N, C = logits.shape
    for n in prange(N):
        lr = logits[n]
        pr = probs[n]
        top = _row_max(lr)
        for j in range(C):
            pr[j] = _exp(lr[j] - top)
        total = _row_sum(pr)
        inv_total = 1.0 / total
        for j in range(C):
            pr[j] = pr[j] * inv_total
        nll[n] = math.log(total) - (lr[targets[n]] - top)


def cross_entropy_forward(logits, targets, weights=None):
    """loss = sum_n w_n nll_n / denominator; see ``functional.cross_entropy_forward`` (same validation,
    same denominators: sum(w) + 1e-5 with weights, N without). Returns a scalar in logits' dtype and the
    cache (probabilities, targets, per-row scale), as the reference does."""
    logits = _float_array("logits", logits)
    n = logits.shape[0]
    row_scale = F.cross_entropy_row_scale(logits, targets, weights)
    targets = np.ascontiguousarray(targets, dtype=np.int64)
    probs = np.empty_like(logits)
    nll = np.zeros(n)
    if probs.size:
        _cross_entropy_forward_kernel(logits, targets, probs, nll)
    return logits.dtype.type(row_scale.astype(np.float64) @ nll), (probs, targets, row_scale)


@_kernel
def _cross_entropy_backward_kernel(probs, targets, scale, dlogits):
    """dlogits_n = (probs_n - onehot(target_n)) scale_n."""
    N, C = probs.shape
    for n in prange(N):
        s = scale[n]
        for j in range(C):
            dlogits[n, j] = probs[n, j] * s
        t = targets[n]
        dlogits[n, t] = (probs[n, t] - 1) * s


def cross_entropy_backward(dloss, cache):
    """dlogits = (softmax - onehot) * w_n / denominator * dloss; see ``functional.cross_entropy_backward``."""
    probs, targets, row_scale = cache
    scale = np.ascontiguousarray(np.broadcast_to(row_scale * dloss, row_scale.shape), dtype=probs.dtype)
    dlogits = np.empty_like(probs)
    if probs.size:
        _cross_entropy_backward_kernel(probs, targets, scale, dlogits)
    return dlogits


# ----------------------------------------------------------------------------------------------
# The log-softmax's normaliser, in float64
# ----------------------------------------------------------------------------------------------
# The reference makes five passes over float64 copies of the (R, C) logits, each a new array of
# 8 bytes per logit that the system hands over page by page; this is two passes over each row of
# the logits as they are. The exponentials of a row go to a float64 buffer of the row's length and
# are summed after: a sum in the same loop would keep LLVM from vectorising the exponentials (it may
# not reorder a floating-point sum). exp is ``_exp_float64``, within 1-2 ulp of NumPy's, so
# log_total agrees with the reference to about 1e-16, relative.
@_kernel
def _log_softmax_normaliser_kernel(logits, shift, log_total):
    """Per row n: shift = max_j l_j, log_total = log sum_j exp(l_j - shift), in float64."""
    N, C = logits.shape
    for n in prange(N):
        lr = logits[n]
        top = np.float64(_row_max(lr))
        e = np.empty(C)
        for j in range(C):
            e[j] = _exp(np.float64(lr[j]) - top)
        shift[n] = top
        log_total[n] = math.log(_row_sum(e))


def log_softmax_normaliser(logits):
    """(shift, log_total), (R,) float64 each; see ``functional.log_softmax_normaliser``."""
    logits = _float_array("logits", logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (R, C), got {logits.shape}")
    shift, log_total = np.empty(logits.shape[0]), np.empty(logits.shape[0])
    if logits.size:
        _log_softmax_normaliser_kernel(logits, shift, log_total)
    return shift, log_total


# ----------------------------------------------------------------------------------------------
# AdamW
# ----------------------------------------------------------------------------------------------
# The reference makes 13 elementwise passes over each parameter's four arrays; this is one. The
# operations and their order are the reference's, each rounded to the parameter's dtype (no fused
# multiply-add), so the results are the same to the bit. The kernel is serial: the update is bound by
# memory, which a second thread does not add to, and a parallel launch on Numba's workqueue layer costs
# about 130 us here, more than a whole bias's update (the mini model has 78 parameter arrays).
@_serial_kernel
def _adamw_kernel(p, g, m, v, b1, one_minus_b1, b2, one_minus_b2, eps, lr_c1, c2, decay):
    for i in range(p.shape[0]):
        gi = g[i]
        mi = m[i] * b1 + gi * one_minus_b1
        vi = v[i] * b2 + gi * gi * one_minus_b2
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * decay - mi / (np.sqrt(vi) * c2 + eps) * lr_c1


def adamw_update(p, g, m, v, b1, b2, eps, lr_c1, c2, decay, buf):
    """``functional.adamw_update`` in one pass (``buf`` is not needed). Arrays that are not one
    contiguous block of one float dtype take the reference's path, which updates any layout in place."""
    arrays = (p, g, m, v)
    if not all(isinstance(a, np.ndarray) and a.flags.c_contiguous and a.dtype == p.dtype for a in arrays) \
            or p.dtype not in _FLOATS or any(a.shape != p.shape for a in arrays):
        return F.adamw_update(p, g, m, v, b1, b2, eps, lr_c1, c2, decay, buf)
    dt = p.dtype.type
    if p.size:
        _adamw_kernel(*(a.reshape(-1) for a in arrays), dt(b1), dt(1.0 - b1), dt(b2), dt(1.0 - b2), dt(eps),
                      dt(lr_c1), dt(c2), dt(decay))

