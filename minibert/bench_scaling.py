"""``minibert bench scaling``: what data parallelism buys here, and what N machines would give.

    minibert bench scaling [--preset mini] [--batch-size 32] [--seq-len 128] [--steps 10]
                           [--lines 4000]

Four runs of the same data-parallel pretraining step on bundled-corpus batches (so real,
non-padding tokens are counted), each in its own process(es):

    1 rank, 1 thread       the unit a machine of one core would be
    1 rank, 2 threads      this machine used by one process (NumPy/Numba threads)
    1 rank, 2 workers      the 2-rank step in one process, its ranks threads (``--workers 2``)
    2 ranks, 1 thread each this machine used by MPI (``mpiexec -n 2``; needs the ``mpi`` extra)

Each reports the median step time split into compute (forward + backward), waiting for the slower
rank, the Allreduce of the gradients, and the optimiser update; and real tokens per second of the
global batch. Then the arithmetic for N machines: the gradient bytes every rank sends per step and
the ring all-reduce cost model (``distributed.ring_allreduce_seconds``) on two typical networks,
with the measured compute time of one rank shared N ways.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from minibert import distributed as D
from minibert.validation import positive_int

DEFAULTS = {"preset": "mini", "batch_size": 32, "steps": 10, "lines": 4000, "dupe_factor": 1}
WARMUP_STEPS = 2
# (name, latency in seconds, bandwidth in bytes/s) of the links the N-machine arithmetic assumes: a
# common datacentre Ethernet, and an HPC interconnect. Typical figures, not measurements.
NETWORKS = (("10 Gb/s Ethernet", 30e-6, 10e9 / 8), ("100 Gb/s InfiniBand", 2e-6, 100e9 / 8))
MACHINES = (1, 2, 4, 8, 16, 32)
# (label, MPI ranks, threads per rank, workers per rank) of the measured runs, in the table's order.
RUNS = (("1 rank x 1 thread", 1, 1, 1), ("1 rank x 2 thread", 1, 2, 1), ("1 rank x 2 workers", 1, 1, 2),
        ("2 rank x 1 thread", 2, 1, 1))
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS")


def find_mpiexec() -> str | None:
    """The launcher beside this Python (where the mpich wheel installs it), else on PATH."""
    return shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


def child_env(threads: int) -> dict:
    """The environment of a measured run: its thread count, no launcher variables of ours, and
    Open MPI's permission to run as root (MPICH needs none)."""
    env = dict(os.environ)
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    for name in D.LAUNCHER_SIZE_VARIABLES + ("PMI_RANK", "PMI_FD"):
        env.pop(name, None)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


# ------------------------------------------------------------------------------------ worker
def worker(spec: dict) -> None:
    """One measured run, on every rank of it; rank 0 writes the medians to ``spec["result"]``."""
    from minibert.optim import AdamW, clip_grad_norm, triples_from_model
    from minibert.pretraining.data import PretrainingDataset
    from minibert.pretraining.trainer import build_model

    comm = D.world()
    data = PretrainingDataset(spec["data"])
    model = build_model(spec["preset"], data.vocab_size, spec["seed"], data.max_seq_length)
    D.broadcast_model(model, comm)
    model.train()
    workers = None
    if spec.get("workers", 1) > 1:
        workers = D.Workers(model, spec["workers"], spec["seed"])   # sets every worker's stream
    else:
        model.rng.bit_generator.state = D.rank_generator(spec["seed"], comm).bit_generator.state
    optimizer = AdamW(triples_from_model(model), lr=1e-4)
    grads = [g for _, g in model.named_grads()]
    order, B = data.order(spec["seed"]), spec["batch_size"]
    steps = []
    for k in range(WARMUP_STEPS + spec["steps"]):
        rows = order[(k * B) % (len(order) - B + 1):][:B]
        mask = data.arrays["attention_mask"][rows]
        totals = D.BatchTotals.of(data.arrays["masked_lm_weights"][rows], attention_mask=mask)
        timings = {}
        t0 = time.perf_counter()
        if workers is None:
            batch = data.batch(D.shard(rows, mask.sum(axis=1), comm.rank, comm.size), trim_padding=True)
            D.forward_backward(model, batch, totals, comm, timings=timings)
            t1 = time.perf_counter()
            clip_grad_norm(grads, 1.0)
        else:
            norm = workers.forward_backward(data.batch(rows, trim_padding=True), timings=timings)["grad_norm"]
            t1 = time.perf_counter()
            clip_grad_norm(grads, 1.0, norm=norm)
        optimizer.step()
        timings["update"] = time.perf_counter() - t1
        timings["step"] = time.perf_counter() - t0
        timings["tokens"] = totals.tokens
        steps.append(timings)
    steps = steps[WARMUP_STEPS:]
    # A step ends when the slowest rank's does: take each step's maximum over the ranks.
    per_rank = comm.gather(steps)
    if comm.is_root:
        slowest = [{key: max(r[i][key] for r in per_rank) for key in steps[0]}
                   for i in range(len(steps))]
        result = {key: statistics.median(s[key] for s in slowest) for key in steps[0]}
        result["tokens_per_s"] = sum(s["tokens"] for s in slowest) / sum(s["step"] for s in slowest)
        result["gradient_bytes"] = D.gradient_bytes(model)
        result["parameters"] = model.num_parameters()
        Path(spec["result"]).write_text(json.dumps(result))


# ------------------------------------------------------------------------------------ parent
def _prepare(tmp: Path, lines: int, seq_len: int, dupe_factor: int, seed: int, needed: int) -> Path:
    from minibert.paths import data_path
    from minibert.pretraining.data import DataConfig, PretrainingDataset, prepare
    from minibert.tokenization import BertTokenizer

    text = data_path("corpus", "train.txt").read_text(encoding="utf-8").splitlines()[:lines]
    (tmp / "corpus.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    prepare([tmp / "corpus.txt"], BertTokenizer(str(data_path("vocab.txt"))), tmp / "data",
            DataConfig(max_seq_length=seq_len, dupe_factor=dupe_factor), seed=seed,
            log=lambda *a: None)
    n = len(PretrainingDataset(tmp / "data"))
    if n < needed:
        raise ValueError(f"the first {lines} corpus lines give {n} instances, fewer than one batch "
                         f"of {needed}; raise --lines or lower --batch-size")
    return tmp / "data"


def _run(spec: dict, ranks: int, threads: int, mpiexec: str | None, tmp: Path, name: str) -> dict:
    spec = {**spec, "result": str(tmp / f"{name}.json")}
    command = [sys.executable, "-m", "minibert.bench_scaling", "--worker", json.dumps(spec)]
    if ranks > 1:
        command = [mpiexec, "-n", str(ranks)] + command
    done = subprocess.run(command, env=child_env(threads), capture_output=True, text=True,
                          timeout=3600)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"the {name} run failed ({' '.join(command[:4])} ...): {tail}")
    return json.loads(Path(spec["result"]).read_text())


def main(args) -> int:
    for key, value in DEFAULTS.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    for name in ("batch_size", "seq_len", "steps", "lines", "dupe_factor"):
        positive_int("--" + name.replace("_", "-"), getattr(args, name))
    if args.batch_size < 2:
        raise ValueError(f"--batch-size must be at least 2 to share it between 2 ranks, "
                         f"got {args.batch_size}")
    mpiexec = find_mpiexec()
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        mpiexec = None
    if mpiexec is None:
        raise ValueError(f"bench scaling runs 2 MPI ranks and needs the mpi extra: "
                         f"{D.INSTALL_HINT}")

    with tempfile.TemporaryDirectory(prefix="minibert-scaling-") as tmp:
        tmp = Path(tmp)
        data = _prepare(tmp, args.lines, args.seq_len, args.dupe_factor, args.seed,
                        args.batch_size)
        spec = {"data": str(data), "preset": args.preset, "seed": args.seed,
                "batch_size": args.batch_size, "steps": args.steps}
        print(f"bench scaling: {args.preset} preset, global batch {args.batch_size} x up to "
              f"{args.seq_len} tokens of the bundled corpus, {args.steps} timed steps after "
              f"{WARMUP_STEPS} warm-up; medians; {os.cpu_count()} cores (shared with anything else "
              f"running: repeat to see the spread)")
        runs = []
        for label, ranks, threads, workers in RUNS:
            print(f"  running {label} ...", flush=True)
            runs.append((label, _run({**spec, "workers": workers}, ranks, threads, mpiexec, tmp,
                                     label.replace(" ", ""))))
    report(runs, args.batch_size)
    return 0


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """Columns: the first left-aligned, the others right-aligned. (``minibert.bench`` has the same
    helper; this module cannot import it, as ``bench`` dispatches here.)"""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths]] + rows:
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths))))


def report(runs: list, batch_size: int) -> None:
    """The runs' table ((label, result) in the order of ``RUNS``), the gradient message, and the
    cost model for N machines."""
    print()
    rows = []
    base = runs[0][1]["tokens_per_s"]
    for label, r in runs:
        rows.append([label, f"{1e3 * r['step']:.0f}",
                     f"{1e3 * r['compute']:.0f}", f"{1e3 * r['wait']:.1f}",
                     f"{1e3 * r['allreduce']:.1f}", f"{1e3 * r['update']:.0f}",
                     f"{r['tokens_per_s']:,.0f}", f"{r['tokens_per_s'] / base:.2f}"])
    print_table(["run", "step ms", "compute", "wait", "allreduce", "update", "real tok/s",
                 "vs 1x1"], rows)

    by_label = dict(runs)
    one, threads, two = (by_label[label] for label in ("1 rank x 1 thread", "1 rank x 2 workers",
                                                         "2 rank x 1 thread"))
    nbytes = one["gradient_bytes"]
    reduced = nbytes / two["allreduce"] if two["allreduce"] > 0 else float("inf")
    print(f"\ngradient message: {one['parameters']:,} parameters x 4 bytes = {nbytes / 1e6:.1f} MB "
          f"per rank per step, one Allreduce. Here (2 ranks, shared memory) it took "
          f"{1e3 * two['allreduce']:.1f} ms: {reduced / 1e9:.2f} GB/s of gradient reduced. Two "
          f"workers in one process add their gradients in memory instead ({1e3 * threads['allreduce']:.1f}"
          f" ms), and wait for each other inside compute.")
    print("\nN machines, each one rank like the 1 x 1 run, global batch fixed: compute shrinks as\n"
          "1/N, the ring all-reduce costs 2(N-1) latencies + 2(N-1)/N x bytes / bandwidth (not\n"
          "overlapped with the backward):")
    tokens_per_step = one["tokens"]
    one_machine = tokens_per_step / (one["compute"] + one["update"])
    header = ["machines", "sequences/rank"]
    for name, _, _ in NETWORKS:
        header += [f"{name}: comm ms", "tok/s", "efficiency"]
    rows = []
    for n in MACHINES:
        if n > batch_size:
            break
        row = [str(n), f"{batch_size / n:g}"]
        for _, latency, bandwidth in NETWORKS:
            comm = D.ring_allreduce_seconds(nbytes, n, latency, bandwidth)
            step = one["compute"] / n + one["update"] + comm
            speed = tokens_per_step / step
            row += [f"{1e3 * comm:.1f}", f"{speed:,.0f}", f"{speed / (n * one_machine):.0%}"]
        rows.append(row)
    print_table(header, rows)
    print("\nefficiency = tokens/s over N times one machine's. The update (clip + AdamW) is not\n"
          "shared: every rank applies it to all the weights. Once comm ms nears compute / N, more\n"
          "machines only help with a larger global batch (and then the learning rate and warmup\n"
          "change: lesson 17).")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one measured run of `minibert bench scaling`")
    parser.add_argument("--worker", required=True, help="the run's specification as JSON")
    worker(json.loads(parser.parse_args().worker))
