import json

import pytest

from minibert.config import BertConfig


def test_presets_match_the_issue():
    for name, (L, H, A, I) in {"tiny": (2, 128, 2, 512), "mini": (4, 256, 4, 1024), "small": (4, 512, 8, 2048)}.items():
        c = BertConfig.preset(name)
        assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (L, H, A, I)
        assert c.max_position_embeddings == 128 and c.head_size == H // A


def test_json_round_trip_uses_hugging_face_names(tmp_path):
    c = BertConfig.preset("mini", vocab_size=8192)
    path = tmp_path / "config.json"
    c.to_json_file(path)
    d = json.loads(path.read_text())
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id", "model_type"):
        assert key in d
    assert BertConfig.from_json_file(path) == c
    # Hugging Face configs carry fields we do not use; they are ignored.
    d["architectures"] = ["BertForMaskedLM"]
    assert BertConfig.from_dict(d) == c


@pytest.mark.parametrize("kwargs, message", [
    (dict(hidden_size=130, num_attention_heads=4), "divisible"),
    (dict(hidden_size=0), "positive"),
    (dict(num_hidden_layers=-1), "positive"),
    (dict(hidden_act="relu"), "unknown hidden_act"),
    (dict(hidden_dropout_prob=1.0), r"\[0, 1\)"),
    (dict(vocab_size=10, pad_token_id=10), "pad_token_id"),
])
def test_invalid_configs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BertConfig(**kwargs)


def test_bad_config_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        BertConfig.from_json_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        BertConfig.from_json_file(bad)
    with pytest.raises(ValueError, match="model_type"):
        BertConfig.from_dict({"model_type": "gpt2"})
    with pytest.raises(ValueError, match="unknown preset"):
        BertConfig.preset("huge")
