"""The pretraining loop: MLM + NSP with AdamW, warmup + linear decay, clipping, evaluation, logging,
figures, and checkpoints that resume exactly.

One step:
    zero_grad -> forward (loss) -> backward -> clip the global gradient norm -> AdamW step at lr(step)

Exact resume: a training checkpoint stores the float32 weights, the optimiser's moments and step, the
state of the model's random generator (dropout), and the data position (epoch, batch index). The batch
order of an epoch is a pure function of (seed, epoch), so the resumed run draws the same batches and the
same dropout masks, and its losses equal the uninterrupted run's.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np

from minibert import checkpoint
from minibert.config import BertConfig
from minibert.models import BertForPreTraining
from minibert.optim import AdamW, clip_grad_norm, linear_warmup_decay, triples_from_model
from minibert.pretraining.data import PretrainingDataset

BATCH_KEYS = ("input_ids", "token_type_ids", "attention_mask", "masked_lm_positions", "masked_lm_ids",
              "masked_lm_weights", "next_sentence_labels")


@dataclasses.dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_fraction: float = 0.1         # of all steps, then linear decay to 0
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    correct_bias: bool = True            # False = BERT's original AdamWeightDecay
    seed: int = 0
    eval_every: int = 200
    eval_batches: int = 16
    save_every: int = 500
    log_every: int = 10
    keep_checkpoints: int = 2

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "eval_batches", "save_every", "log_every",
                     "keep_checkpoints"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")

    @property
    def warmup_steps(self) -> int:
        return int(self.warmup_fraction * self.steps)


class NonFiniteLoss(RuntimeError):
    pass


def batch_tokens(batch) -> int:
    return int(batch["attention_mask"].sum())


def evaluate(model: BertForPreTraining, dataset: PretrainingDataset, batch_size: int, max_batches: int | None = None):
    """Held-out MLM loss and accuracy (over real predictions) and NSP accuracy, in eval mode (no dropout).
    The held-out batches are taken in stored order, so every evaluation sees the same instances."""
    was_training = model.training
    model.eval()
    order = dataset.order(None)
    n_batches = dataset.num_batches(batch_size)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    mlm_nll = mlm_correct = mlm_count = nsp_correct = nsp_count = 0.0
    for i in range(n_batches):
        batch = dataset.batch(order[i * batch_size:(i + 1) * batch_size], trim_padding=True)
        out = model.forward(**{k: batch[k] for k in BATCH_KEYS})
        w = batch["masked_lm_weights"].astype(np.float64)
        logits = out.prediction_logits.astype(np.float64)                                    # (B, P, V)
        shifted = logits - logits.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        nll = -np.take_along_axis(log_probs, batch["masked_lm_ids"][..., None].astype(np.int64), -1)[..., 0]
        mlm_nll += float((nll * w).sum())
        mlm_correct += float(((logits.argmax(-1) == batch["masked_lm_ids"]) * w).sum())
        mlm_count += float(w.sum())
        nsp_correct += float((out.seq_relationship_logits.argmax(-1) == batch["next_sentence_labels"]).sum())
        nsp_count += len(batch["next_sentence_labels"])
    model.train(was_training)
    return {"eval_mlm_loss": mlm_nll / max(mlm_count, 1), "eval_mlm_accuracy": mlm_correct / max(mlm_count, 1),
            "eval_nsp_accuracy": nsp_correct / max(nsp_count, 1), "eval_predictions": int(mlm_count)}


class Trainer:
    """Pretrains ``model`` on ``train_data``; writes metrics, figures and checkpoints to ``out``."""

    def __init__(self, model: BertForPreTraining, train_data: PretrainingDataset, config: TrainConfig, out,
                 eval_data: PretrainingDataset | None = None, vocab: list[str] | None = None, log=print):
        if train_data.vocab_size != model.config.vocab_size:
            raise ValueError(f"the data was prepared with a vocabulary of {train_data.vocab_size} tokens, the model "
                             f"has vocab_size {model.config.vocab_size}")
        if train_data.max_seq_length > model.config.max_position_embeddings:
            raise ValueError(f"the data has sequences of {train_data.max_seq_length} tokens, the model at most "
                             f"{model.config.max_position_embeddings}")
        if len(train_data) < config.batch_size:
            raise ValueError(f"the training data holds {len(train_data)} instances, fewer than one batch of "
                             f"{config.batch_size}")
        self.model, self.train_data, self.eval_data, self.config = model, train_data, eval_data, config
        self.out = Path(out)
        self.vocab, self.log = vocab, log
        self.optimizer = AdamW(triples_from_model(model), lr=config.lr, weight_decay=config.weight_decay,
                               correct_bias=config.correct_bias)
        self.step = 0                   # optimiser steps taken
        self.epoch, self.batch_index = 0, 0
        self._order = None
        self._stop_requested = False

    # ---- data position ---------------------------------------------------------------------
    def next_batch(self):
        n = self.train_data.num_batches(self.config.batch_size, drop_last=True)
        if self.batch_index >= n:
            self.epoch, self.batch_index, self._order = self.epoch + 1, 0, None
        if self._order is None:
            self._order = self.train_data.order(self.config.seed, self.epoch)
        b = self.config.batch_size
        idx = self._order[self.batch_index * b:(self.batch_index + 1) * b]
        self.batch_index += 1
        return self.train_data.batch(idx, trim_padding=True)

    # ---- one step --------------------------------------------------------------------------
    def train_step(self, batch) -> dict:
        model, cfg = self.model, self.config
        lr = linear_warmup_decay(self.step, cfg.lr, cfg.warmup_steps, cfg.steps)
        model.zero_grad()
        out = model.forward(**{k: batch[k] for k in BATCH_KEYS})
        loss = float(out.loss)
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"the loss became {loss} at step {self.step + 1}")
        model.backward()
        grad_norm = clip_grad_norm([g for _, g in model.named_grads()], cfg.max_grad_norm)
        if not math.isfinite(grad_norm):
            raise NonFiniteLoss(f"the gradient norm became {grad_norm} at step {self.step + 1}")
        self.optimizer.step(lr)
        self.step += 1
        return {"step": self.step, "loss": loss, "mlm_loss": float(out.mlm_loss), "nsp_loss": float(out.nsp_loss),
                "lr": lr, "grad_norm": grad_norm}

    # ---- checkpoints -----------------------------------------------------------------------
    def checkpoint_path(self, step: int) -> Path:
        return self.out / f"checkpoint-{step:06d}"

    def save(self) -> Path:
        path = self.checkpoint_path(self.step)
        state = {
            "step": self.step, "epoch": self.epoch, "batch_index": self.batch_index,
            "rng_state": self.model.rng.bit_generator.state,
            "train_config": dataclasses.asdict(self.config),
            "data": {"directory": str(self.train_data.directory), "vocab_sha256": self.train_data.meta["vocab_sha256"]},
        }
        opt = self.optimizer.state_dict()
        state["optimizer_step"] = opt.pop("step")
        checkpoint.save_model(self.model, path, self.vocab,
                              extra=lambda tmp: checkpoint.save_training_state(tmp, opt, state))
        (self.out / "latest").write_text(path.name + "\n")
        for old in sorted(self.out.glob("checkpoint-*"))[:-self.config.keep_checkpoints]:
            if old != path:
                shutil.rmtree(old, ignore_errors=True)
        return path

    def resume(self, path) -> None:
        """Load weights, optimiser, random state and data position from a training checkpoint."""
        path = Path(path)
        tensors, state = checkpoint.load_training_state(path)
        if state["data"]["vocab_sha256"] != self.train_data.meta["vocab_sha256"]:
            raise ValueError(f"{path} was trained on data with a different vocabulary than {self.train_data.directory}")
        self.model.load_state_dict(checkpoint.load_weights(path))
        self.optimizer.load_state_dict({**tensors, "step": state["optimizer_step"]})
        self.model.rng.bit_generator.state = state["rng_state"]
        self.step, self.epoch, self.batch_index = state["step"], state["epoch"], state["batch_index"]
        self._order = None

    # ---- the loop --------------------------------------------------------------------------
    def train(self) -> dict:
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        metrics_path = self.out / "metrics.jsonl"
        self.model.train()
        previous_handler = signal.signal(signal.SIGINT, self._request_stop)
        last_eval = {}
        t_start, tokens_seen, steps_timed = time.perf_counter(), 0, 0
        try:
            with open(metrics_path, "a") as metrics:
                while self.step < cfg.steps and not self._stop_requested:
                    batch = self.next_batch()
                    try:
                        record = self.train_step(batch)
                    except NonFiniteLoss as exc:
                        latest = (self.out / "latest").read_text().strip() if (self.out / "latest").exists() else None
                        raise NonFiniteLoss(f"{exc}; training stopped. The last good checkpoint is "
                                            f"{self.out / latest if latest else '(none saved yet)'}; lower --lr "
                                            f"or raise warmup and resume from it.") from None
                    tokens_seen += batch_tokens(batch)
                    steps_timed += 1
                    elapsed = time.perf_counter() - t_start
                    record["tokens_per_s"] = tokens_seen / elapsed
                    record["time"] = elapsed
                    if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                        if self.eval_data is not None:
                            last_eval = evaluate(self.model, self.eval_data, cfg.batch_size, cfg.eval_batches)
                            record.update(last_eval)
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                    self._progress(record, elapsed / steps_timed, last_eval)
                    if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                        self.save()
                if self._stop_requested and self.step < cfg.steps:
                    path = self.save()
                    self.log(f"\ninterrupted at step {self.step}: saved {path}; resume with --resume {path}")
        finally:
            signal.signal(signal.SIGINT, previous_handler)
            sys.stdout.write("\n")
        from minibert import plots
        plots.plot_pretraining(metrics_path, self.out / "pretraining.png")
        return last_eval

    def _request_stop(self, signum, frame):
        if self._stop_requested:          # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self._stop_requested = True

    def _progress(self, record, seconds_per_step, last_eval):
        cfg = self.config
        done = self.step / cfg.steps
        bar = "#" * int(24 * done) + "-" * (24 - int(24 * done))
        eta = seconds_per_step * (cfg.steps - self.step)
        line = (f"\r[{bar}] {self.step}/{cfg.steps} loss {record['loss']:.3f} (mlm {record['mlm_loss']:.3f} "
                f"nsp {record['nsp_loss']:.3f}) lr {record['lr']:.2e} {record['tokens_per_s']:,.0f} tok/s "
                f"ETA {eta // 60:.0f}m{eta % 60:02.0f}s")
        if last_eval:
            line += f" | eval mlm acc {last_eval['eval_mlm_accuracy']:.3f} nsp acc {last_eval['eval_nsp_accuracy']:.3f}"
        if sys.stdout.isatty():
            sys.stdout.write(line + "\033[K")
            sys.stdout.flush()
        elif self.step % cfg.log_every == 0 or self.step == cfg.steps or "eval_mlm_loss" in record:
            self.log(line.strip("\r"))


def build_model(preset: str, vocab_size: int, seed: int, max_seq_length: int) -> BertForPreTraining:
    config = BertConfig.preset(preset, vocab_size=vocab_size,
                               max_position_embeddings=max(128, max_seq_length))
    return BertForPreTraining(config, np.random.default_rng(seed))
