"""The pretraining loop: MLM + NSP with AdamW, warmup + linear decay, clipping, evaluation, logging,
figures, and checkpoints that resume exactly.

One step:
    zero_grad -> forward (loss) -> backward -> clip the global gradient norm -> AdamW step at lr(step)

Exact resume: a training checkpoint stores the float32 weights, the optimiser's moments and step, the
state of the model's random generator (dropout), and the data position (epoch, batch index). The batch
order of an epoch is a pure function of (seed, epoch), so the resumed run draws the same batches and the
same dropout masks, and its losses equal the uninterrupted run's.

Stopping without losing work: Ctrl-C (SIGINT) or SIGTERM (a scheduler, ``docker stop``) ends the
current step, saves a checkpoint and returns with ``interrupted`` set; a second signal stops at
once.

Divergence (``DIVERGENCE_RULE``): training stops, naming the last good checkpoint, when the loss is
not finite, exceeds twice the loss of uniform guessing (2 (ln V + ln 2): a model worse than chance
twice over has diverged), or exceeds ``divergence_factor`` (4) times its mean over the previous
``divergence_window`` (20) steps. A checkpoint counts as good when no loss since the previous save
went above half that factor over the running mean; rotation never deletes the last good one.

Data parallelism (``mpiexec -n N minibert pretrain``, ``minibert.distributed``): every rank draws
the same global batch and runs its share of the rows; the gradients, normalised by the global
batch's counts, are summed by one Allreduce, and every rank takes the same AdamW step. Each rank has
its own dropout stream, a pure function of (seed, rank, N). Rank 0 alone evaluates and writes
metrics, checkpoints and figures; a checkpoint keeps every rank's stream, so it resumes exactly with
the same N and refuses another N. ``workers=N`` (``minibert pretrain --workers N``) is the same N-rank
step in one process, its ranks threads (``distributed.Workers``): the same results and checkpoints as
``mpiexec -n N``, and faster than one rank on every core.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from minibert import checkpoint, distributed, kernels, outputs
from minibert.config import BertConfig
from minibert.models import BertForPreTraining
from minibert.optim import AdamW, clip_grad_norm, linear_warmup_decay, triples_from_model
from minibert.pretraining.data import PretrainingDataset
from minibert.validation import positive_int

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
    eval_every: int | None = None        # None: a tenth of the steps, so every run draws a curve
    eval_batches: int | None = None      # None: the whole held-out set, as `minibert evaluate`
    save_every: int = 500
    log_every: int = 10
    keep_checkpoints: int = 2
    divergence_factor: float = 4.0
    divergence_window: int = 20

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "eval_batches", "save_every", "log_every",
                     "keep_checkpoints", "divergence_window"):
            value = getattr(self, name)
            if value is None and name in ("eval_every", "eval_batches"):
                continue
            positive_int(name, value)
        if not self.divergence_factor > 1:
            raise ValueError(f"divergence_factor must be above 1, got {self.divergence_factor!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")

    @property
    def warmup_steps(self) -> int:
        return int(self.warmup_fraction * self.steps)

    @property
    def eval_interval(self) -> int:
        return self.eval_every if self.eval_every is not None else max(1, self.steps // 10)


DIVERGENCE_RULE = ("the loss is not finite, or above 2 (ln V + ln 2) (twice uniform guessing), or "
                   "above divergence_factor times its mean over the last divergence_window steps")


class Diverged(RuntimeError):
    """Training stopped because the loss blew up (``DIVERGENCE_RULE``); the message names the last
    good checkpoint."""


NonFiniteLoss = Diverged      # the name it had when only NaN and infinity stopped training


def batch_tokens(batch) -> int:
    return int(batch["attention_mask"].sum())


def evaluate(model: BertForPreTraining, dataset: PretrainingDataset, batch_size: int, max_batches: int | None = None):
    """Held-out MLM loss and accuracy (over real predictions) and NSP accuracy, in eval mode (no dropout).
    The held-out batches are taken in stored order, so every evaluation sees the same instances.

    The cores share the batches: thread r evaluates batches r, r + n, ... on a replica of the model (the
    same weights), with every kernel and matmul on its own core, and the sums are taken in batch order,
    so the result has the bits of one thread. On 2 cores, 36 corpus batches of 32 took 0.71 s at tiny
    and 3.12 s at mini on one thread (with BLAS on both cores), 0.45 and 2.29 s this way."""
    was_training = model.training
    model.eval()
    order = dataset.order(None)
    n_batches = dataset.num_batches(batch_size)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    n = max(1, min(kernels.cores(), n_batches))
    models = [model] + [model.replica().eval() for _ in range(n - 1)]

    def metrics(m, batches):
        return [_batch_metrics(m, dataset.batch(order[i * batch_size:(i + 1) * batch_size], trim_padding=True))
                for i in batches]
    state = model.rng.bit_generator.state
    try:
        parts = kernels.on_threads(lambda r: metrics(models[r], range(r, n_batches, n)), range(n))
        if n > 1 and model.rng.bit_generator.state != state:
            # Something drew random numbers in eval mode (lesson 16's planted dropout_at_eval): the
            # threads' draws interleave in no fixed order, so evaluate again from the same state on one
            # thread, in batch order, which gives every run of a seed the same numbers.
            model.rng.bit_generator.state = state
            parts, n = [metrics(model, range(n_batches))], 1
    finally:
        model.train(was_training)
    mlm_nll = mlm_correct = mlm_count = nsp_correct = nsp_count = 0.0
    for i in range(n_batches):                                  # batch i came from thread i % n
        nll, correct, count, nsp, pairs = parts[i % n][i // n]
        mlm_nll += nll
        mlm_correct += correct
        mlm_count += count
        nsp_correct += nsp
        nsp_count += pairs
    return {"eval_mlm_loss": mlm_nll / max(mlm_count, 1), "eval_mlm_accuracy": mlm_correct / max(mlm_count, 1),
            "eval_nsp_accuracy": nsp_correct / max(nsp_count, 1), "eval_predictions": int(mlm_count)}


def _batch_metrics(model: BertForPreTraining, batch) -> tuple[float, float, float, float, int]:
    """One held-out batch's sums: (MLM negative log-likelihood, correct predictions, predictions,
    correct NSP labels, sequences), the MLM ones weighed by masked_lm_weights."""
    out = model.forward(**{k: batch[k] for k in BATCH_KEYS})          # (which checks the labels)
    # In float64, at the real predictions only (the model's scored rows: on the bundled corpus 4 in
    # 10 of the B P rows); the sums run over (B, P) arrays with 0 at the padding predictions.
    w = batch["masked_lm_weights"].astype(np.float64)                                  # (B, P)
    targets = batch["masked_lm_ids"].reshape(-1)[out.scored]                           # (R,)
    shift, log_total = kernels.log_softmax_normaliser(out.scored_logits)               # (R,), (R,)
    target_logits = out.scored_logits[np.arange(len(targets)), targets].astype(np.float64)
    nll = np.zeros(w.shape)                                                            # (B, P)
    nll.reshape(-1)[out.scored] = -((target_logits - shift) - log_total)
    correct = np.zeros(w.shape)
    correct.reshape(-1)[out.scored] = out.scored_logits.argmax(-1) == targets
    nsp = (out.seq_relationship_logits.argmax(-1) == batch["next_sentence_labels"]).sum()
    return (float((nll * w).sum()), float((correct * w).sum()), float(w.sum()), float(nsp),
            len(batch["next_sentence_labels"]))


def world_size(batch_size: int, ranks: int, workers: int) -> int:
    """The number of ranks sharing each batch: ``ranks`` MPI processes, or ``workers`` threads of one
    process; ValueError if both are asked for or the batch cannot be shared by them."""
    if workers != 1 and ranks > 1:
        raise ValueError(f"--workers {workers} is for one process; under mpiexec every rank is one "
                         "worker: leave --workers out, or run without mpiexec")
    size = ranks if ranks > 1 else workers
    if size > 1 and batch_size < size:
        sharers = f"{size} ranks" if ranks > 1 else f"{size} workers"
        raise ValueError(f"--batch-size {batch_size} cannot be shared by {sharers}; give at "
                         f"least {size} (it is the global batch)")
    return size


class Trainer:
    """Pretrains ``model`` on ``train_data``; writes metrics, figures and checkpoints to ``out``."""

    def __init__(self, model: BertForPreTraining, train_data: PretrainingDataset, config: TrainConfig, out,
                 eval_data: PretrainingDataset | None = None, vocab: list[str] | None = None,
                 log=print, comm=None, workers: int = 1):
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
        self.stop = outputs.StopRequests()
        self.interrupted: str | None = None     # the signal's name when a signal ended the run
        self._recent = collections.deque(maxlen=config.divergence_window)   # the last losses
        self._suspect = False            # a loss since the last save went above the warning level
        self._saved: list[Path] = []            # checkpoints this run wrote (only these rotate)
        self.last_good: Path | None = None
        # Twice the loss of uniform guessing: MLM over V tokens plus NSP over 2 classes.
        self.loss_ceiling = 2 * (math.log(model.config.vocab_size) + math.log(2))
        # One process unless started by an MPI launcher (``distributed.world()``).
        self.comm = comm if comm is not None else distributed.SingleProcess()
        self._totals: distributed.BatchTotals | None = None    # the global batch's counts (N > 1)
        self._stop_agreed = False               # any rank's signal, agreed on in the Allreduce
        # Ranks: the MPI processes, or the workers of this one (``distributed.Workers``).
        self.world_size = world_size(config.batch_size, self.comm.size, workers)
        self.workers: distributed.Workers | None = None
        if self.comm.size > 1:
            own = distributed.rank_generator(config.seed, self.comm)
            model.rng.bit_generator.state = own.bit_generator.state
            distributed.broadcast_model(model, self.comm)
        elif workers != 1:
            self.workers = distributed.Workers(model, workers, config.seed)

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
        if self.comm.size > 1:      # every rank knows the global batch: count it, take its rows
            arrays = self.train_data.arrays
            mask = arrays["attention_mask"][idx]
            self._totals = distributed.BatchTotals.of(arrays["masked_lm_weights"][idx], attention_mask=mask)
            idx = distributed.shard(idx, mask.sum(axis=1), self.comm.rank, self.comm.size)
        return self.train_data.batch(idx, trim_padding=True)

    # ---- one step --------------------------------------------------------------------------
    def train_step(self, batch) -> dict:
        model, cfg = self.model, self.config
        lr = linear_warmup_decay(self.step, cfg.lr, cfg.warmup_steps, cfg.steps)
        grad_norm = None            # clip_grad_norm computes it, unless the workers summed it
        if self.workers is not None:
            losses = self.workers.forward_backward(batch)       # the workers split the batch
            grad_norm = losses.pop("grad_norm")
            self.check_loss(losses["loss"])
        elif self.comm.size == 1:
            model.zero_grad()
            out = model.forward(**{k: batch[k] for k in BATCH_KEYS})
            losses = {"loss": float(out.loss), "mlm_loss": float(out.mlm_loss),
                      "nsp_loss": float(out.nsp_loss)}
            self.check_loss(losses["loss"])
            model.backward()
        else:           # the global batch's gradient and losses on every rank, after one Allreduce
            losses = distributed.forward_backward(model, batch, self._totals, self.comm,
                                                  stop=self.stop.signum is not None)
            self._stop_agreed = losses.pop("stop")
            self.check_loss(losses["loss"])
        grad_norm = clip_grad_norm([g for _, g in model.named_grads()], cfg.max_grad_norm, norm=grad_norm)
        if not math.isfinite(grad_norm):
            raise Diverged(f"the gradient norm became {grad_norm} at step {self.step + 1}")
        self.optimizer.step(lr)
        self.step += 1
        return {"step": self.step, **losses, "lr": lr, "grad_norm": grad_norm}

    def check_loss(self, loss: float) -> None:
        """Raise Diverged if ``loss`` (of step ``self.step + 1``) breaks ``DIVERGENCE_RULE``; else
        remember it."""
        cfg, step = self.config, self.step + 1
        level = None                     # the running mean, once the window is full
        if len(self._recent) == self._recent.maxlen:
            level = sum(self._recent) / len(self._recent)
        if not math.isfinite(loss):
            raise Diverged(f"the loss became {loss} at step {step}")
        if loss > self.loss_ceiling:
            raise Diverged(f"the loss blew up to {loss:.4g} at step {step}, above twice the loss "
                           f"of uniform guessing ({self.loss_ceiling:.2f})")
        if level is not None and loss > cfg.divergence_factor * level:
            raise Diverged(f"the loss blew up to {loss:.4g} at step {step}, above "
                           f"{cfg.divergence_factor:g} times its mean over the previous "
                           f"{len(self._recent)} steps ({level:.4g})")
        if level is not None and loss > cfg.divergence_factor / 2 * level:
            self._suspect = True
        self._recent.append(loss)

    # ---- checkpoints -----------------------------------------------------------------------
    def checkpoint_path(self, step: int) -> Path:
        return self.out / f"checkpoint-{step:06d}"

    def save(self) -> Path:
        path = self.checkpoint_path(self.step)
        # A collective: every rank's dropout stream is kept, and all ranks save at the same steps.
        rng_states = (self.workers.rng_states() if self.workers is not None
                      else self.comm.gather(self.model.rng.bit_generator.state))
        state = {
            "step": self.step, "epoch": self.epoch, "batch_index": self.batch_index,
            "rng_state": self.model.rng.bit_generator.state, "world_size": self.world_size,
            "train_config": dataclasses.asdict(self.config),
            "data": {"directory": str(self.train_data.directory), "vocab_sha256": self.train_data.meta["vocab_sha256"]},
        }
        if self.world_size > 1:
            state["rank_rng_states"] = rng_states
        opt = self.optimizer.state_dict()
        state["optimizer_step"] = opt.pop("step")

        def write():        # rank 0 alone writes; an error there is raised on every rank
            checkpoint.save_model(self.model, path, self.vocab, kind="checkpoint", overwrite=True,
                                  extra=lambda tmp: checkpoint.save_training_state(tmp, opt, state))
            outputs.write_file(self.out / "latest", path.name + "\n")
        distributed.on_root(self.comm, write)
        if path not in self._saved:
            self._saved.append(path)
        if not self._suspect:
            self.last_good = path
        self._suspect = False
        # Only checkpoints of this run rotate, and never the last good one.
        for old in self._saved[:-self.config.keep_checkpoints]:
            if old != self.last_good:
                if self.comm.is_root:
                    shutil.rmtree(old, ignore_errors=True)
                self._saved.remove(old)
        return path

    def resume(self, path) -> None:
        """Load weights, optimiser, random state and data position from a training checkpoint."""
        path = checkpoint.resolve(path)
        tensors, state = checkpoint.load_training_state(path)
        if state["data"]["vocab_sha256"] != self.train_data.meta["vocab_sha256"]:
            raise ValueError(f"{path} was trained on data with a different vocabulary than {self.train_data.directory}")
        if state["step"] >= self.config.steps:
            raise ValueError(f"{path} is at step {state['step']} and --steps {self.config.steps} "
                             "is the total number of steps, so nothing is left to do; give "
                             f"--steps above {state['step']}")
        self.model.load_state_dict(checkpoint.load_weights(path))
        self.optimizer.load_state_dict({**tensors, "step": state["optimizer_step"]})
        ranks = state.get("world_size", 1)
        if ranks != self.world_size:
            how = (f"--workers {ranks} (or mpiexec -n {ranks})" if ranks > 1
                   else "one process, without --workers or mpiexec")
            raise ValueError(f"{path} was written by a run on {ranks} rank(s) and this run has "
                             f"{self.world_size}: each rank's share of a batch and its dropout "
                             f"stream depend on the number of ranks, so it would not continue the "
                             f"same run. Resume it with {how}")
        if self.workers is not None:
            self.workers.set_rng_states(state["rank_rng_states"])
        else:
            self.model.rng.bit_generator.state = (state["rng_state"] if ranks == 1
                                                  else state["rank_rng_states"][self.comm.rank])
        self.step, self.epoch, self.batch_index = state["step"], state["epoch"], state["batch_index"]
        self._order = None
        self.last_good = path
        if self.comm.is_root:
            self._drop_metrics_after(self.step)

    def _drop_metrics_after(self, step: int) -> None:
        """Keep the records of ``metrics.jsonl`` up to ``step``: the steps after the checkpoint (run
        before a crash) are about to be run again, and a line cut off by the crash is not a
        record."""
        path = self.out / "metrics.jsonl"
        if not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) \
                    and record["step"] <= step:
                kept.append(line + "\n")
        outputs.write_file(path, "".join(kept))

    # ---- the loop --------------------------------------------------------------------------
    def train(self) -> dict:
        """Train to ``config.steps``; returns the last held-out evaluation. A signal ends the run
        early with a saved checkpoint and ``self.interrupted`` set; a blow-up raises
        ``Diverged``."""
        cfg = self.config
        if self.comm.is_root:
            self.out.mkdir(parents=True, exist_ok=True)
        metrics_path = self.out / "metrics.jsonl"
        if self.step == 0 and self.comm.is_root:    # a new run in a folder of an earlier one (the
            self._drop_metrics_after(0)               # demo's): its own curve
        self.model.train()
        last_eval = {}
        t_start, tokens_seen, steps_timed = time.perf_counter(), 0, 0
        try:
            metrics_file = metrics_path if self.comm.is_root else os.devnull   # rank 0 writes
            with self.stop, open(metrics_file, "a", encoding="utf-8") as metrics:
                while self.step < cfg.steps and not self._stopping():
                    batch = self.next_batch()
                    try:
                        record = self.train_step(batch)
                    except Diverged as exc:
                        raise Diverged(self._divergence_message(exc)) from None
                    tokens_seen += (batch_tokens(batch) if self.comm.size == 1
                                    else self._totals.tokens)
                    steps_timed += 1
                    elapsed = time.perf_counter() - t_start
                    record["tokens_per_s"] = tokens_seen / elapsed
                    record["time"] = elapsed
                    if self.step % cfg.eval_interval == 0 or self.step == cfg.steps:
                        if self.eval_data is not None and self.comm.is_root:
                            last_eval = evaluate(self.model, self.eval_data, cfg.batch_size, cfg.eval_batches)
                            last_eval["eval_step"] = self.step
                            record.update(last_eval)
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                    if self.comm.is_root:
                        self._progress(record, elapsed / steps_timed, last_eval)
                    if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                        self.save()
                if self._stopping():
                    # A rank that saw no signal itself stops with the others, as if by Ctrl-C.
                    self.interrupted = self.stop.name or "SIGINT"
                    path = self.checkpoint_path(self.step)
                    if self.step not in self._saved_steps():
                        path = self.save()
                    if self.comm.is_root:
                        self.log(f"\ninterrupted by {self.interrupted} at step {self.step}: saved "
                                 f"{path}; continue with --resume {path}")
        finally:
            if self.comm.is_root:
                sys.stdout.write("\n")
        from minibert import plots
        if self.comm.is_root:
            outputs.write_file(self.out / "pretraining.png",
                               lambda tmp: plots.plot_pretraining(metrics_path, tmp))
        return last_eval

    def _stopping(self) -> bool:
        """A signal asked to stop: this process's, or with several ranks any rank's (agreed on in
        the step's Allreduce, so that all ranks leave the loop after the same step)."""
        return self.stop.signum is not None if self.comm.size == 1 else self._stop_agreed

    def _saved_steps(self) -> set[int]:
        return {int(p.name.split("-")[1]) for p in self._saved}

    def _divergence_message(self, exc: Exception) -> str:
        if self.last_good is not None:
            where = (f"the last good checkpoint is {self.last_good}; resume from it with a lower "
                     f"--lr or a longer --warmup (--resume {self.last_good} --lr ...)")
        else:
            where = ("no good checkpoint of this run was saved; start again with a lower --lr or a "
                     "longer --warmup")
        return f"{exc}; training stopped ({DIVERGENCE_RULE}): {where}"

    def _progress(self, record, seconds_per_step, last_eval):
        cfg = self.config
        done = self.step / cfg.steps
        bar = "#" * int(24 * done) + "-" * (24 - int(24 * done))
        eta = seconds_per_step * (cfg.steps - self.step)
        line = (f"\r[{bar}] {self.step}/{cfg.steps} loss {record['loss']:.3f} (mlm {record['mlm_loss']:.3f} "
                f"nsp {record['nsp_loss']:.3f}) lr {record['lr']:.2e} {record['tokens_per_s']:,.0f} tok/s "
                f"ETA {eta // 60:.0f}m{eta % 60:02.0f}s")
        if last_eval:     # the step says how old the numbers are between evaluations
            line += (f" | eval@{last_eval['eval_step']} mlm acc "
                     f"{last_eval['eval_mlm_accuracy']:.3f} nsp acc "
                     f"{last_eval['eval_nsp_accuracy']:.3f}")
        if sys.stdout.isatty():
            sys.stdout.write(line + "\033[K")
            sys.stdout.flush()
        elif self.step % cfg.log_every == 0 or self.step == cfg.steps or "eval_mlm_loss" in record:
            self.log(line.strip("\r"))


def build_model(preset: str, vocab_size: int, seed: int, max_seq_length: int) -> BertForPreTraining:
    config = BertConfig.preset(preset, vocab_size=vocab_size,
                               max_position_embeddings=max(128, max_seq_length))
    return BertForPreTraining(config, np.random.default_rng(seed))
