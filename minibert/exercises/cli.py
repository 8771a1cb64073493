"""``minibert exercise``: list the exercises, write one's template, grade the learner's file."""

from __future__ import annotations

import argparse

from minibert import exercises


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="the exercises, with the lesson each goes with")
    start = sub.add_parser(
        "start", help="write NAME.py, the template to fill in (never overwrites a file)"
    )
    start.add_argument("name", help="an exercise (see `minibert exercise list`)")
    start.add_argument(
        "--dir", default=".", help="folder for the file (default: the current folder)"
    )
    check = sub.add_parser("check", help="grade your NAME.py; exit code 0 when every check passes")
    check.add_argument("name", help="an exercise (see `minibert exercise list`)")
    check.add_argument(
        "--dir", default=".", help="folder holding NAME.py (default: the current folder)"
    )
    check.add_argument(
        "--hint",
        nargs="?",
        type=int,
        const=1,
        default=0,
        metavar="K",
        help="show the first K hints (default 1); each reveals a little more",
    )


def main(args) -> int:
    if args.action == "list":
        width = max(len(n) for n in exercises.EXERCISES)
        print(f"{'exercise'.ljust(width)}  lesson  what you write")
        # in the order of the lessons (a stable sort keeps each lesson's own order)
        for name, ex in sorted(exercises.EXERCISES.items(), key=lambda item: item[1].lesson):
            print(f"{name.ljust(width)}  {ex.lesson:>6}  {ex.title}")
        print(
            "\nstart one with `minibert exercise start NAME`, grade it with `minibert exercise "
            "check NAME`"
        )
        return 0
    if args.action == "start":
        path = exercises.start(args.name, args.dir)
        print(
            f"wrote {path}: fill in the bodies, then run `minibert exercise check {args.name}"
            + (f" --dir {args.dir}`" if args.dir != "." else "`")
        )
        return 0
    exercise = exercises.get(args.name)
    if args.hint:
        for i, text in enumerate(exercises.hints(args.name, args.hint), 1):
            print(f"hint {i} of {len(exercise.hints)}: {text}")
        print()
    report = exercises.check(args.name, args.dir)
    print(report.format())
    if not report.passed and not args.hint:
        print(f"stuck? `minibert exercise check {args.name} --hint` (then --hint 2, ...)")
    return 0 if report.passed else 1
