"""The grammar corpus: determinism, the shipped files, annotation facts, evaluation sets and tasks."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from minibert.cli import main as cli_main
from minibert.corpus import io
from minibert.corpus.cli import build
from minibert.corpus.documents import document, document_text, is_heldout
from minibert.corpus.grammar import Ctx, agreement_sentence, decoy_out_of_scope, npi_sentence, NPI_SHAPES
from minibert.paths import data_dir

DATA = data_dir()
MANIFEST = io.read_manifest(DATA)
SEED = MANIFEST["generator"]["seed"]


# ----------------------------------------------------------------------------------------------
# determinism and the shipped corpus
# ----------------------------------------------------------------------------------------------
def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((a, 3), (b, 3), (c, 4)):
        build(out, seed, 2000, with_eval=False, with_tasks=False, log=lambda *_: None)
    for rel in ("corpus/train.txt", "corpus/heldout.txt", "corpus/heldout.annotations.jsonl.gz"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "corpus/train.txt").read_bytes() != (c / "corpus/train.txt").read_bytes()


def test_shipped_corpus_starts_with_regenerated_documents():
    # document i depends only on (seed, i), so the first documents can be rebuilt without the rest
    n = 60
    train = "".join(document_text(document(SEED, i)) for i in range(n) if not is_heldout(i))
    heldout = "".join(document_text(document(SEED, i)) for i in range(n) if is_heldout(i))
    with open(DATA / "corpus/train.txt", "rb") as f:
        assert f.read(len(train.encode())) == train.encode()
    with open(DATA / "corpus/heldout.txt", "rb") as f:
        assert f.read(len(heldout.encode())) == heldout.encode()


def test_corpus_format_and_size_budget():
    docs = io.read_documents(DATA / "corpus/heldout.txt")
    for doc in docs:
        assert 3 <= len(doc) <= 12
        for line in doc:
            assert line[0].isupper() and line[-1] == ".", line
    files = MANIFEST["files"]
    assert all(f["bytes"] <= 8_000_000 for f in files.values())
    assert sum(f["bytes"] for f in files.values()) <= 15_000_000
    assert 1_000_000 <= MANIFEST["stats"]["words"] <= 3_000_000


# ----------------------------------------------------------------------------------------------
# annotation facts
# ----------------------------------------------------------------------------------------------
def _number_of_form(xpos: str, word: str):
    if xpos == "VBZ" or word == "was":
        return "sg"
    if xpos == "VBP" or word == "were":
        return "pl"
    return None


def check_sentence(s: dict):
    n = len(s["tokens"])
    assert all(len(s[f]) == n for f in io.TOKEN_FIELDS)
    heads = s["heads"]
    assert heads.count(0) == 1
    for j in range(n):  # every token reaches the root without a cycle
        seen, k = set(), j
        while heads[k] != 0:
            assert k not in seen, f"cycle in {s['tokens']}"
            seen.add(k)
            k = heads[k] - 1
    for a in s["agreement"]:
        subj, verb = a["subject"], a["verb"]
        assert s["upos"][subj] in ("NOUN", "PROPN")
        assert s["upos"][verb] in ("VERB", "AUX")
        noun_number = "pl" if s["xpos"][subj] == "NNS" else "sg"
        assert noun_number == a["number"] == _number_of_form(s["xpos"][verb], s["tokens"][verb].lower()), s["text"]
        assert a["other"] != s["tokens"][verb].lower()
    for f in s["npi"]:
        assert s["tokens"][f["index"]].lower() == f["word"]
        if f["licensor"] is not None:
            assert s["tokens"][f["licensor"]].lower() == f["licensor_word"] in ("not", "whether")
        else:
            assert not f["in_scope"]
    assert s["negation"] == [i for i, t in enumerate(s["tokens"]) if t == "not"]


def test_annotations_are_consistent():
    rows = io.read_annotations(DATA / "corpus/heldout.annotations.jsonl.gz")
    assert len(rows) == sum(len(d) for d in io.read_documents(DATA / "corpus/heldout.txt"))
    for r in rows:
        check_sentence(r)
    for i in range(150):
        for s in document(SEED + 1, i):
            r = s.to_json("x")
            check_sentence(r)
            # the corpus is grammatical: every NPI is inside a licensor's scope
            assert all(f["in_scope"] for f in r["npi"] if f["npi"]), r["text"]


def test_npi_flags_follow_the_construction():
    import random
    ctx = Ctx(random.Random(5), "farm")
    for k in range(60):
        shape = NPI_SHAPES[k % len(NPI_SHAPES)]
        lic = npi_sentence(ctx, shape).to_json("x")
        assert [f["in_scope"] for f in lic["npi"] if f["npi"]] == [True], lic["text"]
        # the decoy stands where the NPI stood (in scope); other "some" determiners may occur anywhere
        dec = npi_sentence(ctx, shape, decoy=True).to_json("x")
        assert not any(f["npi"] for f in dec["npi"]) and any(f["in_scope"] for f in dec["npi"]), dec["text"]
        out = decoy_out_of_scope(ctx).to_json("x")
        adverbs = [f for f in out["npi"] if f["word"] in ("often", "already")]
        assert len(adverbs) == 1 and not adverbs[0]["in_scope"], out["text"]


def test_focus_verb_of_agreement_sentences_is_a_verb():
    import random
    ctx = Ctx(random.Random(1), det_the_only=True)
    for kind in ("simple", "pp", "subject_rc", "object_rc", "sent_complement", "vp_coordination"):
        for inter in ([], ["sg"], ["pl", "sg"], ["pl", "pl", "pl"]):
            if kind == "simple" and inter:
                continue
            s = agreement_sentence(ctx, kind, "sg", inter, "present")
            assert s.upos[s.focus] == "VERB" and s.xpos[s.focus] == "VBZ", s.text
            link = [a for a in s.agreement if a["verb"] == s.focus]
            assert len(link) == 1 and link[0]["number"] == "sg"


# ----------------------------------------------------------------------------------------------
# manifest check and readers
# ----------------------------------------------------------------------------------------------
def test_check_passes_on_shipped_data(capsys):
    assert cli_main(["corpus", "--check"]) == 0
    assert "match" in capsys.readouterr().out


def _copy_data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for rel in list(MANIFEST["files"]) + [io.MANIFEST]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DATA / rel, root / rel)
    return root


def test_check_fails_on_tampered_copy(tmp_path, capsys):
    root = _copy_data(tmp_path)
    assert cli_main(["corpus", "--check", "--data", str(root)]) == 0
    target = root / "corpus/heldout.txt"
    raw = bytearray(target.read_bytes())
    raw[10] = ord("x") if raw[10] != ord("x") else ord("y")  # same size, different content
    target.write_bytes(bytes(raw))
    (root / "corpus/heldout.annotations.jsonl.gz").unlink()
    capsys.readouterr()
    assert cli_main(["corpus", "--check", "--data", str(root)]) == 1
    err = capsys.readouterr().err
    assert "corpus/heldout.txt: sha256 differs" in err
    assert "corpus/heldout.annotations.jsonl.gz: missing" in err


def test_readers_accept_gz_and_plain_and_reject_malformed(tmp_path):
    rows = [{"a": 1}, {"a": 2}]
    io.write_jsonl(tmp_path / "x.jsonl.gz", rows)
    io.write_jsonl(tmp_path / "x.jsonl", rows)
    assert (tmp_path / "x.jsonl.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert io.read_jsonl(tmp_path / "x.jsonl.gz") == io.read_jsonl(tmp_path / "x.jsonl") == rows
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: invalid JSON"):
        io.read_jsonl(tmp_path / "bad.jsonl")
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="expected a JSON object"):
        io.read_jsonl(tmp_path / "list.jsonl")
    with pytest.raises(ValueError, match=r"missing field\(s\) \['b'\]"):
        io.read_jsonl(tmp_path / "x.jsonl", required=("a", "b"))
    good = io.read_jsonl(DATA / "corpus/heldout.annotations.jsonl.gz")[0]
    short = dict(good, upos=good["upos"][:-1])
    io.write_jsonl(tmp_path / "ann.jsonl", [short])
    with pytest.raises(ValueError, match=r"ann.jsonl:1: fields \['upos'\]"):
        io.read_annotations(tmp_path / "ann.jsonl")
    (tmp_path / "corrupt.gz").write_bytes(gzip.compress(b'{"a": 1}\n')[:-6])
    with pytest.raises(ValueError, match="corrupt gzip"):
        io.read_jsonl(tmp_path / "corrupt.gz")
    with pytest.raises(FileNotFoundError):
        io.read_jsonl(tmp_path / "nope.jsonl")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no documents"):
        io.read_documents(tmp_path / "empty.txt")


# ----------------------------------------------------------------------------------------------
# evaluation sets
# ----------------------------------------------------------------------------------------------
def _corpus_sentences() -> set:
    out = set()
    for rel in ("corpus/train.txt", "corpus/heldout.txt"):
        out.update(line for line in io.read_text(DATA / rel).splitlines() if line)
    return out


def _eval(name):
    return io.read_jsonl(DATA / "eval" / name)


def test_eval_sets_are_disjoint_from_the_corpus():
    from minibert.corpus.grammar import detokenize
    corpus = _corpus_sentences()
    agreement = [detokenize(r["tokens"]) for r in _eval("agreement.jsonl.gz")]
    npi = [r["sentence"] for r in _eval("npi.jsonl.gz")]
    probing = [r["text"] for r in _eval("probing.jsonl.gz")]
    negation = [r[k].replace("[MASK]", r["expected"]) for r in _eval("negation.jsonl") for k in ("affirmative", "negated")]
    for name, sentences in (("agreement", agreement), ("npi", npi), ("probing", probing), ("negation", negation)):
        assert sentences
        overlap = [s for s in sentences if s in corpus]
        assert not overlap, f"{name}: {len(overlap)} sentences also in the corpus, e.g. {overlap[:3]}"


def test_agreement_items():
    items = _eval("agreement.jsonl.gz")
    assert 1000 <= len(items) <= 3000
    cells = {(r["construction"], r["attractors"]) for r in items}
    assert len(cells) == 1 + 5 * 4
    for r in items:
        v, s = r["mask_index"], r["subject_index"]
        assert r["upos"][v] == "VERB" and r["xpos"][v] == ("VBZ" if r["subject_number"] == "sg" else "VBP")
        assert r["correct"] == r["tokens"][v] != r["wrong"]
        assert ("NNS" if r["subject_number"] == "pl" else "NN") == r["xpos"][s]
        assert r["sentence"].count("[MASK]") == 1
        # the attractor count is what the tags say: nouns of the other number in between
        if r["construction"] == "sent_complement":
            span = range(0, s)
        else:
            span = range(s + 1, v)
        other = "NN" if r["subject_number"] == "pl" else "NNS"
        assert sum(r["xpos"][i] == other for i in span) == r["attractors"], r["sentence"]
        assert r["nearest_noun_number"] == ("pl" if r["xpos"][r["nearest_noun_index"]] == "NNS" else "sg")


def test_npi_minimal_pairs():
    items = _eval("npi.jsonl.gz")
    groups = {}
    for r in items:
        groups.setdefault(r["group"], []).append(r)
        assert r["acceptable"] == (r["item"] == "often" or (r["licensor"] == "whether" and r["scope"] == "in"))
        assert r["in_scope"] == (r["licensor"] == "whether" and r["scope"] == "in")
        assert r["tokens"][r["item_index"]] == r["item"]
    for rows in groups.values():
        assert len(rows) == 8
        assert len({(r["licensor"], r["scope"], r["item"]) for r in rows}) == 8
        # the sentences differ only in licensor, item and the verb forms their position needs
        assert len({len(r["tokens"]) for r in rows}) == 1


def test_negation_items():
    items = _eval("negation.jsonl")
    assert len(items) >= 300
    for r in items:
        assert r["expected"] in r["candidates"]
        assert r["negated"] == r["affirmative"].replace(" is ", " is not ", 1)


# ----------------------------------------------------------------------------------------------
# fine-tuning tasks
# ----------------------------------------------------------------------------------------------
TASKS = MANIFEST["tasks"]


def _task(name, split):
    return io.read_jsonl(DATA / "tasks" / name / f"{split}.jsonl", required=TASKS[name]["inputs"] + ["label"])


@pytest.mark.parametrize("name", ["acceptability", "sentiment", "entailment", "nli"])
def test_task_labels_balance_and_majority_baseline(name):
    info = TASKS[name]
    n_labels = len(info["labels"])
    majority = info["labels"].index(info["majority_label"])
    for split in ("train", "dev", "test"):
        rows = _task(name, split)
        assert len(rows) == info["sizes"][split]
        counts = [sum(r["label"] == k for r in rows) for k in range(n_labels)]
        assert counts == info["label_counts"][split] and sum(counts) == len(rows)
        assert max(counts) / len(rows) <= 1 / n_labels + 0.05  # balanced: the majority baseline is near chance
        assert info["majority_baseline"][split] == round(counts[majority] / len(rows), 4)
    train = {tuple(r[k] for k in info["inputs"]) for r in _task(name, "train")}
    test = {tuple(r[k] for k in info["inputs"]) for r in _task(name, "test")}
    assert not train & test


@pytest.mark.parametrize("name", ["acceptability", "sentiment"])
def test_single_sentence_tasks_have_no_one_word_or_length_shortcut(name):
    rows = _task(name, "train")
    words = {w for r in rows for w in r["sentence"].lower().rstrip(".").replace(",", "").split()}
    best = 0.0
    for w in words:
        has = [w in r["sentence"].lower().rstrip(".").replace(",", "").split() for r in rows]
        # accuracy of "label = 1 if the word is present" and of its reverse
        acc = sum(h == bool(r["label"]) for h, r in zip(has, rows)) / len(rows)
        best = max(best, acc, 1 - acc)
    assert best < 0.7, f"{name}: one word predicts the label with accuracy {best:.2f}"
    length = {k: [len(r["sentence"].split()) for r in rows if r["label"] == k] for k in (0, 1)}
    assert abs(sum(length[0]) / len(length[0]) - sum(length[1]) / len(length[1])) < 1.0


def test_entailment_labels_follow_monotonicity():
    # the same change entails or not depending on negation: neither alone gives the label
    rows = _task("nli", "train")
    for change in ("drop", "up"):
        pos = {r["label"] for r in rows if r["change"] == change and not r["negated"]}
        neg = {r["label"] for r in rows if r["change"] == change and r["negated"]}
        assert pos == {0} and neg == {1}, change
    assert {r["label"] for r in rows if r["change"] == "negate"} == {2}
