"""Hugging Face BERT checkpoints in and out: key names, dtypes, files and config.json.

minibert's parameter names are the Hugging Face state-dict keys and its Linear weights are stored
``[out, in]`` as in PyTorch, so a checkpoint needs no transposes and no renaming table. What this module
handles is the variety that real checkpoints carry:

* **Prefix.** A bare ``BertModel`` saves ``embeddings.*``, ``encoder.*``, ``pooler.*``; a model with heads
  (``BertForPreTraining``, ``BertForSequenceClassification``, ...) saves the same keys under ``bert.``
  beside its head keys (``cls.*``, ``classifier.*``). Both load into both kinds of model.
* **Legacy names.** Files converted from TensorFlow call the LayerNorm parameters ``gamma`` and ``beta``.
* **Buffers.** Older transformers versions saved ``embeddings.position_ids`` (``arange(T)``); it is not a
  parameter and is dropped.
* **Tied decoder.** ``cls.predictions.decoder.weight`` / ``.bias`` are the word embeddings and
  ``cls.predictions.bias`` under a second name. Current files omit them, older ones carry copies; a copy
  that differs from its original means an untied model, which minibert cannot represent: an error.
* **dtypes.** float16 and bfloat16 (and float64) weights become float32, the dtype minibert trains in.
* **Files.** ``model.safetensors`` or a sharded ``model.safetensors.index.json``. A folder with only
  ``pytorch_model.bin`` gets an error with the one-line conversion: loading never unpickles.

The model side is generic, so a future head class needs nothing here: a model whose parameter names
start with ``bert.`` has its encoder there, and every other parameter of it is a head; a model without
that prefix is the bare encoder. Loading checks the names and shapes of everything and reports every
missing key, unexpected key and shape mismatch in one error; ``allow_missing_heads=True`` lets head
parameters that the checkpoint lacks keep their initialisation (starting a classifier from a pretrained
encoder) and ignores the checkpoint's other heads.

The last section holds the PyTorch side of the parity checks (``minibert bench parity``, lesson 15);
it imports torch and transformers only when called.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np

from minibert import safetensors
from minibert.config import BertConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json")

BASE_PREFIX = "bert."                                  # where a model with heads keeps its encoder
BASE_MODULES = ("embeddings.", "encoder.", "pooler.")  # the top-level modules of a bare BertModel
LEGACY_SUFFIXES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}
BUFFER_NAMES = ("position_ids", "token_type_ids")      # non-parameter buffers some files carry
# A copy of a tied parameter -> the parameter itself (names in the "with heads" form).
TIED_COPIES = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
               "cls.predictions.decoder.bias": "cls.predictions.bias"}


# ----------------------------------------------------------------------------------------------
# config.json
# ----------------------------------------------------------------------------------------------
def config_from_hf(d: dict) -> BertConfig:
    """A BertConfig from a Hugging Face ``config.json`` dict, refusing settings that change the model.

    Fields minibert does not use (``architectures``, ``dtype``, ``use_cache``, ...) are ignored, as long
    as they describe the plain BERT encoder: a decoder, cross-attention or relative position embeddings
    would compute something else, so they raise ValueError instead of loading silently.
    """
    if not isinstance(d, dict):
        raise ValueError(f"a BERT config must be a JSON object, got {type(d).__name__}")
    unsupported = []
    if d.get("is_decoder"):
        unsupported.append("is_decoder=true (causal self-attention)")
    if d.get("add_cross_attention"):
        unsupported.append("add_cross_attention=true")
    if d.get("position_embedding_type", "absolute") not in ("absolute", None):
        unsupported.append(f"position_embedding_type={d['position_embedding_type']!r} (minibert: 'absolute')")
    if unsupported:
        raise ValueError("config.json describes a model minibert does not implement: " + "; ".join(unsupported))
    return BertConfig.from_dict(d)


def hf_config_fields(architecture: str, dtype: str = "float32") -> dict:
    """What ``config.json`` needs besides BertConfig's fields (already Hugging Face names) for transformers:
    the class to build (``architectures``, read by ``AutoModel*``) and the dtype of the stored weights."""
    return {"architectures": [architecture], "dtype": dtype}


def read_config(path) -> tuple[BertConfig, dict]:
    """(BertConfig, the raw dict) from a model folder's ``config.json`` (or the file itself)."""
    path = Path(path)
    file = path / CONFIG_NAME if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"config file not found: {file}")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file} is not valid JSON: {exc}") from None
    try:
        return config_from_hf(raw), raw
    except ValueError as exc:
        raise ValueError(f"{file}: {exc}") from None


# ----------------------------------------------------------------------------------------------
# Weight files
# ----------------------------------------------------------------------------------------------
def read_weights(folder) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(name -> array as stored, name -> stored safetensors dtype such as "F16" or "BF16") of a model folder.

    Reads ``model.safetensors``, or every shard named by ``model.safetensors.index.json``. Never reads a
    pickle: a folder that has only ``pytorch_model.bin`` raises FileNotFoundError with the command that
    converts it.
    """
    folder = Path(folder)
    single, index = folder / WEIGHTS_NAME, folder / WEIGHTS_INDEX_NAME
    if single.is_file():
        files = [single]
        weight_map = None
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise ValueError(f"{index} is not a safetensors index (a JSON object with a 'weight_map')") from None
        files = [folder / name for name in sorted(set(weight_map.values()))]
    else:
        pickles = [name for name in PICKLE_NAMES if (folder / name).is_file()]
        if pickles:
            raise FileNotFoundError(_pickle_message(folder, pickles[0]))
        present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        raise FileNotFoundError(f"no {WEIGHTS_NAME} (or {WEIGHTS_INDEX_NAME}) in {folder}; it holds {present}")

    tensors, dtypes = {}, {}
    for file in files:
        loaded, _ = safetensors.load_file(file)
        stored = _stored_dtypes(file)
        for name, array in loaded.items():
            if name in tensors:
                raise ValueError(f"tensor {name!r} appears in more than one shard of {folder}")
            tensors[name], dtypes[name] = array, stored[name]
    if weight_map is not None:
        lost = [f"{name} (in {file})" for name, file in weight_map.items() if name not in tensors]
        if lost:
            raise ValueError(f"{index} lists tensors its shards do not hold: " + ", ".join(lost))
    return tensors, dtypes


def _stored_dtypes(file: Path) -> dict[str, str]:
    """name -> the dtype string of the file's header (the loader turns BF16 into float32, so the arrays
    alone cannot tell). The header was already checked by ``safetensors.load_file``."""
    with open(file, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return {name: info["dtype"] for name, info in header.items() if name != "__metadata__"}


def _pickle_message(folder: Path, found: str) -> str:
    architecture = "AutoModel"
    try:
        archs = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8")).get("architectures") or []
        if archs and re.fullmatch(r"Bert\w*", str(archs[0])):
            architecture = archs[0]
    except (OSError, ValueError, AttributeError):
        pass
    return (f"{folder} has only {found}, a pickle, and minibert never unpickles (loading a pickle can run "
            f"arbitrary code). Convert it to {WEIGHTS_NAME} once, where torch and transformers are installed:\n"
            f"    python -c \"from transformers import {architecture} as M; "
            f"M.from_pretrained('{folder}').save_pretrained('{folder}')\"")


# ----------------------------------------------------------------------------------------------
# Key mapping
# ----------------------------------------------------------------------------------------------
class CheckpointMismatch(ValueError):
    """A checkpoint that does not fit the model. ``str()`` gives the hints for Python callers
    (keyword arguments of ``from_pretrained``); ``cli_message`` the same problems with the commands'
    way out."""

    def __init__(self, message: str, cli_message: str):
        super().__init__(message)
        self.cli_message = cli_message


def check_finite(tensors: dict[str, np.ndarray], source) -> None:
    """ValueError naming the first tensor that holds NaN or infinity: such weights come from a
    diverged run or a damaged file, and a model built from them prints ``loss nan`` as if nothing
    were wrong."""
    for name, array in tensors.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = int(np.size(array) - np.isfinite(array).sum())
            raise ValueError(f"{source}: tensor {name!r} holds {bad} NaN or infinite value(s) of "
                             f"{np.size(array)}; the checkpoint comes from a diverged run or is "
                             "damaged; use an earlier checkpoint")


@dataclasses.dataclass
class LoadingInfo:
    """What loading did besides copying tensors. Names are the model's, except ``unexpected_keys``,
    ``ignored_heads`` and ``dropped``, which are the checkpoint's."""
    missing_keys: list[str]            # model parameters not in the checkpoint (they kept their initialisation)
    unexpected_keys: list[str]         # checkpoint tensors the model has no parameter for
    ignored_heads: list[str]           # head tensors of a checkpoint loaded into the bare encoder
    renamed: dict[str, str]            # legacy name in the file -> model name
    dropped: list[str]                 # buffers and copies of tied parameters
    upcast: dict[str, str]             # model name -> dtype stored in the file, where not float32


def canonical_name(key: str) -> str:
    """The checkpoint key in the "with heads" form: legacy LayerNorm names replaced, the encoder under
    ``bert.``.  ``encoder.layer.0.output.LayerNorm.gamma`` -> ``bert.encoder.layer.0.output.LayerNorm.weight``"""
    for old, new in LEGACY_SUFFIXES.items():
        if key.endswith(old):
            key = key[:-len(old)] + new
    return BASE_PREFIX + key if key.startswith(BASE_MODULES) else key


def map_state_dict(state: dict[str, np.ndarray], model_shapes: dict[str, tuple], *, strict: bool = True,
                   allow_missing_heads: bool = False, tie_word_embeddings: bool = True,
                   stored_dtypes: dict[str, str] | None = None, source: str = "the checkpoint",
                   target: str = "the model") -> tuple[dict[str, np.ndarray], LoadingInfo]:
    """Turn a checkpoint's tensors into a float32 state dict under the model's parameter names.

    Args:
        state: checkpoint name -> array (any of the variants in the module docstring).
        model_shapes: the model's parameter name -> shape (tied parameters listed once).
        strict: with False, missing and unexpected keys are allowed (shapes are always checked).
        allow_missing_heads: head parameters (outside ``bert.``) the checkpoint lacks keep their
            initialisation, and checkpoint heads the model does not have are ignored.
        tie_word_embeddings: the config's flag; False with an MLM head in the model is an error.
        stored_dtypes: name -> dtype string as stored (for the report; else taken from the arrays).
        source, target: how the error message names the two sides.

    Returns (state dict for ``model.load_state_dict``, LoadingInfo). Raises ValueError listing every
    problem at once: missing keys, unexpected keys, shape mismatches, non-float tensors, untied copies.
    """
    model_has_prefix = any(name.startswith(BASE_PREFIX) for name in model_shapes)
    problems: list[str] = []
    if not tie_word_embeddings and any(name.startswith("cls.predictions.") for name in model_shapes):
        problems.append("config.json has tie_word_embeddings=false, but minibert's MLM decoder is the "
                        "word-embedding matrix itself")

    # 1. Checkpoint names -> canonical names; drop buffers; upcast to float32.
    canonical: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}                       # canonical name -> name in the file
    renamed, dropped, upcast = {}, [], {}
    for key, array in state.items():
        if key.rsplit(".", 1)[-1] in BUFFER_NAMES:
            dropped.append(key)
            continue
        name = canonical_name(key)
        if name in canonical:
            problems.append(f"{origin[name]!r} and {key!r} are the same parameter")
            continue
        array = np.asarray(array)
        if array.dtype.kind != "f":
            problems.append(f"{key!r} has dtype {array.dtype}, expected floating point")
            continue
        stored = (stored_dtypes or {}).get(key, _SAFETENSORS_NAMES.get(array.dtype, str(array.dtype)))
        if stored != "F32":
            upcast[key] = stored
        canonical[name] = array.astype(np.float32)
        origin[name] = key
        if any(key.endswith(old) for old in LEGACY_SUFFIXES):
            renamed[key] = name

    # 2. Copies of tied parameters: check they are copies, keep the original.
    for copy, original in TIED_COPIES.items():
        if copy not in canonical:
            continue
        value = canonical.pop(copy)
        dropped.append(origin[copy])
        if original not in canonical:
            canonical[original], origin[original] = value, origin[copy]
        elif value.shape != canonical[original].shape or not np.array_equal(value, canonical[original]):
            problems.append(f"{origin[copy]!r} differs from {origin[original]!r}: the checkpoint's MLM decoder "
                            f"is not tied to it, which minibert's model cannot represent")

    # 3. Canonical names -> model names.
    checkpoint_has_prefix = any(name.startswith(BASE_PREFIX) and origin[name].startswith(BASE_PREFIX)
                                for name in canonical)
    mapped, ignored_heads, unexpected = {}, [], []
    for name, array in canonical.items():
        if model_has_prefix:
            model_name = name
        elif name.startswith(BASE_PREFIX):
            model_name = name[len(BASE_PREFIX):]
        elif checkpoint_has_prefix:                    # a head of a with-heads checkpoint: not the encoder's
            ignored_heads.append(origin[name])
            continue
        else:
            model_name = name
        if model_name in model_shapes:
            mapped[model_name] = array
            if origin[name] in upcast:
                upcast[model_name] = upcast.pop(origin[name])
            if origin[name] in renamed:
                renamed[origin[name]] = model_name
        else:
            unexpected.append(origin[name])
    upcast = {k: v for k, v in upcast.items() if k in mapped}
    renamed = {k: v for k, v in renamed.items() if v in mapped}

    def is_head(model_name: str) -> bool:
        return model_has_prefix and not model_name.startswith(BASE_PREFIX)

    missing = [name for name in model_shapes if name not in mapped]
    wrong = [f"{name}: expected {tuple(model_shapes[name])} in the model, got {array.shape} in the checkpoint"
             for name, array in mapped.items() if array.shape != tuple(model_shapes[name])]
    bad_missing = [n for n in missing if strict and not (allow_missing_heads and is_head(n))]
    bad_unexpected = [n for n in unexpected if strict and not (allow_missing_heads and is_head(canonical_name(n)))]
    if bad_missing:
        problems.append(f"missing keys ({len(bad_missing)}): " + summarise_names(bad_missing))
    if bad_unexpected:
        problems.append(f"unexpected keys ({len(bad_unexpected)}): " + summarise_names(bad_unexpected))
    if wrong:
        problems.append(f"shape mismatch ({len(wrong)}): " + "; ".join(wrong))
    if problems:
        hints, cli_hints = [], []
        if bad_missing and all(is_head(n) for n in bad_missing):
            hints.append("allow_missing_heads=True starts the missing heads from their initialisation "
                         "(as when a classifier starts from a pretrained encoder)")
            cli_hints.append("the folder has no weights for these heads: `minibert evaluate`, "
                             "`probe` and `pretrain --resume` need a checkpoint saved by `minibert "
                             "pretrain`, while `minibert finetune --from DIR` starts a new "
                             "classifier on this encoder")
        elif bad_missing or bad_unexpected:
            hints.append("strict=False loads the tensors that match and keeps the initialisation of the rest")
            cli_hints.append("the folder holds a different model; give one saved by `minibert "
                             "pretrain` or `minibert finetune`, or by transformers' "
                             "save_pretrained")
        head = f"cannot load {source} into {target}:\n  " + "\n  ".join(problems)
        raise CheckpointMismatch(head + "".join(f"\n  hint: {h}" for h in hints),
                                 head + "".join(f"\n  hint: {h}" for h in cli_hints))
    info = LoadingInfo(missing, unexpected, ignored_heads, renamed, sorted(dropped), upcast)
    return mapped, info


_SAFETENSORS_NAMES = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}


def summarise_names(names: list[str]) -> str:
    """Names joined by ", ", with the layers folded: ``bert.encoder.layer.{0-11}.output.dense.weight``."""
    groups: dict[str, list[int]] = {}
    order: list[str] = []
    for name in names:
        match = re.search(r"\.layer\.(\d+)\.", name)
        template = name if match is None else name[:match.start(1)] + "{}" + name[match.end(1):]
        if template not in groups:
            groups[template] = []
            order.append(template)
        if match is not None:
            groups[template].append(int(match.group(1)))
    out = []
    for template in order:
        layers = sorted(set(groups[template]))
        if not layers:
            out.append(template)
        else:
            out.append(template.replace("{}", str(layers[0]) if len(layers) == 1 else "{" + _ranges(layers) + "}"))
    return ", ".join(out)


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5"; a single layer stays a plain number."""
    runs = [[values[0], values[0]]]
    for v in values[1:]:
        if v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def load_into(model, folder, *, strict: bool = True, allow_missing_heads: bool = False,
              raw_config: dict | None = None) -> LoadingInfo:
    """Read a folder's weights, map them onto ``model``'s parameters, copy them in; returns the LoadingInfo."""
    folder = Path(folder)
    state, dtypes = read_weights(folder)
    shapes = {name: array.shape for name, array in model.named_parameters()}
    tied = (raw_config or {}).get("tie_word_embeddings", True) is not False
    mapped, info = map_state_dict(state, shapes, strict=strict, allow_missing_heads=allow_missing_heads,
                                  tie_word_embeddings=tied, stored_dtypes=dtypes, source=str(folder),
                                  target=type(model).__name__)
    check_finite(mapped, folder / WEIGHTS_NAME if (folder / WEIGHTS_NAME).is_file() else folder)
    model.load_state_dict(mapped, strict=False)   # names and shapes are checked above
    return info


# ----------------------------------------------------------------------------------------------
# The PyTorch side of the parity checks (imports torch and transformers when called)
# ----------------------------------------------------------------------------------------------
PARITY_INSTALL = 'pip install "torch==2.13.0" && pip install ".[parity]"'


def import_torch_and_transformers(purpose: str):
    """(torch, transformers), or ImportError saying what needs them and how to install them."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ImportError(f"{purpose} needs PyTorch and Hugging Face transformers ({exc.name} is not installed); "
                          f"install them with: {PARITY_INSTALL}  (pinning torch first picks the CPU build "
                          f"where one is available)") from None
    return torch, transformers


def hf_from_minibert(model, folder, *, attn_implementation: str = "eager"):
    """Save ``model`` with ``save_pretrained`` and load it back as the transformers class of the same name
    (``BertModel`` or ``BertForPreTraining``), in float32. Eager attention: the plain
    matmul-softmax-matmul that minibert computes, so the two can be compared to rounding."""
    _, transformers = import_torch_and_transformers("loading a minibert model in transformers")
    model.save_pretrained(folder)
    hf_class = getattr(transformers, type(model).__name__)
    return hf_class.from_pretrained(folder, attn_implementation=attn_implementation)


def hf_pretraining_loss(hf_output, batch: dict):
    """The pretraining loss of minibert's ``BertForPreTraining`` computed from transformers' outputs.

    transformers scores all T positions, (B, T, V), and its own loss is a plain mean over labels != -100;
    ours scores the P masked positions and weights them: sum(w * nll) / (sum(w) + 1e-5) + mean NSP nll.
    So gather (B, T, V) at ``masked_lm_positions`` and apply our formula. Returns (total, mlm, nsp) tensors.
    """
    import torch

    logits = hf_output.prediction_logits                                    # (B, T, V)
    positions = torch.as_tensor(np.asarray(batch["masked_lm_positions"], dtype=np.int64))
    targets = torch.as_tensor(np.asarray(batch["masked_lm_ids"], dtype=np.int64))
    weights = torch.as_tensor(np.asarray(batch["masked_lm_weights"], dtype=np.float32))
    rows = torch.arange(logits.shape[0])[:, None]
    gathered = logits[rows, positions]                                      # (B, P, V)
    nll = -torch.log_softmax(gathered, dim=-1).gather(-1, targets[..., None])[..., 0]   # (B, P)
    mlm = (weights * nll).sum() / (weights.sum() + 1e-5)
    nsp_labels = torch.as_tensor(np.asarray(batch["next_sentence_labels"], dtype=np.int64))
    nsp = torch.nn.functional.cross_entropy(hf_output.seq_relationship_logits, nsp_labels)
    return mlm + nsp, mlm, nsp


def hf_forward(hf_model, batch: dict, **kwargs):
    """Call a transformers BERT on a minibert batch (NumPy arrays named like our forward's arguments)."""
    import torch

    def tensor(name):
        return torch.as_tensor(np.asarray(batch[name], dtype=np.int64))
    return hf_model(input_ids=tensor("input_ids"), token_type_ids=tensor("token_type_ids"),
                    attention_mask=tensor("attention_mask"), **kwargs)


def torch_adamw_like(hf_model, lr: float, weight_decay: float, eps: float, betas=(0.9, 0.999), no_decay=None):
    """``torch.optim.AdamW`` set up as minibert's ``AdamW(correct_bias=True)``: the same betas and eps (added
    to the bias-corrected root in both), decoupled decay from the pre-step weight, and the same no-decay
    group (LayerNorm and biases, by name). Tied parameters appear once, as in ``named_parameters()``."""
    import torch

    from minibert.optim import default_no_decay

    no_decay = no_decay or default_no_decay
    decay, plain = [], []
    for name, p in hf_model.named_parameters():
        (plain if no_decay(name) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
