"""Data parallelism: the communicator's single-process fallback is the identity, the shards'
renormalised gradients sum to the big batch's exactly (and a plain average does not), and, when the
`mpi` extra is installed, `mpiexec -n 2` reproduces one process with the same global batch."""
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from minibert import distributed as D
from minibert import optim
from minibert.config import BertConfig
from minibert.models import BertForPreTraining

try:
    import mpi4py  # noqa: F401
    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False


def find_mpiexec():
    """The launcher beside this Python (where the mpich wheel installs it), else on PATH."""
    return shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


MPIEXEC = find_mpiexec()
needs_mpi = pytest.mark.skipif(
    not (HAVE_MPI4PY and MPIEXEC), reason='needs the mpi extra: pip install "minibert[mpi]"')


def mpi_env():
    """One BLAS/Numba thread per rank (2 ranks on 2 cores), and permission to run as root: CI runs
    as root, which MPICH accepts and Open MPI refuses unless told."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[name] = "1"
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    for name in D.LAUNCHER_SIZE_VARIABLES + ("PMI_RANK", "PMI_FD"):
        env.pop(name, None)
    return env


def tiny_config(**overrides):
    return BertConfig.preset("tiny", vocab_size=300, max_position_embeddings=64,
                             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **overrides)


def random_batch(rng, B=8, T=24, P=5, V=300):
    """Sequences of different lengths with different numbers of real predictions each (as in BERT's
    data), so the shards' own normalisers differ from the global batch's."""
    lengths = rng.integers(8, T + 1, B)
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int64)
    weights = (rng.random((B, P)) < 0.6).astype(np.float32)
    weights[0] = 1.0                      # at least one real prediction, and unequal shard counts
    return {"input_ids": rng.integers(5, V, (B, T)) * mask,
            "token_type_ids": np.zeros((B, T), np.int64), "attention_mask": mask,
            "masked_lm_positions": rng.integers(1, 8, (B, P)),
            "masked_lm_ids": rng.integers(5, V, (B, P)), "masked_lm_weights": weights,
            "next_sentence_labels": rng.integers(0, 2, B)}


def grads_of(model):
    return {n: g.copy() for n, g in model.named_grads()}


def max_error(a, b):
    """Largest difference over all gradients, relative to the largest gradient entry (some gradients
    are exactly zero in exact arithmetic, e.g. the key bias's: per-tensor ratios would be noise)."""
    scale = max(np.abs(g).max() for g in b.values())
    return max(np.abs(a[n] - b[n]).max() for n in b) / scale


# ------------------------------------------------------------------------------ without MPI
def test_world_without_a_launcher_is_a_single_process(monkeypatch):
    for name in D.LAUNCHER_SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(D, "_WORLD", None)
    comm = D.world()
    assert isinstance(comm, D.SingleProcess)
    assert (comm.rank, comm.size, comm.is_root) == (0, 1, True)
    g = np.arange(6, dtype=np.float32).reshape(2, 3)
    comm.allreduce_sum([g])
    comm.broadcast_arrays([g])
    assert np.array_equal(g, np.arange(6, dtype=np.float32).reshape(2, 3))
    assert comm.gather({"a": 1}) == [{"a": 1}] and comm.bcast(5) == 5


def test_launcher_without_mpi4py_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setattr(D, "_WORLD", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)          # import mpi4py now raises ImportError
    with pytest.raises(D.MPIUnavailable,
                       match=r"2 ranks.*mpi4py is not installed.*minibert\[mpi\]"):
        D.world()


def test_flat_buffer_round_trip_and_dtype_check():
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, dtype=np.float32)
    flat = D.FlatBuffer()
    buffer = flat.pack([a, b])
    assert buffer.shape == (10,) and np.array_equal(buffer[:6], np.arange(6))
    buffer *= 2                           # what an Allreduce(SUM) over 2 equal ranks does
    flat.unpack([a, b])
    assert np.array_equal(a, 2 * np.arange(6).reshape(2, 3)) and np.array_equal(b, np.full(4, 2.0))
    assert flat.pack([a, b]) is buffer    # reused, not reallocated, step after step
    with pytest.raises(ValueError, match="share a dtype"):
        flat.pack([a, b.astype(np.float64)])


def test_shards_cover_the_batch_in_order_with_equal_shares_of_tokens():
    idx = np.arange(10, 22)
    parts = [D.shard(idx, np.full(12, 50), r, 3) for r in range(3)]     # equal lengths: equal counts
    assert np.array_equal(np.concatenate(parts), idx) and [len(p) for p in parts] == [4, 4, 4]
    lengths = np.array([120, 110, 100, 90, 20, 20, 20, 20, 20, 20, 20, 20])          # 580 real tokens
    parts = [D.shard(idx, lengths, r, 2) for r in range(2)]
    assert np.array_equal(np.concatenate(parts), idx) and [len(p) for p in parts] == [3, 9]   # 330 / 250
    assert [len(D.shard(idx, lengths, r, 3)) for r in range(3)] == [2, 2, 8]     # 230 / 190 / 160
    # every rank gets a row, even where the tokens would leave one without
    for one_long in ([1000, 1, 1], [1, 1, 1000]):
        assert [len(D.shard(idx[:3], np.array(one_long), r, 3)) for r in range(3)] == [1, 1, 1]
    with pytest.raises(ValueError, match="at least 4"):
        D.shard(np.arange(3), np.ones(3), 0, 4)
    with pytest.raises(ValueError, match="one length per row"):
        D.shard(np.arange(3), np.ones(2), 0, 2)


def test_rank_generators_one_process_unchanged_ranks_distinct():
    class Comm:
        def __init__(self, rank, size):
            self.rank, self.size = rank, size
    assert D.rank_generator(7, Comm(0, 1)).random() == np.random.default_rng(7).random()
    draws = {D.rank_generator(7, Comm(r, 2)).random() for r in range(2)}
    draws |= {D.rank_generator(7, Comm(r, 3)).random() for r in range(3)}
    assert len(draws) == 5                                     # a pure function of (seed, rank, N)
    assert D.rank_generator(7, Comm(1, 2)).random() == D.rank_generator(7, Comm(1, 2)).random()


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_renormalised_shard_gradients_sum_to_the_big_batch(dtype, tol):
    batch = random_batch(np.random.default_rng(0))
    model = BertForPreTraining(tiny_config(), np.random.default_rng(1)).astype(dtype)
    model.zero_grad()
    out = model.forward(**{k: batch[k] for k in D.BATCH_KEYS})
    model.backward()
    full, full_loss = grads_of(model), float(out.loss)

    totals = D.BatchTotals.of(batch["masked_lm_weights"], dtype)
    summed = {n: np.zeros_like(g) for n, g in full.items()}
    averaged = {n: np.zeros_like(g) for n, g in full.items()}
    loss, shard_counts = 0.0, []
    for r in range(2):
        part = {k: v[D.shard(np.arange(8), batch["attention_mask"].sum(axis=1), r, 2)] for k, v in batch.items()}
        shard_counts.append(part["masked_lm_weights"].sum())
        model.zero_grad()
        model.forward(**{k: part[k] for k in D.BATCH_KEYS})
        model.backward()                                      # the shard's own loss: its own counts
        for n, g in model.named_grads():
            averaged[n] += g / 2
        model.zero_grad()
        out = model.forward(**{k: part[k] for k in D.BATCH_KEYS})
        share = D.renormalise(part["masked_lm_weights"], totals, out)
        loss += share.mlm_part + share.nsp_part
        model.backward(dmlm_loss=share.dmlm_loss, dnsp_loss=share.dnsp_loss)
        for n, g in model.named_grads():
            summed[n] += g
    assert shard_counts[0] != shard_counts[1]
    assert loss == pytest.approx(full_loss, rel=tol)
    assert max_error(summed, full) < tol
    assert max_error(averaged, full) > 1e-3                  # the plain average is another gradient


def test_renormalise_needs_a_forward_with_labels():
    model = BertForPreTraining(tiny_config(), np.random.default_rng(1))
    batch = random_batch(np.random.default_rng(0))
    out = model.forward(batch["input_ids"], attention_mask=batch["attention_mask"])
    with pytest.raises(RuntimeError, match="forward\\(\\) with labels"):
        D.renormalise(batch["masked_lm_weights"], D.BatchTotals.of(batch["masked_lm_weights"]), out)


def test_ring_cost_model():
    assert D.ring_allreduce_seconds(1e6, 1, 1e-3, 1e9) == 0.0
    assert D.ring_allreduce_seconds(1e6, 2, 0.0, 1e9) == pytest.approx(1e-3)      # half sent, twice
    assert D.ring_allreduce_seconds(1e6, 2, 1e-5, 1e9) == pytest.approx(1e-3 + 2e-5)
    many = D.ring_allreduce_seconds(1e6, 1000, 0.0, 1e9)
    assert 1.99e-3 < many < 2e-3          # the bandwidth term does not grow with N


def test_gradient_bytes_counts_tied_weights_once():
    model = BertForPreTraining(tiny_config(), np.random.default_rng(1))
    assert D.gradient_bytes(model) == 4 * model.num_parameters()


def test_share_and_gather_restore_the_order():
    items = list(range(11))

    class Root:
        rank, size = 0, 3

        def gather(self, obj, root=0):
            return [[x * 10 for x in D.share(items, type("C", (), {"rank": r, "size": 3}))]
                    for r in range(3)]
    assert D.share(items, type("C", (), {"rank": 1, "size": 3})) == [1, 4, 7, 10]
    assert D.gather_shares(None, Root()) == [x * 10 for x in items]


# ------------------------------------------------------------------------------ with MPI
WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from minibert import distributed as D
    from minibert.config import BertConfig
    from minibert.models import BertForPreTraining
    from minibert.optim import AdamW, clip_grad_norm, triples_from_model
    sys.path.insert(0, sys.argv[2])
    from test_distributed import random_batch, tiny_config

    comm = D.world()
    model = BertForPreTraining(tiny_config(), np.random.default_rng(1))
    D.broadcast_model(model, comm)
    opt = AdamW(triples_from_model(model), lr=1e-3, weight_decay=0.01)
    data_rng = np.random.default_rng(2)             # the same global batches on every rank
    losses = []
    for step in range(3):
        batch = random_batch(data_rng)
        totals = D.BatchTotals.of(batch["masked_lm_weights"])
        lengths = batch["attention_mask"].sum(axis=1)
        part = {k: v[D.shard(np.arange(len(v)), lengths, comm.rank, comm.size)] for k, v in batch.items()}
        record = D.forward_backward(model, part, totals, comm)
        clip_grad_norm([g for _, g in model.named_grads()], 1.0)
        opt.step()
        losses.append(record["loss"])
    weights = {n: p.copy() for n, p in model.named_parameters()}
    checksums = comm.gather(float(sum(np.float64(p).sum() for p in weights.values())))
    if comm.is_root:
        np.savez(sys.argv[1] + ".npz", **weights)
        with open(sys.argv[1] + ".json", "w") as f:
            json.dump({"losses": losses, "checksums": checksums, "size": comm.size}, f)
""")


@needs_mpi
def test_two_ranks_reproduce_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    tests_dir = str(Path(__file__).parent)
    env = mpi_env()
    subprocess.run([sys.executable, str(script), str(tmp_path / "one"), tests_dir], env=env,
                   check=True, timeout=300)
    result = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(script), str(tmp_path / "two"),
                             tests_dir], env=env, timeout=300, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("one", "two"))
    assert (one["size"], two["size"]) == (1, 2)
    assert two["checksums"][0] == two["checksums"][1]          # the ranks' weights stay identical
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    w1, w2 = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    for name in w1.files:
        np.testing.assert_allclose(w2[name], w1[name], rtol=0, atol=1e-5, err_msg=name)


TRAINER_WORKER = textwrap.dedent("""
    import json, signal, sys
    import numpy as np
    from minibert import checkpoint
    from minibert import distributed as D
    from minibert.config import BertConfig
    from minibert.models import BertForPreTraining
    from minibert.pretraining.data import PretrainingDataset
    from minibert.pretraining.trainer import Trainer, TrainConfig

    data_dir, out = sys.argv[1], sys.argv[2]
    comm = D.world()
    data = PretrainingDataset(data_dir)

    def trainer(folder, dropout, steps=5):
        config = BertConfig.preset("tiny", vocab_size=data.vocab_size, max_position_embeddings=64,
                                   hidden_dropout_prob=dropout,
                                   attention_probs_dropout_prob=dropout)
        model = BertForPreTraining(config, np.random.default_rng(3))
        train = TrainConfig(steps=steps, batch_size=8, lr=2e-3, seed=3, save_every=100,
                            log_every=100)
        return Trainer(model, data, train, f"{out}/{folder}", log=lambda *a: None, comm=comm)

    def losses(folder):
        return [json.loads(line)["loss"] for line in open(f"{out}/{folder}/metrics.jsonl")]

    result = {"size": comm.size}
    exact = trainer("exact", 0.0)
    exact.train()
    if comm.size == 1:
        # the other N's checkpoint is refused, with the reason and the command that works
        try:
            trainer("resumed", 0.1).resume(f"{sys.argv[3]}/interrupted/checkpoint-000003")
        except ValueError as exc:
            result["refused"] = str(exc)
    else:
        trainer("full", 0.1).train()
        # rank 0 alone sees a signal during step 2: every rank stops after step 3 and saves it
        first = trainer("interrupted", 0.1)
        real_step = first.train_step

        def step_with_a_signal(batch):
            record = real_step(batch)
            if first.step == 2 and comm.rank == 0:
                first.stop.signum = signal.SIGINT
            return record
        first.train_step = step_with_a_signal
        first.train()
        second = trainer("interrupted", 0.1)
        second.resume(f"{out}/interrupted/checkpoint-000003")
        second.train()
        result["stopped_at"] = first.step
    if comm.is_root:
        for folder in ("exact", "full", "interrupted"):
            try:
                result[folder] = losses(folder)
            except FileNotFoundError:
                pass
        weights = checkpoint.load_weights(f"{out}/exact/checkpoint-000005")
        np.savez(f"{out}/exact.npz", **weights)
        with open(f"{out}/result.json", "w") as f:
            json.dump(result, f)
""")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from minibert.paths import data_path
    from minibert.pretraining.data import DataConfig, prepare
    from minibert.tokenization import BertTokenizer

    root = tmp_path_factory.mktemp("distributed")
    lines = data_path("corpus", "train.txt").read_text(encoding="utf-8").splitlines()[:1500]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    prepare([root / "corpus.txt"], BertTokenizer(str(data_path("vocab.txt"))), root / "data",
            DataConfig(max_seq_length=64, max_predictions_per_seq=10, dupe_factor=1), seed=1,
            log=lambda *a: None)
    return root / "data"


@needs_mpi
def test_pretraining_on_two_ranks_is_the_one_process_run_and_resumes_exactly(small_data, tmp_path):
    script = tmp_path / "trainer_worker.py"
    script.write_text(TRAINER_WORKER)
    env = mpi_env()
    two = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(script), str(small_data),
                          str(tmp_path / "two")], env=env, timeout=300, capture_output=True,
                         text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, str(script), str(small_data), str(tmp_path / "one"),
                          str(tmp_path / "two")], env=env, timeout=300, capture_output=True,
                         text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    r1, r2 = (json.loads((tmp_path / k / "result.json").read_text()) for k in ("one", "two"))

    # dropout off: the same losses and weights as one process with the same global batch
    np.testing.assert_allclose(r2["exact"], r1["exact"], rtol=1e-5)
    w1, w2 = np.load(tmp_path / "one" / "exact.npz"), np.load(tmp_path / "two" / "exact.npz")
    for name in w1.files:
        np.testing.assert_allclose(w2[name], w1[name], rtol=0, atol=1e-5, err_msg=name)
    # rank 0 alone wrote the run's files
    assert sorted(p.name for p in (tmp_path / "two" / "exact").iterdir()) == [
        "checkpoint-000005", "latest", "metrics.jsonl", "pretraining.png"]
    # a signal seen by one rank stops all of them after the same step; the resumed run (per-rank
    # dropout streams restored) continues exactly as the uninterrupted one
    assert r2["stopped_at"] == 3
    assert r2["interrupted"] == r2["full"] and len(r2["full"]) == 5
    assert "2 rank(s) and this run has 1" in r1["refused"] and "mpiexec -n 2" in r1["refused"]


@needs_mpi
def test_stability_and_probe_spread_over_ranks_give_the_one_machine_results(tmp_path):
    from minibert import cli

    stability = ["stability", "--task", "entailment", "--seeds", "2", "--strategies", "dropout",
                 "--train-limit", "48", "--epochs", "1"]
    probe = ["probe", "--model", "random", "--only", "agreement,negation", "--limit", "2"]
    assert cli.main(stability + ["--workers", "1", "--out", str(tmp_path / "st1")]) == 0
    assert cli.main(probe + ["--out", str(tmp_path / "pr1")]) == 0
    env = mpi_env()
    for command, out in ((stability, "st2"), (probe, "pr2")):
        done = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "minibert.cli", *command,
                               "--out", str(tmp_path / out)], env=env, timeout=300,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]

    def runs(folder):
        records = [json.loads(line) for line in (tmp_path / folder / "runs.jsonl").open()]
        return sorted((r["strategy"], r["seed"], r["dev"], r["test"]) for r in records)
    assert runs("st2") == runs("st1") and len(runs("st1")) == 2
    one, two = (json.loads((tmp_path / f / "results.json").read_text()) for f in ("pr1", "pr2"))
    assert set(two["seconds"]) == {"agreement", "negation"}
    one.pop("seconds"), two.pop("seconds")
    assert two == one


# ------------------------------------------------------------------------------ bench scaling
def scaling_args(**overrides):
    import argparse
    args = dict(preset="tiny", batch_size=4, seq_len=32, steps=1, lines=400, dupe_factor=None,
                seed=0)
    return argparse.Namespace(**{**args, **overrides})


def test_bench_scaling_report_arithmetic(capsys):
    from minibert import bench_scaling

    run = {"step": 0.2, "compute": 0.15, "wait": 0.01, "allreduce": 0.02, "update": 0.02,
           "tokens": 2000, "tokens_per_s": 10_000.0, "gradient_bytes": 4_000_000,
           "parameters": 1_000_000}
    bench_scaling.report([(label, run) for label, *_ in bench_scaling.RUNS], batch_size=8)
    out = capsys.readouterr().out
    assert "1,000,000 parameters x 4 bytes = 4.0 MB" in out
    # 2 machines, 4 sequences each, on 10 Gb/s: 2 x 30 us + 4 MB / 1.25 GB/s = 3.26 ms
    assert re.search(r"\n2\s+4\s+3\.3\s", out), out
    assert "\n16 " not in out                      # no more machines than sequences in the batch


def test_bench_scaling_without_the_extra_is_a_clear_error(monkeypatch):
    from minibert import bench_scaling

    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ValueError, match=r"needs the mpi extra: pip install"):
        bench_scaling.main(scaling_args())


@needs_mpi
def test_bench_scaling_measures_one_and_two_ranks(capsys):
    from minibert import bench_scaling

    assert bench_scaling.main(scaling_args()) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("1 rank x", "2 rank x"))]
    assert len(rows) == 4 and rows[2].startswith("1 rank x 2 workers")
    two = rows[3].split()
    assert float(two[-2].replace(",", "")) > 0 and float(two[8]) > 0     # tokens/s, allreduce ms
    assert "machines  sequences/rank" in out


# ------------------------------------------------------------------------------ workers (threads)
def dropout_config():
    return BertConfig.preset("tiny", vocab_size=300, max_position_embeddings=64)      # dropout 0.1


def test_replica_shares_the_weights_and_nothing_else():
    model = BertForPreTraining(dropout_config(), np.random.default_rng(1))
    batch = random_batch(np.random.default_rng(0))
    model.forward(**{k: batch[k] for k in D.BATCH_KEYS})             # the model holds its caches
    twin = model.replica()
    for (name, p), (_, q) in zip(model.named_parameter_objects(), twin.named_parameter_objects()):
        assert q.data is p.data and q.grad is not p.grad and not q.grad.any(), name
    assert twin.cls.predictions.decoder.weight is twin.bert.embeddings.word_embeddings.weight   # still tied
    assert twin.rng is not model.rng and twin.rng.bit_generator.state == model.rng.bit_generator.state
    assert twin.bert.embeddings.dropout.rng is twin.rng                # one generator for the whole copy
    assert all(m.cache is None for m in twin.modules())
    twin.forward(**{k: batch[k] for k in D.BATCH_KEYS})
    twin.backward()
    assert not any(g.any() for _, g in model.named_grads())           # its gradients are its own
    model.backward()                                                  # and the model's caches are intact
    assert any(g.any() for _, g in model.named_grads())


def test_workers_are_the_ranks_run_one_after_another():
    """Two steps with dropout: the threads' gradients and losses are, to the bit, those of rank 0 and
    rank 1 run one after the other with their own streams and summed in rank order."""
    class Comm:
        def __init__(self, rank, size):
            self.rank, self.size = rank, size
    batch = random_batch(np.random.default_rng(0))
    shards, totals = D.split_batch(batch, 2)
    assert [s["input_ids"].shape[1] for s in shards] == [22, 13]       # each trimmed to its longest
    workers = D.Workers(BertForPreTraining(dropout_config(), np.random.default_rng(1)), 2, seed=5)
    ranks = [BertForPreTraining(dropout_config(), np.random.default_rng(1)) for _ in range(2)]
    for r, model in enumerate(ranks):
        model.rng.bit_generator.state = D.rank_generator(5, Comm(r, 2)).bit_generator.state
    for _ in range(2):
        losses = workers.forward_backward(batch)
        parts = [D.shard_forward_backward(model, shard, totals) for model, shard in zip(ranks, shards)]
        expected = dict(ranks[0].named_grads())
        for name, g in ranks[1].named_grads():
            expected[name] = expected[name] + g
        for name, g in workers.models[0].named_grads():
            np.testing.assert_array_equal(g, expected[name], err_msg=name)
        mlm = np.float32(parts[0].mlm_part) + np.float32(parts[1].mlm_part)
        nsp = np.float32(parts[0].nsp_part) + np.float32(parts[1].nsp_part)
        norm = optim.global_norm(optim.square_sums(g.reshape(-1)) for g in expected.values())
        assert losses == {"loss": float(mlm) + float(nsp), "mlm_loss": float(mlm), "nsp_loss": float(nsp),
                          "grad_norm": norm}
    assert [s for s in workers.rng_states()] == [m.rng.bit_generator.state for m in ranks]


@pytest.mark.parametrize("n, max_norm", [(2, 1e-3), (2, 1e3), (3, 1e-3)])     # clipped, not clipped
def test_workers_norm_and_update_are_the_serial_ones_to_the_bit(monkeypatch, n, max_norm):
    """The threads' gradient sum and its norm, then clipping and AdamW with each thread on its share
    of the weights, give the bits of one thread, over two steps. Small chunks and no size threshold
    put cuts inside the weight matrices."""
    from minibert import kernels
    monkeypatch.setattr(optim, "CHUNK", 1000)
    monkeypatch.setattr(optim, "PARALLEL_FROM", 0)
    batch = random_batch(np.random.default_rng(0))
    runs, optimizers = [], []
    for cores in (n, 1):
        monkeypatch.setattr(kernels, "cores", lambda cores=cores: cores)
        runs.append(D.Workers(BertForPreTraining(dropout_config(), np.random.default_rng(1)), n, seed=5))
        optimizers.append(optim.AdamW(optim.triples_from_model(runs[-1].models[0]), lr=1e-3))
    threaded, serial = runs
    assert any(lo % 1000 == 0 < lo for share in threaded._grad_shares for _, lo, _ in share)
    for lr in (1e-3, 5e-4):
        monkeypatch.setattr(kernels, "cores", lambda: n)
        norm = threaded.forward_backward(batch)["grad_norm"]
        assert optim.clip_grad_norm(optimizers[0].grads, max_norm, norm=norm) == norm
        optimizers[0].step(lr)
        monkeypatch.setattr(kernels, "cores", lambda: 1)
        serial.forward_backward(batch)
        assert norm == optim.clip_grad_norm(optimizers[1].grads, max_norm)
        optimizers[1].step(lr)
        a, b = optimizers
        for x, y, name in zip(a.params + a.grads + a.m + a.v, b.params + b.grads + b.m + b.v, a.names * 4):
            np.testing.assert_array_equal(x, y, err_msg=name)


def test_on_threads_runs_every_item_and_raises_the_first_error():
    from minibert import kernels
    assert kernels.on_threads(lambda x: x * x, range(5)) == [0, 1, 4, 9, 16]
    done = []

    def work(x):
        done.append(x)
        if x in (1, 3):
            raise ValueError(f"item {x}")
        return x
    with pytest.raises(ValueError, match="item 1"):
        kernels.on_threads(work, range(4))
    assert sorted(done) == [0, 1, 2, 3]                 # the others ran to the end


def test_on_threads_called_from_an_item_runs_its_items_in_turn():
    """The pool's threads are busy with the outer items: an inner call waiting for them would never end."""
    from minibert import kernels
    seen = []

    def outer(x):
        inner = kernels.on_threads(lambda y: (threading.get_ident(), 10 * x + y), range(3))
        seen.append({ident for ident, _ in inner} == {threading.get_ident()})
        return [v for _, v in inner]
    done = []
    runner = threading.Thread(target=lambda: done.append(kernels.on_threads(outer, range(3))), daemon=True)
    runner.start()
    runner.join(20)
    assert not runner.is_alive(), "a call of on_threads from inside an item waited forever"
    assert done == [[[0, 1, 2], [10, 11, 12], [20, 21, 22]]] and seen == [True] * 3
    assert kernels.on_threads(lambda y: y + 1, range(4)) == [1, 2, 3, 4]     # the pool grew to 3 threads


def _in_a_forked_child(work):
    """Run work() in a forked child; fail if it does not return True within 20 s."""
    pid = os.fork()
    if pid == 0:
        os._exit(0 if work() else 1)
    for _ in range(400):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child waited on its parent's pool threads")
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_on_threads_and_workers_in_a_forked_child_make_their_own_pool():
    """A child forked after the pool was made has none of its threads: it must not wait on them."""
    from minibert import kernels
    kernels.on_threads(abs, [-1, -2])                   # the parent's pool exists
    _in_a_forked_child(lambda: kernels.on_threads(abs, [-1, -2, -3]) == [1, 2, 3])
    batch = random_batch(np.random.default_rng(0))
    workers = D.Workers(BertForPreTraining(tiny_config(), np.random.default_rng(1)), 2, seed=0)
    loss = workers.forward_backward(batch)["loss"]      # in the parent, with the pool's thread
    workers.models[0].zero_grad()
    _in_a_forked_child(lambda: workers.forward_backward(batch)["loss"] == loss)


def test_workers_without_dropout_give_the_one_process_gradient():
    batch = random_batch(np.random.default_rng(0))
    model = BertForPreTraining(tiny_config(), np.random.default_rng(1))
    model.zero_grad()
    out = model.forward(**{k: batch[k] for k in D.BATCH_KEYS})
    model.backward()
    workers = D.Workers(BertForPreTraining(tiny_config(), np.random.default_rng(1)), 3, seed=0)
    losses = workers.forward_backward(batch)
    assert losses["loss"] == pytest.approx(float(out.loss), rel=2e-6)
    assert max_error(grads_of(workers.models[0]), grads_of(model)) < 2e-6


def test_workers_refuse_bad_arguments_and_survive_a_failing_shard():
    model = BertForPreTraining(tiny_config(), np.random.default_rng(1))
    for n in (0, 1.5, True):
        with pytest.raises(ValueError, match="number of workers must be a positive integer"):
            D.Workers(model, n, seed=0)
    batch = random_batch(np.random.default_rng(0))
    workers = D.Workers(model, 2, seed=0)
    with pytest.raises(ValueError, match="batch of 1 sequences cannot be shared by 2 ranks"):
        workers.forward_backward({k: v[:1] for k, v in batch.items()})
    bad = dict(batch, input_ids=batch["input_ids"].copy())
    bad["input_ids"][6] = 1000                              # in worker 1's shard: beyond the vocabulary
    with pytest.raises(ValueError, match="input_ids"):
        workers.forward_backward(bad)
    losses = workers.forward_backward(batch)               # the workers carry on
    assert np.isfinite(losses["loss"])


def test_single_threaded_sets_one_thread_and_restores_the_settings():
    from minibert import kernels
    from minibert.kernels import numba_kernels

    blas = kernels._openblas_threads()
    before = (numba_kernels.SERIAL_UP_TO, blas[0]() if blas else None)
    with pytest.raises(RuntimeError, match="inside"):
        with kernels.single_threaded():
            assert numba_kernels.SERIAL_UP_TO == sys.maxsize                 # every kernel serial
            assert blas is None or blas[0]() == 1
            raise RuntimeError("an error inside")
    assert (numba_kernels.SERIAL_UP_TO, blas[0]() if blas else None) == before


def test_pretraining_with_workers_records_its_ranks_and_resumes_exactly(small_data, tmp_path):
    from minibert.pretraining.data import PretrainingDataset
    from minibert.pretraining.trainer import Trainer, TrainConfig

    data = PretrainingDataset(small_data)

    def trainer(folder, workers):
        config = BertConfig.preset("tiny", vocab_size=data.vocab_size, max_position_embeddings=64)
        train = TrainConfig(steps=4, batch_size=8, lr=2e-3, seed=3, save_every=2, log_every=100)
        return Trainer(BertForPreTraining(config, np.random.default_rng(3)), data, train, tmp_path / folder,
                       log=lambda *a: None, workers=workers)

    def losses(folder):
        return [json.loads(line)["loss"] for line in open(tmp_path / folder / "metrics.jsonl")]

    full = trainer("full", 2)
    full.train()
    state = json.loads((tmp_path / "full" / "checkpoint-000002" / "training_state.json").read_text())
    assert state["world_size"] == 2 and len(state["rank_rng_states"]) == 2
    resumed = trainer("resumed", 2)
    resumed.resume(tmp_path / "full" / "checkpoint-000002")
    resumed.train()
    assert losses("resumed") == losses("full")[2:]
    for (name, a), (_, b) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    with pytest.raises(ValueError, match=r"2 rank\(s\) and this run has 1.*--workers 2"):
        trainer("one", 1).resume(tmp_path / "full" / "checkpoint-000002")
    with pytest.raises(ValueError, match="cannot be shared by 9 workers"):
        trainer("nine", 9)


def test_world_size_names_who_shares_the_batch():
    from minibert.pretraining.trainer import world_size

    assert world_size(8, 1, 1) == 1 and world_size(8, 2, 1) == 2 and world_size(8, 1, 4) == 4
    with pytest.raises(ValueError, match="--batch-size 8 cannot be shared by 9 ranks"):
        world_size(8, 9, 1)
    with pytest.raises(ValueError, match="--batch-size 8 cannot be shared by 9 workers"):
        world_size(8, 1, 9)
    with pytest.raises(ValueError, match="--workers 2 is for one process"):
        world_size(8, 2, 2)


@needs_mpi
def test_workers_run_is_the_mpiexec_run(tmp_path):
    """`minibert pretrain --workers 2` and `mpiexec -n 2 minibert pretrain`, dropout on: the same
    losses and weights to the bit, and each resumes the other's checkpoint."""
    from minibert.cli import main
    from minibert.paths import data_path

    lines = data_path("corpus", "train.txt").read_text(encoding="utf-8").splitlines()[:1500]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    common = ["pretrain", "--corpus", str(corpus), "--max-seq-length", "64", "--dupe-factor", "1",
              "--batch-size", "8", "--eval-every", "100", "--save-every", "2"]
    mpi = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "minibert.cli", *common, "--steps", "3",
                          "--out", str(tmp_path / "mpi")], env=mpi_env(), timeout=300, capture_output=True,
                         text=True)
    assert mpi.returncode == 0, mpi.stderr[-3000:]
    assert main(common + ["--steps", "3", "--workers", "2", "--out", str(tmp_path / "threads")]) == 0
    # the threads' run continues the MPI run's checkpoint, without being told its number of ranks
    assert main(common + ["--steps", "4", "--resume", str(tmp_path / "mpi" / "checkpoint-000002"),
                          "--out", str(tmp_path / "continued")]) == 0

    def losses(folder):
        return [json.loads(line)["loss"] for line in open(tmp_path / folder / "metrics.jsonl")]
    assert losses("threads") == losses("mpi")
    assert losses("continued")[0] == losses("mpi")[2]
    from minibert import checkpoint
    a = checkpoint.load_weights(tmp_path / "mpi" / "checkpoint-000003")
    b = checkpoint.load_weights(tmp_path / "threads" / "checkpoint-000003")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
