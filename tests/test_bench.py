"""The benchmarks run end to end on tiny shapes and report every kernel and every column (no timing checks)."""
import re

import numpy as np
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
    assert "--repeats must be a positive integer" in capsys.readouterr().err
    assert main(["bench", "train", "--workers", "0"]) == 1
    assert "--workers must be a positive integer, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "nothing"])


def test_bench_train_reports_each_path_with_flops_and_memory(capsys):
    assert main(["bench", "train", "--repeats", "1", "--batch-size", "2", "--seq-len", "8", "--predictions", "2",
                 "--preset", "tiny", "--vocab-size", "64", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    for label in ("minibert, NumPy kernels", "minibert, Numba kernels", "minibert, Numba, 2 workers"):
        row = next(line for line in out.splitlines() if line.startswith(label))
        assert re.search(r"\d+%\s+\d+\s+[\d,]+$", row), row        # share of peak, peak MiB, faults/step
    assert "matmul peak" in out and "faults/step: minor page faults" in out


def test_matmul_flops_counts_the_mlm_rows():
    import numpy as np

    from minibert.bench import batch_flops, matmul_flops
    from minibert.config import BertConfig

    config = BertConfig.preset("mini", vocab_size=1000)
    ours, hf = matmul_flops(config, 32, 128, 20), matmul_flops(config, 32, 128, 20, huggingface=True)
    # the MLM head at 20 of 128 positions; the last layer's queries, their attention over all 128
    # keys, output projection and feed-forward at 21 (the 20 and the [CLS]) of 128 rows
    H, I = 256, 1024
    last = 2 * 32 * (128 - 21) * (2 * H * H + 2 * H * I + 2 * 128 * H)
    assert hf - ours == 3 * 2 * 32 * (128 - 20) * H * (H + 1000) + 3 * last
    # one layer's forward at B=32, T=128, H=256, I=1024: 6.98 GFLOP (QKV, output, feed-forward, attention)
    one_layer = BertConfig.preset("mini", num_hidden_layers=1, vocab_size=1)
    assert abs(batch_flops(one_layer, np.ones((32, 128)), 0, padded=True) / 3 - 2 * 32 * 256 * 2 - 6.98e9) < 0.01e9


def test_bench_corpus_reports_real_tokens_per_second_for_each_path(capsys):
    assert main(["bench", "corpus", "--preset", "tiny", "--steps", "2", "--lines", "300",
                 "--batch-size", "4", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    fill = float(re.search(r"fill (\d\.\d\d) \(real tokens", out).group(1))
    assert 0.2 < fill < 1.0                                     # the corpus batches hold padding
    # ms/step, real tok/s, x HF, GFLOP/step, GFLOP/s, share of peak, peak MiB, faults/step
    cells = r"\s\d+\s+[\d,]+\s+(\d+\.\d\d|-)\s+\d+\.\d\d\s+\d+\.\d\s+\d+%\s+\d+\s+[\d,]+$"
    for label in ("minibert tiny ", "minibert tiny x2 "):
        row = next(line for line in out.splitlines() if line.startswith(label))
        assert re.search(cells, row), row
    assert "shared by 2 data-parallel threads" in out
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        assert "not installed" in out
    else:
        hf = next(line for line in out.splitlines() if line.startswith("huggingface tiny"))
        assert re.search(r"\s1\.00\s", hf), hf
    assert "minibert mini" not in out


def test_timed_call_counts_the_pages_a_call_maps():
    """Filling an array already in use maps no page; 64 MiB allocated afresh (above any malloc threshold,
    so mapped from the system) maps at least one page per 2 MiB (huge pages) and up to one per 4 KiB."""
    from minibert.bench import timed_call

    pytest.importorskip("resource")
    reused = np.ones(1 << 24, np.float32)
    seconds, faults = timed_call(lambda: reused.fill(2))
    assert seconds > 0 and faults < 16
    fresh = []
    _, faults = timed_call(lambda: fresh.append(np.ones(1 << 24, np.float32)))
    assert faults >= 32


def test_bench_corpus_rejects_too_few_lines(capsys):
    assert main(["bench", "corpus", "--preset", "tiny", "--steps", "50", "--lines", "100"]) == 1
    assert "raise --lines" in capsys.readouterr().err


def test_batch_flops_unpadded_counts_real_tokens_only():
    import numpy as np

    from minibert.bench import batch_flops, matmul_flops
    from minibert.config import BertConfig

    config = BertConfig.preset("tiny", vocab_size=100)
    full = np.ones((2, 8), np.int64)
    assert batch_flops(config, full, 2 * 3, padded=True, last_layer=(2 * 4, 2 * 4 * 8)) == matmul_flops(config, 2, 8, 3)
    assert batch_flops(config, full, 6, padded=False) == batch_flops(config, full, 6, padded=True)
    half = (np.arange(8) < np.array([[4], [8]])).astype(np.int64)          # 12 real tokens of 16
    H, I, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    saved = 3 * L * ((2 * 3 * H * H + 2 * H * H + 4 * H * I) * 4 + 4 * H * (64 - 16))
    padded, unpadded = (batch_flops(config, half, 6, padded=p) for p in (True, False))
    assert padded - unpadded == saved
    # the last layer's queries, output projection and feed-forward at 5 of the 12 rows, whose 5 x 8
    # query-key pairs replace the 4 x 4 + 8 x 8
    fewer = 3 * ((12 - 5) * (4 * H * H + 4 * H * I) + 4 * H * (16 + 64 - 40))
    assert unpadded - batch_flops(config, half, 6, padded=False, last_layer=(5, 40)) == fewer


def test_bench_cost_reports_time_and_memory_beside_hugging_face(capsys):
    assert main(["bench", "cost", "--preset", "tiny", "--batch-size", "2", "--repeats", "1",
                 "--vocab-size", "64"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("memory ratio"):]
    row = next(line for line in table.splitlines() if line.startswith("tiny"))
    cells = row.split()
    assert cells[:2] == ["tiny", "128"] and float(cells[2]) > 0 and float(cells[5]) > 0
    assert "mini" not in table and "small" not in table


def test_bench_profile_splits_the_step_into_operations(capsys):
    assert main(["bench", "profile", "--preset", "tiny", "--batch-size", "2", "--seq-len", "16",
                 "--predictions", "3", "--vocab-size", "64", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for op in ("linear_forward", "linear_backward", "layernorm_forward", "unpadded_attention_forward",
               "BertSelfAttention.forward"):
        assert re.search(rf"^{op}\s+\d", out, re.MULTILINE), op
    assert "Linear.cache" in out and "tracemalloc" in out
