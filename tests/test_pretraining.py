"""The pretraining loop: the loss falls, resume reproduces the uninterrupted run exactly, a non-finite
loss stops training cleanly, and the bundled vocabulary regenerates byte for byte."""
import json
import signal

import numpy as np
import pytest

from minibert import kernels
from minibert.paths import data_path
from minibert.pretraining import bugs
from minibert.pretraining.data import DataConfig, PretrainingDataset, prepare
from minibert.pretraining.trainer import BATCH_KEYS, NonFiniteLoss, Trainer, TrainConfig, build_model, evaluate
from minibert.tokenization import BertTokenizer
from minibert.tokenization.trainer import train_wordpiece


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """A few hundred instances from the first documents of the bundled corpus."""
    root = tmp_path_factory.mktemp("pretraining")
    lines = data_path("corpus", "train.txt").read_text(encoding="utf-8").splitlines()[:3000]
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(data_path("vocab.txt")))
    prepare([corpus], tokenizer, root / "data", DataConfig(max_seq_length=64, max_predictions_per_seq=10,
                                                            dupe_factor=1), seed=1, heldout_fraction=0.05)
    return root / "data", tokenizer


def make_trainer(data_dir, out, steps=12, **kw):
    train = PretrainingDataset(data_dir)
    config = TrainConfig(steps=steps, batch_size=8, lr=2e-3, warmup_fraction=0.1, seed=3, eval_every=6,
                         eval_batches=2, save_every=6, log_every=100, **kw)
    model = build_model("tiny", train.vocab_size, seed=3, max_seq_length=64)
    return Trainer(model, train, config, out, PretrainingDataset(data_dir, "heldout"), log=lambda *a: None)


def losses(path):
    return [json.loads(line)["loss"] for line in open(path)]


def test_short_run_loss_falls(small_data, tmp_path):
    trainer = make_trainer(small_data[0], tmp_path / "run", steps=40)
    result = trainer.train()
    curve = losses(tmp_path / "run" / "metrics.jsonl")
    assert np.mean(curve[-8:]) < np.mean(curve[:8]) - 0.5
    assert 0 <= result["eval_mlm_accuracy"] <= 1 and 0 <= result["eval_nsp_accuracy"] <= 1
    assert (tmp_path / "run" / "pretraining.png").stat().st_size > 0
    assert (tmp_path / "run" / "latest").read_text().strip() == "checkpoint-000040"


def test_resume_reproduces_the_uninterrupted_run_exactly(small_data, tmp_path):
    full = make_trainer(small_data[0], tmp_path / "full")
    full.train()
    first_half = make_trainer(small_data[0], tmp_path / "half")
    real_step = first_half.train_step

    def interrupted_after_6(batch):          # as if Ctrl-C arrived during step 6
        record = real_step(batch)
        if first_half.step == 6:
            first_half.stop.signum = signal.SIGINT
        return record
    first_half.train_step = interrupted_after_6
    first_half.train()
    assert first_half.step == 6
    resumed = make_trainer(small_data[0], tmp_path / "half")
    resumed.resume(tmp_path / "half" / "checkpoint-000006")   # ... and continue in a fresh process state
    resumed.train()
    assert losses(tmp_path / "half" / "metrics.jsonl") == losses(tmp_path / "full" / "metrics.jsonl")
    for (name, a), (_, b) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(small_data, tmp_path):
    trainer = make_trainer(small_data[0], tmp_path / "run")
    real_step = trainer.train_step

    def poisoned(batch):
        if trainer.step == 8:
            trainer.model.bert.encoder.layer[0].output.dense.weight.data[0, 0] = np.nan
        return real_step(batch)
    trainer.train_step = poisoned
    with pytest.raises(NonFiniteLoss, match="checkpoint-000006"):
        trainer.train()
    assert (tmp_path / "run" / "checkpoint-000006" / "model.safetensors").is_file()


@pytest.mark.parametrize("cores", [1, 3])
def test_evaluate_is_the_float64_formula_over_every_prediction(small_data, monkeypatch, cores):
    """Held-out metrics from the scored rows alone, with the batches shared by the cores, are the
    float64 log-softmax over the whole (B, P, V) with the padding predictions weighed 0, one batch
    after the other (the loss to float64 rounding: the kernel sums its exponentials in another order
    than NumPy; the rest exactly); the batches hold padding predictions."""
    monkeypatch.setattr(kernels, "cores", lambda: cores)
    heldout = PretrainingDataset(small_data[0], "heldout")
    model = build_model("tiny", heldout.vocab_size, seed=3, max_seq_length=64)
    result = evaluate(model, heldout, 8, max_batches=3)
    nll = correct = count = nsp = 0.0
    order = heldout.order(None)
    model.eval()
    for i in range(3):
        batch = heldout.batch(order[i * 8:(i + 1) * 8], trim_padding=True)
        out = model.forward(**{k: batch[k] for k in BATCH_KEYS})
        w = batch["masked_lm_weights"].astype(np.float64)
        assert (w == 0).any()
        logits = out.prediction_logits.astype(np.float64)                       # (B, P, V)
        shifted = logits - logits.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        ids = batch["masked_lm_ids"]
        nll += float((-np.take_along_axis(log_probs, ids[..., None].astype(np.int64), -1)[..., 0] * w).sum())
        correct += float(((logits.argmax(-1) == ids) * w).sum())
        count += float(w.sum())
        nsp += float((out.seq_relationship_logits.argmax(-1) == batch["next_sentence_labels"]).sum())
    assert result == {"eval_mlm_loss": pytest.approx(nll / count, rel=1e-13, abs=0),
                      "eval_mlm_accuracy": correct / count, "eval_nsp_accuracy": nsp / 24,
                      "eval_predictions": int(count)}


def test_evaluate_with_dropout_left_on_gives_every_run_the_one_thread_numbers(small_data, monkeypatch):
    """Dropout drawing in eval mode (lesson 16's planted bug) makes the numbers depend on the order of
    the draws: on two threads the evaluation is repeated on one, from the same random state."""
    heldout = PretrainingDataset(small_data[0], "heldout")
    model = build_model("tiny", heldout.vocab_size, seed=3, max_seq_length=64)
    start = model.rng.bit_generator.state
    runs = {}
    with bugs.planted("dropout_at_eval", model):
        for cores in (1, 2, 2):
            monkeypatch.setattr(kernels, "cores", lambda cores=cores: cores)
            model.rng.bit_generator.state = start
            runs.setdefault(cores, []).append((evaluate(model, heldout, 8, max_batches=4), model.rng.bit_generator.state))
    assert runs[2] == runs[1] * 2
    assert runs[1][0][0] != evaluate(model, heldout, 8, max_batches=4)     # dropout did change the numbers


def test_trainer_rejects_mismatched_model(small_data, tmp_path):
    train = PretrainingDataset(small_data[0])
    with pytest.raises(ValueError, match="vocabulary of 4096"):
        Trainer(build_model("tiny", 100, 0, 64), train, TrainConfig(), tmp_path)
    with pytest.raises(ValueError, match="warmup_fraction"):
        TrainConfig(warmup_fraction=1.5)


def test_bundled_vocabulary_regenerates():
    tokens = train_wordpiece([data_path("corpus", "train.txt")], 4096)
    assert "\n".join(tokens) + "\n" == data_path("vocab.txt").read_text(encoding="utf-8")
