"""The ``minibert`` command.

Each subcommand lives in the module that implements it; that module defines
``add_arguments(parser)`` and ``main(args) -> int``. The table below is the whole registry.

Errors a user can meet (bad options, missing or damaged files, a full disk, a folder that must not
be written) print one line, ``minibert CMD: error: ...``, and exit 1; ``--debug`` or
``MINIBERT_DEBUG=1`` shows the traceback instead. Ctrl-C and SIGTERM exit with 130 and 143.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
import threading

from minibert import outputs

# name -> (module, one-line help)
COMMANDS = {
    "demo": ("minibert.demo", "the whole story in a few minutes: pretrain, evaluate, fill in masks, write a report"),
    "gradcheck": ("minibert.checks", "finite-difference gradient checks of every layer and the whole model"),
    "bench": ("minibert.bench", "benchmarks: NumPy vs Numba kernels, whole training steps"),
    "vocab": ("minibert.tokenization.trainer", "learn a WordPiece vocabulary from a text corpus"),
    "corpus": ("minibert.corpus.cli", "generate the bundled corpus and evaluation sets, or check them"),
    "prepare": ("minibert.pretraining.data", "build MLM + NSP pretraining instances as .npz shards"),
    "pretrain": ("minibert.pretraining.cli", "pretrain BERT (MLM + NSP) from scratch, with checkpoints you can resume"),
    "evaluate": ("minibert.pretraining.evaluate", "held-out masked-LM and next-sentence accuracy of a checkpoint"),
    "finetune": ("minibert.finetuning.cli",
                 "fine-tune on a task: dropout or Mixout, layer mixing, two-stage, FreeLB, SMART"),
    "stability": ("minibert.finetuning.stability", "many restarts per fine-tuning strategy: how often "
                  "runs fail, as a table and a swarm plot"),
    "probe": ("minibert.probing.cli", "what did the model learn? cloze, layer-wise linear and "
              "attention probes, with baselines"),
    "exercise": ("minibert.exercises.cli", "exercises that grade themselves: list, start, check"),
}


DEBUG_HELP = "show the full traceback of an error (also: environment variable MINIBERT_DEBUG=1)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minibert", description="BERT from scratch in NumPy.")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        p.set_defaults(_main=module.main)
    return parser


# What a failing system call means for the user, by errno; the file comes from the exception.
OS_ERRORS = {
    errno.ENOSPC: "no space left on the device while writing {file}; free some space or write "
                  "elsewhere (--out); files saved earlier are intact",
    errno.EDQUOT: "disk quota exceeded while writing {file}; free some space or write elsewhere "
                  "(--out)",
    errno.EROFS: "{file} is on a read-only file system; write elsewhere (--out)",
    errno.EACCES: "permission denied for {file}; choose a folder you can write to (--out) or fix "
                  "its permissions",
    errno.EPERM: "operation not permitted on {file}; choose a folder you can write to (--out)",
    errno.EISDIR: "{file} is a folder where a file was expected",
    errno.ENOTDIR: "a file is in the way of the folder {file}; give another path",
    errno.ENAMETOOLONG: "the path {file} is too long",
    errno.EEXIST: "{file} already exists",
    errno.ENOENT: "{file} does not exist (nor, perhaps, a folder on its path)",
}


def describe(exc: BaseException) -> str:
    """One line (a short block for a checkpoint that does not fit): what went wrong, what to do."""
    if hasattr(exc, "cli_message"):          # interop.CheckpointMismatch: the commands' way out
        return exc.cli_message
    if isinstance(exc, OSError) and exc.errno is not None:
        file = exc.filename if exc.filename is not None else "a file"
        if exc.filename2 is not None:
            file = f"{exc.filename} -> {exc.filename2}"
        template = OS_ERRORS.get(exc.errno)
        return template.format(file=file) if template else f"{exc.strerror}: {file}"
    if isinstance(exc, (ValueError, OSError, RuntimeError, ImportError, ArithmeticError)):
        return str(exc)
    return (f"{type(exc).__name__}: {exc}. This is unexpected (a bug in minibert?); run again with "
            "--debug for the traceback and report it")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get("MINIBERT_DEBUG", "") not in ("", "0")
    # SIGTERM (kill, docker stop, schedulers) ends a command as Ctrl-C does: loops that hold unsaved
    # work catch both and save first (outputs.StopRequests); elsewhere it raises Interrupted below.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, outputs.raise_interrupted)
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt as exc:
        if debug:
            raise
        code = exc.exit_code if isinstance(exc, outputs.Interrupted) else 130
        name = signal.Signals(code - 128).name
        print(f"minibert {args.command}: interrupted by {name}; what was saved before stays as it "
              "was, the work in progress was not saved", file=sys.stderr)
        return code
    except Exception as exc:
        if debug:
            raise
        print(f"minibert {args.command}: error: {describe(exc)}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
