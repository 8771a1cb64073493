"""The fine-tuning loop, with every technique of this package as an option.

One step (as BERT's ``run_classifier.py``, with Hugging Face's defaults):
    zero_grad -> step function (forward + backward; plain, FreeLB or SMART) -> clip the global gradient
    norm to 1 -> AdamW at lr(step): linear warmup over the first 10% of steps, then linear decay to 0

The options, and what they change:
    dropout P              hidden, attention and classifier dropout (BERT: 0.1)
    mixout P               Mixout on every Linear weight, towards the pretrained weights; dropout off
    layers                 what the classifier reads: pooler ("last"), a scalar mix, or the last four [CLS]
    freelb K,alpha,eps     K adversarial ascent steps on the word embeddings per update
    smart LAMBDA           the SMART smoothness regulariser (+ its Bregman proximal term); its ascent step
                           and bound are eta = eps = ``smart_eps`` (1e-2, a sixth of the word embeddings'
                           std): the paper's eps = 1e-5 gives R_s ~ 1e-7 on this model, no regularisation
    intermediate TASK      two-stage: fine-tune on TASK first, then a fresh head on the target task
    correct_bias False     BERT's original Adam without bias correction (Mosbach et al. 2021)
    reinit_layers K        re-initialise the pooler and the top K layers before training (Zhang et al. 2021)
    epochs                 training longer is the third stability finding

Randomness: one seed gives every stream its own Generator (``seed_streams``): the classifier's
initialisation and every dropout/Mixout mask, the order of the training examples, and the adversarial
initialisations. A run is a pure function of its seed, so a stability experiment's restarts differ
only by the seed, as in the papers.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import numpy as np

from minibert.checkpoint import load_config
from minibert.finetuning import data as task_data
from minibert.finetuning import metrics
from minibert.finetuning.adversarial import BregmanTeacher, freelb_step, smart_step
from minibert.finetuning.mixout import apply_mixout
from minibert.models import BertForSequenceClassification
from minibert.nn import LayerNorm, Linear
from minibert.optim import AdamW, clip_grad_norm, linear_warmup_decay, triples_from_model
from minibert.tokenization import BertTokenizer
from minibert.validation import positive_int


@dataclasses.dataclass
class FinetuneConfig:
    task: str
    init: str | None                       # a model folder (pretraining or fine-tuning checkpoint)
    random_init: bool = False              # same architecture as ``init``, fresh weights (the baseline)
    seed: int = 0
    epochs: float = 3.0
    batch_size: int = 16
    lr: float = 1e-3                       # best mean dev score of {1e-4, 3e-4, 1e-3, 2e-3} for the tiny model
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_length: int = 128
    train_limit: int | None = None         # use only the first N training examples
    dropout: float | None = None           # None: the checkpoint's (0.1)
    mixout: float = 0.0
    layers: str = "last"
    layer_dropout: float = 0.0
    freelb: tuple[int, float, float] | None = None    # (K, alpha, eps)
    freelb_init_mag: float = 0.0
    smart: float = 0.0                     # lambda_s; 0 = off
    smart_mu: float = 1.0                  # weight of the Bregman proximal term (when smart > 0)
    smart_eps: float = 1e-2                # the inf-norm bound of SMART's perturbation
    intermediate: str | None = None
    intermediate_epochs: float = 1.0
    correct_bias: bool = True
    reinit_layers: int = 0
    eval_batch_size: int = 128

    def __post_init__(self):
        if self.init is None and not self.random_init:
            raise ValueError("fine-tuning needs a model folder (--from DIR); with --random-init it only "
                             "gives the architecture")
        for name in ("batch_size", "max_length", "eval_batch_size"):
            positive_int(name, getattr(self, name))
        if not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise ValueError(f"epochs must be positive, got {self.epochs!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0 <= self.mixout < 1:
            raise ValueError(f"mixout must be in [0, 1), got {self.mixout!r}")
        if self.mixout > 0 and self.dropout:
            raise ValueError("Mixout replaces dropout: give --mixout P or --dropout P, not both")
        if self.train_limit is not None and self.train_limit < 1:
            raise ValueError(f"train_limit must be positive, got {self.train_limit!r}")
        if self.freelb is not None:
            k, alpha, eps = self.freelb
            if int(k) != k or k < 1 or alpha < 0 or eps < 0:
                raise ValueError(f"freelb needs K >= 1, alpha >= 0, eps >= 0; got {self.freelb!r}")
        if self.smart < 0 or self.smart_mu < 0 or self.smart_eps <= 0:
            raise ValueError("smart lambda and mu must be >= 0, smart eps > 0")
        if self.freelb is not None and self.smart > 0:
            raise ValueError("choose one adversarial technique: --freelb or --smart")
        if self.reinit_layers < 0:
            raise ValueError(f"reinit_layers must be >= 0, got {self.reinit_layers!r}")
        if self.intermediate is not None and self.intermediate == self.task:
            raise ValueError("the intermediate task must differ from the target task")


@dataclasses.dataclass
class StageResult:
    task: str
    metric: str                     # the task's main metric, a key of dev and test
    dev: dict                       # final dev metrics
    test: dict
    history: list                   # one record per evaluation
    majority: float                 # the dev majority-class baseline
    failed: bool                    # dev score at or below the majority baseline
    seconds: float
    steps: int


@dataclasses.dataclass
class FinetuneResult:
    config: FinetuneConfig
    stages: list[StageResult]
    model: BertForSequenceClassification
    tokenizer: BertTokenizer

    @property
    def final(self) -> StageResult:
        return self.stages[-1]


def seed_streams(seed: int, stage: int = 0) -> dict[str, np.random.Generator]:
    """Independent generators per purpose, each a pure function of (seed, stage)."""
    return {name: np.random.default_rng([seed, stage, i]) for i, name in enumerate(("model", "data", "adversarial"))}


def reinit_top_layers(model: BertForSequenceClassification, k: int, rng: np.random.Generator) -> list[str]:
    """Re-initialise the pooler and the top ``k`` encoder layers as BERT initialises them: Linear weights
    N(0, initializer_range^2), biases 0, LayerNorm gamma 1 and beta 0. Returns the re-initialised names."""
    layers = model.bert.encoder.layer
    if k > len(layers):
        raise ValueError(f"cannot re-initialise {k} layers of a {len(layers)}-layer model")
    std = model.config.initializer_range
    names = []
    targets = [(f"bert.encoder.layer.{i}", layers[i]) for i in range(len(layers) - k, len(layers))]
    for prefix, module in targets + [("bert.pooler", model.bert.pooler)]:
        for m in module.modules():
            if isinstance(m, Linear):
                m.weight.data[...] = rng.standard_normal(m.weight.data.shape) * std
                m.bias.data[...] = 0
            elif isinstance(m, LayerNorm):
                m.weight.data[...] = 1
                m.bias.data[...] = 0
        names.append(prefix)
    return names


def evaluate(model, encoded, info, batch_size: int = 128) -> dict:
    """Metrics of the model (in eval mode: no dropout, no Mixout) on an encoded split."""
    was_training = model.training
    model.eval()
    logits = []
    for batch in task_data.batches(encoded, batch_size):
        logits.append(model.forward(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]).logits)
    model.train(was_training)
    return metrics.compute(info, np.concatenate(logits), encoded.labels)


def plain_step(model, batch) -> dict:
    out = model.forward(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], batch["labels"])
    model.backward()
    return {"loss": float(out.loss)}


class Finetuner:
    """Fine-tunes one model on one task with the options of a ``FinetuneConfig``."""

    def __init__(self, config: FinetuneConfig, log: Callable[[str], None] = print):
        self.config = config
        self.log = log
        self.tokenizer = BertTokenizer.from_pretrained(config.init)
        self._encoded = {}

    def encoded(self, task: str, split: str):
        key = (task, split)
        if key not in self._encoded:
            limit = self.config.train_limit if (split == "train" and task == self.config.task) else None
            info = task_data.task_info(task)
            examples = task_data.load_examples(task, split, limit=limit)
            self._encoded[key] = task_data.encode(examples, self.tokenizer, info, self.config.max_length)
        return self._encoded[key]

    # ---- the model --------------------------------------------------------------------------
    def build_model(self, info, streams, encoder_state=None) -> BertForSequenceClassification:
        c = self.config
        overrides = dict(num_labels=info.num_labels, classifier_layers=c.layers, layer_dropout=c.layer_dropout)
        if c.dropout is not None:
            overrides.update(hidden_dropout_prob=c.dropout, attention_probs_dropout_prob=c.dropout)
        rng = streams["model"]
        if c.random_init:
            config = dataclasses.replace(load_config(c.init), **overrides)
            model = BertForSequenceClassification(config, rng)
        else:
            model = BertForSequenceClassification.from_pretrained(c.init, rng, allow_missing_heads=True, **overrides)
        if encoder_state is not None:        # two-stage: the encoder fine-tuned on the intermediate task
            for name, array in model.bert.named_parameters():
                array[...] = encoder_state[name]
        if c.reinit_layers:
            reinit_top_layers(model, c.reinit_layers, rng)
        if c.mixout > 0:
            apply_mixout(model, c.mixout, rng)    # targets: the weights as they are now (pretrained; head's init)
        return model.train()

    def step_function(self, streams):
        c = self.config
        if c.freelb is not None:
            k, alpha, eps = c.freelb
            return lambda model, batch: freelb_step(model, batch, steps=int(k), alpha=alpha, eps=eps,
                                                    init_mag=c.freelb_init_mag, rng=streams["adversarial"])
        if c.smart > 0:
            return lambda model, batch: smart_step(model, batch, lambda_s=c.smart, mu=c.smart_mu, eta=c.smart_eps,
                                                   eps=c.smart_eps, teacher=self.teacher, rng=streams["adversarial"])
        return plain_step

    # ---- one stage --------------------------------------------------------------------------
    def run_stage(self, task: str, epochs: float, stage: int, encoder_state=None):
        c = self.config
        t0 = time.perf_counter()
        info = task_data.task_info(task)
        train, dev = self.encoded(task, "train"), self.encoded(task, "dev")
        streams = seed_streams(c.seed, stage)
        model = self.build_model(info, streams, encoder_state)
        self.teacher = None
        if c.smart > 0 and c.smart_mu > 0:
            self.teacher = BregmanTeacher(model)
        step_fn = self.step_function(streams)
        optimizer = AdamW(triples_from_model(model), lr=c.lr, weight_decay=c.weight_decay,
                          correct_bias=c.correct_bias)
        grads = [g for _, g in model.named_grads()]
        n = len(train.labels)
        steps_per_epoch = math.ceil(n / c.batch_size)
        total = max(1, round(epochs * steps_per_epoch))
        warmup = int(c.warmup_fraction * total)
        majority = task_data.majority_score(info, "dev")
        self.log(f"[{task}] {n} training examples, {total} steps of {c.batch_size}, seed {c.seed}; "
                 f"dev majority baseline {majority:.3f}")

        history, step, losses = [], 0, []
        eval_points = sorted({min(total, round((e + 1) * steps_per_epoch)) for e in range(math.ceil(epochs))})
        while step < total:
            for batch in task_data.batches(train, c.batch_size, streams["data"]):
                model.zero_grad()
                record = step_fn(model, batch)
                if not math.isfinite(record["loss"]):
                    raise FloatingPointError(f"[{task}] the loss became {record['loss']} at step "
                                             f"{step + 1}; nothing was saved: run again with a "
                                             f"lower --lr (now {c.lr:g})")
                clip_grad_norm(grads, c.max_grad_norm)
                optimizer.step(linear_warmup_decay(step, c.lr, warmup, total))
                if self.teacher is not None:
                    self.teacher.update(model)
                losses.append(record["loss"])
                step += 1
                if step in eval_points:
                    scores = evaluate(model, dev, info, c.eval_batch_size)
                    history.append({"step": step, "epoch": step / steps_per_epoch,
                                    "train_loss": float(np.mean(losses)), **{f"dev_{k}": v for k, v in scores.items()}})
                    losses = []
                    self.log(f"[{task}] step {step}/{total}  epoch {step / steps_per_epoch:.2f}  "
                             f"train loss {history[-1]['train_loss']:.4f}  dev "
                             + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
                if step >= total:
                    break
        dev_scores = {k[4:]: v for k, v in history[-1].items() if k.startswith("dev_")}
        test_scores = evaluate(model, self.encoded(task, "test"), info, c.eval_batch_size)
        main = dev_scores[info.metric]
        result = StageResult(task, info.metric, dev_scores, test_scores, history, majority, bool(main <= majority),
                             time.perf_counter() - t0, total)
        return model, result

    def run(self) -> FinetuneResult:
        c = self.config
        stages, encoder_state = [], None
        if c.intermediate is not None:
            model, result = self.run_stage(c.intermediate, c.intermediate_epochs, stage=1)
            stages.append(result)
            encoder_state = {name: array.copy() for name, array in model.bert.named_parameters()}
        model, result = self.run_stage(c.task, c.epochs, stage=0, encoder_state=encoder_state)
        stages.append(result)
        return FinetuneResult(c, stages, model, self.tokenizer)


def finetune(config: FinetuneConfig, log: Callable[[str], None] = print) -> FinetuneResult:
    return Finetuner(config, log).run()
