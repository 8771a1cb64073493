"""Writing and reading the bundled files, and the manifest that pins them.

Text is UTF-8 with "\\n" line ends. JSON Lines files hold one compact JSON object per line; a name
ending in ``.gz`` is gzip-compressed with mtime 0 and no file name in the header, so the bytes depend
only on the content. Readers sniff the gzip magic bytes, so they accept compressed and plain files
whatever the name says.

``manifest.json`` lists every generated file (relative path, size in bytes, sha256, line count of
the decompressed content) with the command and seed that regenerate it; ``check`` compares a folder
against it.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path

MANIFEST = "manifest.json"
GZIP_MAGIC = b"\x1f\x8b"

# the fields every annotated sentence carries, and the per-token lists among them
ANNOTATION_FIELDS = ("id", "text", "tokens", "upos", "xpos", "chunks", "heads", "deprels", "construction",
                     "tense", "agreement", "negation", "npi")
TOKEN_FIELDS = ("tokens", "upos", "xpos", "chunks", "heads", "deprels")


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------
def encode_jsonl(rows) -> bytes:
    return "".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in rows).encode()


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data`, gzip-compressed (deterministically) if the name ends in .gz."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as f:
            f.write(data)
        data = buf.getvalue()
    path.write_bytes(data)


def write_jsonl(path: Path, rows) -> None:
    write_bytes(path, encode_jsonl(rows))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------
def read_bytes(path: Path) -> bytes:
    """The content of a file, decompressed if it is gzip (detected from its first bytes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    data = path.read_bytes()
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt gzip data ({exc})") from exc
    return data


def read_text(path: Path) -> str:
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from exc


def read_jsonl(path: Path, required=()) -> list[dict]:
    """Parse a JSON Lines file (gz or plain); every line must be an object with the `required` keys."""
    rows = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            raise ValueError(f"{path}:{lineno}: empty line in a JSON Lines file")
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        missing = [k for k in required if k not in row]
        if missing:
            raise ValueError(f"{path}:{lineno}: missing field(s) {missing}")
        rows.append(row)
    return rows


def read_annotations(path: Path) -> list[dict]:
    """Read annotated sentences and check their shape: equal-length token lists, heads in range."""
    rows = read_jsonl(path, ANNOTATION_FIELDS)
    for lineno, r in enumerate(rows, 1):
        n = len(r["tokens"])
        bad = [f for f in TOKEN_FIELDS if not isinstance(r[f], list) or len(r[f]) != n]
        if bad:
            raise ValueError(f"{path}:{lineno}: fields {bad} must be lists of {n} items (one per token)")
        if sum(h == 0 for h in r["heads"]) != 1 or not all(isinstance(h, int) and 0 <= h <= n for h in r["heads"]):
            raise ValueError(f"{path}:{lineno}: heads must be integers in 0..{n} with exactly one root (0)")
    return rows


def read_documents(path: Path) -> list[list[str]]:
    """Read a corpus in BERT's format (one sentence per line, blank lines between documents)."""
    docs, cur = [], []
    for line in read_text(path).splitlines():
        if line.strip():
            cur.append(line.strip())
        elif cur:
            docs.append(cur)
            cur = []
    if cur:
        docs.append(cur)
    if not docs:
        raise ValueError(f"{path}: no documents (expected one sentence per line, blank lines between documents)")
    return docs


# ----------------------------------------------------------------------------------------------
# manifest
# ----------------------------------------------------------------------------------------------
def file_entry(path: Path) -> dict:
    raw = Path(path).read_bytes()
    return {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest(),
            "lines": read_bytes(path).count(b"\n")}


def write_manifest(root: Path, files: list[str], info: dict) -> dict:
    """Write root/manifest.json describing `files` (paths relative to root) plus `info`."""
    root = Path(root)
    manifest = dict(info)
    manifest["files"] = {rel: file_entry(root / rel) for rel in sorted(files)}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    return manifest


def read_manifest(root: Path) -> dict:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(manifest.get("files"), dict):
        raise ValueError(f"{path}: expected a 'files' table")
    return manifest


def check(root: Path) -> list[str]:
    """Compare the files under root with its manifest; return one message per problem (empty: all good)."""
    root = Path(root)
    problems = []
    for rel, want in read_manifest(root)["files"].items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
            continue
        raw = path.read_bytes()
        if len(raw) != want["bytes"]:
            problems.append(f"{rel}: size {len(raw)} bytes, manifest says {want['bytes']}")
        elif hashlib.sha256(raw).hexdigest() != want["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest (content changed)")
    return problems
