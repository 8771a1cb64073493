"""Representation probes: which features can a linear probe read from each layer?

Tasks (word-level features are read from the **first WordPiece** of each word, see ``probing.data``):

    pos             UPOS tag of every word (14 classes)                       probing.jsonl, its split
    chunk           BIO chunk tag of every word (CoNLL-2000 style)             probing.jsonl, its split
    subject_number  the verb is replaced by [MASK]; from the mask's vector,    probing.jsonl, its split
                    is the verb's subject singular or plural?
    npi             at the item: is it the NPI "ever" or the decoy "often"?    npi.jsonl, groups split 4:1
    licensor        at the item: is the clause introduced by whether or that?  npi.jsonl
    scope           at the item: is it inside the embedded clause or outside?  npi.jsonl

Layer 0 is the embedding output (word + position + segment): what a probe reads there is not built by
the encoder, so every curve starts from this baseline. ``npi`` is lexical (the item is visible), so it
is decodable at layer 0 already; ``scope`` is confounded with position (the item stands at a fixed
place in each frame); ``licensor`` and ``subject_number`` can only come from context.

Control tasks (Hewitt & Liang 2019) need many word types at the probed position, so they are built
for pos and chunk (type = the lower-cased word) and subject_number (type = the subject's word form);
the NPI tasks have only two word types at the item and are compared with layer 0 and the random model.
"""
from __future__ import annotations

import numpy as np

from minibert.probing.data import encode_words, hidden_states
from minibert.probing.linear import ProbeConfig, control_labels, probe_layers

TASKS = ("pos", "chunk", "subject_number", "npi", "licensor", "scope")


def _task(features, labels, classes, train, types=None):
    return {"features": features, "labels": np.asarray(labels), "classes": classes,
            "train": np.asarray(train, bool), "types": types}


def word_features(model, tokenizer, sentences, batch_size: int = 128) -> list[np.ndarray]:
    """Per sentence (given as words), the first-piece vectors of its words at every layer:
    a list of (L+1, W_n, H) arrays."""
    encs = [encode_words(tokenizer, words) for words in sentences]
    states = hidden_states(model, [e.input_ids for e in encs], batch_size)
    return [s[:, e.word_starts] for s, e in zip(states, encs)]


def build_tasks(model, tokenizer, probing_rows, npi_rows, rng: np.random.Generator, tasks=TASKS,
                batch_size: int = 128) -> dict:
    """Extract features and labels for the requested tasks. Returns ``{task: {features (L+1, N, H),
    labels (N,), classes, train (N,) bool, types (N,) or None}}``.

    Singular subjects outnumber plural ones about 3 to 1 in the corpus, so ``subject_number`` keeps an
    equal number of each in both splits (``rng`` picks which); chance is then 0.5 and any gain is the
    probe's.
    """
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown probing task(s) {sorted(unknown)}; expected some of {TASKS}")
    out = {}
    if {"pos", "chunk"} & set(tasks):
        feats = word_features(model, tokenizer, [r["tokens"] for r in probing_rows], batch_size)
        x = np.concatenate(feats, axis=1)                                          # (L+1, W, H)
        train = [r["split"] == "train" for r in probing_rows for _ in r["tokens"]]
        types = [w.lower() for r in probing_rows for w in r["tokens"]]
        for task, field in (("pos", "upos"), ("chunk", "chunks")):
            if task in tasks:
                tags = [t for r in probing_rows for t in r[field]]
                classes = sorted(set(tags))
                index = {c: i for i, c in enumerate(classes)}
                out[task] = _task(x, [index[t] for t in tags], classes, train, types)
    if "subject_number" in tasks:
        sents, labels, train, types = [], [], [], []
        for r in probing_rows:
            for link in r["agreement"]:
                words = list(r["tokens"])
                words[link["verb"]] = "[MASK]"
                sents.append((words, link["verb"]))
                labels.append(int(link["number"] == "pl"))
                train.append(r["split"] == "train")
                types.append(r["tokens"][link["subject"]].lower())
        keep = _balanced(np.asarray(labels), np.asarray(train), rng) if labels else []
        sents, labels, train, types = ([v[i] for i in keep] for v in (sents, labels, train, types))
        if sents:               # a small sample may hold no number-marked verb of one number
            feats = word_features(model, tokenizer, [w for w, _ in sents], batch_size)
            x = np.stack([f[:, v] for f, (_, v) in zip(feats, sents)], axis=1)        # (L+1, N, H)
            out["subject_number"] = _task(x, labels, ["sg", "pl"], train, types)
    npi_tasks = [t for t in ("npi", "licensor", "scope") if t in tasks]
    if npi_tasks:
        feats = word_features(model, tokenizer, [r["tokens"] for r in npi_rows], batch_size)
        x = np.stack([f[:, r["item_index"]] for f, r in zip(feats, npi_rows)], axis=1)
        train = [r["group"] % 5 != 0 for r in npi_rows]      # whole groups: no sentence frame in both
        spec = {"npi": ("item", ["often", "ever"]), "licensor": ("licensor", ["that", "whether"]),
                "scope": ("scope", ["out", "in"])}
        for task in npi_tasks:
            field, classes = spec[task]
            out[task] = _task(x, [classes.index(r[field]) for r in npi_rows], classes, train)
    return out


def _balanced(labels, train, rng) -> list[int]:
    """Indices keeping, within each split, as many examples of each label as the rarest label has."""
    keep = []
    for split in (True, False):
        groups = [np.flatnonzero((labels == c) & (train == split)) for c in np.unique(labels)]
        n = min(len(g) for g in groups)
        keep += [i for g in groups for i in rng.choice(g, n, replace=False)]
    return sorted(int(i) for i in keep)


def probe_tasks(tasks: dict, rng: np.random.Generator, config: ProbeConfig | None = None,
                control_seed: int | None = 0) -> dict:
    """Run ``probe_layers`` on every task built by ``build_tasks``, with a control task where the task
    has word types (none if ``control_seed`` is None). Returns ``{task: result}``; a task without
    training or test examples, or with one class only, gets ``{"skipped": reason}``. The control labels
    come from their own generator (seeded by ``control_seed`` and the task), so every model probed
    with the same seed gets the same control task; ``rng`` draws the probes' initialisation and order."""
    out = {}
    for name, t in tasks.items():
        train, labels = t["train"], t["labels"]
        if not train.any() or train.all() or len(np.unique(labels[train])) < 2:
            # a quick run (few sentences) may leave a task without a test set or with one class
            out[name] = {"skipped": f"{int(train.sum())} training / {int((~train).sum())} test examples, "
                                    f"{len(np.unique(labels[train]))} class(es) in training"}
            continue
        control = None
        if control_seed is not None and t["types"] is not None:
            control = control_labels(t["types"], t["labels"], np.random.default_rng([control_seed, TASKS.index(name)]))
        res = probe_layers(t["features"], t["labels"], t["train"], len(t["classes"]), rng, config, control)
        res["classes"] = t["classes"]
        out[name] = res
    return out
