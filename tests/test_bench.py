"""``minibert bench kernels`` runs end to end on tiny shapes and reports every kernel (no timing checks)."""
import re

import pytest

from minibert import kernels
from minibert.cli import main


def test_bench_kernels_reports_every_kernel(capsys):
    backend = kernels.backend()
    assert main(["bench", "kernels", "--repeats", "1", "--batch-size", "2", "--seq-len", "8", "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    assert kernels.backend() == backend                       # the benchmark restores the switch
    table = out[out.index("speed-up"):]
    for name in kernels.KERNEL_NAMES:
        assert re.search(rf"^{name}\s", table, re.MULTILINE), f"{name} missing from\n{out}"
    assert re.search(r"^encoder forward\+backward\s.*\d+\.\d+x$", table, re.MULTILINE)
    assert "B=2 T=8 H=128" in out and "os.cpu_count()" in out


def test_bench_rejects_bad_arguments(capsys):
    assert main(["bench", "kernels", "--repeats", "0"]) == 1
    assert "--repeats must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "nothing"])


def test_bench_train_reports_each_path_with_flops_and_memory(capsys):
    assert main(["bench", "train", "--repeats", "1", "--batch-size", "2", "--seq-len", "8", "--predictions", "2",
                 "--preset", "tiny", "--vocab-size", "64"]) == 0
    out = capsys.readouterr().out
    for label in ("minibert, NumPy kernels", "minibert, Numba kernels"):
        row = next(line for line in out.splitlines() if line.startswith(label))
        assert re.search(r"\d+%\s+\d+$", row), row                 # share of peak, peak MiB
    assert "matmul peak" in out


def test_matmul_flops_counts_the_mlm_rows():
    from minibert.bench import matmul_flops
    from minibert.config import BertConfig

    config = BertConfig.preset("mini", vocab_size=1000)
    ours, hf = matmul_flops(config, 32, 128, 20), matmul_flops(config, 32, 128, 20, mlm_rows=128)
    assert hf - ours == 3 * 2 * 32 * (128 - 20) * 256 * (256 + 1000)
    # one layer's forward at B=32, T=128, H=256, I=1024: 6.98 GFLOP (QKV, output, feed-forward, attention)
    assert abs(matmul_flops(BertConfig.preset("mini", num_hidden_layers=1, vocab_size=1), 32, 128, 0) / 3
               - 2 * 32 * 256 * 2 - 6.98e9) < 0.01e9
