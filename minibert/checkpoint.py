"""Checkpoints in the Hugging Face layout, written atomically.

A model directory holds ``config.json``, ``model.safetensors`` (Hugging Face key names; the tied decoder
keys ``cls.predictions.decoder.{weight,bias}`` are omitted as Hugging Face does) and, when a vocabulary
is given, ``vocab.txt``. A training checkpoint adds ``training_state.safetensors`` (optimiser moments)
and ``training_state.json`` (step, random-generator states, data position, run settings).

Atomic writes: everything goes into a temporary sibling directory, which is renamed into place only
when complete. A crash mid-save leaves at most a stray ``.tmp-*`` directory and the previous
checkpoint untouched. Loading never unpickles; a truncated or tampered file gets a clear error.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from minibert import interop, safetensors
from minibert.config import BertConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
VOCAB_NAME = "vocab.txt"
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"


def write_directory_atomically(path, write) -> Path:
    """Call ``write(tmp_dir)`` to fill a fresh temporary directory, then move it to ``path``.

    If ``path`` exists it is replaced: it is first renamed to ``.NAME.old-*`` and deleted only after the
    new directory is in place, so some complete checkpoint exists at every instant; if the process dies
    between the two renames, the next load moves the old one back (``recover``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        write(tmp)
        for f in tmp.iterdir():      # data on disk before the rename makes it visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
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
    return path


def recover(path) -> None:
    """If a save died after moving the previous checkpoint aside, put it back."""
    path = Path(path)
    if not path.exists():
        olds = sorted(path.parent.glob(f".{path.name}.old-*"), key=os.path.getmtime)
        if olds:
            os.rename(olds[-1], path)


def save_model(model, path, vocab: list[str] | None = None, extra=None) -> Path:
    """Write config, weights (and vocab) to ``path`` atomically. ``extra(tmp_dir)`` may add files.

    ``config.json`` names the model's class in ``architectures`` (our class names are transformers'), so
    ``transformers.AutoModel*.from_pretrained`` builds the right model from the folder.
    """
    tensors = {name: np.asarray(a, dtype=np.float32) for name, a in model.named_parameters()}

    def write(tmp: Path):
        model.config.to_json_file(tmp / CONFIG_NAME, extra=interop.hf_config_fields(type(model).__name__))
        safetensors.save_file(tensors, tmp / WEIGHTS_NAME, metadata={"format": "pt"})  # transformers requires "pt"
        if vocab is not None:
            (tmp / VOCAB_NAME).write_text("\n".join(vocab) + "\n", encoding="utf-8")
        if extra is not None:
            extra(tmp)
    return write_directory_atomically(path, write)


def load_config(path) -> BertConfig:
    path = Path(path)
    recover(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {path}")
    return interop.read_config(path)[0]


def load_weights(path) -> dict[str, np.ndarray]:
    tensors, _ = safetensors.load_file(Path(path) / WEIGHTS_NAME)
    return tensors


def load_model(cls, path, rng: np.random.Generator | None = None, strict: bool = True,
               allow_missing_heads: bool = False, output_loading_info: bool = False, **config_overrides):
    """Build ``cls(config, rng)`` from the directory's config and load its weights.

    The folder may come from minibert or from transformers (``minibert.interop`` maps the variants: with
    or without the ``bert.`` prefix, legacy LayerNorm names, buffers, tied decoder copies, float16 and
    bfloat16). A pretraining checkpoint loads into a ``BertModel`` (its heads are ignored); a ``BertModel``
    checkpoint loads into a model with heads when ``allow_missing_heads=True`` (the heads keep their fresh
    initialisation). Any other missing or unexpected key, and any shape mismatch, is a ValueError that
    lists them all; ``strict=False`` allows missing and unexpected keys. With ``output_loading_info``
    returns ``(model, interop.LoadingInfo)``. ``config_overrides`` replace fields of the stored config
    (``num_labels=3``, ``hidden_dropout_prob=0.0``) before the model is built.
    """
    path = Path(path)
    recover(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {path}")
    config, raw = interop.read_config(path)
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


def load_training_state(path) -> tuple[dict[str, np.ndarray], dict]:
    path = Path(path)
    if not (path / STATE_JSON).is_file():
        raise FileNotFoundError(f"{path} has no {STATE_JSON}: it is a model, not a resumable training checkpoint")
    tensors, _ = safetensors.load_file(path / STATE_TENSORS)
    try:
        state = json.loads((path / STATE_JSON).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path / STATE_JSON} is not valid JSON: {exc}") from None
    return tensors, state


class PreTrainedModel:
    """``from_pretrained`` / ``save_pretrained`` for the model classes (mixed into them)."""

    @classmethod
    def from_pretrained(cls, path, rng: np.random.Generator | None = None, strict: bool = True,
                        allow_missing_heads: bool = False, output_loading_info: bool = False, **config_overrides):
        """A model from a minibert or Hugging Face folder; see ``load_model``."""
        return load_model(cls, path, rng, strict, allow_missing_heads, output_loading_info, **config_overrides)

    def save_pretrained(self, path, vocab: list[str] | None = None) -> Path:
        return save_model(self, path, vocab)
