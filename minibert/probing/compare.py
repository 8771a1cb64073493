"""Probed models side by side: the tables lesson 18 prints and ``data/results/probing/comparison.md`` holds.

Each model's numbers come from the ``results.json`` that ``minibert probe`` wrote for it; nothing is
recomputed here, so the comparison of the shipped runs is exactly reproducible (a test regenerates it).
Beside them stand the probe's own baselines (agree with the nearest noun, chance, the linear chain) and,
where a paper reports a number for BERT-base on the same kind of item, that number. Only numbers the papers
state are quoted; where a paper reports a finding but no comparable number, the column says so.

    comparison({"tiny": json.load(...), "mini": json.load(...)}) -> Markdown
"""
from __future__ import annotations

import json
from pathlib import Path

ATTRACTORS = ("0", "1", "2", "3")
CONSTRUCTIONS = ("simple", "pp", "subject_rc", "object_rc", "sent_complement", "vp_coordination")
# BERT-base on Marvin & Linzen's stimuli, as Goldberg (2019) reports them (accuracy per construction).
GOLDBERG_BERT_BASE = {"simple": 1.00, "pp": 0.85, "subject_rc": 0.84, "object_rc": 0.89}
LAYER_TASKS = ("pos", "chunk", "subject_number", "licensor")


def load(folders: dict[str, str | Path]) -> dict[str, dict]:
    """``{name: results.json of that folder}``, in the order given."""
    results = {}
    for name, folder in folders.items():
        path = Path(folder) / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `minibert probe --model ... --out {folder}` first")
        results[name] = json.loads(path.read_text(encoding="utf-8"))
    return results


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [_row(header), _row(["---"] + ["---:"] * (len(header) - 1)), *(_row(r) for r in rows)]


def _f(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _best(curve: list[float]) -> tuple[int, float]:
    layer = max(range(len(curve)), key=lambda i: (curve[i], -i))
    return layer, curve[layer]


def agreement(results: dict[str, dict]) -> list[str]:
    first = next(iter(results.values()))["agreement"]["model"]
    rows = []
    for name, r in results.items():
        a = r["agreement"]["model"]
        rows.append([name] + [_f(a["by_attractors"][k]["accuracy"]) for k in ATTRACTORS] + [_f(a["accuracy"])]
                    + [_f(a["follows_nearest_noun_when_it_differs"])])
    base = first["nearest_noun_baseline"]
    rows.append(["agree with the nearest noun"] + [_f(base["by_attractors"][k]["accuracy"]) for k in ATTRACTORS]
                + [_f(base["accuracy"]), "1.00"])
    by_attractors = _table(["model", "0 attractors", "1", "2", "3", "all", "follows a nearest noun of the other "
                            "number"], rows)
    rows = [[name] + [_f(r["agreement"]["model"]["by_construction"][c]["accuracy"]) for c in CONSTRUCTIONS]
            for name, r in results.items()]
    rows.append(["agree with the nearest noun"] + [_f(base["by_construction"][c]["accuracy"])
                                                   for c in CONSTRUCTIONS])
    rows.append(["BERT-base (Goldberg 2019)"] + [_f(GOLDBERG_BERT_BASE.get(c)) for c in CONSTRUCTIONS])
    by_construction = _table(["model", *CONSTRUCTIONS], rows)
    return ["## Subject-verb agreement (cloze, accuracy)", "", *by_attractors, "", *by_construction]


def npi(results: dict[str, dict]) -> list[str]:
    rows = []
    for name, r in results.items():
        n = r["npi"]["model"]
        rows.append([name, _f(n["pairs"]["licensor"]), _f(n["pairs"]["scope"]), _f(n["pairs"]["npi_present"]),
                     _f(n["controlled"]["licensor"]), _f(n["controlled"]["scope"])])
    rows.append(["chance", "0.50", "0.50", "0.50", "0.50", "0.50"])
    return ["## NPI licensing (minimal pairs by pseudo-log-likelihood, accuracy over groups)", "",
            *_table(["model", "licensor", "scope", "NPI present", "licensor (frequency-controlled)",
                     "scope (frequency-controlled)"], rows),
            "", "Warstadt et al. (2019) report that BERT detects an NPI and its licensor more reliably than a "
                "scope violation; they give no single number comparable to these cells."]


def negation(results: dict[str, dict]) -> list[str]:
    rows = []
    for name, r in results.items():
        g = r["negation"]["model"]
        rows.append([name, _f(g["affirmative_accuracy"]), _f(g["negated_accuracy"]), _f(g["same_top_candidate"]),
                     f"{g['logp_change']:+.2f}"])
    first = next(iter(results.values()))["negation"]["model"]
    rows.append(["chance", _f(first["chance_affirmative"]), "-", "-", "-"])
    return ["## Negation (\"A X is a [MASK].\" vs \"A X is not a [MASK].\")", "",
            *_table(["model", "affirmative: true category first", "negated: true category not first",
                     "same best candidate", "log p(true) negated - affirmative"], rows),
            "", "Ettinger (2020): BERT-base ranks the same category first with and without *not* (its "
                "predictions barely change); the number of interest is how often the best candidate stays."]


def facts(results: dict[str, dict]) -> list[str]:
    frames = list(next(iter(results.values()))["facts"]["model"]["frames"])
    rows = [[name] + [_f(r["facts"]["model"]["frames"][f]["accuracy"]) for f in frames]
            + [_f(r["facts"]["model"]["all"]["accuracy"])] for name, r in results.items()]
    first = next(iter(results.values()))["facts"]["model"]
    rows.append(["chance"] + [_f(first["frames"][f]["chance"]) for f in frames] + [_f(first["all"]["chance"])])
    return ["## Facts of the corpus's world (cloze, the best candidate is true)", "",
            *_table(["model", *frames, "all"], rows)]


def layers(results: dict[str, dict]) -> list[str]:
    rows = []
    for task in LAYER_TASKS:
        for name, r in results.items():
            p = r["layers"]["model"][task]
            layer, acc = _best(p["test_accuracy"])
            curve = " / ".join(f"{a:.2f}" for a in p["test_accuracy"])
            selectivity = _f(p["selectivity"][layer]) if "selectivity" in p else "-"
            rows.append([task, name, curve, f"{layer} ({acc:.2f})", selectivity, _f(p["majority"])])
    structural = []
    for name, r in results.items():
        s = r["structural"]["model"]
        layer, uuas = _best(s["uuas"])
        structural.append([name, " / ".join(f"{u:.2f}" for u in s["uuas"]), f"{layer} ({uuas:.2f})",
                           _f(s["spearman"][layer]), _f(s["linear_chain_uuas"])])
    return ["## Linear probes per layer (test accuracy; layer 0 is the embedding output)", "",
            *_table(["task", "model", "by layer", "best layer", "selectivity there", "majority"], rows), "",
            "## Structural probe (Hewitt & Manning 2019: undirected attachment score of the minimum spanning "
            "tree)", "",
            *_table(["model", "UUAS by layer", "best layer", "Spearman there", "linear chain"], structural)]


def comparison(results: dict[str, dict]) -> str:
    """The Markdown comparison of probed models (``{name: results.json}``), in the order given."""
    if len(results) < 1:
        raise ValueError("comparison needs the results of at least one probed model")
    parts = [f"# Probes of {', '.join(results)}, side by side", "",
             "Every number is read from the models' `minibert probe` results; the lines below the models "
             "are the probes' baselines and the papers' BERT-base numbers.", ""]
    for section in (agreement, npi, negation, facts, layers):
        parts += section(results) + [""]
    return "\n".join(parts)
