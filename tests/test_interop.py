"""Hugging Face checkpoint variants, without PyTorch: the folders are written by hand with the key names,
dtypes and files that transformers (old and new) produce, then loaded with ``from_pretrained``."""
import json

import numpy as np
import pytest

from minibert import interop, safetensors
from minibert.config import BertConfig
from minibert.models import BertForPreTraining, BertModel
from minibert.tokenization import BertTokenizer

CONFIG = BertConfig(vocab_size=23, hidden_size=6, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=10, max_position_embeddings=9)


def reference_state(seed=1) -> dict[str, np.ndarray]:
    """A BertForPreTraining state dict in its "bert." form, with values that are not the initialisation."""
    model = BertForPreTraining(CONFIG, np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 100)
    return {n: (a + rng.standard_normal(a.shape)).astype(np.float32) for n, a in model.named_parameters()}


def write_folder(path, state, config=None, **metadata):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config or {**CONFIG.to_dict(), "architectures": ["BertForPreTraining"]}))
    safetensors.save_file(state, path / "model.safetensors", metadata={"format": "pt", **metadata})
    return path


def assert_loaded(model, state, prefix=""):
    params = dict(model.named_parameters())
    for name, array in state.items():
        if name.startswith(prefix):
            loaded = params[name[len(prefix):]]
            assert loaded.dtype == np.float32, name
            np.testing.assert_array_equal(loaded, array, err_msg=name)


def test_bare_and_prefixed_key_sets_load_into_both_classes(tmp_path):
    state = reference_state()
    encoder_only = {k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")}
    write_folder(tmp_path / "heads", state)
    write_folder(tmp_path / "bare", encoder_only, {**CONFIG.to_dict(), "architectures": ["BertModel"]})

    assert_loaded(BertForPreTraining.from_pretrained(tmp_path / "heads"), state)
    encoder, info = BertModel.from_pretrained(tmp_path / "heads", output_loading_info=True)
    assert_loaded(encoder, state, prefix="bert.")
    assert sorted(info.ignored_heads) == sorted(k for k in state if k.startswith("cls."))
    assert_loaded(BertModel.from_pretrained(tmp_path / "bare"), state, prefix="bert.")

    # A bare encoder into a model with heads: only with allow_missing_heads, and the heads keep their init.
    with pytest.raises(ValueError, match=r"missing keys \(7\).*cls\.seq_relationship\.weight(.|\n)*allow_missing_heads"):
        BertForPreTraining.from_pretrained(tmp_path / "bare")
    model, info = BertForPreTraining.from_pretrained(tmp_path / "bare", allow_missing_heads=True,
                                                     output_loading_info=True)
    fresh = BertForPreTraining(CONFIG, np.random.default_rng(0))
    assert_loaded(model, {k: v for k, v in state.items() if k.startswith("bert.")})
    np.testing.assert_array_equal(model.cls.seq_relationship.weight.data, fresh.cls.seq_relationship.weight.data)
    assert set(info.missing_keys) == {k for k in state if k.startswith("cls.")}
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_legacy_names_buffers_and_tied_copies(tmp_path):
    """An old-style file: LayerNorm.gamma/beta, the position_ids buffer (int64), both tied decoder copies."""
    state = reference_state()
    old = {}
    for name, array in state.items():
        name = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        old[name] = array
    old["bert.embeddings.position_ids"] = np.arange(CONFIG.max_position_embeddings, dtype=np.int64)[None]
    old["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"].copy()
    old["cls.predictions.decoder.bias"] = state["cls.predictions.bias"].copy()
    write_folder(tmp_path / "old", old)
    model, info = BertForPreTraining.from_pretrained(tmp_path / "old", output_loading_info=True)
    assert_loaded(model, state)
    n_layernorms = 2 * (1 + 2 * CONFIG.num_hidden_layers + 1)     # embeddings, 2 per layer, MLM transform
    assert len(info.renamed) == n_layernorms
    assert info.renamed["bert.embeddings.LayerNorm.gamma"] == "bert.embeddings.LayerNorm.weight"
    assert info.dropped == ["bert.embeddings.position_ids", "cls.predictions.decoder.bias",
                            "cls.predictions.decoder.weight"]
    # The same legacy names into the bare encoder.
    assert_loaded(BertModel.from_pretrained(tmp_path / "old"), state, prefix="bert.")

    # Only the decoder's copy of the output bias: it is taken as cls.predictions.bias.
    only_copy = {k: v for k, v in state.items() if k != "cls.predictions.bias"}
    only_copy["cls.predictions.decoder.bias"] = state["cls.predictions.bias"]
    write_folder(tmp_path / "copy", only_copy)
    assert_loaded(BertForPreTraining.from_pretrained(tmp_path / "copy"), state)

    # A decoder that is not a copy (an untied model) cannot be represented.
    untied = dict(state, **{"cls.predictions.decoder.weight": state["bert.embeddings.word_embeddings.weight"] + 1})
    write_folder(tmp_path / "untied", untied)
    with pytest.raises(ValueError, match="not tied"):
        BertForPreTraining.from_pretrained(tmp_path / "untied")


@pytest.mark.parametrize("dtype_name", ["F16", "BF16"])
def test_half_precision_weights_are_upcast(tmp_path, dtype_name):
    state = reference_state()
    if dtype_name == "F16":
        stored = {k: v.astype(np.float16) for k, v in state.items()}
        expected = {k: v.astype(np.float32) for k, v in stored.items()}
    else:
        # bfloat16 is the top 16 bits of a float32; the file is written by hand (NumPy has no bfloat16).
        expected = {k: ((v.view(np.uint32) >> 16) << 16).view(np.float32) for k, v in state.items()}
        stored = None
    folder = tmp_path / dtype_name
    if stored is not None:
        write_folder(folder, stored)
    else:
        write_folder(folder, {"placeholder": np.zeros(1, np.float32)})
        header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
        for name, value in expected.items():
            raw = (value.view(np.uint32) >> 16).astype("<u2").tobytes()
            header[name] = {"dtype": "BF16", "shape": list(value.shape), "data_offsets": [offset, offset + len(raw)]}
            blobs.append(raw)
            offset += len(raw)
        text = json.dumps(header).encode()
        (folder / "model.safetensors").write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))
    model, info = BertForPreTraining.from_pretrained(folder, output_loading_info=True)
    assert_loaded(model, expected)
    assert info.upcast == {k: dtype_name for k in state}
    assert np.abs(expected["cls.predictions.bias"] - state["cls.predictions.bias"]).max() > 0   # really rounded


def test_every_problem_is_listed_in_one_error(tmp_path):
    state = reference_state()
    broken = dict(state)
    for layer in range(CONFIG.num_hidden_layers):
        del broken[f"bert.encoder.layer.{layer}.output.dense.bias"]
    del broken["bert.pooler.dense.weight"]
    broken["bert.encoder.layer.2.output.dense.bias"] = np.zeros(6, np.float32)     # a third layer
    broken["cls.extra.weight"] = np.zeros(3, np.float32)
    broken["bert.embeddings.position_embeddings.weight"] = np.zeros((12, 6), np.float32)
    write_folder(tmp_path / "broken", broken)
    with pytest.raises(ValueError) as caught:
        BertForPreTraining.from_pretrained(tmp_path / "broken")
    message = str(caught.value)
    assert "missing keys (3): bert.encoder.layer.{0-1}.output.dense.bias, bert.pooler.dense.weight" in message
    assert "unexpected keys (2): bert.encoder.layer.2.output.dense.bias, cls.extra.weight" in message
    assert ("shape mismatch (1): bert.embeddings.position_embeddings.weight: expected (9, 6) in the model, "
            "got (12, 6) in the checkpoint") in message
    assert "strict=False" in message
    # strict=False loads what matches; shapes are still checked.
    del broken["bert.embeddings.position_embeddings.weight"]
    write_folder(tmp_path / "loose", broken)
    model, info = BertForPreTraining.from_pretrained(tmp_path / "loose", strict=False, output_loading_info=True)
    assert "bert.pooler.dense.weight" in info.missing_keys and "cls.extra.weight" in info.unexpected_keys
    np.testing.assert_array_equal(model.cls.seq_relationship.weight.data, state["cls.seq_relationship.weight"])


def test_starting_a_new_head_from_a_pretraining_checkpoint():
    """The generic rule a future BertForSequenceClassification relies on: under allow_missing_heads, the
    model's own heads may be missing and the checkpoint's other heads are ignored; the encoder must match."""
    state = reference_state()
    shapes = {k: v.shape for k, v in state.items() if k.startswith("bert.")}
    shapes.update({"classifier.weight": (3, 6), "classifier.bias": (3,)})
    with pytest.raises(ValueError, match=r"missing keys \(2\): classifier.weight, classifier.bias"):
        interop.map_state_dict(state, shapes)
    mapped, info = interop.map_state_dict(state, shapes, allow_missing_heads=True)
    assert set(mapped) == {k for k in state if k.startswith("bert.")}
    assert info.missing_keys == ["classifier.weight", "classifier.bias"]
    assert sorted(info.unexpected_keys) == sorted(k for k in state if k.startswith("cls."))
    # The encoder is not a head: a missing encoder tensor is still an error.
    del state["bert.pooler.dense.bias"]
    with pytest.raises(ValueError, match=r"missing keys \(1\): bert.pooler.dense.bias"):
        interop.map_state_dict(state, shapes, allow_missing_heads=True)


def test_non_float_and_duplicate_tensors_are_refused():
    state = reference_state()
    shapes = {k: v.shape for k, v in state.items()}
    with pytest.raises(ValueError, match="dtype int32, expected floating point"):
        interop.map_state_dict({**state, "cls.predictions.bias": np.zeros(23, np.int32)}, shapes)
    gamma = {**state, "bert.embeddings.LayerNorm.gamma": state["bert.embeddings.LayerNorm.weight"]}
    with pytest.raises(ValueError, match="are the same parameter"):
        interop.map_state_dict(gamma, shapes)


def test_pickle_only_folder_is_never_unpickled(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**CONFIG.to_dict(), "architectures": ["BertForMaskedLM"]}))
    (folder / "pytorch_model.bin").write_bytes(b"not a pickle: reading it would fail differently")
    with pytest.raises(FileNotFoundError) as caught:
        BertModel.from_pretrained(folder)
    message = str(caught.value)
    assert "never unpickles" in message and "model.safetensors" in message
    assert (f"python -c \"from transformers import BertForMaskedLM as M; M.from_pretrained('{folder}')"
            f".save_pretrained('{folder}')\"") in message
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"no model.safetensors .* holds \['config.json'\]"):
        BertModel.from_pretrained(folder)


def test_sharded_safetensors(tmp_path):
    state = reference_state()
    folder = write_folder(tmp_path / "sharded", {"x": np.zeros(1, np.float32)})
    (folder / "model.safetensors").unlink()
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[:20], "model-00002-of-00002.safetensors": names[20:]}
    for file, part in shards.items():
        safetensors.save_file({n: state[n] for n in part}, folder / file)
    index = {"metadata": {}, "weight_map": {n: f for f, part in shards.items() for n in part}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_loaded(BertForPreTraining.from_pretrained(folder), state)
    index["weight_map"]["bert.extra"] = "model-00001-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="bert.extra"):
        BertForPreTraining.from_pretrained(folder)


def test_hugging_face_config_fields(tmp_path):
    state = reference_state()
    hf_config = {**CONFIG.to_dict(), "architectures": ["BertForPreTraining"], "hidden_act": "gelu_pytorch_tanh",
                 "dtype": "float32", "transformers_version": "5.0.0", "use_cache": True, "is_decoder": False,
                 "add_cross_attention": False, "classifier_dropout": None, "tie_word_embeddings": True}
    model = BertForPreTraining.from_pretrained(write_folder(tmp_path / "tanh", state, hf_config))
    assert model.config.hidden_act == "gelu_new"            # the same tanh approximation
    assert model.bert.encoder.layer[0].intermediate.dense.activation == "gelu_new"
    for change, message in ((dict(is_decoder=True), "is_decoder"),
                            (dict(position_embedding_type="relative_key"), "relative_key"),
                            (dict(hidden_act="relu"), "unknown hidden_act 'relu'"),
                            (dict(tie_word_embeddings=False), "tie_word_embeddings=false")):
        write_folder(tmp_path / "bad", state, {**hf_config, **change})
        with pytest.raises(ValueError, match=message):
            BertForPreTraining.from_pretrained(tmp_path / "bad")
    # An untied config does not matter to the bare encoder.
    BertModel.from_pretrained(write_folder(tmp_path / "untied", state, {**hf_config, "tie_word_embeddings": False}))


def test_save_pretrained_writes_what_transformers_reads(tmp_path):
    for cls in (BertForPreTraining, BertModel):
        model = cls(BertConfig(**{**CONFIG.to_dict(), "hidden_act": "gelu_pytorch_tanh"}), np.random.default_rng(0))
        model.save_pretrained(tmp_path / cls.__name__)
        config = json.loads((tmp_path / cls.__name__ / "config.json").read_text())
        assert config["architectures"] == [cls.__name__] and config["model_type"] == "bert"
        assert config["hidden_act"] == "gelu_new" and config["dtype"] == "float32"
        tensors, metadata = safetensors.load_file(tmp_path / cls.__name__ / "model.safetensors")
        assert metadata == {"format": "pt"}
        assert set(tensors) == {n for n, _ in model.named_parameters()}
        assert all(t.dtype == np.float32 for t in tensors.values())
        again = cls.from_pretrained(tmp_path / cls.__name__)
        for (n, a), (_, b) in zip(model.named_parameters(), again.named_parameters()):
            np.testing.assert_array_equal(a, b, err_msg=n)


def test_tokenizer_json_folder(tmp_path):
    """transformers 5 saves a tokenizer as tokenizer.json without vocab.txt; the vocabulary and the
    lower-casing come from there, and a pipeline minibert does not implement is refused."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "##s", "on", "mat", "."]
    order = [3, 0, 11, 5, 1, 7, 2, 4, 10, 6, 8, 9]               # a JSON object in no particular order
    spec = {"version": "1.0",
            "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                           "strip_accents": None, "lowercase": True},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100, "vocab": {tokens[i]: i for i in order}}}
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True}))
    tokenizer = BertTokenizer.from_pretrained(folder)
    assert tokenizer.convert_ids_to_tokens(range(len(tokens))) == tokens and tokenizer.do_lower_case
    assert tokenizer.encode("The cats sat.").input_ids == [2, 5, 6, 8, 7, 11, 3]
    spec["normalizer"]["lowercase"] = False
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    assert BertTokenizer.from_pretrained(folder).encode("The cats").input_ids == [2, 1, 6, 8, 3]
    for change, message in ((("normalizer", "strip_accents"), True), (("model", "type"), "BPE"),
                            (("model", "continuing_subword_prefix"), "@@")):
        bad = json.loads(json.dumps(spec))
        bad[change[0]][change[1]] = message
        (folder / "tokenizer.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="not a BERT WordPiece tokenizer"):
            BertTokenizer.from_pretrained(folder)
    spec["model"]["vocab"]["extra"] = 40
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="without gaps"):
        BertTokenizer.from_pretrained(folder)
    # A folder with vocab.txt goes through BertTokenizer.from_pretrained as before.
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n")
    assert BertTokenizer.from_pretrained(folder).vocab_size == len(tokens)


def test_bench_parity_without_torch_says_what_to_install(monkeypatch, capsys):
    import sys

    from minibert.cli import main

    monkeypatch.setitem(sys.modules, "torch", None)          # makes `import torch` fail, installed or not
    assert main(["bench", "parity", "--steps", "1"]) == 1
    err = capsys.readouterr().err
    assert "minibert bench parity needs PyTorch and Hugging Face transformers" in err
    assert 'pip install "torch==2.13.0"' in err
