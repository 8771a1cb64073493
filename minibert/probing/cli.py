"""``minibert probe``: every probe on one model, beside its baselines; a Markdown report and a JSON.

    minibert probe --model tiny --out runs/probe
    minibert probe --model mini --out runs/probe-mini
    minibert probe --model random --only agreement,layers --out runs/probe-random

Baselines, in every table and figure:
  * ``random``: a randomly initialised model of the same size (what the architecture gives for free);
  * ``embeddings``: the probed model's embedding layer alone (for the cloze probes, its MLM head reads
    the embedding output, so it knows the masked slot's position but not the sentence; for the layer
    probes, layer 0 of every curve);
  * each probe's own simple baseline (nearest noun, chance, majority label, control task, linear chain,
    fixed offset).

``layers`` also runs the structural probe (Hewitt & Manning 2019) on the same sentences.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from minibert import distributed, outputs
from minibert.checkpoint import CONFIG_NAME, load_config, model_folder
from minibert.config import BertConfig
from minibert.models import BertForPreTraining
from minibert.paths import SHIPPED_MODELS, data_dir
from minibert.probing import attention as attn_mod
from minibert.probing import cloze, figures, representations, structural
from minibert.probing.data import load_eval_set, subsample
from minibert.probing.linear import ProbeConfig
from minibert.tokenization import BertTokenizer
from minibert.validation import positive_int

KIND = "probe"
PROBES = ("agreement", "npi", "negation", "facts", "malformed", "layers", "attention")


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True,
                        help="a shipped model's name (tiny, mini), a model folder (config.json, "
                             "model.safetensors, vocab.txt; a folder named like a shipped model in "
                             "the working directory wins), or 'random' for a randomly initialised "
                             "model of the tiny model's size")
    parser.add_argument("--only", default=",".join(PROBES),
                        help=f"comma-separated probes to run (default: all of {','.join(PROBES)})")
    parser.add_argument("--out", default="runs/probe",
                        help="folder for report.md, results.json and figures (default runs/probe): "
                             "a new folder, or one an earlier `minibert probe` wrote (its report "
                             "and figures are replaced)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --out that holds other files (they are left alone)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the random baseline model, subsampling, probes and control tasks")
    parser.add_argument("--limit", type=int, default=None,
                        help="at most this many items per cell / set (a quick run); default: everything")
    parser.add_argument("--batch-size", type=int, default=256, help="sequences per forward pass")
    parser.add_argument("--probe-steps", type=int, default=ProbeConfig.steps,
                        help=f"updates per linear probe (default {ProbeConfig.steps})")


def parse_only(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in PROBES]
    if unknown or not names:
        raise ValueError(f"--only: unknown probe(s) {unknown}; expected a comma-separated subset of {','.join(PROBES)}")
    return names


def shipped_config(vocab_size: int) -> BertConfig:
    """The shipped model's config if it is present, else the ``tiny`` preset (its size)."""
    shipped = data_dir() / "pretrained" / "tiny"
    if (shipped / CONFIG_NAME).is_file():
        return load_config(shipped)
    return BertConfig.preset("tiny", vocab_size=vocab_size)


def load_models(model_arg: str, seed: int):
    """(model, random baseline, tokenizer, description). The random baseline has the model's config
    and the seed ``seed``; ``--model random`` itself uses ``seed + 1`` so the two differ."""
    if model_arg == "random":
        tokenizer = BertTokenizer.from_pretrained(data_dir())
        config = shipped_config(tokenizer.vocab_size)
        model = BertForPreTraining(config, np.random.default_rng(seed + 1))
        description = f"randomly initialised (seed {seed + 1})"
    else:
        path = model_folder(model_arg, f"--model {model_arg}", alternatives=", 'random'")
        model = BertForPreTraining.from_pretrained(path)
        tokenizer = BertTokenizer.from_pretrained(path if (path / "vocab.txt").is_file() else data_dir())
        # A shipped model by name is reported by its name, so reports read the same on every machine.
        shipped = model_arg in SHIPPED_MODELS and not Path(model_arg).exists()
        description = f"the shipped model {model_arg}" if shipped else str(path)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(f"the vocabulary has {tokenizer.vocab_size} tokens but the model expects "
                         f"{model.config.vocab_size}")
    random_model = BertForPreTraining(model.config, np.random.default_rng(seed))
    return model, random_model, tokenizer, description


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def run_probes(model, random_model, tokenizer, only, rng: np.random.Generator, limit=None,
               batch_size: int = 256, probe_config: ProbeConfig | None = None, log=print) -> dict:
    """Run the chosen probes on ``model`` (last layer and embedding layer) and ``random_model``.

    Returns a dict of plain Python values, keyed by probe, then by ``model`` / ``embeddings`` /
    ``random``. ``limit`` caps the items per cell (agreement), groups (npi), items per set
    (negation, facts per frame, malformed) and sentences per split (layers, attention).
    """
    results, timings = {}, {}
    two = {"model": model, "random": random_model}

    def both(fn, items, **kw):
        """fn on the model (last layer + embeddings) and on the random model (last layer)."""
        m = fn(model, tokenizer, items, layers=(None, 0), batch_size=batch_size, **kw)
        r = fn(random_model, tokenizer, items, layers=(None,), batch_size=batch_size, **kw)
        return {"model": m[None], "embeddings": m[0], "random": r[None]}

    # Each probe draws from its own child of ``rng``, so its numbers do not depend on which probes ran
    # before it (and ``mpiexec -n N minibert probe`` can run the probes on different ranks).
    seeds = np.random.SeedSequence(int(rng.integers(2**63))).spawn(len(PROBES) + 1)
    generators = {name: np.random.default_rng(s) for name, s in zip(PROBES + ("rows",), seeds)}
    probing_rows = None
    if {"malformed", "layers", "attention"} & set(only):
        probing_rows = subsample(load_eval_set("probing"), limit, generators["rows"],
                                 key=lambda r: r["split"])
    for name in only:
        rng = generators[name]
        t0 = time.perf_counter()
        log(f"probe {name} ...")
        if name == "agreement":
            items = subsample(load_eval_set("agreement"), limit, rng,
                              key=lambda r: (r["construction"], r["attractors"]))
            results[name] = both(cloze.agreement_probe, items)
        elif name == "npi":
            items = load_eval_set("npi")
            if limit is not None:
                groups = sorted({it["group"] for it in items})
                chosen = set(rng.choice(groups, min(limit, len(groups)), replace=False).tolist())
                items = [it for it in items if it["group"] in chosen]
            results[name] = both(cloze.npi_probe, items)
        elif name == "negation":
            results[name] = both(cloze.negation_probe, subsample(load_eval_set("negation"), limit, rng))
        elif name == "facts":
            results[name] = both(cloze.facts_probe, subsample(cloze.fact_items(), limit, rng, key=lambda r: r["frame"]))
        elif name == "malformed":
            test = [r for r in probing_rows if r["split"] == "test"]
            results[name] = both(cloze.malformed_probe, cloze.malformed_items(test, rng))
        elif name == "layers":
            npi_rows = load_eval_set("npi")
            if limit is not None:
                npi_rows = [r for r in npi_rows if r["group"] < max(limit, 10)]   # groups 0 and 5 are tested
            config = probe_config or ProbeConfig()
            out, tree = {}, {}
            for key, m in two.items():
                tasks = representations.build_tasks(m, tokenizer, probing_rows, npi_rows,
                                                     np.random.default_rng([int(rng.integers(2**32)), 0]))
                out[key] = representations.probe_tasks(tasks, np.random.default_rng(int(rng.integers(2**32))), config)
                vectors = representations.word_features(m, tokenizer, [r["tokens"] for r in probing_rows])
                tree[key] = structural.structural_probe_layers(vectors, probing_rows,
                                                               np.random.default_rng(int(rng.integers(2**32))),
                                                               steps=max(config.steps // 4, 50))
            results[name] = out
            results["structural"] = tree
        elif name == "attention":
            test = [r for r in probing_rows if r["split"] == "test"]
            results[name] = {key: attn_mod.attention_analysis(m, tokenizer, test) for key, m in two.items()}
            results[name]["sentences"] = _chosen_sentences(test)
        timings[name] = round(time.perf_counter() - t0, 1)
        log(f"   {timings[name]:.1f} s")
    results["seconds"] = timings
    return results


def _chosen_sentences(rows, constructions=("subject_rc", "npi_licensed", "pp")) -> list[list[str]]:
    """The first sentence of each of a few constructions (for attention heatmaps), preferring one with
    a number-marked verb (agreement) or an NPI."""
    chosen = []
    for c in constructions:
        candidates = [r for r in rows if r["construction"] == c]
        row = next((r for r in candidates if r["agreement"] or r["npi"]), candidates[0] if candidates else None)
        if row is not None:
            chosen.append(row["tokens"])
    return chosen or [rows[0]["tokens"]]


# ----------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------
def _f(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def _table(header, rows) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def write_report(results: dict, out: Path, model, random_model, tokenizer, description: str, labels: dict) -> Path:
    """Figures (PNG), ``results.json`` and ``report.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.time() - 1        # the figures written from here on are this report's
    c = model.config
    lines = ["# minibert probe report", "",
             f"Model: {description} ({c.num_hidden_layers} layers, hidden {c.hidden_size}, {c.num_attention_heads} "
             f"heads, {model.num_parameters():,} parameters). Baselines: **{labels['random']}** (a randomly "
             f"initialised model of the same size) and **{labels['embeddings']}** (the model's embedding output "
             f"fed straight to its MLM head: it knows the masked slot's position, not the sentence; in the layer "
             f"curves, layer 0). Seconds per probe: {results.get('seconds', {})}.", ""]
    three = {k: labels[k] for k in ("model", "embeddings", "random")}

    if "agreement" in results:
        r = results["agreement"]
        runs = {k: r[k] for k in three}
        fig = figures.plot_agreement(runs, labels, out / "agreement.png")
        base = r["model"]["nearest_noun_baseline"]
        att = sorted(r["model"]["by_attractors"], key=int)
        rows = [[labels[k]] + [_f(r[k]["by_attractors"][a]["accuracy"]) for a in att] + [_f(r[k]["accuracy"])]
                for k in three]
        rows.append(["agree with the nearest noun"] + [_f(base["by_attractors"][a]["accuracy"]) for a in att]
                    + [_f(base["accuracy"])])
        cons = list(r["model"]["by_construction"])
        crow = [[labels[k]] + [_f(r[k]["by_construction"][x]["accuracy"]) for x in cons] for k in three]
        crow.append(["agree with the nearest noun"] + [_f(base["by_construction"][x]["accuracy"]) for x in cons])
        cells = sorted(r["model"]["by_cell"], key=lambda s: (s.split("/")[0], int(s.split("/")[1])))
        lines += ["## Subject-verb agreement (cloze)", "",
                  "The verb is masked; the model is right when it gives the correct number's form a higher "
                  "score than the other form (Goldberg 2019). Attractors are nouns of the other number "
                  f"between subject and verb. {r['model']['n']} items, {r['model']['skipped']} skipped (verb "
                  "forms not single tokens).", "",
                  *_table(["", *[f"{a} attractors" for a in att], "all"], rows), "",
                  *_table(["", *cons], crow), "",
                  f"When the nearest noun has the other number, the model follows it in "
                  f"{_f(r['model']['follows_nearest_noun_when_it_differs'])} of the cases "
                  f"(random model: {_f(r['random']['follows_nearest_noun_when_it_differs'])}).", "",
                  *_table(["cell", "n", *three.values()],
                          [[x, r["model"]["by_cell"][x]["n"], *[_f(r[k]["by_cell"][x]["accuracy"]) for k in three]]
                           for x in cells]), "",
                  f"![agreement]({fig.name})", ""]

    if "npi" in results:
        r = results["npi"]
        contrasts = list(r["model"]["pairs"])
        controlled = list(r["model"]["controlled"])
        metrics = {**{n: (lambda res, n=n: res["pairs"][n]) for n in contrasts},
                   **{f"{n} (controlled)": (lambda res, n=n: res["controlled"][n]) for n in controlled}}
        fig = figures.plot_cloze_bars({k: r[k] for k in three}, labels, metrics,
                                      "NPI minimal pairs: acceptable sentence has the higher PLL", out / "npi.png", 0.5)
        rows = [[labels[k], r[k]["groups"]] + [f"{_f(r[k]['pairs'][n])} ({r[k]['margins'][n]:+.2f})" for n in contrasts]
                + [f"{_f(r[k]['controlled'][n])} ({r[k]['controlled_margins'][n]:+.2f})" for n in controlled]
                for k in three]
        lines += ["## NPI licensing (pseudo-log-likelihood minimal pairs)", "",
                  "Each group has 8 sentences: licensor (whether / that) x scope (the item inside / outside the "
                  "embedded clause) x item (the NPI *ever* / the decoy *often*); only *ever* inside a whether-"
                  "clause is acceptable among the *ever* sentences. A pair counts as right when the acceptable "
                  "sentence has the higher pseudo-log-likelihood (sum of log p of each piece with that piece "
                  "masked). Cells: accuracy over groups (mean PLL difference in nats). *Controlled*: the same "
                  "contrast minus the one made with *often*, which cancels the words' own frequencies.", "",
                  *_table(["", "groups", *contrasts, *[f"{n} (controlled)" for n in controlled]], rows), "",
                  f"![npi]({fig.name})", ""]

    if "negation" in results:
        r = results["negation"]
        metrics = {"affirmative: true category first": lambda x: x["affirmative_accuracy"],
                   "negated: a true completion first": lambda x: x["negated_accuracy"],
                   "same best candidate in both": lambda x: x["same_top_candidate"],
                   "same top word (vocabulary)": lambda x: x["same_top_vocab"]}
        fig = figures.plot_cloze_bars({k: r[k] for k in three}, labels, metrics,
                                      '"A robin is (not) a [MASK]."', out / "negation.png")
        rows = [[labels[k], _f(r[k]["affirmative_accuracy"]), _f(r[k]["real"]["affirmative_accuracy"]),
                 _f(r[k]["invented"]["affirmative_accuracy"]), _f(r[k]["negated_accuracy"]),
                 _f(r[k]["same_top_candidate"]), _f(r[k]["same_top_vocab"]), _f(r[k]["logp_change"])]
                for k in three]
        ex = r["model"]["examples"]
        lines += ["## Negation (Ettinger 2020)", "",
                  "\"A X is a [MASK].\" vs \"A X is not a [MASK].\" over the categories at X's level "
                  f"({r['model']['n']} items; chance for the affirmative frame "
                  f"{_f(r['model']['chance_affirmative'])}). A model that "
                  "understood *not* would rank the true category first in the affirmative frame and *not* first "
                  "in the negated one; logp change is mean log p(true category) negated minus affirmative.", "",
                  *_table(["", "affirmative", "real species", "invented species", "negated", "same best candidate",
                           "same top word", "logp change"], rows), "",
                  *_table(["sentence", "expected", "top word (affirmative)", "top word (negated)"],
                          [[e["sentence"], e["expected"], e["affirmative_top"], e["negated_top"]] for e in ex]), "",
                  f"![negation]({fig.name})", ""]

    if "facts" in results:
        r = results["facts"]
        frames = list(r["model"]["frames"])
        metrics = {f: (lambda res, f=f: res["frames"][f]["accuracy"]) for f in frames}
        fig = figures.plot_cloze_bars({k: r[k] for k in three}, labels, metrics,
                                      "facts: the best candidate is true", out / "facts.png")
        def frame_cell(res, f):
            cell = res["frames"][f]
            return (f"{_f(cell['accuracy'])} (real {_f(cell['real']['accuracy'])}, "
                    f"invented {_f(cell['invented']['accuracy'])})")
        rows = [[labels[k]] + [frame_cell(r[k], f) for f in frames] for k in three]
        rows.append(["chance"] + [_f(r["model"]["frames"][f]["chance"]) for f in frames])
        lines += ["## Facts (taxonomy and properties of the corpus's world)", "",
                  "\"Robins are [MASK].\", \"The robin is a kind of [MASK].\", \"Robins have [MASK].\" for every "
                  "species, real and invented (the invented ones are known only from the corpus). Accuracy: the "
                  "best-scoring candidate (the categories at that level; every *have* property) is true.", "",
                  *_table(["", *frames], rows), "", f"![facts]({fig.name})", ""]

    if "malformed" in results:
        r = results["malformed"]
        metrics = {"shuffled: same top word": lambda x: x["shuffled"]["same_top"],
                   "truncated: same top word": lambda x: x["truncated"]["same_top"],
                   "original: masked word top-1": lambda x: x["original"]["accuracy"],
                   "shuffled: masked word top-1": lambda x: x["shuffled"]["accuracy"],
                   "truncated: masked word top-1": lambda x: x["truncated"]["accuracy"]}
        fig = figures.plot_cloze_bars({k: r[k] for k in three}, labels, metrics,
                                      "malformed input: how far do predictions move?", out / "malformed.png")
        rows = [[labels[k], _f(r[k]["original"]["accuracy"]), _f(r[k]["shuffled"]["accuracy"]),
                 _f(r[k]["truncated"]["accuracy"]), _f(r[k]["shuffled"]["same_top"]), _f(r[k]["truncated"]["same_top"]),
                 _f(r[k]["shuffled"]["kl"]), _f(r[k]["truncated"]["kl"])] for k in three]
        lines += ["## Malformed input", "",
                  f"One noun or verb per test sentence is masked ({r['model']['n']} sentences); *shuffled* permutes "
                  "the other words, *truncated* keeps one word before the mask. Top-1: the masked word is the top "
                  "prediction. Same top: the top word does not change. KL: mean KL(original || perturbed), nats.", "",
                  *_table(["", "top-1 original", "top-1 shuffled", "top-1 truncated", "same top (shuffled)",
                           "same top (truncated)", "KL shuffled", "KL truncated"], rows), "",
                  f"![malformed]({fig.name})", ""]

    if "layers" in results:
        r = results["layers"]
        two = {k: labels[k] for k in ("model", "random")}
        done = [t for t, res in r["model"].items() if "skipped" not in res]
        pictures = []
        if done:
            pictures.append(figures.plot_layers({k: r[k] for k in two}, labels, out / "layers.png"))
        if any("selectivity" in r["model"][t] for t in done):
            pictures.append(figures.plot_selectivity({k: r[k] for k in two}, labels, out / "selectivity.png"))
        rows = []
        for task in done:
            for k in two:
                x = r[k][task]
                acc = " / ".join(_f(a) for a in x["test_accuracy"])
                ctrl = " / ".join(_f(a) for a in x.get("control_accuracy", [])) or "-"
                best = int(np.argmax(x["test_accuracy"]))
                rows.append([task, labels[k], acc, ctrl, f"{best} ({_f(x['test_accuracy'][best])})",
                             _f(x["selectivity"][best]) if "selectivity" in x else "-", _f(x["majority"]),
                             f"{x['n_train']}/{x['n_test']}"])
        lines += ["## Linear probes per layer", "",
                  "Softmax regression (our `functional.linear_*`, `cross_entropy_*` and `optim.AdamW`) on frozen "
                  "vectors, one probe per layer; word features are the first WordPiece of each word. Layer 0 is "
                  "the embedding output. Control task (Hewitt & Liang 2019): a random label per word type; "
                  "selectivity = accuracy - control accuracy, at the best layer.", "",
                  *_table(["task", "model", "test accuracy by layer (0 / 1 / ...)", "control accuracy by layer",
                           "best layer (accuracy)", "selectivity there", "majority", "train/test"], rows), "",
                  *[f"task {t} skipped: {res['skipped']}" for t, res in r["model"].items() if "skipped" in res],
                  "", *[f"![{p.stem}]({p.name})\n" for p in pictures]]

    if "structural" in results:
        r = results["structural"]
        fig = figures.plot_structural({k: r[k] for k in ("model", "random")}, labels, out / "structural.png")
        rows = [[labels[k], " / ".join(_f(v) for v in r[k]["uuas"]), " / ".join(_f(v) for v in r[k]["spearman"])]
                for k in ("model", "random")]
        lines += ["## Structural probe (Hewitt & Manning 2019)", "",
                  "A linear map B (rank 64) trained so that ||B(h_i - h_j)||^2 matches the number of edges between "
                  "words i and j in the dependency tree. UUAS: the minimum spanning tree of the predicted distances "
                  "against the gold tree, punctuation left out; Spearman: predicted vs true distances per word "
                  "(sentences of 5+ words). Baseline: the linear chain (each word linked to the next) scores UUAS "
                  f"{_f(r['model']['linear_chain_uuas'])}.", "",
                  *_table(["", "UUAS by layer (0 / 1 / ...)", "Spearman by layer"], rows), "",
                  f"![structural probe]({fig.name})", ""]

    if "attention" in results:
        r = results["attention"]
        two = {k: labels[k] for k in ("model", "random")}
        hs = figures.plot_head_stats({k: r[k]["stats"] for k in two}, labels, out / "attention_heads.png")
        dep = figures.plot_dependency({k: r[k]["best"] for k in two}, labels, out / "attention_dependencies.png")
        maps = []
        for n, words in enumerate(r["sentences"]):
            encs, am, pieces = attn_mod.sentence_attentions(model, tokenizer, [words])
            _, ar, _ = attn_mod.sentence_attentions(random_model, tokenizer, [words])
            maps.append(figures.plot_attention_maps({"model": am[0], "random": ar[0]}, pieces[0], labels,
                                                    " ".join(words), out / f"attention_map_{n}.png"))
        stats = r["model"]["stats"]
        L, A = np.shape(stats["entropy"])
        rows = [[f"L{l + 1} H{h}"] + [f"{_f(r['model']['stats'][s][l][h])} / {_f(r['random']['stats'][s][l][h])}"
                                      for s in attn_mod.STATS] for l in range(L) for h in range(A)]
        best = r["model"]["best"]
        brow = [[rel, b["n"], f"L{b['layer']} H{b['head']}: {_f(b['accuracy'])}",
                 _f(r["random"]["best"][rel]["accuracy"]) if rel in r["random"]["best"] else "-",
                 f"{b['offset']:+d}: {_f(b['offset_accuracy'])}"] for rel, b in best.items()]
        lines += ["## Attention heads", "",
                  "Per head, mean over the test sentences' tokens (model / random model): attention mass on "
                  "[CLS], [SEP], punctuation, the previous and the next token, and the entropy of the attention "
                  "distribution (nats).", "",
                  *_table(["head", *attn_mod.STATS], rows), "", f"![head statistics]({hs.name})", "",
                  "Dependency relations: how often the head's most-attended word (word-level attention) is the "
                  "dependency head, for the best head, against the best fixed offset.", "",
                  *_table(["relation", "n", "best head (model)", "best head (random)", "best fixed offset"], brow),
                  "", f"![dependencies]({dep.name})", "",
                  *[f"![attention map {n}]({m.name})" for n, m in enumerate(maps)], ""]

    outputs.write_file(out / "results.json", json.dumps(_jsonable(results), indent=1) + "\n")
    report = outputs.write_file(out / "report.md", "\n".join(lines) + "\n")
    figures_written = [p.name for p in out.glob("*.png") if p.stat().st_mtime >= started]
    outputs.write_marker(out, KIND, files=sorted(figures_written + ["results.json", "report.md"]))
    return report


def main(args) -> int:
    only = parse_only(args.only)
    if args.limit is not None:
        positive_int("--limit", args.limit)
    t0 = time.perf_counter()
    comm = distributed.world()              # one process, or this rank of an mpiexec run
    # The model first: a --model that is not one leaves no empty --out behind.
    model, random_model, tokenizer, description = load_models(args.model, args.seed)
    out = distributed.on_root(comm, lambda: outputs.claim(
        args.out, KIND, overwrite=args.overwrite, recognise=lambda folder: (
            (folder / "report.md").is_file() and (folder / "results.json").is_file())))
    labels = {"model": "random model" if args.model == "random" else "pretrained",
              "embeddings": "embedding layer", "random": "random init"}
    # The probes are independent: rank r runs probes r, r + N, ...; rank 0 gathers and writes.
    parts = distributed.gather_results(comm, lambda: run_probes(
        model, random_model, tokenizer, distributed.share(only, comm),
        np.random.default_rng(args.seed), args.limit, args.batch_size,
        ProbeConfig(steps=args.probe_steps)))
    if parts is None:
        return 0
    results = parts[0]
    if len(parts) > 1:
        merged = {k: v for part in parts for k, v in part.items() if k != "seconds"}
        results = {k: merged[k] for k in [*only, "structural"] if k in merged}
        results["seconds"] = {k: v for part in parts for k, v in part["seconds"].items()}
    results["model"] = description
    report = write_report(results, out, model, random_model, tokenizer, description, labels)
    print(f"report: {report}, numbers: {out / 'results.json'} ({time.perf_counter() - t0:.0f} s)")
    return 0
