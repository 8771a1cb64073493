# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 09 — What did it learn? Cloze probes: agreement with attractors, NPIs, negation, facts
#
# Pretraining taught the model one game: guess the hidden word. This lesson uses that same game to
# ask *what the model knows*, without training anything new. We hide a word whose identity depends on
# a piece of grammar or of world knowledge and read the answer off the masked-LM head:
#
# | probe | question | hidden word | paper |
# |---|---|---|---|
# | agreement | does the verb agree with its subject, across other nouns? | the verb | Goldberg 2019 |
# | NPIs | is *ever* allowed here (licensor, scope)? | every word in turn (pseudo-log-likelihood) | Warstadt et al. 2019 |
# | negation | does *not* change the answer? | the category | Ettinger 2020 |
# | facts | is a robin a bird? do robins have feathers? | the category / property | Petroni et al. 2019 |
# | malformed input | do predictions move when the sentence is scrambled? | a noun or verb | after Ettinger 2020 |
#
# Every number comes with two baselines, so you can see what pretraining added:
# * a **randomly initialised model** of the same size (what the architecture alone gives), and
# * the **embedding layer**: the model's own MLM head reading the embedding output instead of the last
#   layer. At a `[MASK]` slot it sees the mask's embedding and its position, nothing about the sentence.
#
# The model is the one that ships in `data/pretrained/tiny` (2 layers, hidden 128, 2 heads; lesson 08
# shows how it was trained). Set `MINIBERT_MODEL=mini` (the larger shipped model) or a model folder,
# e.g. your own run, to probe another one.
#
# **Run time:** about 40 s on a 2-core laptop (quick mode `MINIBERT_QUICK=1`: about 10 s, on a sample
# of every set). Builds on lesson 08 (pretraining) and uses `minibert.probing`.

# %%
import numpy as np

from minibert import lessons
from minibert.models import BertForPreTraining
from minibert.paths import data_dir
from minibert.probing import cloze, figures
from minibert.probing.data import encode_words, load_eval_set, subsample
from minibert.tokenization import BertTokenizer

QUICK, FIGURES = lessons.setup(globals().get("__file__"))
SEED = 0

MODEL_DIR = lessons.pretrained_model()        # MINIBERT_MODEL: tiny (default), mini, a folder
model = BertForPreTraining.from_pretrained(MODEL_DIR).eval()
tokenizer = BertTokenizer.from_pretrained(MODEL_DIR if (MODEL_DIR / "vocab.txt").is_file() else data_dir())
random_model = BertForPreTraining(model.config, np.random.default_rng(SEED)).eval()
LABELS = {"model": "pretrained", "embeddings": "embedding layer", "random": "random init"}
c = model.config
print(f"model: {MODEL_DIR} ({c.num_hidden_layers} layers, hidden {c.hidden_size}, "
      f"{c.num_attention_heads} heads, {model.num_parameters():,} parameters)")

# %% [markdown]
# ## 1. One cloze question, by hand
#
# The sentences below hide the verb. The subject, *dogs*, is plural. In the second sentence the noun
# right before the verb, *cat*, is singular: an **attractor**. A model that only looked at the nearest
# noun would choose *runs* there. We encode the words, run the encoder, apply the MLM head at the
# masked position and compare the log-probabilities of the two forms. That difference is the whole
# agreement probe.

# %%
run, runs = tokenizer.convert_tokens_to_ids(["run", "runs"])
for words in (["The", "dogs", "[MASK]", "."], ["The", "dogs", "near", "the", "cat", "[MASK]", "."]):
    enc = encode_words(tokenizer, words)
    mask_at = enc.word_starts[words.index("[MASK]")]
    out = model.forward(np.array([enc.input_ids]), masked_lm_positions=np.array([[mask_at]]))
    logits = out.prediction_logits[0, 0].astype(np.float64)                    # (V,)
    logp = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())  # log softmax
    top = np.argsort(-logp)[:5]
    margin = logp[run] - logp[runs]
    print(" ".join(words))
    print("   pieces:", tokenizer.convert_ids_to_tokens(enc.input_ids))
    print("   top 5 at [MASK]:", [(tokenizer.convert_ids_to_tokens(int(i)), round(float(np.exp(logp[i])), 3)) for i in top])
    print(f"   log p(run) - log p(runs) = {margin:+.3f}  ->  {'plural (right)' if margin > 0 else 'singular (wrong)'}")

item = {"tokens": ["The", "dogs", "near", "the", "cat", "run", "."], "mask_index": 5, "correct": "run",
        "wrong": "runs", "construction": "pp", "attractors": 1, "subject_number": "pl", "nearest_noun_number": "sg"}
package_margin = cloze.agreement_margins(model, tokenizer, [item])[0][None][0]
print(f"minibert.probing.cloze.agreement_margins on the second sentence: {package_margin:+.3f}  (same number: "
      f"{abs(package_margin - margin) < 1e-4})")

# %% [markdown]
# The top predictions are verbs, many in the past tense (which has no number), and the probe needs none
# of them to be *run*: it compares only the two forms we care about, which cancels the verb's own
# frequency. Without the attractor the model prefers the plural *run*; with *cat* in between it
# switches to *runs*.

# %% [markdown]
# ## 2. Agreement across attractors and constructions
#
# `data/eval/agreement.jsonl.gz` has 80 items per cell: six constructions (simple; subject modified by a
# prepositional phrase; by a subject or object relative clause; an embedded sentential complement; VP
# coordination) times 0-3 attractors. The **nearest-noun baseline** agrees the verb with the closest
# noun before it: perfect without attractors, wrong whenever the closest noun is an attractor.

# %%
rng = np.random.default_rng(SEED)
agreement_items = subsample(load_eval_set("agreement"), 12 if QUICK else None, rng,
                            key=lambda r: (r["construction"], r["attractors"]))
m = cloze.agreement_probe(model, tokenizer, agreement_items, layers=(None, 0))
agreement = {"model": m[None], "embeddings": m[0], "random": cloze.agreement_probe(random_model, tokenizer, agreement_items)[None]}
base = agreement["model"]["nearest_noun_baseline"]
print(f"{len(agreement_items)} items")
print(f"{'':22}" + "".join(f"{k} attr.  " for k in range(4)) + "  all")
for name, r in [*agreement.items(), ("nearest noun", base)]:
    print(f"{LABELS.get(name, name):22}" + "".join(f"{r['by_attractors'][str(k)]['accuracy']:7.2f}  " for k in range(4))
          + f"{r['accuracy']:6.2f}")
print()
for cons in agreement["model"]["by_construction"]:
    print(f"agreement {cons:16} pretrained {agreement['model']['by_construction'][cons]['accuracy']:.2f}   "
          f"random {agreement['random']['by_construction'][cons]['accuracy']:.2f}   "
          f"nearest noun {base['by_construction'][cons]['accuracy']:.2f}")
print(f"\nwhere the nearest noun has the other number, the model follows it in "
      f"{agreement['model']['follows_nearest_noun_when_it_differs']:.2f} of the items")
figures.plot_agreement(agreement, LABELS, FIGURES / "09_agreement.png")

# %% [markdown]
# ![agreement](figures/09_agreement.png)
#
# **Reading it.** The random model and the embedding layer sit at 0.5: they have no idea which form is
# right. Goldberg (2019) found BERT-base almost perfect on simple sentences (1.00) and still strong
# across a prepositional phrase (0.85), a subject relative clause (0.84) and an object relative clause
# (0.89). Our model has 2 layers, 1M parameters and 1.4M words of pretraining (BERT-base: 12 layers,
# 110M parameters, 3.3B words). It is right on simple sentences (0.94) and sentential complements
# (0.95), and *below chance* across a prepositional phrase or a relative clause (0.39-0.40): where the
# nearest noun has the other number it follows that noun 70% of the time. Its successes are exactly the
# constructions where the nearest-noun heuristic is right. The agreement it learned is mostly
# "agree with the closest noun", a heuristic the attractors defeat; BERT-base's 0.84-0.89 shows that a
# larger model trained longer gets past it.

# %% [markdown]
# ## 3. NPIs: pseudo-log-likelihood of minimal pairs
#
# *Ever* is a negative polarity item: it needs a **licensor** (here *whether*; *that* does not license
# it) and must stand in the licensor's **scope** (inside the *whether* clause). Each group of
# `npi.jsonl.gz` crosses licensor x scope x item (the NPI *ever* or the decoy *often*, fine anywhere):
#
#     whether, in,  ever   The neighbor learns whether the dog has ever sat.    acceptable
#     that,    in,  ever   The neighbor learns that the dog has ever sat.       unacceptable (licensor)
#     whether, out, ever   The neighbor has ever learned whether the dog sat.   unacceptable (scope)
#
# There is no single masked slot to compare, so we score whole sentences with the **pseudo-log-
# likelihood** (Salazar et al. 2020): mask each piece in turn and add up log p(the true piece). Here it
# is by hand for two sentences of the first group.

# %%
npi_rows = load_eval_set("npi")
first = [r for r in npi_rows if r["group"] == 0]


def pll_by_hand(words):
    ids = encode_words(tokenizer, words).input_ids
    total = 0.0
    for t in range(1, len(ids) - 1):                   # every piece but [CLS] and [SEP]
        masked = np.array([ids])
        masked[0, t] = tokenizer.mask_token_id
        lg = model.forward(masked, masked_lm_positions=np.array([[t]])).prediction_logits[0, 0].astype(np.float64)
        total += lg[ids[t]] - lg.max() - np.log(np.exp(lg - lg.max()).sum())
    return total


for r in first[:3]:
    print(f"{r['licensor']:8}{r['scope']:4}{r['item']:6} acceptable={str(r['acceptable']):5}  PLL {pll_by_hand(r['tokens']):8.3f}  "
          f"{' '.join(r['tokens'])}")
package_pll = cloze.pseudo_log_likelihood(model, tokenizer, [first[0]["tokens"]])[None][0]
print(f"minibert.probing.cloze.pseudo_log_likelihood: {package_pll:.3f}")

# %% [markdown]
# A PLL comparison is confounded by the words themselves: *whether* and *that* have different
# frequencies, so "licensor" pairs compare more than licensing. The **controlled** score subtracts the
# same comparison made with the decoy *often* (acceptable in both sentences), so word frequency cancels
# and only the interaction "ever needs whether, in scope" remains.

# %%
groups = sorted({r["group"] for r in npi_rows})
chosen = set(rng.choice(groups, 25, replace=False).tolist()) if QUICK else set(groups)
npi_items = [r for r in npi_rows if r["group"] in chosen]
m = cloze.npi_probe(model, tokenizer, npi_items, layers=(None, 0))
npi = {"model": m[None], "embeddings": m[0], "random": cloze.npi_probe(random_model, tokenizer, npi_items)[None]}
print(f"{npi['model']['groups']} groups; accuracy (mean PLL difference, nats)")
for name, r in npi.items():
    cells = [f"{k} {r['pairs'][k]:.2f} ({r['margins'][k]:+.2f})" for k in r["pairs"]]
    cells += [f"{k} controlled {r['controlled'][k]:.2f} ({r['controlled_margins'][k]:+.2f})" for k in r["controlled"]]
    print(f"npi {LABELS[name]:16} " + "   ".join(cells))
figures.plot_cloze_bars(npi, LABELS, {**{k: (lambda r, k=k: r["pairs"][k]) for k in npi["model"]["pairs"]},
                                      **{f"{k} (controlled)": (lambda r, k=k: r["controlled"][k])
                                         for k in npi["model"]["controlled"]}},
                        "NPI minimal pairs", FIGURES / "09_npi.png", chance=0.5)

# %% [markdown]
# ![npi](figures/09_npi.png)
#
# **Reading it.** Look at the margins, not only the accuracies: every group repeats the same critical
# words, so even the random model's tiny systematic preferences turn into accuracies of 0 or 1 (its
# margins are a few hundredths of a nat; `minibert probe --model random`, whose model has another seed,
# gets 1.00 where this one gets 0.00 on the raw licensor pairs). The pretrained model's controlled
# **scope** effect is large (+2.7 nats, right in every group, against -0.15 for the embedding layer and
# +0.04 for the random model): it has learned that *ever*, unlike *often*, belongs inside the embedded
# clause. Its controlled **licensor** effect is nil (-0.07 nats, 0.15 of the groups): it does not
# prefer *whether* over *that* for *ever*. Warstadt et al. (2019) found the opposite ordering for
# BERT-base (licensor presence detected better than scope violations). Two reasons in our data: most
# NPIs in the corpus are licensed by *not*, not *whether*, and every corpus NPI is in scope, so
# "*ever* comes late, after an auxiliary" is a cue the model can learn without learning licensing.

# %% [markdown]
# ## 4. Negation: "A robin is (not) a [MASK]."
#
# Ettinger (2020) showed that BERT completes "A robin is not a ..." with *bird*, just as it completes
# "A robin is a ...": the masked-LM objective rewards words that fit the topic, and *not* changes the
# truth, not the topic. The frame "A X is (not) a Y." never occurs in our corpus (the corpus says
# "Robins are birds.", "The robin is a kind of bird."), so this also tests whether a fact learned in
# one wording transfers to another.

# %%
neg_items = subsample(load_eval_set("negation"), 80 if QUICK else None, rng)
m = cloze.negation_probe(model, tokenizer, neg_items, layers=(None, 0))
negation = {"model": m[None], "embeddings": m[0], "random": cloze.negation_probe(random_model, tokenizer, neg_items)[None]}
print(f"{negation['model']['n']} items; chance for the affirmative frame {negation['model']['chance_affirmative']:.2f}")
for name, r in negation.items():
    print(f"negation {LABELS[name]:16} affirmative {r['affirmative_accuracy']:.2f} (real {r['real']['affirmative_accuracy']:.2f}, "
          f"invented {r['invented']['affirmative_accuracy']:.2f})  negated {r['negated_accuracy']:.2f}  "
          f"same best candidate {r['same_top_candidate']:.2f}  same top word {r['same_top_vocab']:.2f}  "
          f"logp change {r['logp_change']:+.2f}")
for e in negation["model"]["examples"][:4]:
    print(f"   {e['sentence']:28} expected {e['expected']:8} top word: affirmative {e['affirmative_top']!r}, "
          f"negated {e['negated_top']!r}")

# %% [markdown]
# **Reading it.** "negated" counts a true completion of the negated frame (any category but the right
# one) ranked first. A model that ignored *not* would score about 1 - affirmative there, and its best
# candidate would be the same in both frames. The pretrained model is only a little above chance in
# the affirmative frame (0.33 vs 0.22): the new wording defeats most of what it knows. Its answer is
# the same in both frames more often than not (0.56), its top word is usually *reptile* in both, and
# *not* does not lower the true category's log-probability (+0.06 nats): Ettinger's finding for
# BERT-base, at our scale.

# %% [markdown]
# ## 5. Facts: taxonomy and properties
#
# The corpus states facts about 9 categories of animals and plants, including 270 invented species
# ("Every trodle is a fish.") that the model can only know from pretraining. `cloze.fact_items()` asks
# "Robins are [MASK].", "The robin is a kind of [MASK]." and "Robins have [MASK]." for every species
# and ranks the candidates (the categories at that level; all *have* properties).

# %%
fact_items = subsample(cloze.fact_items(), 60 if QUICK else None, rng, key=lambda r: r["frame"])
m = cloze.facts_probe(model, tokenizer, fact_items, layers=(None, 0))
facts = {"model": m[None], "embeddings": m[0], "random": cloze.facts_probe(random_model, tokenizer, fact_items)[None]}
for frame in facts["model"]["frames"]:
    f = {k: facts[k]["frames"][frame] for k in facts}
    print(f"facts {frame:16} pretrained {f['model']['accuracy']:.2f} (real {f['model']['real']['accuracy']:.2f}, "
          f"invented {f['model']['invented']['accuracy']:.2f})  embedding layer {f['embeddings']['accuracy']:.2f}  "
          f"random {f['random']['accuracy']:.2f}  chance {f['model']['chance']:.2f}")
figures.plot_cloze_bars(facts, LABELS, {fr: (lambda r, fr=fr: r["frames"][fr]["accuracy"]) for fr in facts["model"]["frames"]},
                        "facts: the best candidate is true", FIGURES / "09_facts.png")

# %% [markdown]
# **Reading it.** The model knows the *kind* of answer (a category word, a body part) far better than
# the answer: in "Sharks are [MASK]." `fill_mask` puts *birds* first and *fish* fifth, and "have [MASK]"
# gets *fur* for almost every species, which is right for mammals only. Accuracy is barely above chance
# for the taxonomy (0.24 vs 0.22) and twice chance for properties (0.26 vs 0.12, mostly the mammals'
# *fur*). The category of each of 400 species, stated 15-50 times in the corpus (robin: 17, shark: 49),
# is more than 1M parameters trained for half an hour have stored; Petroni et al. (2019) found
# BERT-large answering many such relational facts.

# %% [markdown]
# ## 6. Malformed input: shuffle or truncate
#
# Ettinger (2020) asked whether BERT uses its context with two-sentence items (CPRAG-102: a context
# sentence, then a target sentence whose last word is masked). She perturbed them in two ways, shuffling
# the words of the *context* sentence and truncating the target sentence, and BERT-base's accuracy fell
# under both: it does use the context and its word order. Our held-out sentences stand alone, so our test
# is a different one. We mask one noun or verb per sentence and compare the predictions for the original
# sentence, the *same* sentence with its other words shuffled (the mask stays in place), and the sentence
# truncated to one word before the mask. "Same top" is how often the top word survives; KL measures how
# far the whole distribution moves.

# %%
test_sentences = [r for r in load_eval_set("probing") if r["split"] == "test"][: 80 if QUICK else None]
mal_items = cloze.malformed_items(test_sentences, rng)
m = cloze.malformed_probe(model, tokenizer, mal_items, layers=(None, 0))
malformed = {"model": m[None], "embeddings": m[0], "random": cloze.malformed_probe(random_model, tokenizer, mal_items)[None]}
for name, r in malformed.items():
    print(f"malformed {LABELS[name]:16} top-1 original {r['original']['accuracy']:.2f} shuffled {r['shuffled']['accuracy']:.2f} "
          f"truncated {r['truncated']['accuracy']:.2f}  same top: shuffled {r['shuffled']['same_top']:.2f} "
          f"truncated {r['truncated']['same_top']:.2f}  KL: shuffled {r['shuffled']['kl']:.2f} truncated {r['truncated']['kl']:.2f}")

# %% [markdown]
# **Reading it.** A model that ignores context (the random one, the embedding layer) has predictions
# that cannot move when the words are shuffled: stability alone is not a virtue. The pretrained model
# moves a lot: shuffling changes its top word in 79% of the sentences (KL 3.0 nats) and halves its
# accuracy on the masked word (0.14 -> 0.06); keeping one word before the mask costs less (0.09). This
# small model leans on local word order, which is also why its agreement follows the nearest noun.
# Ettinger's BERT-base lost accuracy too, but under a different perturbation (its masked sentence was
# never shuffled), so the two drops are not comparable numbers.

# %% [markdown]
# ## 7. What a cloze probe can and cannot tell you
#
# * It tests the model's *output*, through the head it was trained with, so nothing new is learned: a
#   success is the model's own. But a failure may be the head's (a layer can hold information the
#   head does not use; lesson 10 looks inside).
# * It depends on the candidates. Agreement compares two forms of one verb, which cancels most word
#   frequency; PLL comparisons between different words do not, hence the controlled scores.
# * Template sets repeat the same words, so accuracies can be all-or-nothing for trivial reasons. Read
#   them beside effect sizes and beside a random model of the same size.
# * A small model trained on a small synthetic corpus is not BERT-base: the point is the method, and the
#   comparison with the papers tells you how far a 2-layer model gets.
#
# `minibert probe --model data/pretrained/tiny --out runs/probe` runs all of this (and lesson 10's probes)
# and writes a report with every figure.

# %% [markdown]
# ## What you should see
#
# Seed 0, the shipped `data/pretrained/tiny`. Full run; the quick run (12 items per agreement cell, 25
# NPI groups, 80 negation items, 60 facts per frame, 80 sentences) in brackets, expect +-0.1 there.
#
# * Section 1: margins +2.41 (*The dogs [MASK] .*) and -1.99 (with *near the cat*); the package's margin
#   equals the hand-computed one, and so does the PLL (-20.305).
# * Agreement by attractors 0 / 1 / 2 / 3: pretrained 0.81 / 0.52 / 0.41 / 0.43 (0.85 / 0.55 / 0.52 /
#   0.50); embedding layer and random model 0.50 +- 0.05 in every column; nearest noun 1.00 / 0.46 /
#   0.20 / 0.20. By construction: simple 0.94, sent_complement 0.95, pp 0.40, subject_rc 0.39, object_rc
#   0.39, vp_coordination 0.53. Follows the nearest noun when it differs: 0.70 (0.60).
# * NPI, controlled: scope 1.00 (+2.70 nats), licensor 0.15 (-0.07); random model within +-0.05 nats.
# * Negation: affirmative 0.33 (chance 0.22), negated 0.67, same best candidate 0.56, logp change +0.06.
# * Facts: property 0.26 (chance 0.12), taxonomy_kind 0.24 and taxonomy_plural 0.24 (chance 0.22).
# * Malformed input: top-1 0.14 -> 0.06 shuffled, 0.09 truncated; same top word 0.21 / 0.41; the random
#   model's top word survives shuffling in 0.97.
#
# ## Exercises
#
# 1. Replace the nearest-noun baseline by "agree with the first noun of the sentence". Predict its
#    accuracy per construction before computing it (hint: sent_complement).
# 2. Score agreement with the MLM head reading layer 1 instead of layer 2 (`layers=(1,)`). Is the
#    number information there before the last layer? Compare with the linear probe of lesson 10.
# 3. In section 3, score only the item's slot: mask *ever*/*often* alone and compare log p(ever) -
#    log p(often) under *whether* and *that*. Does this cheaper measure agree with the controlled PLL?
# 4. Write a new negation frame ("A robin is never a [MASK].", "No robin is a [MASK].") and predict,
#    before running it, whether the model's answer will change.
#
# **Graded exercises** (`minibert exercise start NAME`, then `minibert exercise check NAME`;
# lessons/README.md): `masking` (how a [MASK] gets into the input the probes read).
