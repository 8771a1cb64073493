"""``minibert corpus``: generate the bundled corpus, evaluation sets and tasks, or check them.

    minibert corpus --check [--data DIR]             verify DIR (default: the bundled data/) against its manifest
    minibert corpus --out DIR [--seed S] [--words N]  regenerate everything into DIR
"""
from __future__ import annotations

import collections
import json
import sys
import time
from pathlib import Path

from .. import outputs
from . import io
from .documents import document_text, generate, is_heldout

DEFAULT_SEED = 0
DEFAULT_WORDS = 1_400_000  # keeps train.txt under 8 MB (about 7.8 MB)
GENERATOR_VERSION = 1


def build(out: Path, seed: int = DEFAULT_SEED, n_words: int = DEFAULT_WORDS, annotate_train: bool = False,
          with_eval: bool = True, with_tasks: bool = True, log=print) -> dict:
    """Write corpus/, eval/, tasks/ and manifest.json under `out`; return the manifest.

    corpus/train.txt and corpus/heldout.txt (every 50th document) are plain text; the held-out
    sentences' annotations go to corpus/heldout.annotations.jsonl.gz. Annotations of the training
    documents are large (~100 MB of JSON) and only written with annotate_train, outside the manifest.
    """
    out = Path(out)
    t0 = time.time()
    train, heldout, held_rows, train_rows = [], [], [], []
    stats = collections.Counter()
    constructions = collections.Counter()
    types = set()
    corpus_sentences = set()
    for i, sentences in generate(seed, n_words):
        part = heldout if is_heldout(i) else train
        part.append(document_text(sentences))
        stats["documents_heldout" if is_heldout(i) else "documents_train"] += 1
        stats["sentences"] += len(sentences)
        for j, s in enumerate(sentences):
            text = s.text
            corpus_sentences.add(text)
            stats["words"] += len(text.split())
            constructions[s.construction] += 1
            types.update(t.lower() for t, u in zip(s.tokens, s.upos) if u != "PUNCT")
            if is_heldout(i):
                held_rows.append(s.to_json(f"d{i}.s{j}"))
            elif annotate_train:
                train_rows.append(s.to_json(f"d{i}.s{j}"))
    files = ["corpus/train.txt", "corpus/heldout.txt", "corpus/heldout.annotations.jsonl.gz"]
    io.write_text(out / files[0], "".join(train))
    io.write_text(out / files[1], "".join(heldout))
    io.write_jsonl(out / files[2], held_rows)
    if annotate_train:
        io.write_jsonl(out / "corpus/train.annotations.jsonl.gz", train_rows)
    log(f"corpus: {stats['documents_train']} + {stats['documents_heldout']} documents, "
        f"{stats['sentences']} sentences, {stats['words']} words ({time.time() - t0:.1f} s)")
    info = {
        "generator": {"command": f"minibert corpus --out data --seed {seed} --words {n_words}", "seed": seed,
                      "words": n_words, "version": GENERATOR_VERSION},
        "stats": {**dict(sorted(stats.items())), "word_types": len(types),
                  "constructions": {k: round(v / stats["sentences"], 4) for k, v in constructions.most_common()}},
    }
    if with_eval and _exists("evalsets"):
        from . import evalsets
        t1 = time.time()
        files += evalsets.write_all(out, seed, corpus_sentences)
        log(f"evaluation sets ({time.time() - t1:.1f} s)")
    if with_tasks and _exists("tasks"):
        from . import tasks
        t1 = time.time()
        task_files, task_info = tasks.write_all(out, seed, corpus_sentences)
        files += task_files
        info["tasks"] = task_info
        log(f"tasks ({time.time() - t1:.1f} s)")
    manifest = io.write_manifest(out, files, info)
    log(f"wrote {len(files)} files under {out} in {time.time() - t0:.1f} s")
    return manifest


KIND = "corpus"


def _generated(folder: Path) -> bool:
    """A folder this generator wrote before folders had a marker (the bundled data/): its manifest
    says so."""
    try:
        return "generator" in json.loads((folder / io.MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def _exists(module: str) -> bool:
    return (Path(__file__).parent / f"{module}.py").is_file()


def add_arguments(parser) -> None:
    parser.add_argument("--check", action="store_true", help="verify the files against manifest.json")
    parser.add_argument("--data", type=Path, default=None, help="folder to check (default: the bundled data/)")
    parser.add_argument("--out", type=Path, default=None, help="write everything into this folder")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"corpus seed (default {DEFAULT_SEED})")
    parser.add_argument("--words", type=int, default=DEFAULT_WORDS,
                        help=f"corpus size in words (default {DEFAULT_WORDS})")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --out that holds other files (only the generated files "
                             "are replaced)")
    parser.add_argument("--annotate-train", action="store_true",
                        help="also write corpus/train.annotations.jsonl.gz (large, not in the manifest)")


def main(args) -> int:
    if args.check == (args.out is not None):
        raise ValueError("give exactly one of --check or --out DIR")
    if args.check:
        from ..paths import data_dir
        root = args.data or data_dir()
        problems = io.check(root)
        if problems:
            print(f"{root}: {len(problems)} file(s) differ from {io.MANIFEST}:", file=sys.stderr)
            for p in problems:
                print(f"  {p}", file=sys.stderr)
            return 1
        n = len(io.read_manifest(root)["files"])
        print(f"{root}: all {n} files match {io.MANIFEST}")
        return 0
    if args.words < 1:
        raise ValueError(f"--words must be positive, got {args.words}")
    outputs.claim(args.out, KIND, overwrite=args.overwrite, recognise=_generated)
    build(args.out, args.seed, args.words, annotate_train=args.annotate_train)
    return 0
