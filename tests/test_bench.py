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
