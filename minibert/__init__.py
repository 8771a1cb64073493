"""minibert: BERT from scratch in NumPy, every backward pass by hand.

Shape legend used throughout the package:
    B batch size, T tokens per sequence, H hidden size, A attention heads, D head size (H / A),
    I intermediate (feed-forward) size, V vocabulary size, P masked positions predicted.

    from minibert import BertForPreTraining, BertTokenizer
    model = BertForPreTraining.from_pretrained(data_dir() / "pretrained" / "tiny")
"""
from minibert.config import BertConfig
from minibert.models import BertForPreTraining, BertModel
from minibert.paths import data_dir
from minibert.tokenization import BertTokenizer

__version__ = "0.1.0"
__all__ = ["BertConfig", "BertModel", "BertForPreTraining", "BertTokenizer", "data_dir"]
