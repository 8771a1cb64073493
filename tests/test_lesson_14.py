"""Lesson 14 runs top to bottom in quick mode and prints the numbers its prose promises."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "lessons" / "14_adversarial_finetuning.py"
NUM = r"([-+]?[0-9.]+(?:e[-+]?\d+)?)"


def numbers(pattern: str, text: str) -> list[float]:
    match = re.search(pattern, text, flags=re.M)
    assert match, f"pattern {pattern!r} not found in the lesson's output:\n{text[-3000:]}"
    return [float(g) for g in match.groups()]


def test_lesson_14_runs_in_quick_mode(tmp_path):
    figures = tmp_path / "figures"      # MINIBERT_FIGURES: PNGs never go into the repository
    # A stability folder with one setting of made-up runs: the lesson must tabulate it and skip the others.
    records = [{"strategy": s, "seed": i, "metric": "accuracy", "dev": dev, "test": dev, "majority": 0.5,
                "failed": dev <= 0.5, "seconds": 1.0, "task": "entailment"}
               for s, devs in (("dropout", (0.6, 0.7, 0.8)), ("freelb", (0.5, 0.5, 0.56)),
                               ("freelb0.03", (0.62, 0.64, 0.5)), ("mix", (0.9, 0.9, 0.9)))
               for i, dev in enumerate(devs)]
    (tmp_path / "entailment-500").mkdir()
    (tmp_path / "entailment-500" / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    started = time.time()
    env = dict(os.environ, MINIBERT_QUICK="1", MINIBERT_FIGURES=str(figures), MPLBACKEND="Agg",
               OPENBLAS_NUM_THREADS="1", MINIBERT_STABILITY_RESULTS=str(tmp_path))
    proc = subprocess.run([sys.executable, str(LESSON)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert not re.search(r"\bFAIL", out)

    # 1. the perturbation's gradient: zero at padding, concentrated on [CLS], checked by finite differences
    pad, real = numbers(rf"at padding: {NUM}; at real tokens: {NUM}", out)
    assert pad == 0 and real > 0
    share, uniform = numbers(r"share of \|\|g\|\|\^2 on \[CLS\], median over the batch: ([0-9.]+) "
                             r"\(a uniform share would be ([0-9.]+)\)", out)
    assert share > 3 * uniform
    assert numbers(r"^(\d+) of (\d+) within 1e-06; gradient at padding: 0\.0e\+00", out) == [2, 2]

    # 2. FreeLB by hand = freelb_step; the ascent raises the loss; replaying the masks makes it steady
    ascent = numbers(r"losses along the ascent ([0-9.]+) -> ([0-9.]+) -> ([0-9.]+)", out)
    assert ascent[0] < ascent[1] < ascent[2]
    adv_loss, ours = numbers(r"adv_loss ([0-9.]+) \(mean of ours ([0-9.]+)\)", out)
    assert adv_loss == ours and abs(ours - sum(ascent) / 3) < 2e-4
    assert numbers(r"final \|\|delta\|\|_F ([0-9.]+)", out)[0] <= 0.2 + 1e-4
    assert numbers(rf"by hand vs freelb_step: max difference {NUM}", out)[0] < 1e-6
    same_mean, same_std = numbers(rf"with the same masks: mean {NUM}, std {NUM}", out)
    new_mean, new_std = numbers(rf"with new masks\s*: mean {NUM}, std {NUM}", out)
    assert same_mean > 0 and same_std < new_std
    rises = [float(v) for v in re.findall(r"^alpha [0-9.]+\s+L_0 [0-9.]+\s+L_1 [0-9.]+\s+\(\+([0-9.]+)\)", out,
                                          flags=re.M)]
    assert len(rises) == 4 and all(0 < a < b for a, b in zip(rises, rises[1:]))
    timings = re.findall(r"^(plain|FreeLB K=2|FreeLB K=3|SMART|SMART \+ Bregman)\s+[0-9.]+ ms\s+[0-9.]+x plain", out,
                         flags=re.M)
    assert len(timings) == 5          # speed itself is not tested: it depends on the machine's load

    # 3. the symmetric KL: by hand = package = finite differences; the detached gradient is half near P = Q
    assert len(re.findall(r"^symmetric KL.*\s+ok$", out, flags=re.M)) == 4
    assert max(numbers(rf"by hand vs package: value {NUM}, d a {NUM}, d b {NUM}", out)) < 1e-12
    ratios = dict(re.findall(r"^\s+([0-9.]+)\s+[0-9.e+-]+\s+([0-9.]+)\s+[0-9.]+$", out, flags=re.M))
    assert abs(float(ratios["0.001"]) - 0.5) < 0.002 and float(ratios["3"]) > 0.55
    naive, package = numbers(rf"~1e-05 apart: exact l_s {NUM}; float32 relative error: by hand {NUM}, "
                             rf"symmetric_kl {NUM}", out)[1:]
    assert package < 1e-5 and package < naive

    # 4. one ascent step finds a far worse perturbation than random signs of the same inf-norm
    start = numbers(rf"start delta_0\s+: {NUM}", out)[0]
    step = numbers(rf"one ascent step\s+: {NUM}", out)[0]
    signs = numbers(rf"random signs, same inf-norm\s*: {NUM}", out)[0]
    assert start < signs and step > 5 * signs
    assert numbers(rf"by hand max difference {NUM}", out)[0] < 1e-6
    assert "one clean forward: refused: backward(dloss=...) needs the last forward() to have had labels" in out
    ok, total = numbers(r"run_check\('smart'\).*: (\d+) of (\d+) ok", out)
    assert ok == total > 0

    # 5. the Bregman term is exactly 0 before the first step and grows as the teacher lags
    breg = [float(v) for v in re.findall(rf"D_breg before the step {NUM}", out)]
    assert breg[0] == 0 and breg[-1] > 0

    # 6. R_s and its gradient grow with eps; negligible at the paper's 1e-5
    eps_rows = re.findall(rf"^eps ([0-9.e-]+)\s+R_s {NUM}\s+\|grad of R_s\| / \|grad of the loss\| {NUM}", out,
                          flags=re.M)
    assert [e for e, _, _ in eps_rows] == ["1e-05", "0.001", "0.01"]
    r_s = [float(r) for _, r, _ in eps_rows]
    grads = [float(g) for _, _, g in eps_rows]
    assert r_s[0] < 1e-8 and r_s[0] < r_s[1] < r_s[2] and grads[0] < grads[1] < grads[2] < 1

    # 7. lambda_s = 10 makes the model less sensitive to the adversarial perturbation than plain training
    smooth = {float(lam): (float(rnd), float(adv)) for lam, rnd, adv in re.findall(
        rf"^\s+([0-9.]+)\s+\d+\s+[0-9.]+\s+{NUM}\s+{NUM}\s+[0-9.]+$", out, flags=re.M)}
    assert set(smooth) == {0.0, 1.0, 10.0} and smooth[10.0][1] < smooth[0.0][1]

    # 8. four strategies fine-tuned; the figure was written
    rows = re.findall(r"^(plain|freelb|freelb alpha 0\.03|smart)\s+([0-9.]+)\s+([0-9.]+)\s+[0-9.]+$", out, flags=re.M)
    assert len(rows) == 4 and all(0 <= float(d) <= 1 for _, d, _ in rows)
    assert (figures / "14_adversarial.png").stat().st_mtime >= started - 1

    # 9. the stability folder: the one setting present is tabulated with this lesson's strategies only
    # (freelb0.03 when it has runs; smart has none here and is left out)
    assert out.count("note: no stability runs for") == 5
    assert "| dropout | 3 | 0.700 | 0.100 | 0.700 | 0.800 | 0/3 | 0.700 |" in out
    assert "| freelb | 3 | 0.520 |" in out and "| mix |" not in out and "| smart |" not in out
    assert "| freelb0.03 | 3 | 0.587 | 0.076 | 0.620 | 0.640 | 1/3 | 0.630 |" in out
    assert "stability settings found: 1 of 6" in out
    assert (figures / "14_stability_entailment-500.png").stat().st_mtime >= started - 1
