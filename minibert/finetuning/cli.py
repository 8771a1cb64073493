"""``minibert finetune``: fine-tune a pretrained model on a task, with any of the techniques.

    minibert finetune --task entailment                         # the shipped tiny, dropout 0.1
    minibert finetune --task entailment --from mini             # the shipped mini
    minibert finetune --task entailment --mixout 0.8
    minibert finetune --task entailment --layers mix
    minibert finetune --task entailment --intermediate nli      # two-stage
    minibert finetune --task entailment --freelb 2,0.1,0        # K, alpha, eps (0: unbounded)
    minibert finetune --task entailment --smart 1
    minibert finetune --task entailment --random-init           # the baseline: no pretraining
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from minibert.paths import shipped_model


def freelb_triple(text: str) -> tuple[int, float, float]:
    parts = text.split(",")
    try:
        if len(parts) != 3:
            raise ValueError
        return int(parts[0]), float(parts[1]), float(parts[2])
    except ValueError:
        raise argparse.ArgumentTypeError(f"--freelb wants K,alpha,eps such as 2,0.1,0; got {text!r}") from None


def add_config_arguments(parser) -> None:
    """The options shared by ``finetune`` and ``stability`` (everything but the strategy and the seed)."""
    parser.add_argument("--task", required=True,
                        help="a bundled task (acceptability, sentiment, entailment, nli) or a folder with "
                             "train/dev/test.jsonl and a task.json (see minibert.finetuning.data)")
    parser.add_argument("--from", dest="init", default=None, metavar="MODEL",
                        help="the pretrained model to start from: a shipped model's name (tiny, "
                             "mini) or a model folder; a folder of that name in the working "
                             "directory wins (default: the shipped tiny)")
    parser.add_argument("--random-init", action="store_true",
                        help="the same architecture with fresh weights: what pretraining is worth")
    parser.add_argument("--epochs", type=float, default=3.0, help="passes over the training set (default 3)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3, for the tiny model)")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per update (default 16)")
    parser.add_argument("--train-limit", type=int, default=None, help="use only the first N training examples")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per example, pairs truncated to fit")


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    reg = parser.add_mutually_exclusive_group()
    reg.add_argument("--dropout", type=float, default=None, help="dropout probability (default: the model's, 0.1)")
    reg.add_argument("--mixout", type=float, default=0.0, help="Mixout probability p (replaces dropout)")
    parser.add_argument("--layers", choices=("last", "mix", "concat4"), default="last",
                        help="classifier input: pooler, scalar mix of all layers, or the last four [CLS]")
    parser.add_argument("--layer-dropout", type=float, default=0.0, help="layer dropout of the scalar mix")
    parser.add_argument("--freelb", type=freelb_triple, default=None, metavar="K,ALPHA,EPS",
                        help="FreeLB adversarial training: K ascent steps of size alpha, norm bound eps (0: none)")
    parser.add_argument("--freelb-init-mag", type=float, default=0.0, help="FreeLB's initial perturbation size")
    parser.add_argument("--smart", type=float, default=0.0, metavar="LAMBDA",
                        help="SMART smoothness regularisation weight (0: off)")
    parser.add_argument("--smart-mu", type=float, default=1.0, help="SMART's Bregman proximal term weight")
    parser.add_argument("--smart-eps", type=float, default=1e-2,
                        help="size of SMART's adversarial step and bound of the perturbation (inf-norm)")
    parser.add_argument("--intermediate", default=None, metavar="TASK",
                        help="two-stage fine-tuning: first fine-tune on TASK (e.g. nli)")
    parser.add_argument("--intermediate-epochs", type=float, default=1.0, help="epochs of the intermediate task")
    parser.add_argument("--no-bias-correction", action="store_true",
                        help="Adam without bias correction, as BERT's original optimiser")
    parser.add_argument("--reinit-layers", type=int, default=0, metavar="K",
                        help="re-initialise the pooler and the top K layers before fine-tuning")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None,
                        help="folder for the fine-tuned model and results.json: a new folder, or "
                             "one an earlier `minibert finetune` wrote (its model and results are "
                             "replaced)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --out that holds other files; only the model files and "
                             "results.json are replaced")


def config_from_args(args, **changes):
    from minibert.finetuning.trainer import FinetuneConfig

    from minibert.checkpoint import model_folder

    # The default is the shipped folder itself, so that a folder ./tiny never changes it.
    init = shipped_model("tiny") if args.init is None else model_folder(args.init, f"--from {args.init}")
    init = str(init)
    fields = dict(task=args.task, init=init, random_init=args.random_init, epochs=args.epochs, lr=args.lr,
                  batch_size=args.batch_size, train_limit=args.train_limit, max_length=args.max_length)
    for name in ("dropout", "mixout", "layers", "layer_dropout", "freelb", "freelb_init_mag", "smart",
                 "smart_mu", "smart_eps", "intermediate", "intermediate_epochs", "reinit_layers", "seed"):
        if hasattr(args, name):
            fields[name] = getattr(args, name)
    if hasattr(args, "no_bias_correction"):
        fields["correct_bias"] = not args.no_bias_correction
    fields.update(changes)
    return FinetuneConfig(**fields)


def result_record(result) -> dict:
    return {"config": dataclasses.asdict(result.config),
            "stages": [dataclasses.asdict(s) for s in result.stages]}


KIND = "finetune"


def _looks_like_a_finetune(folder: Path) -> bool:
    """A folder an older ``minibert finetune`` wrote (before folders had a marker)."""
    return (folder / "results.json").is_file() and (folder / "config.json").is_file()


def main(args) -> int:
    from minibert import checkpoint, outputs
    from minibert.finetuning.trainer import finetune

    config = config_from_args(args)
    out = Path(args.out) if args.out else None
    if out is not None:      # before training, so a refused folder costs nothing
        outputs.claim(out, KIND, overwrite=args.overwrite, recognise=_looks_like_a_finetune)
    result = finetune(config)
    final = result.final
    metric = final.metric
    print(f"\n{config.task}: dev {metric} {final.dev[metric]:.4f} (majority baseline {final.majority:.4f}"
          f"{', FAILED' if final.failed else ''}), test {metric} {final.test[metric]:.4f}; "
          f"{sum(s.seconds for s in result.stages):.1f} s")
    if out is not None:
        vocab = result.tokenizer.convert_ids_to_tokens(range(len(result.tokenizer)))
        checkpoint.save_model(result.model, out, vocab, kind=KIND, overwrite=args.overwrite,
                              option="--out", allow="add --overwrite")
        outputs.write_file(out / "results.json", json.dumps(result_record(result), indent=1) + "\n")
        outputs.write_marker(out, KIND, files=["results.json"])
        print(f"model and results.json written to {out}")
    return 0
