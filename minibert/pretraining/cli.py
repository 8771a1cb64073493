"""``minibert pretrain``: train a BERT from scratch on the bundled corpus (or yours) on a laptop CPU.

    text -> (minibert prepare) instances -> BertForPreTraining -> AdamW -> checkpoints, metrics, figures

Prepared instances are cached in ``OUT/data`` and reused while the corpus, vocabulary and data options
stay the same. The held-out instances are made exactly as ``minibert evaluate`` makes them (seed
``EVAL_SEED``, one masking, 128 tokens), and every evaluation reads all of them, so the numbers this
command prints at the end are the ones ``minibert evaluate`` prints for the final checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from minibert import checkpoint, distributed, outputs
from minibert.config import PRESETS
from minibert.models import BertForPreTraining
from minibert.paths import data_path
from minibert.pretraining import bugs
from minibert.pretraining.data import DataConfig, PretrainingDataset, prepare
from minibert.pretraining.evaluate import EVAL_SEED, eval_data_config
from minibert.pretraining.trainer import Trainer, TrainConfig, build_model, world_size
from minibert.tokenization import BertTokenizer
from minibert.tokenization.vocab import vocab_sha256
from minibert.validation import positive_int

KIND = "pretrain"
# The training options a checkpoint remembers: on --resume, one not given on the command line keeps
# the checkpoint's value instead of this command's default.
RESUMABLE = {"batch_size": "batch_size", "lr": "lr", "warmup": "warmup_fraction", "seed": "seed",
             "eval_every": "eval_every", "save_every": "save_every",
             "no_bias_correction": "correct_bias"}


def add_arguments(parser) -> None:
    d = TrainConfig()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    presets = "\n".join(f"  {name:<6} {p['num_hidden_layers']} layers, hidden {p['hidden_size']}, "
                         f"{p['num_attention_heads']} heads, feed-forward {p['intermediate_size']}"
                         for name, p in PRESETS.items())
    parser.epilog = f"""\
presets (--preset, default tiny; the vocabulary sets V):
{presets}

The output folder holds checkpoint-NNNNNN/ (a run keeps its last {d.keep_checkpoints} and its last
good one; those of the run it resumed stay), a `latest` file naming the newest, metrics.jsonl (one
line per step), pretraining.png and data/ (the prepared instances, reused by later runs with the
same options). A folder that already holds a run is refused: continue it with --resume, or
replace it with --overwrite.

Ctrl-C or SIGTERM saves a checkpoint and exits with 130 / 143; continue with
    minibert pretrain --resume OUT --steps N
(OUT or any checkpoint in it; the options a checkpoint remembers are kept unless given again).
Training stops, naming the last good checkpoint, when the loss is not finite, exceeds twice the
loss of uniform guessing, or exceeds {d.divergence_factor:g} times its mean over the previous
{d.divergence_window} steps.

On N processes or machines (the mpi extra: pip install "minibert[mpi]"), data-parallel:
    mpiexec -n N minibert pretrain ...
--batch-size is the global batch, shared by the ranks; one Allreduce of the gradients per step;
rank 0 writes the output folder; a run resumes with the same N. See minibert/distributed.py and
lesson 17. On one machine of N cores, --workers N is the same run in one process, without MPI,
and faster than one process that spreads each operation over every core:
    minibert pretrain --workers 2 ...
(its checkpoints resume with --workers N or mpiexec -n N, either way the same run)."""
    parser.add_argument("--preset", choices=tuple(PRESETS), default=None,
                        help="model size (default tiny); see below. Not with --resume: the "
                             "checkpoint has its size")
    parser.add_argument("--corpus", nargs="+", help="BERT-format text files (default: the bundled corpus)")
    parser.add_argument("--heldout", nargs="*", help="held-out text for evaluation (default: the bundled "
                        "held-out documents; with --corpus, 2%% of its documents)")
    parser.add_argument("--vocab", help="vocab.txt (default: the bundled vocabulary)")
    parser.add_argument("--steps", type=int, default=d.steps,
                        help="total optimiser steps, counting those before a --resume (default "
                             f"{d.steps})")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"sequences per step (default {d.batch_size})")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"peak learning rate (default {d.lr:g})")
    parser.add_argument("--warmup", type=float, default=None,
                        help="fraction of the steps with a rising learning rate, then linear "
                             f"decay to 0 (default {d.warmup_fraction:g})")
    parser.add_argument("--seed", type=int, default=None,
                        help="one seed for initialisation, data order, masking and dropout "
                             f"(default {d.seed})")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="share each batch among N threads, one per core, each with its own "
                             "share and dropout stream, like `mpiexec -n N` in one process (default "
                             "1; with --resume, the checkpoint's number)")
    parser.add_argument("--max-seq-length", type=int, default=128,
                        help="tokens per training instance (default 128)")
    parser.add_argument("--dupe-factor", type=int, default=5,
                        help="passes over the corpus, each with new pairs and masks (default 5)")
    parser.add_argument("--eval-every", type=int, default=None,
                        help="steps between held-out evaluations (default: a tenth of --steps)")
    parser.add_argument("--save-every", type=int, default=None,
                        help=f"steps between checkpoints (default {d.save_every}; the last step is "
                             "always saved)")
    parser.add_argument("--no-bias-correction", action="store_true", default=None,
                        help="BERT's original Adam (no bias correction)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: runs/pretrain-PRESET; with --resume, the "
                             "checkpoint's run folder)")
    parser.add_argument("--resume", metavar="DIR",
                        help="continue a run: its folder (its latest checkpoint) or one "
                             "checkpoint-NNNNNN in it")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run in an --out that holds one: its checkpoints and "
                             "metrics are replaced")
    parser.add_argument("--bug", choices=tuple(bugs.BUGS), metavar="NAME",
                        help="plant one known bug for the whole run, to see its symptom (lesson "
                             "16; a data bug's instances, held-out ones too, go to "
                             "OUT/data-bug-NAME): " + ", ".join(bugs.BUGS))


def prepare_data(corpus, heldout, vocab_file, out_dir: Path, data_config: DataConfig, seed: int, log=print):
    """Prepare (or reuse) the training and held-out instances under ``out_dir``."""
    tokenizer = BertTokenizer.from_pretrained(vocab_file)
    heldout_config = eval_data_config(128)
    request = {"corpus": [str(Path(p).resolve()) for p in corpus],
               "heldout": [str(Path(p).resolve()) for p in heldout] if heldout else None,
               "vocab": str(Path(vocab_file).resolve()), "seed": seed,
               **dataclasses.asdict(data_config),
               "heldout_data": {"seed": EVAL_SEED, **dataclasses.asdict(heldout_config)}}
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
        # prepare() names the split of a file it reads whole "train"; here that file is the held-out
        # text.
        def heldout_log(line: str):
            log("held-out" + line[len("train"):] if line.startswith("train:") else line)
        prepare(heldout, tokenizer, out_dir / "heldout", heldout_config, seed=EVAL_SEED,
                log=heldout_log)
    outputs.write_file(stamp, json.dumps(request, indent=1))
    return PretrainingDataset(out_dir / "train"), _heldout(out_dir, heldout), tokenizer


def _heldout(out_dir: Path, heldout):
    if heldout:
        return PretrainingDataset(out_dir / "heldout", split="train")
    return PretrainingDataset(out_dir / "train", split="heldout")


def _looks_like_a_run(folder: Path) -> bool:
    """A run folder of an older minibert (before folders had a marker)."""
    return (folder / "metrics.jsonl").is_file() or any((p / checkpoint.STATE_JSON).is_file()
                                                       for p in folder.glob("checkpoint-*"))


def _run_checkpoints(folder: Path) -> list[Path]:
    """The training checkpoints in ``folder``: checkpoint-* folders holding a training state."""
    return sorted(p for p in folder.glob("checkpoint-*") if (p / checkpoint.STATE_JSON).is_file())


def check_output(out: Path, resume: Path | None, overwrite: bool) -> None:
    """Before any work: ``out`` may hold a run only when this command continues it (``--resume``
    from a checkpoint inside it, no later checkpoint there) or replaces it (``--overwrite``)."""
    outputs.claim(out, KIND, overwrite=overwrite, recognise=_looks_like_a_run, mark=False)
    existing = _run_checkpoints(out)
    has_run = bool(existing) or (out / "metrics.jsonl").is_file()
    if resume is None:
        if has_run and not overwrite:
            last = existing[-1].name if existing else "metrics.jsonl"
            raise outputs.OutputRefused(
                f"--out {out} already holds a pretraining run ({last}); continue it with --resume "
                f"{out}, replace it with --overwrite, or give another --out")
        return
    inside = resume.parent.resolve() == out.resolve()
    if has_run and not inside and not overwrite:
        raise outputs.OutputRefused(
            f"--out {out} holds another pretraining run than {resume}; give a new --out to "
            f"continue {resume} there, or --overwrite to replace the run in {out}")
    later = [p for p in existing if inside and p.name > resume.name and checkpoint.is_complete(p)]
    if later and not overwrite:
        raise outputs.OutputRefused(
            f"{out} has a later checkpoint ({later[-1].name}) than --resume {resume.name}; "
            f"continuing from the earlier one would replace it: resume from {later[-1]}, or give a "
            "new --out")


def clear_run(out: Path, log=print) -> None:
    """``--overwrite``: remove the previous run's checkpoints, metrics, figure and pointer (all
    written by minibert pretrain into its own folder)."""
    gone = _run_checkpoints(out)
    for p in gone:
        shutil.rmtree(p)
    for name in ("metrics.jsonl", "latest", "pretraining.png"):
        (out / name).unlink(missing_ok=True)
    if gone:
        log(f"--overwrite: removed the previous run's {len(gone)} checkpoint(s) from {out}")


def _skipped_latest(given: Path, resolved: Path) -> Path | None:
    """The checkpoint a run folder's ``latest`` names, when ``resolve`` passed over it as
    incomplete."""
    pointer = given / "latest"
    if given.is_dir() and pointer.is_file():
        named = given / pointer.read_text(encoding="utf-8").strip()
        if named != resolved and named.is_dir():
            return named
    return None


def train_config(args, stored: dict | None) -> TrainConfig:
    """The options given, else the checkpoint's (``stored``, on --resume), else the defaults."""
    fields = {"steps": args.steps}
    for option, field in RESUMABLE.items():
        value = getattr(args, option)
        if option == "no_bias_correction":
            value = None if value is None else not value
        if value is None and stored is not None and field in stored:
            value = stored[field]
        if value is not None:
            fields[field] = value
    return TrainConfig(**fields)


def main(args) -> int:
    if getattr(args, "bug", None):
        if distributed.world().is_root:
            print(f"planting bug {args.bug}: {bugs.get(args.bug).title} (lesson 16)")
        with bugs.planted(args.bug):
            return _main(args)
    return _main(args)


def _main(args) -> int:
    comm = distributed.world()          # one process, or this rank of an mpiexec run
    if not comm.is_root:                # rank 0 speaks for the run
        sys.stdout = open(os.devnull, "w")
    resume = None
    if args.resume:
        resume = checkpoint.resolve(args.resume)
        skipped = _skipped_latest(Path(args.resume), resume)
        if skipped is not None:
            print(f"note: {skipped} is incomplete or damaged (its files differ from those recorded "
                  f"when it was saved); resuming from {resume}, the newest complete checkpoint")
        if not (resume / checkpoint.STATE_JSON).is_file():
            raise FileNotFoundError(f"--resume {args.resume}: no training checkpoint there (a "
                                    "checkpoint-NNNNNN folder of `minibert pretrain`, or the run "
                                    "folder holding them)")
        if args.preset is not None:
            raise ValueError("--preset does not apply with --resume: the model's size comes from "
                             f"the checkpoint ({resume / checkpoint.CONFIG_NAME}); leave --preset "
                             "out")
    preset = args.preset or "tiny"
    default_corpus = args.corpus is None
    corpus = args.corpus or [str(data_path("corpus", "train.txt"))]
    if args.heldout is not None:
        heldout = args.heldout
    else:
        heldout = [str(data_path("corpus", "heldout.txt"))] if default_corpus else None
    vocab_file = args.vocab or str(data_path("vocab.txt"))
    if args.out:
        out = Path(args.out)
    elif resume is not None:
        out = resume.parent
    else:
        out = Path(f"runs/pretrain-{preset}")
    stored = None
    workers = 1 if args.workers is None else positive_int("--workers", args.workers)
    if resume is not None:
        _, state = checkpoint.load_training_state(resume)
        stored = state["train_config"]
        if args.workers is None and comm.size == 1:     # continue the run on its number of ranks
            workers = state.get("world_size", 1)
        tokenizer = BertTokenizer.from_pretrained(vocab_file)
        tokens = tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size))
        if vocab_sha256(tokens) != state["data"]["vocab_sha256"]:
            raise ValueError(f"--resume {resume} was trained with another vocabulary than "
                             f"{vocab_file}; give the --vocab it was trained with")
        if args.steps <= state["step"]:
            raise ValueError(f"--resume {resume} is at step {state['step']}; --steps counts all "
                             f"steps, so give --steps above {state['step']} (now {args.steps})")
    config = train_config(args, stored)
    world_size(config.batch_size, comm.size, workers)      # refused before any file is written
    data_config = DataConfig(max_seq_length=args.max_seq_length, dupe_factor=args.dupe_factor)

    def claim():
        check_output(out, resume, args.overwrite)
        outputs.mark_folder(out, KIND)
        if args.overwrite and resume is None:
            clear_run(out)
    distributed.on_root(comm, claim)     # rank 0 alone owns the output folder
    # Rank after rank: the first on a file system prepares the data, the others find it there.
    train_data, eval_data, tokenizer = distributed.in_turn(comm, lambda: prepare_data(
        corpus, heldout, vocab_file, bugs.data_folder(out, getattr(args, "bug", None)), data_config,
        config.seed))
    vocab = tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size))

    if resume is not None:
        model = BertForPreTraining.from_pretrained(resume, np.random.default_rng(config.seed))
        size = f"resumed from {resume}"
    else:
        model = build_model(preset, tokenizer.vocab_size, config.seed, args.max_seq_length)
        size = preset
    trainer = Trainer(model, train_data, config, out, eval_data, vocab, comm=comm, workers=workers)
    if resume is not None:
        trainer.resume(resume)
        changed = [f"--{o.replace('_', '-')}" for o in RESUMABLE if getattr(args, o) is not None
                   and stored.get(RESUMABLE[o]) != getattr(config, RESUMABLE[o])]
        print(f"resumed from {resume} at step {trainer.step}"
              + (f"; changed from the checkpoint: {', '.join(changed)}" if changed else ""))
    c = model.config
    print(f"pretraining BertForPreTraining ({size}: {c.num_hidden_layers} layers, hidden "
          f"{c.hidden_size}, {model.num_parameters():,} parameters) on {len(train_data):,} "
          f"instances for {config.steps} steps of "
          f"{config.batch_size}{f' shared by {comm.size} ranks' if comm.size > 1 else ''}"
          f"{f' shared by {workers} workers' if workers > 1 else ''}; output "
          f"in {out}")
    cores = os.cpu_count() or 1
    if comm.size == 1 and workers == 1 and cores > 1 and config.batch_size >= cores:
        print(f"(tip: with --workers {cores}, the {cores} cores each take a share of every batch, which is "
              "faster; dropout then draws other masks than one process does: README, Performance)")
    t0 = time.perf_counter()
    result = trainer.train()
    numbers = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float))
    if trainer.interrupted:
        print(f"interrupted after {time.perf_counter() - t0:.0f} s at step {trainer.step}; "
              f"continue with: minibert pretrain --resume {out} --steps {config.steps}")
        return outputs.Interrupted(getattr(outputs.signal, trainer.interrupted)).exit_code
    print(f"done in {time.perf_counter() - t0:.0f} s. held-out {numbers}")
    print(f"final checkpoint: {trainer.checkpoint_path(trainer.step)}; figure: {out / 'pretraining.png'}")
    return 0
