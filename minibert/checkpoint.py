"""Checkpoints in the Hugging Face layout, written atomically.

A model directory holds ``config.json``, ``model.safetensors`` (Hugging Face key names; the tied
decoder keys ``cls.predictions.decoder.{weight,bias}`` are omitted as Hugging Face does) and, when a
vocabulary is given, ``vocab.txt``. A training checkpoint adds ``training_state.safetensors``
(optimiser moments) and ``training_state.json`` (step, random-generator states, data position, run
settings). The marker ``.minibert.json`` (see ``minibert.outputs``) lists the files with their
sizes, the vocabulary's sha256 and the time of saving: it is written last, so a folder whose files
match it is complete.

Atomic writes: everything goes into a temporary sibling directory, which is renamed into place only
when complete. A crash mid-save leaves at most a stray ``.tmp-*`` directory and the previous
checkpoint untouched; the next save of that folder removes the strays. A folder that also holds
files minibert did not write is updated file by file instead (each file atomically), and those files
are left alone. Loading never unpickles; a truncated or tampered file, a vocabulary that is not the
model's and a weight that is not finite all get a clear error.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from minibert import interop, outputs, paths, safetensors
from minibert.config import BertConfig
from minibert.tokenization.vocab import check_model_vocab, vocab_sha256

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
VOCAB_NAME = "vocab.txt"
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME, VOCAB_NAME, STATE_TENSORS, STATE_JSON)


def _leftovers(path: Path, what: str) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.{what}-*"))


def is_complete(folder) -> bool:
    """True when ``folder`` holds every file its marker lists, each of the size it had when saved.

    A folder without a marker (an older minibert, transformers) counts as complete when its config
    and weights are there and the weights file is as long as its header says."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    marker = outputs.read_marker(folder)
    if marker is not None and isinstance(marker.get("sizes"), dict):
        try:
            sizes = marker["sizes"].items()
            return all((folder / name).stat().st_size == size for name, size in sizes)
        except OSError:
            return False
    try:
        return (folder / CONFIG_NAME).is_file() and _weights_file_complete(folder / WEIGHTS_NAME)
    except (OSError, ValueError):
        return False


def _weights_file_complete(file: Path) -> bool:
    """A safetensors file is as long as its header says: 8 bytes, the header, then the data up to
    the last tensor's end."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > size - 8:
            return False
        header = json.loads(f.read(n))
    ends = [int(info["data_offsets"][1]) for name, info in header.items() if name != "__metadata__"]
    return size == 8 + n + max(ends, default=0)


def _written_at(folder: Path) -> float:
    marker = outputs.read_marker(folder)
    if marker is not None and isinstance(marker.get("written_at"), (int, float)):
        return float(marker["written_at"])
    return folder.stat().st_mtime


def recover(path) -> Path | None:
    """If a save died after moving the previous checkpoint aside, put a complete copy back.

    Candidates are the moved-aside previous version (``.NAME.old-*``) and a finished but not yet
    renamed new one (``.NAME.tmp-*``); only complete ones count (``is_complete``: a half-deleted
    leftover of an earlier crash does not), and the most recently saved of them is restored.
    Returns it, or None.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        return None
    candidates = [p for p in _leftovers(path, "old") + _leftovers(path, "tmp") if is_complete(p)]
    if not candidates:
        return None
    best = max(candidates, key=_written_at)
    os.rename(best, path)
    return best


def remove_leftovers(path) -> None:
    """Delete the ``.NAME.tmp-*`` / ``.NAME.old-*`` folders earlier saves of ``path`` left behind
    (a save calls this once ``path`` is complete: the leftovers are then older or partial
    copies)."""
    path = Path(path)
    for leftover in _leftovers(path, "tmp") + _leftovers(path, "old"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)


def _write_marker_file(folder: Path, marker: dict) -> None:
    outputs.write_file(folder / outputs.MARKER, json.dumps(marker, indent=1, sort_keys=True) + "\n")


def _replace_file_by_file(path: Path, tmp: Path, files: list[str], kind: str, fields: dict) -> None:
    """Move each new file over its old version (each rename atomic), drop model files of an earlier
    save of ours that this save does not write (a stale vocab.txt would not match the new weights),
    keep the files minibert did not write, and rewrite the marker last."""
    stale = (outputs.our_files(path) & set(MODEL_FILES)) - set(files)
    marker = outputs.marker_content(path, kind, files, **fields)
    marker["files"] = sorted(set(marker["files"]) - stale)
    for f in files:
        os.replace(tmp / f, path / f)
    for f in stale:
        (path / f).unlink(missing_ok=True)
    _write_marker_file(path, marker)
    shutil.rmtree(tmp)


def write_directory_atomically(path, write, kind: str = "model",
                               fields: dict | None = None) -> Path:
    """Call ``write(tmp_dir)`` to fill a fresh temporary directory, then move it to ``path``.

    The marker (kind, files and sizes, ``fields``) is added last. If ``path`` exists and holds only
    files this save writes, it is replaced whole: it is first renamed to ``.NAME.old-*`` and deleted
    only after the new directory is in place, so some complete checkpoint exists at every instant;
    if the process dies between the two renames, the next load puts a complete one back
    (``recover``). If ``path`` holds other files too, each of ours is replaced atomically and the
    others stay. The caller checks first that ``path`` may be written (``outputs.claim``).
    """
    path = Path(path)
    recover(path)
    if path.exists() and not path.is_dir():
        raise outputs.OutputRefused(f"{path} is a file, not a folder; give a folder path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    outputs.normal_permissions(tmp, directory=True)
    try:
        write(tmp)
        files = sorted(p.name for p in tmp.iterdir())
        for f in files:                         # data on disk before the rename makes it visible
            with open(tmp / f, "rb") as fh:
                os.fsync(fh.fileno())
        sizes = {f: (tmp / f).stat().st_size for f in files}
        others = set()
        if path.is_dir():
            others = {p.name for p in path.iterdir()} - set(files) - {outputs.MARKER}
        if others:
            _replace_file_by_file(path, tmp, files, kind, {**(fields or {}), "sizes": sizes})
            return path
        old_marker = outputs.read_marker(path) if path.is_dir() else None
        marker = {**(fields or {}), "kind": old_marker["kind"] if old_marker else kind,
                  "files": files, "sizes": sizes, "written_at": time.time()}
        _write_marker_file(tmp, marker)         # last: its presence means the folder is complete
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.rmdir(old)
            os.rename(path, old)
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        recover(path)
        raise
    remove_leftovers(path)
    return path


STORAGE_DTYPES = ("float32", "float16")


def _stored(name: str, a, dtype: str) -> np.ndarray:
    """``a`` as stored; a weight float16 cannot hold (|w| >= 65520) is an error, not an inf."""
    with np.errstate(over="ignore"):
        stored = np.asarray(a, dtype=np.dtype(dtype))
    if not np.isfinite(stored).all():
        raise ValueError(f"weight {name!r} does not fit in {dtype} (largest |w| {np.abs(a).max():.3g}); "
                         "save it as float32")
    return stored


def save_model(model, path, vocab: list[str] | None = None, extra=None, *, kind: str = "model",
               overwrite: bool = False, option: str = "the folder",
               allow: str = "pass overwrite=True", dtype: str = "float32") -> Path:
    """Write config, weights (and vocab) to ``path`` atomically. ``extra(tmp_dir)`` may add files.

    ``config.json`` names the model's class in ``architectures`` (our class names are
    transformers'), so ``transformers.AutoModel*.from_pretrained`` builds the right model from the
    folder. The marker records the vocabulary's sha256, which every loader checks. ``path`` must be
    new, empty, or a folder minibert saved the same ``kind`` into (``outputs.claim``), so that
    ``save_pretrained`` never replaces a pretraining checkpoint or a fine-tuned model; ``overwrite``
    allows any folder and still replaces only the files this function writes. ``option`` /
    ``allow`` word a refusal. ``dtype="float16"`` stores the weights in half the space (every loader
    reads them back as float32; the shipped ``mini`` model is stored so).
    """
    path = Path(path)
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"cannot store weights as {dtype!r}; choose one of {', '.join(STORAGE_DTYPES)}")
    if path.exists() or path.is_symlink():
        outputs.claim(path, kind, overwrite=overwrite, option=option, allow=allow)
    tensors = {name: _stored(name, a, dtype) for name, a in model.named_parameters()}
    fields = {}
    if vocab is not None:
        vocab = list(vocab)
        fields.update(vocab_sha256=vocab_sha256(vocab), vocab_size=len(vocab))

    def write(tmp: Path):
        model.config.to_json_file(tmp / CONFIG_NAME, extra=interop.hf_config_fields(type(model).__name__, dtype))
        safetensors.save_file(tensors, tmp / WEIGHTS_NAME, metadata={"format": "pt"})  # transformers requires "pt"
        if vocab is not None:
            (tmp / VOCAB_NAME).write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
        if extra is not None:
            extra(tmp)
    return write_directory_atomically(path, write, kind, fields)


def _model_folder(path, hint: str = "") -> Path:
    path = Path(path)
    recover(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {path}{hint}")
    return path


# What a loader's "not found" adds: the names that would have worked.
NAMES_HINT = f"; give a model folder or a shipped model's name ({', '.join(paths.SHIPPED_MODELS)})"


def check_vocabulary(path, config: BertConfig) -> None:
    """ValueError unless the folder's ``vocab.txt`` (if any) fits ``config.vocab_size`` and is the
    one the model was saved with (when the marker recorded its sha256)."""
    path = Path(path)
    if (path / VOCAB_NAME).is_file():
        marker = outputs.read_marker(path) or {}
        check_model_vocab(path / VOCAB_NAME, config.vocab_size, marker.get("vocab_sha256"))


def resolve(path) -> Path:
    """The model folder ``path`` stands for: a checkpoint folder; a run folder of ``minibert
    pretrain`` standing for its latest checkpoint (the one its ``latest`` file names, else the
    complete ``checkpoint-*`` with the highest step); or the name of a shipped model (``tiny``,
    ``mini``: ``paths.model_dir``) when no file or folder of that name exists here. Every loader
    and command goes through this, so each takes the names."""
    path = Path(path)
    recover(path)
    path = paths.model_dir(path)
    if not path.is_dir() or (path / CONFIG_NAME).is_file():
        return path
    pointer = path / "latest"
    if pointer.is_file():
        named = path / pointer.read_text(encoding="utf-8").strip()
        if named.name.startswith("checkpoint-") and named.parent == path and is_complete(named):
            return named
    found = [p for p in sorted(path.glob("checkpoint-*")) if is_complete(p)]
    return found[-1] if found else path


def model_folder(arg, label: str, alternatives: str = "") -> Path:
    """The model folder a command-line or environment value names (``resolve``), checked to hold a
    ``config.json``; otherwise a FileNotFoundError that names ``label`` (``--from huge``) and the
    choices, with ``alternatives`` such as ``", 'random'"`` added to them."""
    folder = resolve(arg)
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{label}: no model there ({folder} has no {CONFIG_NAME}); give a shipped "
                                f"model's name ({', '.join(paths.SHIPPED_MODELS)}){alternatives} or a model folder")
    return folder


def load_config(path) -> BertConfig:
    path = _model_folder(resolve(path), NAMES_HINT)
    config = interop.read_config(path)[0]
    check_vocabulary(path, config)
    return config


def load_weights(path) -> dict[str, np.ndarray]:
    tensors, _ = safetensors.load_file(Path(path) / WEIGHTS_NAME)
    interop.check_finite(tensors, Path(path) / WEIGHTS_NAME)
    return tensors


def load_model(cls, path, rng: np.random.Generator | None = None, strict: bool = True,
               allow_missing_heads: bool = False, output_loading_info: bool = False, **config_overrides):
    """Build ``cls(config, rng)`` from the directory's config and load its weights.

    The folder may come from minibert or from transformers (``minibert.interop`` maps the variants:
    with or without the ``bert.`` prefix, legacy LayerNorm names, buffers, tied decoder copies,
    float16 and bfloat16); a run folder of ``minibert pretrain`` stands for its latest checkpoint,
    and a shipped model's name (``tiny``, ``mini``) for its folder in ``data/pretrained/``. A
    pretraining checkpoint loads into a ``BertModel`` (its heads are ignored); a ``BertModel``
    checkpoint loads into a model with heads when ``allow_missing_heads=True`` (the heads keep their
    fresh initialisation). Any other missing or unexpected key, any shape mismatch, a weight that is
    not finite and a ``vocab.txt`` that is not the model's are ValueErrors; ``strict=False`` allows
    missing and unexpected keys. With ``output_loading_info`` returns
    ``(model, interop.LoadingInfo)``. ``config_overrides`` replace fields of the stored config
    (``num_labels=3``, ``hidden_dropout_prob=0.0``) before the model is built.
    """
    path = _model_folder(resolve(path), NAMES_HINT)
    config, raw = interop.read_config(path)
    check_vocabulary(path, config)
    if config_overrides:
        unknown = sorted(set(config_overrides) - {f.name for f in dataclasses.fields(config)})
        if unknown:
            raise ValueError(f"unknown BertConfig fields: {', '.join(unknown)}")
        config = dataclasses.replace(config, **config_overrides)
    model = cls(config, rng if rng is not None else np.random.default_rng(0))
    info = interop.load_into(model, path, strict=strict, allow_missing_heads=allow_missing_heads, raw_config=raw)
    return (model, info) if output_loading_info else model


def save_training_state(tmp: Path, tensors: dict[str, np.ndarray], state: dict) -> None:
    safetensors.save_file(tensors, tmp / STATE_TENSORS)
    (tmp / STATE_JSON).write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")


# The keys of training_state.json and their JSON types; a missing or mistyped one means the file was
# damaged or edited, and resuming from it would fail half-way or silently differ.
STATE_KEYS = {"step": int, "epoch": int, "batch_index": int, "rng_state": dict,
              "train_config": dict, "data": dict, "optimizer_step": int}


def load_training_state(path) -> tuple[dict[str, np.ndarray], dict]:
    path = _model_folder(path)
    if not (path / STATE_JSON).is_file():
        raise FileNotFoundError(f"{path} has no {STATE_JSON}: it is a model, not a resumable training checkpoint")
    tensors, _ = safetensors.load_file(path / STATE_TENSORS)
    interop.check_finite(tensors, path / STATE_TENSORS)
    file = path / STATE_JSON
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file} is not valid JSON: {exc}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{file} is not a training state (a JSON object); resume from another "
                         "checkpoint")
    for key, kind in STATE_KEYS.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise ValueError(f"{file} has no valid {key!r} ({kind.__name__}): the training state "
                             "is damaged; resume from another checkpoint")
    if not isinstance(state["data"].get("vocab_sha256"), str):
        raise ValueError(f"{file} has no valid 'data.vocab_sha256': the training state is damaged; "
                         "resume from another checkpoint")
    return tensors, state


class PreTrainedModel:
    """``from_pretrained`` / ``save_pretrained`` for the model classes (mixed into them)."""

    @classmethod
    def from_pretrained(cls, path, rng: np.random.Generator | None = None, strict: bool = True,
                        allow_missing_heads: bool = False, output_loading_info: bool = False, **config_overrides):
        """A model from a minibert or Hugging Face folder, or a shipped model by name
        (``from_pretrained("tiny")``); see ``load_model``."""
        return load_model(cls, path, rng, strict, allow_missing_heads, output_loading_info, **config_overrides)

    def save_pretrained(self, path, vocab: list[str] | None = None,
                        overwrite: bool = False, dtype: str = "float32") -> Path:
        """Save to ``path``: a new folder, an empty one, or one minibert saved a model into; any
        other folder only with ``overwrite=True``, which replaces only the files written here.
        ``dtype="float16"`` halves the file (loading gives float32 again, rounded to float16)."""
        return save_model(self, path, vocab, overwrite=overwrite, dtype=dtype)
