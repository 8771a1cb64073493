"""Probing: what did the model learn, and where is it?

    cloze             the MLM head answers: agreement, NPIs (pseudo-log-likelihood), negation, facts, malformed input
    linear            softmax-regression probes with our own layers and AdamW; control tasks, selectivity
    representations   word-level features per layer (first WordPiece of each word) and the probing tasks
    structural        the structural probe: a linear map under which distances are parse-tree distances
    attention         per-head statistics, dependency heads vs a fixed-offset baseline
    data              the evaluation sets, word -> piece alignment, batched forward passes
    figures, cli      ``minibert probe``: the report with its baselines (random model, embedding layer)
"""
from minibert.probing.cloze import agreement_probe
from minibert.probing.data import encode_words, load_eval_set
from minibert.probing.linear import LinearProbe, control_labels

__all__ = ["agreement_probe", "encode_words", "load_eval_set", "LinearProbe", "control_labels"]
