"""``minibert demo``: the whole story in a few minutes on a laptop CPU.

1. prepare MLM + NSP instances from part of the bundled corpus;
2. pretrain a tiny BERT from scratch for a few hundred steps;
3. evaluate it beside a shipped pretrained model (``--model``: ``tiny``, the default, or ``mini``)
   and a unigram baseline;
4. ask both to fill in masked words, and score subject-verb agreement across attractors;
5. fine-tune the shipped model on the small entailment task with dropout and with Mixout over a few
   seeds, beside the same fine-tuning from random weights;
6. write a report (Markdown + PNG) to ``--out``.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from minibert import kernels, outputs, plots
from minibert.inference import fill_mask
from minibert.models import BertForPreTraining
from minibert.paths import SHIPPED_MODELS, data_dir, data_path, shipped_model
from minibert.pretraining.data import DataConfig, PretrainingDataset, prepare
from minibert.pretraining.trainer import Trainer, TrainConfig, build_model, evaluate
from minibert.probing import agreement_probe, load_eval_set
from minibert.probing.data import subsample
from minibert.tokenization import BertTokenizer
from minibert.validation import positive_int

CLOZE = [
    "the farmers [MASK] the cows every morning .",
    "robins are [MASK] .",
    "the dog that chases the cats [MASK] happy .",
    "the teachers say that the girl [MASK] tired .",
    "cows eat [MASK] .",
    "nobody has [MASK] seen a purple fish .",
]


def reading_the_cloze(name: str, model) -> str:
    """What the report says under the shipped model's answers: its size from its own config (the
    answers are fixed for a shipped model; a model from scratch after a few hundred steps mostly
    predicts frequent tokens)."""
    c = model.config
    return (
        f"Wrong fill-ins are expected. The shipped model `{name}` has {c.num_hidden_layers} layers "
        f"(hidden {c.hidden_size}) and {model.num_parameters():,} parameters and was pretrained on "
        "the bundled corpus of 1.6M tokens, as its model card says (BERT-base: 12 layers, 110M "
        "parameters, 3.3B words). A model this small learns which words are frequent next to which "
        "before what is grammatical or true: look for a slot that wants a verb getting a "
        "preposition, a slot that wants a noun getting an adverb, and a verb agreeing with the "
        "nearest noun instead of its subject (\"the dog that chases the cats\"). The run from "
        "scratch, a few hundred steps old, mostly predicts frequent tokens. Lesson 08 "
        "(`lessons/08_pretraining.py`) shows what pretraining learns and when; lesson 09 "
        "(`lessons/09_cloze_probes.py`) probes agreement, negative polarity items, negation and "
        "facts one at a time.")


def reading_the_agreement(per_column: int, by_attractors: dict) -> str:
    """The reading of the shipped model's agreement row. Whether it stays above chance with
    attractors is decided by the numbers: above 0.5 by more than two standard errors of the
    3 * per_column sentences with attractors (0.115 with 25 per column)."""
    with_attractors = float(np.mean([by_attractors[str(k)]["accuracy"] for k in (1, 2, 3)]))
    margin = 2 * np.sqrt(0.25 / (3 * per_column))
    # A single column is above chance when it beats 0.5 by two standard errors of its own sentences.
    above = [k for k in (1, 2, 3) if by_attractors[str(k)]["accuracy"] > 0.5 + 2 * np.sqrt(0.25 / per_column)]
    if with_attractors > 0.5 + margin:
        attractor_reading = (
            f"With one or more attractors it stays above chance ({with_attractors:.2f} on average, "
            "chance 0.5): it has learned more than \"agree with the closest noun\", the heuristic "
            "the attractors defeat (lesson 09 measures where it follows the subject).")
    elif above:
        below = [k for k in (1, 2, 3) if k not in above]

        def values(ks):
            return ", ".join(f"{by_attractors[str(k)]['accuracy']:.2f}" for k in ks)
        attractor_reading = (
            f"With {' or '.join(map(str, above))} attractor(s) it stays above chance ({values(above)}); "
            f"with {' or '.join(map(str, below))} it falls to about chance ({values(below)}): it resists "
            "some nouns of the other number between subject and verb, not all (lesson 18 compares the "
            "shipped models on every construction).")
    else:
        attractor_reading = (
            "With one or more attractors it falls to about chance (0.5): it has learned \"agree "
            "with the closest noun\", a heuristic the attractors defeat (lesson 09 shows that "
            "where the closest noun has the other number, the model follows that noun most of the "
            "time).")
    return (
        "With no attractor, the nearest noun has the subject's number, and the shipped model is "
        f"well above chance. {attractor_reading} With {per_column} sentences per column, one "
        f"sentence is {1 / per_column:.2f} of accuracy: "
        "differences of a few sentences between columns or models are noise of the sample.")


def add_arguments(parser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = """\
What it does, in order (about 3-4 minutes on a 2-core laptop with the defaults):
  1. prepares masked-LM + next-sentence instances from an eighth of the bundled corpus;
  2. pretrains a tiny BERT (2 layers, hidden 128) from scratch for --steps steps of 32 sequences,
     evaluating on the bundled held-out documents ten times along the way;
  3. evaluates it beside the shipped pretrained model --model (data/pretrained/MODEL) and two
     baselines (the most frequent masked token; the majority next-sentence label);
  4. asks both models to fill in [MASK] in six sentences, and scores subject-verb agreement across
     0-3 attractors (25 sentences each);
  5. fine-tunes the shipped model on the entailment task with dropout and with Mixout, and the same
     architecture from random weights, --finetune-seeds runs each;
  6. writes OUT/report.md and OUT/pretraining.png (OUT/pretrain holds the run: checkpoint, metrics).

The lessons (lessons/README.md) take each step apart; `minibert pretrain`, `finetune`, `stability`
and `probe` run each one at full size."""
    parser.add_argument("--out", default="runs/demo", help="folder for the report (default: runs/demo)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --out that holds other files (they are left alone)")
    parser.add_argument("--steps", type=int, default=300,
                        help="pretraining steps from scratch (default 300)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the pretraining run: initialisation, data, masking, dropout "
                             "(default 0)")
    parser.add_argument("--finetune-seeds", type=int, default=3,
                        help="fine-tuning runs per setting, seeds 0..N-1 (default 3)")
    parser.add_argument("--model", choices=SHIPPED_MODELS, default="tiny",
                        help="the shipped pretrained model that steps 3-5 evaluate, ask and "
                             "fine-tune beside the run from scratch (default tiny; mini is larger "
                             "and takes longer)")


def finetune_comparison(seeds: int, say, init) -> tuple[list[str], float]:
    """Dev accuracy on entailment: the shipped model ``init`` with dropout 0.1 and with Mixout 0.8,
    and the same architecture from random weights; one row per setting, one column per seed, then
    the mean.

    Returns the Markdown table and the dev set's majority-class rate. Each run is announced as it
    finishes, with its time, so the half minute or more of fine-tuning shows progress.
    """
    from minibert.finetuning.trainer import FinetuneConfig, finetune

    settings = {"shipped model, dropout 0.1": {}, "shipped model, Mixout 0.8": {"mixout": 0.8},
                "random weights, dropout 0.1": {"random_init": True}}
    table = ["| setting | " + " | ".join(f"seed {s}" for s in range(seeds)) + " | mean |",
             "|---|" + "---|" * (seeds + 1)]
    majority = 0.0
    runs, done = len(settings) * seeds, 0
    for name, changes in settings.items():
        scores = []
        for seed in range(seeds):
            started = time.perf_counter()
            config = FinetuneConfig(task="entailment", init=str(init), seed=seed, **changes)
            final = finetune(config, log=lambda line: None).final
            scores.append(final.dev["accuracy"])
            majority = final.majority
            done += 1
            say(f"   [{done}/{runs}] {name}, seed {seed}: dev accuracy {scores[-1]:.3f} "
                f"({time.perf_counter() - started:.0f} s)")
        table.append(f"| {name} | " + " | ".join(f"{x:.3f}" for x in scores)
                     + f" | {np.mean(scores):.3f} |")
    return table, majority


def attractors(k: int) -> str:
    return f"{k} attractor" if k == 1 else f"{k} attractors"


def unigram_accuracy(train: PretrainingDataset, heldout: PretrainingDataset) -> float:
    """Accuracy of always predicting the most frequent masked token of the training data."""
    w = train.arrays["masked_lm_weights"] == 1
    most_common = np.bincount(train.arrays["masked_lm_ids"][w]).argmax()
    hw = heldout.arrays["masked_lm_weights"] == 1
    return float((heldout.arrays["masked_lm_ids"][hw] == most_common).mean())


def main(args) -> int:
    t_start = time.perf_counter()
    for option, value in (("--steps", args.steps), ("--finetune-seeds", args.finetune_seeds)):
        positive_int(option, value)
    shipped_dir = shipped_model(args.model)
    # The output-folder rule, checked before any work.
    out = outputs.claim(args.out, "demo", overwrite=getattr(args, "overwrite", False))
    say = print
    say(f"minibert demo: BERT from scratch in NumPy ({kernels.backend()} kernels, {os.cpu_count()} CPUs)\n")

    # 1. data: the first documents of the bundled corpus, and the bundled held-out documents
    tokenizer = BertTokenizer.from_pretrained(data_dir())
    lines = data_path("corpus", "train.txt").read_text(encoding="utf-8").splitlines()
    subset = out / "corpus-subset.txt"
    subset.write_text("\n".join(lines[: len(lines) // 8]) + "\n", encoding="utf-8")
    data_config = DataConfig(max_seq_length=128, dupe_factor=2)
    say("1. Preparing pretraining instances (NSP pairs, 15% masking) ...")
    prepare([subset], tokenizer, out / "data" / "train", data_config, seed=args.seed)
    prepare([data_path("corpus", "heldout.txt")], tokenizer, out / "data" / "heldout",
            DataConfig(max_seq_length=128, dupe_factor=1), seed=12345)
    train, heldout = PretrainingDataset(out / "data" / "train"), PretrainingDataset(out / "data" / "heldout")
    say(f"   {len(train):,} training instances, {len(heldout):,} held-out instances\n")

    # 2. pretrain from scratch
    say(f"2. Pretraining a tiny BERT (2 layers, hidden 128) from scratch for {args.steps} steps ...")
    model = build_model("tiny", tokenizer.vocab_size, args.seed, 128)
    # Ten evaluations, so the held-out curves of pretraining.png are curves; 8 batches each.
    config = TrainConfig(steps=args.steps, batch_size=32, lr=1e-3, warmup_fraction=0.1, seed=args.seed,
                         eval_every=max(args.steps // 10, 1), eval_batches=8, save_every=args.steps,
                         log_every=50)
    t0 = time.perf_counter()
    Trainer(model, train, config, out / "pretrain", heldout, tokenizer.convert_ids_to_tokens(
        range(tokenizer.vocab_size))).train()
    train_seconds = time.perf_counter() - t0

    # 3. evaluate beside the shipped model and a unigram baseline
    say("\n3. Evaluating on the held-out documents ...")
    shipped_row = f"shipped {args.model} model"
    shipped = BertForPreTraining.from_pretrained(shipped_dir)
    rows = {"from scratch (this run)": evaluate(model, heldout, 64),
            shipped_row: evaluate(shipped, heldout, 64)}
    baseline = unigram_accuracy(train, heldout)
    nsp_majority = max(heldout.arrays["next_sentence_labels"].mean(), 1 - heldout.arrays["next_sentence_labels"].mean())
    n_predictions = int((heldout.arrays["masked_lm_weights"] == 1).sum())
    table = [f"| model | masked LM loss | masked LM accuracy (n = {n_predictions:,} masked tokens) "
             f"| NSP accuracy (n = {len(heldout):,} pairs) |", "|---|---|---|---|"]
    for name, r in rows.items():
        table.append(f"| {name} | {r['eval_mlm_loss']:.3f} | {r['eval_mlm_accuracy']:.3f} "
                     f"| {r['eval_nsp_accuracy']:.3f} |")
    table.append(f"| baselines: most frequent token / majority NSP label | - | {baseline:.3f} | {nsp_majority:.3f} |")
    say("\n".join(table))

    # 4. fill in masked words
    say("\n4. Filling in [MASK] ...")
    cloze = ["| sentence | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    models = {"from scratch (this run)": model, shipped_row: shipped}
    for text in CLOZE:
        cells = []
        for name in rows:
            top = fill_mask(models[name], tokenizer, text, top_k=3)[0]
            cells.append(", ".join(f"{tok} ({p:.2f})" for tok, p in top))
        cloze.append(f"| {text} | " + " | ".join(cells) + " |")
    say("\n".join(cloze))

    # one probe (`minibert probe` runs them all): is the masked verb's number right across attractors?
    say("\n   Subject-verb agreement (verb masked, its two forms compared), by number of attractors ...")
    items = subsample(load_eval_set("agreement"), 25, np.random.default_rng(args.seed), key=lambda r: r["attractors"])
    counts = {k: sum(r["attractors"] == k for r in items) for k in range(4)}
    header = " | ".join(f"{attractors(k)} (n = {counts[k]})" for k in range(4))
    agreement = [f"| model | {header} |", "|---|" + "---|" * 4]
    by_model = {}
    for name in rows:
        by = by_model[name] = agreement_probe(models[name], tokenizer, items)[None]["by_attractors"]
        agreement.append(f"| {name} | "
                         + " | ".join(f"{by[str(k)]['accuracy']:.2f}" for k in range(4)) + " |")
    say("\n".join(agreement))

    # 5. fine-tuning: dropout vs Mixout on the small pair task, and what pretraining is worth
    dev_file = data_path("tasks", "entailment", "dev.jsonl")
    n_dev = sum(1 for line in dev_file.read_text(encoding="utf-8").splitlines() if line.strip())
    say(f"\n5. Fine-tuning on the entailment task (500 training pairs, {n_dev} dev pairs), "
        f"{args.finetune_seeds} seed{'' if args.finetune_seeds == 1 else 's'} per setting ...")
    finetuning, majority = finetune_comparison(args.finetune_seeds, say, shipped_dir)
    say("\n".join(finetuning))

    # 6. the report
    figure = plots.plot_pretraining(out / "pretrain" / "metrics.jsonl", out / "pretraining.png",
                                    mlm_baseline=baseline, nsp_majority=nsp_majority)
    total = time.perf_counter() - t_start
    report = out / "report.md"
    report.write_text("\n".join([
        "# minibert demo report", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"kernels: {kernels.backend()}. Total time {total:.0f} s (pretraining {train_seconds:.0f} s).", "",
        "## Pretraining from scratch", "",
        f"A tiny BERT (2 layers, hidden 128, 2 heads, {model.num_parameters():,} parameters) trained with masked "
        f"LM + next sentence prediction for {args.steps} steps of 32 sequences on {len(train):,} instances made "
        f"from an eighth of the bundled corpus.", "",
        f"![pretraining curves]({figure.name})", "",
        "## Held-out evaluation", "",
        *table, "",
        "The shipped model was pretrained much longer by the command in "
        f"`data/pretrained/{args.model}/README.md`.", "",
        "## Masked-word predictions (top 3 with probabilities)", "",
        *cloze, "",
        reading_the_cloze(args.model, shipped), "",
        "## Subject-verb agreement across attractors (accuracy; chance 0.5)", "",
        f"{len(items)} sentences of the bundled agreement set with the verb masked. A sentence "
        "counts as right when the model gives the verb form that agrees with the subject a higher"
        " probability than the other form. An attractor is a noun of the other number between "
        "subject and verb.", "",
        *agreement, "",
        reading_the_agreement(min(counts.values()), by_model[shipped_row]), "",
        f"## Fine-tuning the shipped {args.model} model on the entailment task (dev accuracy on "
        f"{n_dev} pairs; majority baseline {majority:.3f})", "",
        *finetuning, "",
        "`minibert stability --task entailment --seeds 20 --strategies dropout,mixout0.7,mixout0.8,mixout0.9 "
        "--out DIR` runs the full experiment (lesson 12).", "",
    ]) + "\n", encoding="utf-8")
    say(f"\nReport: {report} (figure {figure}); total time {total:.0f} s")
    return 0
