"""Reading and writing the safetensors format, in plain NumPy (no dependency, and never pickle).

A file is:  8 bytes (little-endian uint64) header length N | N bytes of JSON | raw tensor bytes.
The JSON maps each tensor name to {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}
(offsets into the byte buffer after the header) and may hold "__metadata__": {str: str}.
Tensors are little-endian and C-ordered. We check everything a damaged or hostile file could get
wrong, and say what and where.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_NAMES = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
          np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16",
          np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL"}
_MAX_HEADER = 100 * 1024 * 1024


def save_file(tensors: dict[str, np.ndarray], path, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` to ``path`` (directly; callers that need atomicity write to a temporary name)."""
    header, offset, arrays = {}, 0, []
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        if a.dtype not in _NAMES:
            raise ValueError(f"cannot store tensor {name!r} of dtype {a.dtype} in safetensors")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        header[name] = {"dtype": _NAMES[a.dtype.newbyteorder("=")], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)   # pad so the tensor data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for a in arrays:
            f.write(a.tobytes())


def load_file(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file; returns (name -> array, metadata). bfloat16 becomes float32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file not found: {path}")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path} is not a safetensors file: only {len(raw)} bytes")
        n = int.from_bytes(raw, "little")
        if n > min(size - 8, _MAX_HEADER):
            raise ValueError(f"{path}: header length {n} does not fit in a file of {size} bytes "
                             "(truncated or not a safetensors file)")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: the header is not valid JSON ({exc})") from None
        data = f.read()
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the header must be a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    tensors, spans = {}, []
    for name, info in header.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: malformed header entry for tensor {name!r}: {info!r}") from None
        if any(d < 0 for d in shape):
            raise ValueError(f"{path}: tensor {name!r} has a negative dimension in {shape}")
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if not 0 <= begin <= end <= len(data) or end - begin != expected:
            raise ValueError(f"{path}: tensor {name!r} {info['dtype']}{list(shape)} needs {expected} bytes but "
                             f"its offsets are [{begin}, {end}) of {len(data)} data bytes (truncated or corrupt)")
        spans.append((begin, end, name))
        a = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=begin).reshape(shape)
        if info["dtype"] == "BF16":  # bfloat16 is the top half of a float32
            a = (a.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = a.astype(a.dtype.newbyteorder("="), copy=True)
    spans.sort()
    for (b1, e1, n1), (b2, e2, n2) in zip(spans, spans[1:]):
        if b2 < e1:
            raise ValueError(f"{path}: tensors {n1!r} and {n2!r} overlap")
    return tensors, metadata
