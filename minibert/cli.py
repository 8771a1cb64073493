"""The ``minibert`` command.

Each subcommand lives in the module that implements it; that module defines
``add_arguments(parser)`` and ``main(args) -> int``. The table below is the whole registry.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "demo": ("minibert.demo", "the whole story in a few minutes: pretrain, evaluate, fill in masks, write a report"),
    "gradcheck": ("minibert.gradcheck", "finite-difference gradient checks of every layer and the whole model"),
    "bench": ("minibert.bench", "benchmarks: NumPy vs Numba kernels, whole training steps"),
    "vocab": ("minibert.tokenization.trainer", "learn a WordPiece vocabulary from a text corpus"),
    "corpus": ("minibert.corpus.cli", "generate the bundled corpus and evaluation sets, or check them"),
    "prepare": ("minibert.pretraining.data", "build MLM + NSP pretraining instances as .npz shards"),
    "pretrain": ("minibert.pretraining.cli", "pretrain BERT (MLM + NSP) from scratch, with checkpoints you can resume"),
    "evaluate": ("minibert.pretraining.evaluate", "held-out masked-LM and next-sentence accuracy of a checkpoint"),
    "finetune": ("minibert.finetuning.cli", "fine-tune on a task: dropout or Mixout, layer mixing, two-stage, FreeLB, SMART"),
    "stability": ("minibert.finetuning.stability", "many restarts per fine-tuning strategy: how often runs fail, as a table and a swarm plot"),
    "probe": ("minibert.probing.cli", "what did the model learn? cloze, layer-wise linear and attention probes, with baselines"),
    "exercise": ("minibert.exercises.cli", "exercises that grade themselves: list, start NAME, check NAME [--hint]"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minibert", description="BERT from scratch in NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # A command whose module is not written yet is left out; any other missing module is a bug.
            if not (exc.name and (module_name == exc.name or module_name.startswith(exc.name + "."))):
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    try:
        return int(args._main(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"minibert {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
