"""The shipped models by name: ``tiny`` and ``mini`` wherever a model folder is asked for.

A second shipped model is stood in for by a small model saved in ``tmp_path``: ``paths.data_dir``
is pointed at a copy of the data folder made of links to the real one, with a ``pretrained/``
folder of its own, so nothing is written into the repository.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from minibert import checkpoint, lessons, paths
from minibert.cli import build_parser, main
from minibert.config import BertConfig
from minibert.models import BertForPreTraining
from minibert.tokenization.vocab import load_vocab

REAL_DATA = paths.data_dir()
REAL_TINY = paths.data_dir() / "pretrained" / "tiny"
REAL_MINI = REAL_DATA / "pretrained" / "mini"


def small_model(folder: Path, layers: int = 1) -> Path:
    """A model of the shipped vocabulary with ``layers`` layers of hidden size 64, saved in
    ``folder``: a stand-in that loads fast and differs from tiny in its config."""
    config = BertConfig.preset("tiny", vocab_size=len(load_vocab(REAL_DATA / "vocab.txt")),
                               num_hidden_layers=layers, hidden_size=64, num_attention_heads=2,
                               intermediate_size=128, max_position_embeddings=128)
    model = BertForPreTraining(config, np.random.default_rng(0))
    return model.save_pretrained(folder, vocab=list(load_vocab(REAL_DATA / "vocab.txt")))


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """A data folder whose ``pretrained/`` holds the real tiny and a stand-in mini (1 layer,
    hidden 64); returns that mini's folder. The working directory is an empty folder."""
    data = tmp_path / "data"
    data.mkdir()
    for entry in REAL_DATA.iterdir():
        if entry.name != "pretrained":
            (data / entry.name).symlink_to(entry)
    (data / "pretrained").mkdir()
    (data / "pretrained" / "tiny").symlink_to(REAL_TINY)
    mini = small_model(data / "pretrained" / "mini")
    monkeypatch.setattr(paths, "data_dir", lambda: data)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return mini


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "\n" not in err and err.startswith("minibert "), err
    return err


def test_a_shipped_name_is_its_folder_in_the_data_folder(stand_in):
    assert checkpoint.resolve("tiny") == paths.data_dir() / "pretrained" / "tiny"
    assert checkpoint.resolve("mini") == stand_in
    assert BertForPreTraining.from_pretrained("tiny").config.num_hidden_layers == 2
    mini = BertForPreTraining.from_pretrained("mini")
    assert (mini.config.num_hidden_layers, mini.config.hidden_size) == (1, 64)
    assert checkpoint.load_config("mini").hidden_size == 64
    assert checkpoint.resolve("elsewhere") == Path("elsewhere")   # not a name: left to the loader


def test_a_folder_of_that_name_in_the_working_directory_wins(stand_in):
    small_model(Path("tiny"), layers=3)
    assert checkpoint.resolve("tiny") == Path("tiny")
    assert BertForPreTraining.from_pretrained("tiny").config.num_hidden_layers == 3
    # ... but never over a command's default, which is the shipped folder itself
    from minibert.finetuning.cli import config_from_args
    args = build_parser().parse_args(["finetune", "--task", "entailment"])
    assert config_from_args(args).init == str(paths.data_dir() / "pretrained" / "tiny")
    args = build_parser().parse_args(["finetune", "--task", "entailment", "--from", "tiny"])
    assert config_from_args(args).init == "tiny"
    args = build_parser().parse_args(["stability", "--task", "entailment", "--from", "mini",
                                      "--out", "unused"])
    assert config_from_args(args).init == str(stand_in)


@pytest.mark.parametrize("command", [["evaluate", "huge"], ["probe", "--model", "huge"],
                                     ["finetune", "--task", "entailment", "--from", "huge"],
                                     ["stability", "--task", "entailment", "--from", "huge",
                                      "--out", "stability"]])
def test_an_unknown_name_is_a_one_line_error_naming_the_shipped_models(stand_in, capsys, command):
    assert main(command) == 1
    err = one_error_line(capsys)
    assert "huge" in err and "(tiny, mini)" in err, err
    assert not any(Path.cwd().iterdir())                     # refused before anything was written
    with pytest.raises(FileNotFoundError, match=r"huge; give a model folder or a shipped model's "
                                                r"name \(tiny, mini\)"):
        BertForPreTraining.from_pretrained("huge")


def test_a_shipped_model_that_is_not_installed_says_so(stand_in, capsys):
    import shutil
    shutil.rmtree(stand_in)
    assert main(["evaluate", "mini"]) == 1
    err = one_error_line(capsys)
    assert "the shipped model mini is missing" in err and str(stand_in) in err
    with pytest.raises(ValueError, match="the shipped models are tiny, mini"):
        paths.shipped_model("huge")


def test_evaluate_takes_a_name(stand_in, tmp_path, capsys):
    held = (REAL_DATA / "corpus" / "heldout.txt").read_text(encoding="utf-8").splitlines()[:60]
    text = tmp_path / "heldout.txt"
    text.write_text("\n".join(held) + "\n", encoding="utf-8")
    for name, folder in (("tiny", paths.data_dir() / "pretrained" / "tiny"), ("mini", stand_in)):
        assert main(["evaluate", name, "--text", str(text), "--batch-size", "16"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"{folder}: masked LM loss "), out


def test_finetune_from_a_name(stand_in, capsys):
    assert main(["finetune", "--task", "entailment", "--from", "mini", "--train-limit", "16",
                 "--epochs", "1", "--out", "ft"]) == 0
    assert "entailment: dev accuracy" in capsys.readouterr().out
    results = json.loads(Path("ft", "results.json").read_text(encoding="utf-8"))
    assert results["config"]["init"] == str(stand_in)
    assert checkpoint.load_config("ft").hidden_size == 64


def test_probe_a_model_by_name(stand_in, capsys):
    assert main(["probe", "--model", "tiny", "--only", "facts", "--limit", "5", "--out",
                 "probe"]) == 0
    report = Path("probe", "report.md").read_text(encoding="utf-8")
    assert "Model: the shipped model tiny (2 layers, hidden 128" in report   # by name, not by this machine's path
    assert "facts" in json.loads(Path("probe", "results.json").read_text(encoding="utf-8"))


def test_help_texts_name_the_shipped_models(capsys):
    for command in (["evaluate"], ["probe"], ["finetune"], ["stability"], ["demo"]):
        with pytest.raises(SystemExit):
            main(command + ["--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "tiny" in text and "mini" in text, command


def test_the_lessons_model_comes_from_minibert_model(stand_in, monkeypatch):
    monkeypatch.delenv("MINIBERT_MODEL", raising=False)
    small_model(Path("tiny"), layers=3)              # the default is the shipped tiny, not ./tiny
    assert lessons.pretrained_model() == paths.data_dir() / "pretrained" / "tiny"
    monkeypatch.setenv("MINIBERT_MODEL", "")
    assert lessons.pretrained_model() == paths.data_dir() / "pretrained" / "tiny"
    monkeypatch.setenv("MINIBERT_MODEL", "mini")
    assert lessons.pretrained_model() == stand_in
    monkeypatch.setenv("MINIBERT_MODEL", "tiny")     # named, a folder here wins as everywhere
    assert lessons.pretrained_model() == Path("tiny")
    own = small_model(Path("runs", "mine"))
    monkeypatch.setenv("MINIBERT_MODEL", str(own))
    assert lessons.pretrained_model() == own
    monkeypatch.setenv("MINIBERT_MODEL", "huge")
    with pytest.raises(FileNotFoundError, match=r"MINIBERT_MODEL=huge: no model there .* \(tiny, "
                                                r"mini\) or a model folder"):
        lessons.pretrained_model()


def test_the_shipped_mini_loads_by_name_with_the_shipped_vocabulary(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = BertForPreTraining.from_pretrained("mini")
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == \
        (4, 256, 4, 1024)
    assert load_vocab(REAL_MINI / "vocab.txt") == load_vocab(REAL_DATA / "vocab.txt")
    assert all(p.dtype == np.float32 for _, p in model.named_parameters())
    assert (REAL_MINI / "README.md").is_file()
