"""BERT pretraining (masked LM + next sentence prediction).

data.py      corpus -> instances ([CLS] A [SEP] B [SEP], NSP label, masked positions) -> .npz shards,
             and ``PretrainingDataset``, which reads the shards back as batches (``minibert prepare``)
trainer.py   the loop: AdamW, warmup + decay, clipping, evaluation, metrics, figures, resumable checkpoints
cli.py       ``minibert pretrain``;  evaluate.py: ``minibert evaluate``
"""
