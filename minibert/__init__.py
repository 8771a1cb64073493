"""minibert: BERT from scratch in NumPy, every backward pass by hand.

Shape legend used throughout the package:
    B batch size, T tokens per sequence, H hidden size, A attention heads, D head size (H / A),
    I intermediate (feed-forward) size, V vocabulary size, P masked positions predicted.

    from minibert import BertForPreTraining, BertTokenizer
    model = BertForPreTraining.from_pretrained(data_dir() / "pretrained" / "tiny")
"""
import os as _os

# OpenBLAS's threads spin for 2^28 cycles (about 0.1 s) after each matmul before they sleep. Between
# two matmuls minibert runs a Numba kernel, whose second thread then waits for the core that a spinning
# BLAS thread holds: on 2 cores the mini training step took 840 ms (median of three runs) with the
# default and 750 ms with 2^16 cycles (about 20 us; 2^12 and 2^18 were in between). OpenBLAS reads the
# variable once, when NumPy loads it, so this counts only if minibert is imported before NumPy (the
# ``minibert`` command, ``python -c "import minibert; ..."``); a value set by the user is kept.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")

from minibert.config import BertConfig  # noqa: E402
from minibert.models import BertForPreTraining, BertModel  # noqa: E402
from minibert.paths import data_dir  # noqa: E402
from minibert.tokenization import BertTokenizer  # noqa: E402

__version__ = "0.1.0"
__all__ = ["BertConfig", "BertModel", "BertForPreTraining", "BertTokenizer", "data_dir"]
