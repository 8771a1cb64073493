"""A probabilistic grammar of English-like text with linguistic ground truth.

lexicon.py    the words: forms, semantic classes, taxonomy, invented names (fixed seed)
grammar.py    constructions that return annotated sentences (POS, chunks, dependencies, agreement, NPIs)
documents.py  little stories and fact sheets, document i depending only on (seed, i)
evalsets.py   probing sets (agreement cloze, NPI minimal pairs, negated facts, POS/chunk sentences)
tasks.py      fine-tuning tasks (acceptability, sentiment, entailment, three-way NLI)
io.py         writing and reading the files, the manifest and its check
cli.py        ``minibert corpus``
"""
