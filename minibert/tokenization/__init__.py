"""Tokenization: BERT's BasicTokenizer and WordPiece, a vocabulary trainer, and vocab.txt I/O.

    text --BasicTokenizer--> words --WordpieceTokenizer--> pieces --vocab--> ids   (BertTokenizer)
    corpus --train_wordpiece--> tokens --write_vocab--> vocab.txt                   (minibert vocab)
"""
from minibert.tokenization.basic import BasicTokenizer
from minibert.tokenization.bert import BertTokenizer, Encoding
from minibert.tokenization.trainer import train_wordpiece
from minibert.tokenization.vocab import SPECIAL_TOKENS, load_vocab, write_vocab
from minibert.tokenization.wordpiece import WordpieceTokenizer

__all__ = ["BasicTokenizer", "WordpieceTokenizer", "BertTokenizer", "Encoding", "train_wordpiece",
           "write_vocab", "load_vocab", "SPECIAL_TOKENS"]
