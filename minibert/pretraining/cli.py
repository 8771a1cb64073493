"""``minibert pretrain``: train a BERT from scratch on the bundled corpus (or yours) on a laptop CPU.

    text -> (minibert prepare) instances -> BertForPreTraining -> AdamW -> checkpoints, metrics, figures

Prepared instances are cached in ``OUT/data`` and reused while the corpus, vocabulary and data options
stay the same.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from minibert.models import BertForPreTraining
from minibert.paths import data_path
from minibert.pretraining.data import DataConfig, PretrainingDataset, prepare
from minibert.pretraining.trainer import Trainer, TrainConfig, build_model
from minibert.tokenization import BertTokenizer


def add_arguments(parser) -> None:
    parser.add_argument("--preset", choices=("tiny", "mini", "small"), default="tiny")
    parser.add_argument("--corpus", nargs="+", help="BERT-format text files (default: the bundled corpus)")
    parser.add_argument("--heldout", nargs="*", help="held-out text for evaluation (default: the bundled "
                        "held-out documents; with --corpus, 2%% of its documents)")
    parser.add_argument("--vocab", help="vocab.txt (default: the bundled vocabulary)")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--warmup", type=float, default=TrainConfig.warmup_fraction, help="warmup fraction of steps")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--dupe-factor", type=int, default=5)
    parser.add_argument("--eval-every", type=int, default=TrainConfig.eval_every)
    parser.add_argument("--save-every", type=int, default=TrainConfig.save_every)
    parser.add_argument("--no-bias-correction", action="store_true", help="BERT's original Adam (no bias correction)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/pretrain-PRESET)")
    parser.add_argument("--resume", help="a checkpoint folder written by an earlier run to continue from")


def prepare_data(corpus, heldout, vocab_file, out_dir: Path, data_config: DataConfig, seed: int, log=print):
    """Prepare (or reuse) the training and held-out instances under ``out_dir``."""
    tokenizer = BertTokenizer.from_pretrained(vocab_file)
    request = {"corpus": [str(Path(p).resolve()) for p in corpus],
               "heldout": [str(Path(p).resolve()) for p in heldout] if heldout else None,
               "vocab": str(Path(vocab_file).resolve()), "seed": seed, **dataclasses.asdict(data_config)}
    stamp = out_dir / "request.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == request:
        try:
            return PretrainingDataset(out_dir / "train"), _heldout(out_dir, heldout), tokenizer
        except (FileNotFoundError, ValueError) as exc:
            log(f"prepared data in {out_dir} is unusable ({exc}); preparing it again")
    stamp.unlink(missing_ok=True)
    log(f"preparing pretraining instances in {out_dir} ...")
    prepare(corpus, tokenizer, out_dir / "train", data_config, seed=seed,
            heldout_fraction=0.0 if heldout else 0.02, log=log)
    if heldout:
        prepare(heldout, tokenizer, out_dir / "heldout", dataclasses.replace(data_config, dupe_factor=1),
                seed=seed + 1, log=log)
    stamp.write_text(json.dumps(request, indent=1))
    return PretrainingDataset(out_dir / "train"), _heldout(out_dir, heldout), tokenizer


def _heldout(out_dir: Path, heldout):
    if heldout:
        return PretrainingDataset(out_dir / "heldout", split="train")
    return PretrainingDataset(out_dir / "train", split="heldout")


def main(args) -> int:
    default_corpus = args.corpus is None
    corpus = args.corpus or [str(data_path("corpus", "train.txt"))]
    if args.heldout is not None:
        heldout = args.heldout
    else:
        heldout = [str(data_path("corpus", "heldout.txt"))] if default_corpus else None
    vocab_file = args.vocab or str(data_path("vocab.txt"))
    out = Path(args.out or f"runs/pretrain-{args.preset}")
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_fraction=args.warmup,
                         seed=args.seed, eval_every=args.eval_every, save_every=args.save_every,
                         correct_bias=not args.no_bias_correction)
    data_config = DataConfig(max_seq_length=args.max_seq_length, dupe_factor=args.dupe_factor)
    train_data, eval_data, tokenizer = prepare_data(corpus, heldout, vocab_file, out / "data", data_config, args.seed)
    vocab = tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size))

    if args.resume:
        model = BertForPreTraining.from_pretrained(args.resume, np.random.default_rng(args.seed))
    else:
        model = build_model(args.preset, tokenizer.vocab_size, args.seed, args.max_seq_length)
    trainer = Trainer(model, train_data, config, out, eval_data, vocab)
    if args.resume:
        trainer.resume(args.resume)
        print(f"resumed from {args.resume} at step {trainer.step}")
    print(f"pretraining BertForPreTraining ({args.preset}: {model.num_parameters():,} parameters) on "
          f"{len(train_data):,} instances for {config.steps} steps of {config.batch_size}; output in {out}")
    t0 = time.perf_counter()
    result = trainer.train()
    print(f"done in {time.perf_counter() - t0:.0f} s. " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()
                                                                    if isinstance(v, float)))
    print(f"final checkpoint: {trainer.checkpoint_path(trainer.step)}; figure: {out / 'pretraining.png'}")
    return 0

