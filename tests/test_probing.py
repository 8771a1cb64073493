"""Probing: the cloze scorers on hand-built models with known answers, linear probes on planted
features and on noise, the control-task construction, attention statistics on hand-made patterns,
and the ``minibert probe`` command."""
import json
import math

import numpy as np
import pytest

from minibert import cli
from minibert.config import BertConfig
from minibert.models import BertForPreTraining
from minibert.probing import attention, cloze, structural
from minibert.probing.data import encode_words, masked_lm_log_probs
from minibert.probing.linear import LinearProbe, control_labels, probe_layers
from minibert.tokenization import BertTokenizer

WORDS = ["the", "dog", "dogs", "cat", "cats", "runs", "run", "sleeps", "sleep", ".", "whether", "that", "ever",
         "often", "neighbor", "learns", "learned", "has", "sat", "bird", "fish", "a", "is", "not", "un", "##gainly"]
TOKENIZER = BertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])
CONFIG = BertConfig(vocab_size=TOKENIZER.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=24)


def tiny_model(seed=0):
    return BertForPreTraining(CONFIG, np.random.default_rng(seed))


def agreement_item(words, mask_index, correct, wrong, subject_number, nearest_number, construction="simple",
                   attractors=0):
    return {"tokens": words, "mask_index": mask_index, "correct": correct, "wrong": wrong,
            "construction": construction, "attractors": attractors, "subject_number": subject_number,
            "nearest_noun_number": nearest_number}


AGREEMENT = [
    agreement_item(["The", "dog", "runs", "."], 2, "runs", "run", "sg", "sg"),
    agreement_item(["The", "dogs", "run", "."], 2, "run", "runs", "pl", "pl"),
    agreement_item(["The", "dog", "the", "cats", "sleeps", "."], 4, "sleeps", "sleep", "sg", "pl", "pp", 1),
    agreement_item(["The", "dogs", "the", "cat", "sleep", "."], 4, "sleep", "sleeps", "pl", "sg", "pp", 1),
]


def test_encode_words_maps_each_word_to_its_first_piece():
    enc = encode_words(TOKENIZER, ["The", "ungainly", "[MASK]", "."])
    pieces = TOKENIZER.convert_ids_to_tokens(enc.input_ids)
    assert pieces == ["[CLS]", "the", "un", "##gainly", "[MASK]", ".", "[SEP]"]
    assert enc.word_starts == [1, 2, 4, 5] and enc.word_ends == [2, 4, 5, 6]


def test_agreement_scorer_follows_a_planted_mlm_bias():
    # The MLM output bias decides when it dwarfs every other logit: the singular forms win everywhere,
    # so exactly the singular-subject items are right; flipping the bias flips every answer.
    model = tiny_model()
    bias = model.cls.predictions.bias.data
    singular = TOKENIZER.convert_tokens_to_ids(["runs", "sleeps"])
    plural = TOKENIZER.convert_tokens_to_ids(["run", "sleep"])
    bias[singular] = 50.0
    res = cloze.agreement_probe(model, TOKENIZER, AGREEMENT, layers=(None, 0))
    for layer in (None, 0):
        assert res[layer]["accuracy"] == 0.5
        assert res[layer]["by_attractors"]["1"] == {"accuracy": 0.5, "n": 2}
    margins, kept = cloze.agreement_margins(model, TOKENIZER, AGREEMENT)
    assert kept == [0, 1, 2, 3]
    assert list(np.sign(margins[None])) == [1, -1, 1, -1]
    assert res[None]["nearest_noun_baseline"]["by_construction"] == {
        "pp": {"accuracy": 0.0, "n": 2}, "simple": {"accuracy": 1.0, "n": 2}}
    # On the pp items the nearest noun has the other number; the biased model follows it on the second.
    assert res[None]["follows_nearest_noun_when_it_differs"] == 0.5
    bias[singular], bias[plural] = 0.0, 50.0
    margins, _ = cloze.agreement_margins(model, TOKENIZER, AGREEMENT)
    assert list(np.sign(margins[None])) == [-1, 1, -1, 1]


def test_agreement_skips_items_whose_forms_are_split():
    items = AGREEMENT[:1] + [agreement_item(["The", "dog", "ungainly", "."], 2, "ungainly", "run", "sg", "sg")]
    res = cloze.agreement_probe(tiny_model(), TOKENIZER, items)
    assert res[None]["skipped"] == 1 and res[None]["n"] == 1


def test_masked_lm_log_probs_are_normalised_and_order_independent():
    model = tiny_model(1)
    seqs = [encode_words(TOKENIZER, w).input_ids for w in (["the", "[MASK]", "."], ["the", "dog", "[MASK]", "sleeps", "."])]
    lp = masked_lm_log_probs(model, seqs, [2, 3], layers=(None, 2, 0), batch_size=1)
    assert np.allclose(np.exp(lp[None]).sum(1), 1, atol=1e-5)
    assert np.array_equal(lp[None], lp[CONFIG.num_hidden_layers])      # None = the last layer
    assert not np.allclose(lp[0], lp[None], atol=1e-3)
    # Asked for the last layer and the embedding output only, the last layer is computed at the masked
    # positions alone and the embedding output at them alone; padding, batch order and that change
    # the last layer's by rounding and the embedding output's not at all.
    every = masked_lm_log_probs(model, seqs, [2, 3], layers=(None, 1, 0), batch_size=1)      # all positions
    assert np.array_equal(every[0], lp[0]) and np.allclose(every[None], lp[None], atol=1e-5)
    both = masked_lm_log_probs(model, seqs[::-1], [3, 2])[None]
    assert np.allclose(both[::-1], lp[None], atol=1e-5)
    assert np.array_equal(masked_lm_log_probs(model, seqs, [2, 3], layers=(0,), batch_size=1)[0], lp[0])
    with pytest.raises(ValueError, match="layer must be"):
        masked_lm_log_probs(model, seqs, [2, 3], layers=(5,))


def test_masked_lm_log_probs_of_targets_are_those_entries_to_the_bit():
    model = tiny_model(2).eval()
    seqs = [[2, 10, 4, 11, 3], [2, 12, 13, 4, 14, 3], [2, 4, 3]]
    pos, targets = [2, 3, 1], [5, 0, model.config.vocab_size - 1]
    for layers in ((None, 0), (None, 1)):        # the last layer at the masked positions, and every position
        full = masked_lm_log_probs(model, seqs, pos, layers=layers, batch_size=2)
        picked = masked_lm_log_probs(model, seqs, pos, layers=layers, batch_size=2, targets=targets)
        for layer in layers:
            assert picked[layer].dtype == np.float32 and picked[layer].shape == (3,)
            assert np.array_equal(picked[layer], full[layer][np.arange(3), targets])
    with pytest.raises(ValueError, match=r"targets must be token ids in \[0, "):
        masked_lm_log_probs(model, seqs, pos, targets=[5, 0, model.config.vocab_size])
    with pytest.raises(ValueError, match="targets must be 3 token ids, one per sequence"):
        masked_lm_log_probs(model, seqs, pos, targets=[5, 0])


def test_pseudo_log_likelihood_matches_masking_by_hand():
    model = tiny_model(2).eval()
    words = ["the", "ungainly", "dog", "runs", "."]
    ids = encode_words(TOKENIZER, words).input_ids
    expected = 0.0
    for t in range(1, len(ids) - 1):
        masked = np.array([ids])
        masked[0, t] = TOKENIZER.mask_token_id
        logits = model.forward(masked, masked_lm_positions=np.array([[t]])).prediction_logits[0, 0].astype(np.float64)
        expected += logits[ids[t]] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    got = cloze.pseudo_log_likelihood(model, TOKENIZER, [words, ["the", "dog", "."]], batch_size=2)[None]
    assert got[0] == pytest.approx(expected, rel=1e-5)


def test_npi_probe_pairs_the_right_cells(monkeypatch):
    # Plant PLLs: acceptable sentences score 0, unacceptable -1, so every contrast is won; the decoy
    # cells get a licensor-independent score, so the controlled differences are positive too.
    items = []
    for group in range(3):
        for lic in ("whether", "that"):
            for scope in ("in", "out"):
                for item in ("ever", "often"):
                    ok = item == "often" or (lic == "whether" and scope == "in")
                    items.append({"group": group, "licensor": lic, "scope": scope, "item": item,
                                  "tokens": ["x"], "planted": 0.0 if ok else -1.0})
    monkeypatch.setattr(cloze, "pseudo_log_likelihood",
                        lambda model, tok, sents, layers, bs: {layers[0]: np.array([it["planted"] for it in items])})
    res = cloze.npi_probe(None, None, items)[None]
    assert res["groups"] == 3
    assert res["pairs"] == {"licensor": 1.0, "scope": 1.0, "npi_present": 1.0}
    assert res["controlled"] == {"licensor": 1.0, "scope": 1.0}
    assert res["margins"]["licensor"] == 1.0
    # reversed scores lose every contrast; exact ties count one half
    for it in items:
        it["planted"] = -it["planted"]
    assert cloze.npi_probe(None, None, items)[None]["pairs"]["scope"] == 0.0
    for it in items:
        it["planted"] = 0.0
    assert cloze.npi_probe(None, None, items)[None]["pairs"]["licensor"] == 0.5


def test_negation_probe_reads_the_candidates():
    model = tiny_model(3)
    model.cls.predictions.bias.data[TOKENIZER.convert_tokens_to_ids("bird")] = 50.0
    items = [{"subject": "dog", "invented": False, "affirmative": "A dog is a [MASK].",
              "negated": "A dog is not a [MASK].", "expected": "bird", "candidates": ["bird", "fish"]},
             {"subject": "cat", "invented": True, "affirmative": "A cat is a [MASK].",
              "negated": "A cat is not a [MASK].", "expected": "fish", "candidates": ["bird", "fish"]}]
    res = cloze.negation_probe(model, TOKENIZER, items)[None]
    # "bird" always wins: right in the first affirmative frame, wrong in the first negated one, and the
    # reverse for the second item; the frames never differ.
    assert res["affirmative_accuracy"] == 0.5 and res["negated_accuracy"] == 0.5
    assert res["same_top_candidate"] == 1.0 and res["same_top_vocab"] == 1.0
    assert res["real"]["affirmative_accuracy"] == 1.0 and res["invented"]["affirmative_accuracy"] == 0.0


def test_fact_items_cover_every_species_and_have_true_answers():
    items = cloze.fact_items()
    frames = {it["frame"] for it in items}
    assert frames == {"taxonomy_plural", "taxonomy_kind", "property"}
    robin = [it for it in items if it["subject"] == "robin"]
    assert {it["expected"] for it in robin} >= {"birds", "bird"}
    prop = next(it for it in robin if it["frame"] == "property")
    assert "feathers" in prop["true"] and "fur" in prop["candidates"] and "fur" not in prop["true"]
    assert all(it["expected"] in it["candidates"] and it["tokens"][it["mask_index"]] == "[MASK]" for it in items)
    assert any(it["invented"] for it in items) and any(not it["invented"] for it in items)


def test_malformed_items_keep_the_mask_and_the_words():
    rows = [{"tokens": ["The", "dog", "that", "the", "cat", "sees", "runs", "."],
             "upos": ["DET", "NOUN", "PRON", "DET", "NOUN", "VERB", "VERB", "PUNCT"]}] * 5
    for it in cloze.malformed_items(rows, np.random.default_rng(0)):
        words, m = it["original"]
        shuffled, ms = it["shuffled"]
        truncated, mt = it["truncated"]
        assert words[m] == shuffled[ms] == truncated[mt] == "[MASK]" and ms == m
        assert sorted(shuffled) == sorted(words) and shuffled[-1] == "."
        assert truncated == words[m - 1:] and it["target"] == rows[0]["tokens"][m]


# ----------------------------------------------------------------------------------------------
# linear probes and control tasks
# ----------------------------------------------------------------------------------------------
def planted(rng, n=900, h=16, classes=3):
    x = rng.standard_normal((n, h)).astype(np.float32)
    w = rng.standard_normal((classes, h))
    return x, (x @ w.T).argmax(1)


def test_linear_probe_recovers_a_planted_linear_feature_and_fails_on_noise():
    rng = np.random.default_rng(0)
    x, y = planted(rng)
    noise = rng.integers(0, 3, len(y))
    train = np.arange(len(y)) < 600
    res = probe_layers(np.stack([x, x]), y, train, 3, rng)
    assert min(res["test_accuracy"]) > 0.9
    res = probe_layers(np.stack([x]), noise, train, 3, rng)
    assert res["test_accuracy"][0] < 0.45          # chance is 1/3
    assert res["train_accuracy"][0] > res["test_accuracy"][0]


def test_linear_probe_uses_our_layers_and_reports_errors():
    rng = np.random.default_rng(1)
    x, y = planted(rng, n=200, classes=2)
    probe = LinearProbe(16, 2, rng)
    losses = probe.fit(x, y, rng)
    assert losses[-1] < losses[0] / 2
    assert probe.logits(x).shape == (200, 2)
    with pytest.raises(ValueError, match="labels must be in"):
        probe.fit(x, y + 5, rng)
    with pytest.raises(ValueError, match="both training and test"):
        probe_layers(np.stack([x]), y, np.ones(200, bool), 2, rng)


def test_control_task_gives_each_word_type_one_label_from_the_task_distribution():
    rng = np.random.default_rng(0)
    types = [f"w{i % 400}" for i in range(4000)]
    labels = rng.choice(3, size=4000, p=[0.6, 0.3, 0.1])
    ctrl = control_labels(types, labels, np.random.default_rng(5))
    by_type = {}
    for t, c in zip(types, ctrl):
        by_type.setdefault(t, set()).add(int(c))
    assert all(len(v) == 1 for v in by_type.values())                     # one label per type
    shares = np.bincount([next(iter(v)) for v in by_type.values()], minlength=3) / 400
    assert np.allclose(shares, [0.6, 0.3, 0.1], atol=0.08)                # drawn from the label distribution
    assert np.array_equal(ctrl, control_labels(types, labels, np.random.default_rng(5)))
    assert not np.array_equal(ctrl, control_labels(types, labels, np.random.default_rng(6)))
    # A probe that sees word identity learns the control labels of the types it was trained on and
    # cannot know those of unseen types: what selectivity measures is how much of this memorising a
    # probe can do on a given layer.
    index = np.array([int(t[1:]) for t in types])
    onehot = np.eye(400, dtype=np.float32)[index]
    train = (index < 300) & (np.arange(4000) < 3000)
    probe = LinearProbe(400, 3, rng)
    probe.fit(onehot[train], ctrl[train], rng)
    seen_test = ~train & (index < 300)
    assert probe.accuracy(onehot[seen_test], ctrl[seen_test]) > 0.95
    assert probe.accuracy(onehot[index >= 300], ctrl[index >= 300]) < 0.8


# ----------------------------------------------------------------------------------------------
# the structural probe
# ----------------------------------------------------------------------------------------------
def test_tree_distances_and_minimum_spanning_tree():
    heads = [2, 0, 2, 3]                      # w0 <- w1 -> w2 -> w3
    d = structural.tree_distances(heads)
    assert d.tolist() == [[0, 1, 2, 3], [1, 0, 1, 2], [2, 1, 0, 1], [3, 2, 1, 0]]
    assert structural.minimum_spanning_tree(d.astype(float) + np.eye(4)) == {(0, 1), (1, 2), (2, 3)}
    with pytest.raises(ValueError, match="one tree"):
        structural.tree_distances([2, 1, 0])


def test_structural_probe_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    B, X = rng.standard_normal((4, 6)), rng.standard_normal((2, 5, 6))
    mask = np.ones((2, 5))
    mask[1, 3:] = 0                           # a padded sentence
    T = rng.integers(0, 4, (2, 5, 5)).astype(float)
    T = T + T.transpose(0, 2, 1)
    _, dB = structural.pair_loss_and_grad(B, X, T, mask)
    numeric = np.zeros_like(B)
    for i in np.ndindex(B.shape):
        e = np.zeros_like(B)
        e[i] = 1e-6
        numeric[i] = (structural.pair_loss_and_grad(B + e, X, T, mask)[0]
                      - structural.pair_loss_and_grad(B - e, X, T, mask)[0]) / 2e-6
    assert np.abs(numeric - dB).max() < 1e-6 * np.abs(dB).max()


def test_structural_probe_recovers_a_planted_tree_and_fails_on_noise():
    # Word i's vector is the sum of one-hot vectors of the edges from the root to i, so squared
    # Euclidean distance is exactly the tree distance; it is rotated into 24 dimensions with noise.
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.standard_normal((24, 24)))[0]
    rows, vectors = [], []
    for n in range(160):
        W = int(rng.integers(5, 11))
        order = rng.permutation(W)
        heads = [0] * W
        for k in range(1, W):
            heads[order[k]] = int(order[rng.integers(k)]) + 1
        path = np.zeros((W, 12))
        for i in range(W):
            j = i
            while heads[j]:
                path[i, j] += 1
                j = heads[j] - 1
        x = np.concatenate([path, 0.3 * rng.standard_normal((W, 12))], 1) @ Q
        rows.append({"heads": heads, "upos": ["NOUN"] * W, "split": "train" if n < 120 else "test"})
        vectors.append(np.stack([x, rng.standard_normal((W, 24))]))
    res = structural.structural_probe_layers(vectors, rows, rng, rank=16, steps=200)
    assert res["uuas"][0] > 0.9 and res["spearman"][0] > 0.85
    assert res["uuas"][1] < 0.45 and abs(res["spearman"][1]) < 0.2


# ----------------------------------------------------------------------------------------------
# attention
# ----------------------------------------------------------------------------------------------
def hand_made_attention():
    """5 tokens [CLS] a b . [SEP]; head 0 reads the previous token ([CLS] itself), head 1 reads [CLS],
    head 2 is uniform."""
    T = 5
    prev = np.zeros((T, T))
    prev[0, 0] = 1
    prev[np.arange(1, T), np.arange(T - 1)] = 1
    cls = np.zeros((T, T))
    cls[:, 0] = 1
    uniform = np.full((T, T), 1 / T)
    return np.stack([prev, cls, uniform])[None], ["[CLS]", "a", "b", ".", "[SEP]"]   # (L=1, A=3, T, T)


def test_head_statistics_on_a_hand_made_pattern():
    a, pieces = hand_made_attention()
    s = attention.head_statistics([a], [pieces])
    assert s["to_prev"][0].tolist() == pytest.approx([1.0, 0.25, 0.2])
    assert s["to_next"][0].tolist() == pytest.approx([0.0, 0.0, 0.2])
    assert s["to_cls"][0].tolist() == pytest.approx([0.4, 1.0, 0.2])     # head 0: [CLS] itself and "a"
    assert s["to_sep"][0].tolist() == pytest.approx([0.0, 0.0, 0.2])
    assert s["to_punct"][0].tolist() == pytest.approx([0.2, 0.0, 0.2])   # "." is read by [SEP] in head 0
    assert s["entropy"][0].tolist() == pytest.approx([0.0, 0.0, math.log(5)])
    with pytest.raises(ValueError, match="attention must be"):
        attention.head_statistics([a], [pieces[:4]])


def test_word_attention_sums_received_and_averages_sent_pieces():
    # pieces: [CLS] w0 w1a w1b [SEP]; word 1 has two pieces
    a = np.zeros((5, 5))
    a[1, 2], a[1, 3] = 0.3, 0.5                  # w0 reads both pieces of w1
    a[2, 1], a[3, 1] = 1.0, 0.4                  # the pieces of w1 read w0
    w = attention.word_attention(a, [1, 2], [2, 4])
    assert w[0, 1] == pytest.approx(0.8)         # received: summed over pieces
    assert w[1, 0] == pytest.approx(0.7)         # sent: averaged over pieces


def test_dependency_accuracy_and_offset_baseline():
    # 4 words, heads (1-based): 2 2 0 3 ; head 0 points every word at its dependency head, head 1 at
    # the next word.
    heads, rels = [2, 0, 2, 3], ["det", "root", "obj", "nmod"]
    right = np.zeros((4, 4))
    for i, h in enumerate(heads):
        right[i, (h - 1) if h else i] = 1
    nxt = np.zeros((4, 4))
    nxt[np.arange(4), np.minimum(np.arange(1, 5), 3)] = 1
    wa = np.stack([right, nxt])[None]                                     # (L=1, A=2, W, W)
    dep = attention.dependency_accuracy([wa], [heads], [rels])
    assert dep["all"]["n"] == 3
    assert dep["all"]["accuracy"][0].tolist() == pytest.approx([1.0, 1 / 3])
    base = attention.offset_baseline([heads], [rels])
    assert base["det"] == {"offset": 1, "accuracy": 1.0, "n": 1}
    assert base["obj"]["offset"] == -1 and base["all"]["accuracy"] == pytest.approx(2 / 3)
    best = attention.best_heads(dep, base, min_count=1)
    assert best["all"]["head"] == 0 and best["all"]["layer"] == 1


# ----------------------------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------------------------
def test_probe_command_writes_report_and_numbers(tmp_path):
    out = tmp_path / "probe"
    code = cli.main(["probe", "--model", "random", "--only", "agreement,npi,negation,facts,malformed,layers,attention",
                     "--limit", "3", "--probe-steps", "50", "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["agreement"]) >= {"model", "embeddings", "random"}
    assert results["agreement"]["model"]["n"] == 21 * 3
    assert "pos" in results["layers"]["model"]
    assert len(results["structural"]["random"]["uuas"]) == 3
    report = (out / "report.md").read_text()
    for section in ("Subject-verb agreement", "NPI licensing", "Negation", "Facts", "Malformed input",
                    "Linear probes per layer", "Structural probe", "Attention heads"):
        assert section in report
    assert (out / "agreement.png").is_file() and (out / "attention_heads.png").is_file()


def test_probe_command_rejects_bad_arguments(tmp_path, capsys):
    assert cli.main(["probe", "--model", "random", "--only", "agreement,bogus", "--out", str(tmp_path)]) == 1
    assert "unknown probe(s) ['bogus']" in capsys.readouterr().err
    assert cli.main(["probe", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 1
    assert "no config.json" in capsys.readouterr().err
