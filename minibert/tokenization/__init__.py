"""Tokenization: BERT's BasicTokenizer and WordPiece, a vocabulary trainer, and vocab.txt I/O.

    text --BasicTokenizer--> words --WordpieceTokenizer--> pieces --vocab--> ids   (BertTokenizer)
    corpus --train_wordpiece--> tokens --write_vocab--> vocab.txt                   (minibert vocab)

The vocabulary trainer is imported from its module (``from minibert.tokenization.trainer import
train_wordpiece``), so that loading a tokenizer or a model does not load it.
"""
from minibert.tokenization.basic import BasicTokenizer
from minibert.tokenization.bert import BertTokenizer, Encoding
from minibert.tokenization.vocab import SPECIAL_TOKENS, load_vocab, write_vocab
from minibert.tokenization.wordpiece import WordpieceTokenizer

__all__ = ["BasicTokenizer", "WordpieceTokenizer", "BertTokenizer", "Encoding",
           "write_vocab", "load_vocab", "SPECIAL_TOKENS"]
