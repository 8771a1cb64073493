"""Faults and bad inputs, one test (at least) per class of issue 11: no command loses a
user's work, none reports a success it did not have, and every error a user can meet is one line
saying what to do.

Every refused or failing command is checked to leave the files that were there byte for byte
(``snapshot`` before and after). Runs are a few steps of the tiny model on a few hundred instances.
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minibert import checkpoint, kernels, outputs, safetensors
from minibert.cli import main
from minibert.config import BertConfig
from minibert.models import BertForPreTraining, BertModel
from minibert.paths import data_path
from minibert.pretraining.data import DataConfig, PretrainingDataset, prepare
from minibert.pretraining.trainer import Diverged, Trainer, TrainConfig, build_model
from minibert.tokenization import BertTokenizer

CONFIG = BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=12, max_position_embeddings=10)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"tok{i}" for i in range(35)]


@pytest.fixture(autouse=True)
def numpy_kernels():
    with kernels.using("numpy"):     # no Numba compilation in these short runs
        yield


def snapshot(folder) -> dict[str, str]:
    """relative path -> sha256 of every file under ``folder`` (the marker's time stamp included)."""
    folder = str(folder)
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def user_folder(path):
    """A folder of a user's own files."""
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("my notes\n")
    (path / "config.json").write_text('{"mine": true}\n')
    return path


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.startswith("minibert "), err
    return err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    lines = data_path("corpus", "train.txt").read_text(encoding="utf-8").splitlines()[:1500]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "corpus.txt"


def pretrain_args(corpus, out, steps, *extra):
    return ["pretrain", "--corpus", str(corpus), "--max-seq-length", "64", "--dupe-factor", "1",
            "--batch-size", "8", "--save-every", "2", "--steps", str(steps), "--out", str(out),
            *extra]


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    """A finished 4-step pretraining run (checkpoints at steps 2 and 4); tests change copies."""
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(pretrain_args(corpus, out, 4)) == 0
    return out


def copy_run(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


# ------------------------------------------------------------------------------------------------
# Data lost
# ------------------------------------------------------------------------------------------------
def test_finetune_refuses_a_folder_of_user_files_before_training(tmp_path, capsys, monkeypatch):
    out = user_folder(tmp_path / "mine")
    before = snapshot(out)

    def no_training(*a, **k):
        raise AssertionError("training started before --out was checked")
    monkeypatch.setattr("minibert.finetuning.trainer.finetune", no_training)
    assert main(["finetune", "--task", "entailment", "--out", str(out)]) == 1
    err = one_error_line(capsys)
    assert str(out) in err and "--overwrite" in err
    assert snapshot(out) == before


def test_an_out_that_is_a_file_is_refused_not_renamed(tmp_path, capsys, corpus):
    target = tmp_path / "results.txt"
    target.write_text("precious\n")
    for argv in (["finetune", "--task", "entailment", "--out", str(target)],
                 pretrain_args(corpus, target, 2),
                 ["probe", "--model", "random", "--out", str(target)],
                 ["corpus", "--out", str(target)]):
        assert main(argv) == 1
        assert "is a file" in one_error_line(capsys)
    assert target.read_text() == "precious\n" and sorted(os.listdir(tmp_path)) == ["results.txt"]


@pytest.mark.parametrize("argv", [
    ["finetune", "--task", "entailment"],
    ["stability", "--task", "entailment", "--seeds", "1"],
    ["probe", "--model", "random"],
    ["corpus"],
    ["demo"],
    ["prepare", str(data_path("corpus", "heldout.txt")), "--vocab", str(data_path("vocab.txt"))],
])
def test_every_command_refuses_a_folder_it_did_not_make(tmp_path, capsys, argv):
    out = user_folder(tmp_path / "mine")
    before = snapshot(out)
    assert main([*argv, "--out", str(out)]) == 1
    err = one_error_line(capsys)
    assert str(out) in err and "--overwrite" in err
    assert snapshot(out) == before


def test_out_dot_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(user_folder(tmp_path / "home"))
    before = snapshot(".")
    assert main(["probe", "--model", "random", "--out", "."]) == 1
    assert "--overwrite" in one_error_line(capsys)
    assert snapshot(".") == before


def test_save_pretrained_refuses_a_user_folder_and_overwrite_keeps_the_users_files(tmp_path):
    model = BertModel(CONFIG, np.random.default_rng(0))
    out = user_folder(tmp_path / "mine")
    before = snapshot(out)
    with pytest.raises(outputs.OutputRefused, match="overwrite=True"):
        model.save_pretrained(out)
    assert snapshot(out) == before
    model.save_pretrained(out, vocab=VOCAB, overwrite=True)
    assert (out / "notes.txt").read_text() == "my notes\n"
    np.testing.assert_array_equal(BertModel.from_pretrained(out).pooler.dense.weight.data,
                                  model.pooler.dense.weight.data)
    # Saving again without a vocabulary drops the vocab.txt we wrote (it would not match), not
    # the notes.
    model.save_pretrained(out)
    assert not (out / "vocab.txt").exists() and (out / "notes.txt").is_file()


def test_a_checkpoint_is_not_replaced_by_a_model_of_another_kind(run, tmp_path, capsys,
                                                                  monkeypatch):
    out = copy_run(run, tmp_path)
    before = snapshot(out)
    with pytest.raises(outputs.OutputRefused, match="a checkpoint of `minibert pretrain`"):
        model = BertForPreTraining(CONFIG, np.random.default_rng(0))
        model.save_pretrained(out / "checkpoint-000004")

    def no_training(*a, **k):
        raise AssertionError("training started before --out was checked")
    monkeypatch.setattr("minibert.finetuning.trainer.finetune", no_training)
    assert main(["finetune", "--task", "entailment", "--out", str(out / "checkpoint-000004")]) == 1
    assert "a checkpoint of `minibert pretrain`" in one_error_line(capsys)
    assert snapshot(out) == before


def test_folders_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        BertModel(CONFIG, np.random.default_rng(0)).save_pretrained(tmp_path / "m")
        outputs.write_file(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "m" / "config.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644


def test_a_second_pretrain_into_the_same_out_is_refused_and_resume_continues(run, tmp_path, capsys,
                                                                             corpus):
    out = copy_run(run, tmp_path)
    before = snapshot(out)
    assert main(pretrain_args(corpus, out, 4)) == 1
    err = one_error_line(capsys)
    assert "already holds a pretraining run" in err and "--resume" in err and "--overwrite" in err
    assert snapshot(out) == before
    # --resume with the run folder continues from its latest checkpoint; one metrics line per step.
    assert main(pretrain_args(corpus, out, 6, "--resume", str(out))) == 0
    steps = [json.loads(line)["step"] for line in open(out / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_from_a_checkpoint_older_than_the_latest_is_refused(run, tmp_path, capsys, corpus):
    out = copy_run(run, tmp_path)
    before = snapshot(out)
    assert main(pretrain_args(corpus, out, 6, "--resume", str(out / "checkpoint-000002"))) == 1
    assert "later checkpoint (checkpoint-000004)" in one_error_line(capsys)
    assert snapshot(out) == before


def test_resume_drops_the_metrics_of_steps_after_the_checkpoint(run, tmp_path, corpus):
    """A run killed (SIGKILL) after step 5 was logged but before a checkpoint: resuming from step 4
    must not log step 5 twice, and a line cut off by the kill is not a record."""
    out = copy_run(run, tmp_path)
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "loss": 1.0}) + "\n" + '{"step": 6, "lo')
    assert main(pretrain_args(corpus, out, 6, "--resume", str(out))) == 0
    assert [json.loads(line)["step"] for line in open(out / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]


def signal_at_step(monkeypatch, signum, step):
    real = Trainer.train_step

    def train_step(self, batch):
        record = real(self, batch)
        if self.step == step:
            os.kill(os.getpid(), signum)
        return record
    monkeypatch.setattr(Trainer, "train_step", train_step)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_says_interrupted_and_exits_128_plus_its_number(tmp_path, capsys, corpus,
                                                                      monkeypatch, signum, code):
    out = tmp_path / "run"
    signal_at_step(monkeypatch, signum, 3)
    assert main(pretrain_args(corpus, out, 10, "--save-every", "100")) == code
    printed = capsys.readouterr()
    assert f"interrupted by {signal.Signals(signum).name} at step 3" in printed.err + printed.out
    assert "done in" not in printed.out
    assert (out / "latest").read_text().strip() == "checkpoint-000003"
    monkeypatch.undo()
    assert main(pretrain_args(corpus, out, 4, "--resume", str(out))) == 0


def test_sigterm_to_a_real_process_saves_and_exits_143(tmp_path, corpus):
    out = tmp_path / "run"
    env = {**os.environ, "MINIBERT_KERNELS": "numpy"}
    command = [sys.executable, "-m", "minibert.cli", *pretrain_args(corpus, out, 2000)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "metrics.jsonl").is_file()
                                          and (out / "metrics.jsonl").stat().st_size > 0):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "interrupted by SIGTERM" in stdout + stderr and "done in" not in stdout
    assert checkpoint.is_complete(out / (out / "latest").read_text().strip())


def test_sigterm_during_finetune_says_interrupted_and_exits_143(tmp_path, capsys, monkeypatch):
    def killed(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM was ignored")
    monkeypatch.setattr("minibert.finetuning.trainer.finetune", killed)
    assert main(["finetune", "--task", "entailment", "--out", str(tmp_path / "ft")]) == 143
    assert "interrupted by SIGTERM" in one_error_line(capsys)


def test_recovery_restores_a_complete_checkpoint_and_the_next_save_cleans_up(tmp_path):
    path = tmp_path / "ckpt"
    first = BertModel(CONFIG, np.random.default_rng(1))
    first.save_pretrained(path)
    # A crash between the two renames of a save: the complete previous version is at .ckpt.old-B; an
    # earlier crash left a half-deleted .ckpt.old-A, modified later (deleting touches the folder).
    os.rename(path, tmp_path / ".ckpt.old-B")
    half = tmp_path / ".ckpt.old-A"
    half.mkdir()
    (half / "config.json").write_text((tmp_path / ".ckpt.old-B" / "config.json").read_text())
    os.utime(tmp_path / ".ckpt.old-B", (1, 1))
    (tmp_path / ".ckpt.tmp-C").mkdir()                         # a save that died while writing
    loaded = BertModel.from_pretrained(path)
    np.testing.assert_array_equal(loaded.pooler.dense.weight.data, first.pooler.dense.weight.data)
    BertModel(CONFIG, np.random.default_rng(2)).save_pretrained(path)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


# ------------------------------------------------------------------------------------------------
# Silently wrong
# ------------------------------------------------------------------------------------------------
def test_stability_refuses_runs_made_with_other_settings(tmp_path, capsys):
    common = ["stability", "--task", "entailment", "--seeds", "1", "--strategies", "dropout",
              "--workers", "1", "--train-limit", "8", "--epochs", "0.5",
              "--out", str(tmp_path / "st")]
    assert main(common) == 0
    before = snapshot(tmp_path / "st")
    capsys.readouterr()
    for change in (["--lr", "2e-3"], ["--train-limit", "16"], ["--epochs", "1"]):
        assert main(common + change) == 1
        assert "other settings" in one_error_line(capsys)
        assert snapshot(tmp_path / "st") == before
    # Runs of an older minibert, settings not recorded: refused, the folder left as it was.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "runs.jsonl").write_text((tmp_path / "st" / "runs.jsonl").read_text())
    before = snapshot(legacy)
    assert main(common[:-1] + [str(legacy)]) == 1
    assert "settings were not recorded" in one_error_line(capsys)
    assert snapshot(legacy) == before


def saved_model(tmp_path):
    model = BertForPreTraining(CONFIG, np.random.default_rng(0))
    model.save_pretrained(tmp_path / "m", vocab=VOCAB)
    return tmp_path / "m"


def test_a_vocabulary_that_is_not_the_models_is_refused(tmp_path, capsys):
    folder = saved_model(tmp_path)
    lines = VOCAB[:]
    (folder / "vocab.txt").write_text("\n".join(lines[:-3]) + "\n")            # fewer lines
    with pytest.raises(ValueError, match="has 37 tokens but the model's config.json says "
                                         "vocab_size 40"):
        BertForPreTraining.from_pretrained(folder)
    lines[5], lines[6] = lines[6], lines[5]                      # the same size, two swapped
    (folder / "vocab.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="not the vocabulary the model was saved with"):
        BertForPreTraining.from_pretrained(folder)
    before = snapshot(folder)
    assert main(["evaluate", str(folder)]) == 1
    assert "vocab.txt" in one_error_line(capsys)
    assert main(["finetune", "--task", "entailment", "--from", str(folder)]) == 1
    assert "vocab.txt" in one_error_line(capsys)
    assert snapshot(folder) == before


def test_weights_that_are_not_finite_are_refused_with_the_tensors_name(tmp_path, capsys):
    folder = saved_model(tmp_path)
    tensors, meta = safetensors.load_file(folder / "model.safetensors")
    tensors["bert.pooler.dense.weight"][0, 0] = np.nan
    safetensors.save_file(tensors, folder / "model.safetensors", meta)
    with pytest.raises(ValueError, match="'bert.pooler.dense.weight' holds 1 NaN"):
        BertForPreTraining.from_pretrained(folder)
    assert main(["evaluate", str(folder)]) == 1
    assert "bert.pooler.dense.weight" in one_error_line(capsys)


@pytest.fixture(scope="module")
def small_data(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    prepare([corpus], BertTokenizer(str(data_path("vocab.txt"))), root,
            DataConfig(max_seq_length=64, max_predictions_per_seq=10, dupe_factor=1), seed=1,
            heldout_fraction=0.05)
    return root


def test_divergence_stops_early_and_names_the_last_good_checkpoint(small_data, tmp_path):
    """The rule: not finite, above twice uniform guessing, or above 4x the running mean. Step 7's
    loss is 2.5x the mean (suspect: checkpoint 8 is not "good"), step 9's 4.4x: training stops,
    naming checkpoint 6, which rotation (keep 1) kept although two later checkpoints were saved."""
    train = PretrainingDataset(small_data)
    config = TrainConfig(steps=30, batch_size=8, seed=3, eval_every=100, save_every=2,
                         keep_checkpoints=1, divergence_window=4)
    trainer = Trainer(build_model("tiny", train.vocab_size, 3, 64), train, config, tmp_path / "run",
                      log=lambda *a: None)
    real = trainer.check_loss
    fake = {**{step: 2.0 for step in range(1, 9)}, 7: 5.0, 9: 12.0}   # 2.5x and 4.4x the mean of 4

    def check(loss):
        return real(fake.get(trainer.step + 1, loss))
    trainer.check_loss = check
    with pytest.raises(Diverged) as info:
        trainer.train()
    message = str(info.value)
    good = tmp_path / "run" / "checkpoint-000006"
    assert "at step 9" in message and f"the last good checkpoint is {good};" in message
    assert checkpoint.is_complete(tmp_path / "run" / "checkpoint-000006")
    assert trainer.loss_ceiling == pytest.approx(2 * (np.log(train.vocab_size) + np.log(2)))
    with pytest.raises(Diverged, match="above twice the loss of uniform guessing"):
        real(trainer.loss_ceiling + 1)
    with pytest.raises(Diverged, match="became nan"):
        real(float("nan"))


def test_a_diverging_pretrain_is_one_line_and_exit_1(tmp_path, capsys, corpus):
    assert main(pretrain_args(corpus, tmp_path / "run", 20, "--lr", "1000")) == 1
    err = one_error_line(capsys)
    assert "training stopped" in err and "--lr" in err


def test_resume_with_too_few_steps_a_preset_or_another_vocabulary_is_a_clear_error(run, tmp_path,
                                                                                  capsys, corpus):
    out = copy_run(run, tmp_path)
    before = snapshot(out)
    assert main(pretrain_args(corpus, out, 4, "--resume", str(out))) == 1
    assert "is at step 4" in one_error_line(capsys)
    assert main(pretrain_args(corpus, out, 8, "--resume", str(out), "--preset", "mini")) == 1
    assert "--preset does not apply with --resume" in one_error_line(capsys)
    tokens = data_path("vocab.txt").read_text(encoding="utf-8").splitlines()
    tokens[10], tokens[11] = tokens[11], tokens[10]
    (tmp_path / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    assert main(pretrain_args(corpus, out, 8, "--resume", str(out), "--vocab",
                              str(tmp_path / "vocab.txt"))) == 1
    assert "another vocabulary" in one_error_line(capsys)
    assert snapshot(out) == before


# ------------------------------------------------------------------------------------------------
# Raw tracebacks
# ------------------------------------------------------------------------------------------------
def test_a_full_disk_is_one_line_and_the_saved_checkpoints_stay(run, tmp_path, capsys, corpus,
                                                                 monkeypatch):
    out = copy_run(run, tmp_path)
    before = snapshot(out)

    def full(*a, **k):
        raise OSError(28, "No space left on "
                          "device", str(out / "checkpoint-000006" / "model.safetensors"))
    monkeypatch.setattr(safetensors, "save_file", full)
    assert main(pretrain_args(corpus, out, 6, "--resume", str(out))) == 1
    assert "no space left" in one_error_line(capsys)
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k.startswith("checkpoint-")} == \
           {k: v for k, v in before.items() if k.startswith("checkpoint-")}


def test_a_damaged_training_state_is_one_line(run, tmp_path, capsys, corpus):
    out = copy_run(run, tmp_path)
    state_file = out / "checkpoint-000004" / "training_state.json"
    state = json.loads(state_file.read_text())
    del state["data"]
    state_file.write_text(json.dumps(state))
    assert main(pretrain_args(corpus, out, 6, "--resume", str(out / "checkpoint-000004"))) == 1
    err = one_error_line(capsys)
    assert "training_state.json has no valid 'data'" in err
    # Given the run folder, resume skips the damaged latest checkpoint (its sizes differ from the
    # marker's) for the newest complete one, and says so.
    assert main(pretrain_args(corpus, out, 6, "--resume", str(out))) == 0
    assert "checkpoint-000004 is incomplete or damaged" in capsys.readouterr().out


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(capsys, monkeypatch):
    def bug(args):
        raise AttributeError("'BertModel' object has no attribute 'cache'")
    monkeypatch.setattr("minibert.pretraining.evaluate.main", bug)
    assert main(["evaluate", "x"]) == 1
    assert "run again with --debug" in one_error_line(capsys)
    with pytest.raises(AttributeError):
        main(["evaluate", "x", "--debug"])
    monkeypatch.setenv("MINIBERT_DEBUG", "1")
    with pytest.raises(AttributeError):
        main(["evaluate", "x"])


def test_a_fine_tuning_run_that_diverges_is_one_line_not_called_a_bug(capsys, monkeypatch):
    def diverges(*a, **k):
        raise FloatingPointError("[entailment] loss became nan at step 3")
    monkeypatch.setattr("minibert.finetuning.trainer.finetune", diverges)
    assert main(["finetune", "--task", "entailment"]) == 1
    err = one_error_line(capsys)
    assert "loss became nan" in err and "bug" not in err


def test_cli_errors_suggest_the_commands_way_not_python_arguments(tmp_path, capsys):
    BertModel(CONFIG, np.random.default_rng(0)).save_pretrained(tmp_path / "encoder", vocab=VOCAB)
    assert main(["evaluate", str(tmp_path / "encoder")]) == 1
    err = capsys.readouterr().err
    assert "allow_missing_heads" not in err and "strict=False" not in err and "Traceback" not in err
    assert "minibert finetune --from" in err
    with pytest.raises(ValueError, match="allow_missing_heads=True"):    # Python's way in Python
        BertForPreTraining.from_pretrained(tmp_path / "encoder")
