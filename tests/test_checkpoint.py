"""Checkpoints: safetensors round trip, Hugging Face layout, atomic saves, corrupt files."""
import json
import os

import numpy as np
import pytest

from minibert import checkpoint, safetensors
from minibert.config import BertConfig
from minibert.models import BertForPreTraining, BertModel

CONFIG = BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=12, max_position_embeddings=10)


def test_safetensors_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"a": rng.standard_normal((3, 4)).astype(np.float32), "b": np.arange(5, dtype=np.int64),
               "c": rng.standard_normal(2), "d": np.zeros((0, 3), np.float16)}
    safetensors.save_file(tensors, tmp_path / "t.safetensors", metadata={"k": "v"})
    loaded, meta = safetensors.load_file(tmp_path / "t.safetensors")
    assert meta == {"k": "v"} and loaded.keys() == tensors.keys()
    for k in tensors:
        assert loaded[k].dtype == tensors[k].dtype
        np.testing.assert_array_equal(loaded[k], tensors[k])
    raw = (tmp_path / "t.safetensors").read_bytes()
    assert (8 + int.from_bytes(raw[:8], "little")) % 8 == 0   # data aligned


def test_safetensors_reads_bfloat16(tmp_path):
    values = np.array([1.0, -2.5, 3.140625], np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16)
    header = json.dumps({"x": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    (tmp_path / "b.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bf16.tobytes())
    loaded, _ = safetensors.load_file(tmp_path / "b.safetensors")
    np.testing.assert_array_equal(loaded["x"], values)


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:-5], "truncated or corrupt"),
    (lambda raw: raw[:4], "only 4 bytes"),
    (lambda raw: (10**9).to_bytes(8, "little") + raw[8:], "header length"),
    (lambda raw: raw[:8] + b"x" + raw[9:], "not valid JSON"),
    (lambda raw: b"", "only 0 bytes"),
])
def test_safetensors_damaged_files(tmp_path, damage, message):
    path = tmp_path / "t.safetensors"
    safetensors.save_file({"a": np.ones((4, 4), np.float32)}, path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=message):
        safetensors.load_file(path)


def test_save_pretrained_layout_and_round_trip(tmp_path):
    model = BertForPreTraining(CONFIG, np.random.default_rng(1))
    vocab = [f"tok{i}" for i in range(40)]
    model.save_pretrained(tmp_path / "ckpt", vocab=vocab)
    assert sorted(os.listdir(tmp_path / "ckpt")) == [".minibert.json", "config.json",
                                                     "model.safetensors", "vocab.txt"]
    tensors, _ = safetensors.load_file(tmp_path / "ckpt" / "model.safetensors")
    assert "bert.embeddings.word_embeddings.weight" in tensors and "cls.predictions.bias" in tensors
    assert "cls.predictions.decoder.weight" not in tensors    # tied, omitted like Hugging Face
    again = BertForPreTraining.from_pretrained(tmp_path / "ckpt")
    for (n, a), (_, b) in zip(model.named_parameters(), again.named_parameters()):
        np.testing.assert_array_equal(a, b, err_msg=n)
    assert again.cls.predictions.decoder.weight is again.bert.embeddings.word_embeddings.weight
    # The encoder alone loads from the pretraining checkpoint (prefix dropped, heads ignored).
    encoder = BertModel.from_pretrained(tmp_path / "ckpt")
    np.testing.assert_array_equal(encoder.pooler.dense.weight.data, model.bert.pooler.dense.weight.data)


def test_float16_storage_halves_the_file_and_loads_as_float32(tmp_path):
    model = BertForPreTraining(CONFIG, np.random.default_rng(1))
    vocab = [f"tok{i}" for i in range(40)]
    model.save_pretrained(tmp_path / "full", vocab=vocab)
    model.save_pretrained(tmp_path / "half", vocab=vocab, dtype="float16")
    full, half = ((tmp_path / name / "model.safetensors").stat().st_size for name in ("full", "half"))
    stored = sum(a.size for a in safetensors.load_file(tmp_path / "half" / "model.safetensors")[0].values())
    assert 0 <= (full - half) - 2 * stored < 100      # two bytes less per weight; the header's offsets shrink
    assert json.loads((tmp_path / "half" / "config.json").read_text())["dtype"] == "float16"
    assert set(checkpoint.interop.read_weights(tmp_path / "half")[1].values()) == {"F16"}
    again = BertForPreTraining.from_pretrained(tmp_path / "half")
    for (n, a), (_, b) in zip(model.named_parameters(), again.named_parameters()):
        assert b.dtype == np.float32, n
        np.testing.assert_array_equal(b, a.astype(np.float16).astype(np.float32), err_msg=n)
    model.bert.pooler.dense.weight.data[0, 0] = 1e5                  # beyond float16's range
    with pytest.raises(ValueError, match="does not fit in float16.*save it as float32"):
        model.save_pretrained(tmp_path / "too-big", vocab=vocab, dtype="float16")
    assert not (tmp_path / "too-big").exists()
    with pytest.raises(ValueError, match="cannot store weights as 'int8'"):
        model.save_pretrained(tmp_path / "int8", dtype="int8")


def test_missing_checkpoint_and_bad_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        BertModel.from_pretrained(tmp_path / "nope")
    model = BertModel(CONFIG, np.random.default_rng(0))
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps({**CONFIG.to_dict(), "hidden_size": 10}))
    with pytest.raises(ValueError, match="shape mismatch"):
        BertModel.from_pretrained(tmp_path / "m")


def test_interrupted_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    """Kill the save at every file write in turn: the old checkpoint must survive intact each time."""
    path = tmp_path / "ckpt"
    first = BertModel(CONFIG, np.random.default_rng(1))
    first.save_pretrained(path)
    second = BertModel(CONFIG, np.random.default_rng(2))
    real_save = safetensors.save_file

    real_rename = os.rename
    for fail_at in ("config", "weights", "fsync", "rename", "second rename", "killed between renames"):
        def boom(*a, **k):
            raise KeyboardInterrupt("simulated crash")
        with monkeypatch.context() as m:
            if fail_at == "config":
                m.setattr(BertConfig, "to_json_file", boom)
            elif fail_at == "weights":
                def partial_then_boom(tensors, p, metadata=None):
                    real_save(tensors, p, metadata)
                    with open(p, "r+b") as f:
                        f.truncate(100)
                    raise KeyboardInterrupt("simulated crash")
                m.setattr(safetensors, "save_file", partial_then_boom)
            elif fail_at == "fsync":
                m.setattr(os, "fsync", boom)
            elif fail_at == "rename":
                m.setattr(os, "rename", boom)
            else:
                calls = []

                def rename_once(src, dst):
                    calls.append(src)
                    if len(calls) == 2:
                        raise KeyboardInterrupt("simulated crash")
                    real_rename(src, dst)
                m.setattr(os, "rename", rename_once)
                if fail_at == "killed between renames":   # no chance to clean up: the loader recovers
                    m.setattr(checkpoint, "recover", lambda p: None)
            with pytest.raises(KeyboardInterrupt):
                second.save_pretrained(path)
        loaded = BertModel.from_pretrained(path)
        np.testing.assert_array_equal(loaded.pooler.dense.weight.data, first.pooler.dense.weight.data)
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ckpt.tmp")]
    second.save_pretrained(path)
    np.testing.assert_array_equal(BertModel.from_pretrained(path).pooler.dense.weight.data,
                                  second.pooler.dense.weight.data)
