"""``minibert stability``: the experiment behind Mixout, at laptop scale.

Fine-tune the same pretrained model on a small task N times per strategy, changing only the seed (the
classifier's initialisation, the dropout masks, the order of the examples), and look at the spread of
the dev scores. A run *fails* when its dev score is at or below the majority-class baseline: it learned
nothing a constant answer would not. Dodge et al. (2020) and Lee et al. (2020) found that on small
data sets (RTE, MRPC, CoLA) a good fraction of BERT-large restarts fail; Mixout, bias-corrected Adam,
longer training and re-initialised top layers were proposed to make failures rarer. The model is
``--from``'s: a shipped model's name (``tiny``, the default, or ``mini``) or a model folder.

Strategies (comma-separated, each a name and an optional number):
    dropout[P]       dropout P (default 0.1): the usual fine-tuning
    mixoutP          Mixout with probability P (dropout off)
    mix, concat4     the classifier reads a scalar mix of all layers / the last four [CLS] vectors
    twostage         fine-tune on the intermediate task (nli) first
    freelb[A]        FreeLB with K=2, step alpha = A (default 0.1), no norm bound, init_mag 0.1
    smart[L]         SMART with lambda L (default 1)
    nobiascorr       Adam without bias correction (BERT's original optimiser)
    reinit[K]        re-initialise the pooler and the top K layers (default 1)
    long             twice the epochs
    random           no pretraining: the same architecture from random weights

Runs go to ``OUT/runs.jsonl`` one line each as they finish, so an interrupted experiment resumes
where it stopped (a run already on file is not repeated). The settings every run shares (task,
model, epochs, learning rate, batch size, training examples, length) are stored in
``OUT/settings.json`` with the first runs; a later command with other settings is refused rather
than mixing its runs with those on file. Workers are separate processes (one per core by default),
each with single-threaded BLAS: small matrices gain nothing from threads, and two processes each
wanting two threads on two cores slow each other down.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np

from minibert import distributed, outputs
from minibert.finetuning.cli import add_config_arguments, config_from_args

STRATEGY_PATTERN = re.compile(r"^(dropout|mixout|mix|concat4|twostage|freelb|smart|nobiascorr|reinit|long|random)"
                              r"(\d*\.?\d*)$")


def strategy_changes(name: str, base_epochs: float) -> dict:
    """FinetuneConfig fields for one strategy name; ValueError for an unknown or malformed name."""
    m = STRATEGY_PATTERN.match(name)
    if not m:
        raise ValueError(f"unknown strategy {name!r}; expected dropout[P], mixoutP, mix, concat4, twostage, "
                         "freelb[A], smart[L], nobiascorr, reinit[K], long or random")
    kind, number = m.group(1), m.group(2)
    value = float(number) if number else None
    if number and kind in ("mix", "concat4", "twostage", "nobiascorr", "long", "random"):
        raise ValueError(f"strategy {name!r}: {kind} takes no number")
    if kind == "dropout":
        return {"dropout": 0.1 if value is None else value}
    if kind == "mixout":
        if value is None or not 0 < value < 1:
            raise ValueError(f"strategy {name!r}: mixout needs a probability in (0, 1), e.g. mixout0.7")
        return {"mixout": value}
    if kind in ("mix", "concat4"):
        return {"layers": kind}
    if kind == "twostage":
        return {"intermediate": "nli"}
    if kind == "freelb":
        return {"freelb": (2, 0.1 if value is None else value, 0.0), "freelb_init_mag": 0.1}
    if kind == "smart":
        return {"smart": 1.0 if value is None else value}
    if kind == "nobiascorr":
        return {"correct_bias": False}
    if kind == "reinit":
        k = 1 if value is None else value
        if k != int(k) or k < 1:
            raise ValueError(f"strategy {name!r}: reinit needs a whole number of layers")
        return {"reinit_layers": int(k)}
    if kind == "long":
        return {"epochs": 2 * base_epochs}
    return {"random_init": True}


def _run_one(job):
    """Worker: one fine-tuning run -> a JSON-able record (an exception becomes a record with ``error``)."""
    from minibert.finetuning.trainer import Finetuner

    strategy, seed, config = job
    t0 = time.perf_counter()
    try:
        finetuner = _FINETUNERS.get(_cache_key(config))
        if finetuner is None:
            finetuner = _FINETUNERS[_cache_key(config)] = Finetuner(config, log=lambda s: None)
        finetuner.config = config
        result = finetuner.run()
        final = result.final
        return {"strategy": strategy, "seed": seed, "metric": final.metric, "dev": final.dev[final.metric],
                "test": final.test[final.metric], "majority": final.majority, "failed": final.failed,
                "seconds": time.perf_counter() - t0, "stages": [s.task for s in result.stages]}
    except Exception as exc:        # a crashed run is reported, not silently counted
        return {"strategy": strategy, "seed": seed, "error": f"{type(exc).__name__}: {exc}",
                "seconds": time.perf_counter() - t0}


_FINETUNERS: dict = {}   # per worker process: the tokenizer and the encoded data, reused across runs


def _cache_key(config):
    return (config.init, config.max_length, config.train_limit, config.task)


def read_runs(path, repair: bool = False) -> list[dict]:
    """The finished runs of a ``runs.jsonl`` (runs that ended in an error are left out).

    A last line without its newline is a record cut off by a crash: it is left out, and with
    ``repair`` removed from the file (atomically), so that the next run appended starts on a line of
    its own."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no runs file at {path}")
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
        if repair:
            outputs.write_file(path, text)
    records = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{i} is not valid JSON; move the file away to start over") from None
        if not isinstance(record, dict) or not {"strategy", "seed"} <= record.keys():
            raise ValueError(f"{path}:{i} is not a run record (strategy, seed, dev, ...)")
        if "error" not in record:
            records.append(record)
    return records


def report(runs_file, strategies: list[str] | None = None, figure=None, title: str | None = None) -> str | None:
    """The table of a finished experiment for ``strategies`` (all on file if None), and its swarm plot
    saved to ``figure`` if given; None when the file has no run of those strategies."""
    records = read_runs(runs_file)
    if strategies is None:
        strategies = list(dict.fromkeys(r["strategy"] for r in records))
    rows = summarise(records, strategies)
    if not rows:
        return None
    task, metric, majority = records[0]["task"], records[0]["metric"], records[0]["majority"]
    if figure is not None:
        plot_swarm(records, [r["strategy"] for r in rows], majority, title or task, figure)
    return format_table(rows, title or task, metric, majority)


SHIPPED_SETTINGS = [(task, size) for task in ("acceptability", "entailment") for size in (100, 200, 500)]


def report_settings(results, strategies: list[str], figures, prefix: str, settings=SHIPPED_SETTINGS,
                    log=print) -> int:
    """For every (task, size) setting, print the table of ``strategies`` from ``results/TASK-SIZE/runs.jsonl``
    and save its swarm plot as ``figures/PREFIX_stability_TASK-SIZE.png``; a setting without such runs gets
    a note instead. Returns the number of settings found (the lessons read the shipped experiments so)."""
    found = 0
    for task, size in settings:
        runs_file = Path(results) / f"{task}-{size}" / "runs.jsonl"
        if not runs_file.is_file():
            log(f"note: no stability runs for {task}-{size} ({runs_file} is absent); skipped")
            continue
        figure = Path(figures) / f"{prefix}_stability_{task}-{size}.png"
        table = report(runs_file, strategies, figure, f"{task}, N={size}")
        if table is None:
            log(f"note: {runs_file} has no runs of {', '.join(strategies)} yet; skipped")
            continue
        found += 1
        log(table + "\n")
        log(f"saved {figure}")
    return found


def summarise(records: list[dict], strategies: list[str]) -> list[dict]:
    rows = []
    for s in strategies:
        runs = [r for r in records if r["strategy"] == s and "error" not in r]
        if not runs:
            continue
        dev = np.array([r["dev"] for r in runs])
        rows.append({"strategy": s, "runs": len(runs), "mean": float(dev.mean()),
                     "std": float(dev.std(ddof=1)) if len(dev) > 1 else 0.0, "max": float(dev.max()),
                     "median": float(np.median(dev)), "failed": int(sum(r["failed"] for r in runs)),
                     "mean_not_failed": float(dev[[not r["failed"] for r in runs]].mean())
                     if not all(r["failed"] for r in runs) else float("nan"),
                     "seconds": float(np.median([r["seconds"] for r in runs]))})
    return rows


def format_table(rows: list[dict], task: str, metric: str, majority: float) -> str:
    lines = [f"{task}: dev {metric} over restarts (failed = at or below the majority baseline {majority:.3f})", "",
             "| strategy | runs | mean | std | median | max | failed | mean of the rest | s/run |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        rest = "-" if math.isnan(r["mean_not_failed"]) else f"{r['mean_not_failed']:.3f}"
        lines.append(f"| {r['strategy']} | {r['runs']} | {r['mean']:.3f} | {r['std']:.3f} | {r['median']:.3f} | "
                     f"{r['max']:.3f} | {r['failed']}/{r['runs']} | {rest} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def read_sweep(folder) -> list[tuple[dict, list[dict]]]:
    """The experiments of a sweep: every subfolder of ``folder`` with a ``settings.json`` and a
    ``runs.jsonl`` (one ``minibert stability`` command each), as (settings, runs) sorted by learning
    rate. They must share every setting but the learning rate."""
    found = []
    for sub in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        if (sub / SETTINGS).is_file() and (sub / "runs.jsonl").is_file():
            found.append((json.loads((sub / SETTINGS).read_text(encoding="utf-8")), read_runs(sub / "runs.jsonl")))
    if not found:
        raise FileNotFoundError(f"no stability experiments (settings.json + runs.jsonl) under {folder}")
    shared = {k: v for k, v in found[0][0].items() if k != "lr"}
    for settings, _ in found[1:]:
        other = sorted(k for k in shared if settings.get(k) != shared[k])
        if other:
            raise ValueError(f"the experiments under {folder} differ in {', '.join(other)}, not only in lr")
    return sorted(found, key=lambda e: e[0]["lr"])


def sweep_table(sweep: list[tuple[dict, list[dict]]], strategies: list[str]) -> str:
    """A learning-rate sweep in one table: a row per learning rate, a column per strategy, each cell
    the mean dev score over restarts and the failed runs."""
    settings, records = sweep[0]
    majority = records[0]["majority"]
    lines = [f"{settings['task']}, {settings['train_limit']} training examples, {settings['epochs']:g} epochs: "
             f"mean dev {records[0]['metric']} (failed runs) per peak learning rate (failed = at or below the "
             f"majority baseline {majority:.3f})", "",
             "| lr | " + " | ".join(strategies) + " |", "|---|" + "---:|" * len(strategies)]
    for settings, records in sweep:
        rows = {r["strategy"]: r for r in summarise(records, strategies)}
        cells = [f"{rows[s]['mean']:.3f} ({rows[s]['failed']}/{rows[s]['runs']})" if s in rows else "-"
                 for s in strategies]
        lines.append(f"| {settings['lr']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_sweep(sweep: list[tuple[dict, list[dict]]], strategies: list[str], title: str, path) -> Path:
    """Mean dev score (with its standard error) and the share of failed runs against the learning rate."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    score, failures = fig.subplots(1, 2)
    lrs = [settings["lr"] for settings, _ in sweep]
    for s in strategies:
        rows = [next((r for r in summarise(records, [s])), None) for _, records in sweep]
        kept = [(lr, r) for lr, r in zip(lrs, rows) if r is not None]
        if not kept:
            continue
        x = [lr for lr, _ in kept]
        score.errorbar(x, [r["mean"] for _, r in kept], yerr=[r["std"] / math.sqrt(r["runs"]) for _, r in kept],
                       marker="o", capsize=3, label=s)
        failures.plot(x, [r["failed"] / r["runs"] for _, r in kept], marker="o", label=s)
    score.axhline(sweep[0][1][0]["majority"], color="tab:red", linestyle="--", linewidth=1, label="majority")
    for ax, label in ((score, "mean dev score (+- standard error)"), (failures, "share of failed runs")):
        ax.set_xscale("log")
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel(label)
    failures.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120)
    return Path(path)


def swarm_offsets(values: np.ndarray, width: float = 0.35, resolution: float = 0.004) -> np.ndarray:
    """Horizontal offsets for a swarm plot: points closer than ``resolution`` share a bin and spread
    out sideways, alternating right and left, so every run stays visible."""
    order = np.argsort(values, kind="stable")
    offsets = np.zeros(len(values))
    bins = np.round(values[order] / resolution).astype(np.int64)
    start = 0
    while start < len(order):
        end = start
        while end < len(order) and bins[end] == bins[start]:
            end += 1
        k = end - start
        step = min(0.06, 2 * width / max(k, 1))
        for j in range(k):
            offsets[order[start + j]] = step * ((j + 1) // 2) * (1 if j % 2 else -1)
        start = end
    return offsets


def plot_swarm(records: list[dict], strategies: list[str], majority: float, title: str, path) -> Path:
    from matplotlib.figure import Figure

    # Wide enough for the title and the legend beside the axes, however few the strategies.
    fig = Figure(figsize=(max(0.9 * len(strategies) + 4, 7), 4.5), layout="constrained")
    ax = fig.add_subplot()
    for i, s in enumerate(strategies):
        runs = [r for r in records if r["strategy"] == s and "error" not in r]
        if not runs:
            continue
        dev = np.array([r["dev"] for r in runs])
        failed = np.array([r["failed"] for r in runs])
        x = i + swarm_offsets(dev)
        ax.scatter(x[~failed], dev[~failed], s=18, color="tab:blue", zorder=3, label="run")
        ax.scatter(x[failed], dev[failed], s=18, color="tab:red", zorder=3,
                   label="failed run (dev <= baseline)")
        ax.hlines(dev.mean(), i - 0.3, i + 0.3, color="black", linewidth=1, label="mean")
    ax.axhline(majority, color="tab:red", linestyle="--", linewidth=1,
               label=f"majority baseline {majority:.2f}")
    ax.set_xticks(range(len(strategies)), strategies, rotation=20)
    ax.set_ylabel("dev score")
    ax.set_title(title, fontsize=10)
    # Beside the axes: the failed runs sit near the baseline, where a legend inside would cover
    # them.
    handles, names = ax.get_legend_handles_labels()
    keep = {}                                   # one entry per label, whichever strategy drew it
    for h, n in zip(handles, names):
        keep.setdefault(n, h)
    ax.legend(keep.values(), keep.keys(), loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.savefig(path, dpi=120)
    return Path(path)


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--seeds", type=int, default=20, help="restarts per strategy (seeds 0..N-1)")
    parser.add_argument("--strategies", default="dropout,mixout0.7,mixout0.8,mixout0.9",
                        help="comma-separated: dropout[P], mixoutP, mix, concat4, twostage, freelb[A], smart[L], "
                             "nobiascorr, reinit[K], long, random")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: one per core)")
    parser.add_argument("--out", required=True,
                        help="folder for runs.jsonl, settings.json, table.md and stability.png; "
                             "the runs already there (same settings) are not repeated")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --out that holds other files (they are left alone)")


def run_experiment(args, log=print) -> tuple[list[dict], list[dict]]:
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if not strategies:
        raise ValueError("--strategies is empty")
    if len(set(strategies)) != len(strategies):
        raise ValueError(f"--strategies lists a strategy twice: {args.strategies}")
    if args.seeds < 1 or args.workers < 1:
        raise ValueError("--seeds and --workers must be positive")
    jobs = []
    for s in strategies:
        changes = strategy_changes(s, args.epochs)
        for seed in range(args.seeds):
            jobs.append((s, seed, config_from_args(args, seed=seed, **changes)))   # validates every config first

    out = outputs.claim(args.out, KIND, overwrite=getattr(args, "overwrite", False),
                        recognise=lambda folder: (folder / "runs.jsonl").is_file(), mark=False)
    runs_file = out / "runs.jsonl"
    settings = shared_settings(config_from_args(args, seed=0))     # before any strategy's changes
    check_settings(out, settings)
    outputs.mark_folder(out, KIND)
    records = read_runs(runs_file, repair=True) if runs_file.exists() else []
    if records and records[0].get("task", args.task) != args.task:
        raise ValueError(f"{runs_file} holds runs of task {records[0]['task']!r}, not {args.task!r}")
    outputs.write_file(out / SETTINGS, json.dumps(settings, indent=1, sort_keys=True) + "\n")
    outputs.write_marker(out, KIND, files=["runs.jsonl", SETTINGS, "table.md", "stability.png"])
    done = {(r["strategy"], r["seed"]) for r in records}
    todo = [j for j in jobs if (j[0], j[1]) not in done]
    workers = (f"{args.workers} worker(s)" if _MPI_EXECUTOR is None
               else f"{distributed.world().size - 1} MPI worker rank(s)")
    log(f"stability: {args.task}, {len(strategies)} strategies x {args.seeds} seeds = {len(jobs)} runs "
        f"({len(jobs) - len(todo)} already in {runs_file}), {workers}")

    t0 = time.perf_counter()
    try:
        _append_runs(runs_file, todo, args, records, log)
    except KeyboardInterrupt:
        log(f"interrupted: the runs that finished are in {runs_file}; the same command continues "
            "the experiment from there")
        raise
    log(f"{len(todo)} runs in {time.perf_counter() - t0:.0f} s")
    return records, strategies


def _append_runs(runs_file: Path, todo, args, records: list, log) -> None:
    with open(runs_file, "a", encoding="utf-8") as fh:
        for i, record in enumerate(_map(todo, args.workers), 1):
            record["task"] = args.task
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            if "error" in record:
                log(f"  run {record['strategy']} seed {record['seed']} FAILED WITH AN ERROR: {record['error']}")
            else:
                records.append(record)
                log(f"  [{i}/{len(todo)}] {record['strategy']:>11} seed {record['seed']:>3}: dev {record['dev']:.3f}"
                    f"{'  (failed)' if record['failed'] else ''}  {record['seconds']:.1f} s")


KIND = "stability"
SETTINGS = "settings.json"
# The FinetuneConfig fields every run of an experiment shares; the strategy and the seed vary.
SHARED = ("task", "init", "random_init", "epochs", "lr", "batch_size", "train_limit", "max_length",
          "warmup_fraction", "weight_decay", "max_grad_norm")


def shared_settings(config) -> dict:
    """The settings of an experiment: the shared fields of its base config (the model folder as an
    absolute path, with the sha256 of its weights, so retraining the model in place is noticed
    too)."""
    settings = {name: getattr(config, name) for name in SHARED}
    init = Path(config.init).resolve()
    settings["init"] = str(init)
    weights = init / "model.safetensors"
    settings["init_weights_sha256"] = outputs.sha256_file(weights) if weights.is_file() else None
    return settings


def check_settings(out: Path, settings: dict) -> None:
    """Refuse to add runs to ``out`` when the runs there were made with other settings."""
    file, runs = out / SETTINGS, out / "runs.jsonl"
    if not file.is_file():
        if runs.is_file() and runs.stat().st_size > 0:
            raise ValueError(f"{runs} holds runs whose settings were not recorded (an older "
                             "minibert made them), so new runs cannot be shown to match them; "
                             "give a new --out")
        return
    try:
        stored = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ValueError(f"{file} is not valid JSON; give a new --out (or move the folder "
                         "away)") from None
    differ = [f"{k} {stored.get(k)!r} there, {v!r} "
              "now" for k, v in settings.items() if stored.get(k) != v]
    if differ:
        raise ValueError(f"--out {out} holds runs made with other settings ({'; '.join(differ)}); "
                         "mixing them would make the table wrong: give a new --out, or the "
                         "settings of the runs on file")


# Set by main() on rank 0 of an mpiexec run: an mpi4py.futures executor whose jobs run on the other
# ranks. A run depends only on its strategy, seed and settings, so the records are the one-machine
# run's, whichever rank runs them.
_MPI_EXECUTOR = None


def _map(jobs, workers):
    if _MPI_EXECUTOR is not None:       # each rank runs one run at a time, handed out as ranks free up
        yield from _MPI_EXECUTOR.map(_run_one, jobs, unordered=True)
        return
    if workers == 1 or len(jobs) <= 1:
        yield from map(_run_one, jobs)
        return
    import multiprocessing

    saved = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    os.environ.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    try:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            yield from pool.imap_unordered(_run_one, jobs)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(args) -> int:
    """Under ``mpiexec -n N``, rank 0 runs the experiment and writes everything, and ranks 1..N-1 run
    the fine-tuning runs it hands out (``--workers`` then does not apply: start one rank per core)."""
    global _MPI_EXECUTOR
    comm = distributed.world()
    if comm.size == 1:
        return _main(args)
    from mpi4py.futures import MPICommExecutor
    with MPICommExecutor(comm.comm, root=0) as executor:
        if executor is None:            # a worker rank: served until rank 0 was done
            return 0
        _MPI_EXECUTOR = executor
        try:
            return _main(args)
        finally:
            _MPI_EXECUTOR = None


def _main(args) -> int:
    from minibert.finetuning import data as task_data

    info = task_data.task_info(args.task)
    records, strategies = run_experiment(args)
    majority = task_data.majority_score(info, "dev")
    rows = summarise(records, strategies)
    if not rows:
        raise ValueError("no run finished; see the errors above")
    table = format_table(rows, args.task, info.metric, majority)
    out = Path(args.out)
    outputs.write_file(out / "table.md", table + "\n")
    n = min(r["runs"] for r in rows)
    figure = out / "stability.png"
    outputs.write_file(figure, lambda tmp: plot_swarm(records, strategies, majority,
                                                      f"{args.task}: {n}+ restarts per "
                                                      "strategy", tmp))
    print("\n" + table)
    print(f"\ntable: {out / 'table.md'}\nfigure: {figure}")
    return 0 if all(r["runs"] == args.seeds for r in rows) else 1


