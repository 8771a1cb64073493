"""The graded exercises: the package's own functions (wrapped into each template's signatures)
pass every check; each classic mistake, written deliberately, is recognised by name; the command
works end to end."""
import textwrap

import pytest

from minibert import exercises
from minibert.cli import main

# The package's implementations, wrapped into the templates' signatures.
SOLUTIONS = {
    "linear": """
        from minibert import functional as F
        linear_forward = F.linear_forward
        linear_backward = F.linear_backward
        """,
    "softmax_cross_entropy": """
        from minibert import functional as F
        def softmax_forward(x):
            return F.softmax_forward(x)
        softmax_backward = F.softmax_backward
        def cross_entropy_forward(logits, targets):
            return F.cross_entropy_forward(logits, targets)
        cross_entropy_backward = F.cross_entropy_backward
        """,
    "gelu": """
        from minibert import functional as F
        def gelu_forward(x):
            return F.gelu_forward(x)
        gelu_backward = F.gelu_backward
        """,
    "layernorm": """
        from minibert import functional as F
        layernorm_forward = F.layernorm_forward
        layernorm_backward = F.layernorm_backward
        """,
    "dropout": """
        from minibert import functional as F
        dropout_forward = F.dropout_forward
        dropout_backward = F.dropout_backward
        """,
    "embedding": """
        from minibert import functional as F
        embedding_forward = F.embedding_forward
        embedding_backward = F.embedding_backward
        """,
    "attention_head": """
        import numpy as np
        from minibert import functional as F
        def attention_head_forward(q, k, v):
            no_mask = np.zeros(q.shape[:2])
            c, _, cache = F.attention_forward(q[:, None], k[:, None], v[:, None], no_mask)
            return c[:, 0], cache
        def attention_head_backward(dc, cache):
            return tuple(g[:, 0] for g in F.attention_backward(dc[:, None], cache))
        """,
    "multihead_attention": """
        import numpy as np
        from minibert import functional as F
        def split(t, a):
            B, T, H = t.shape
            return t.reshape(B, T, a, H // a).transpose(0, 2, 1, 3)
        def merge(t):
            B, A, T, D = t.shape
            return t.transpose(0, 2, 1, 3).reshape(B, T, A * D)
        def multihead_attention_forward(x, attention_mask, wq, bq, wk, bk, wv, bv, num_heads):
            proj = [F.linear_forward(x, w, b) for w, b in ((wq, bq), (wk, bk), (wv, bv))]
            bias = (1 - attention_mask) * F.MASK_BIAS
            c, _, att = F.attention_forward(*(split(p[0], num_heads) for p in proj), bias)
            return merge(c), (proj, att, num_heads)
        def multihead_attention_backward(dc, cache, dwq, dbq, dwk, dbk, dwv, dbv):
            proj, att, a = cache
            grads = F.attention_backward(split(dc, a), att)
            bufs = ((dwq, dbq), (dwk, dbk), (dwv, dbv))
            return sum(F.linear_backward(merge(g), p[1], w, b)
                       for g, p, (w, b) in zip(grads, proj, bufs))
        """,
    "mlm_tied": """
        from minibert import functional as F
        mlm_decoder_forward = F.linear_forward
        mlm_decoder_backward = F.linear_backward
        """,
    "adamw": """
        from minibert.optim import AdamW
        def adamw_step(param, grad, m, v, t, lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                       correct_bias=True):
            opt = AdamW([("w", param, grad.copy())], lr, betas, eps, weight_decay, correct_bias)
            opt.m[0], opt.v[0], opt.t = m, v, t - 1      # the caller's moments, updated in place
            opt.step()
        """,
    "mixout": """
        import numpy as np
        from minibert.nn import Linear
        from minibert.finetuning.mixout import MixoutLinear
        class GivenMask:
            # the layer keeps column j when its draw is >= p: draws of 1 keep, draws of 0 drop
            def __init__(self, keep):
                self.draws = np.where(keep, 1.0, 0.0)
            def random(self, n):
                return self.draws
        def mixout_forward(x, weight, bias, target, p, keep):
            linear = Linear(weight.shape[1], weight.shape[0], np.random.default_rng(0))
            layer = MixoutLinear(linear, p, np.random.default_rng(0), target)
            layer.weight.data, layer.bias.data = weight, bias
            layer.rng = GivenMask(keep)
            return layer.train().forward(x), layer
        def mixout_backward(dy, layer, dweight, dbias):
            layer.weight.grad, layer.bias.grad = dweight, dbias
            return layer.backward(dy)
        """,
    "wordpiece": """
        from minibert.tokenization import WordpieceTokenizer
        def wordpiece_tokenize(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
            tokenizer = WordpieceTokenizer(vocab, unk_token, max_input_chars_per_word)
            return list(tokenizer.tokenize_word(word))
        """,
    "masking": """
        from minibert.pretraining.data import DataConfig, InstanceMaker
        def mask_tokens(ids, rng, vocab_size, mask_id, special_ids, num_to_predict):
            maker = InstanceMaker.__new__(InstanceMaker)
            maker.config = DataConfig(max_predictions_per_seq=num_to_predict, masked_lm_prob=1.0)
            maker.cls_id, maker.sep_id = sorted(special_ids)
            maker.mask_id, maker.vocab_size = mask_id, vocab_size
            return maker.mask(ids, rng)
        """,
}


def write(tmp_path, name, source):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")


def grade(tmp_path, name, source):
    write(tmp_path, name, source)
    return exercises.check(name, tmp_path)


def test_every_exercise_has_a_solution_here():
    assert set(SOLUTIONS) | {"encoder_backward"} == set(exercises.EXERCISES)
    assert len(exercises.EXERCISES) >= 14


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_the_package_passes_every_check(tmp_path, name):
    report = grade(tmp_path, name, SOLUTIONS[name])
    assert report.passed, report.format()
    assert len(report.checks) >= 2


def test_encoder_backward_solution_passes(tmp_path):
    # The package's encoder layer, read through its forward's cache: the BertLayer module's backward
    # is the package's, so the template's forward is replaced by the module's. A module's backward
    # consumes its forward's cache and the grader calls the backward twice (to check it adds), so the
    # "cache" is the layer and its inputs, and each backward replays the (deterministic) forward.
    source = """
        import numpy as np
        from minibert.config import BertConfig
        from minibert.models.bert import BertLayer
        def encoder_layer_forward(x, mask_bias, params, num_heads):
            H = x.shape[-1]
            I = params["intermediate.dense.weight"].shape[0]
            config = BertConfig(vocab_size=10, hidden_size=H, num_hidden_layers=1,
                                num_attention_heads=num_heads, intermediate_size=I,
                                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
            layer = BertLayer(config, np.random.default_rng(0)).astype(np.float64).eval()
            layer.load_state_dict(params)
            y, _ = layer.forward(x, mask_bias)
            return y, (layer, x, mask_bias)
        def encoder_layer_backward(dy, cache, grads):
            layer, x, mask_bias = cache
            layer.zero_grad()
            layer.forward(x, mask_bias)
            dx = layer.backward(dy)
            for name, g in layer.named_grads():
                grads[name] += g
            return dx
        """
    report = grade(tmp_path, "encoder_backward", source)
    assert report.passed, report.format()


def _replace(name, old, new):
    """SOLUTIONS[name] with one snippet replaced (both written at the solutions' indentation)."""
    old, new = old.strip("\n"), new.strip("\n")
    assert old in SOLUTIONS[name], old
    return SOLUTIONS[name].replace(old, new)


MISTAKES = [
    ("linear", """
        import numpy as np
        from minibert import functional as F
        linear_forward = F.linear_forward
        def linear_backward(dy, cache, dweight, dbias=None):
            x, w = cache
            dweight[...] = dy.reshape(-1, dy.shape[-1]).T @ x.reshape(-1, x.shape[-1])
            dbias[...] = dy.reshape(-1, dy.shape[-1]).sum(axis=0)
            return dy @ w
        """, "'=' instead of '+='"),
    ("linear", """
        import numpy as np
        from minibert import functional as F
        linear_forward = F.linear_forward
        def linear_backward(dy, cache, dweight, dbias=None):
            x, w = cache
            dx = F.linear_backward(dy, cache, dweight, None)
            dbias += dy.reshape(-1, dy.shape[-1]).mean(axis=0)
            return dx
        """, "db is the mean"),
    ("softmax_cross_entropy", _replace("softmax_cross_entropy", """
        def softmax_forward(x):
            return F.softmax_forward(x)
        """, """
        import numpy as np
        def softmax_forward(x):
            e = np.exp(x)
            p = e / e.sum(axis=-1, keepdims=True)
            return p, p
        """), "subtract each row's max"),
    ("softmax_cross_entropy", _replace("softmax_cross_entropy", """
        def softmax_forward(x):
            return F.softmax_forward(x)
        """, """
        import numpy as np
        def softmax_forward(x):
            e = np.exp(x - x.max(axis=0, keepdims=True))
            p = e / e.sum(axis=0, keepdims=True)
            return p, p
        """), "wrong axis"),
    ("softmax_cross_entropy", _replace("softmax_cross_entropy", """
        cross_entropy_backward = F.cross_entropy_backward
        """, """
        def cross_entropy_backward(dloss, cache):
            return F.cross_entropy_backward(dloss, cache) * len(cache[1])
        """), "1/N of the mean"),
    ("gelu", """
        from minibert import functional as F
        def gelu_forward(x):
            return F.gelu_forward(x, approximate=True)
        gelu_backward = F.gelu_backward
        """, "tanh approximation"),
    ("gelu", """
        from minibert import functional as F
        from minibert.special import normal_cdf
        def gelu_forward(x):
            return F.gelu_forward(x)
        def gelu_backward(dy, cache):
            return dy * normal_cdf(cache[0])
        """, "x * phi(x) term"),
    ("layernorm", """
        import numpy as np
        from minibert import functional as F
        def layernorm_forward(x, gamma, beta, eps=1e-12):
            mean = x.mean(axis=1, keepdims=True)
            var = ((x - mean) ** 2).mean(axis=1, keepdims=True)
            xhat = (x - mean) / np.sqrt(var + eps)
            return xhat * gamma + beta, F.layernorm_forward(x, gamma, beta, eps)[1]
        layernorm_backward = F.layernorm_backward
        """, "layer norm over the wrong axis"),
    ("layernorm", """
        from minibert import functional as F
        layernorm_forward = F.layernorm_forward
        def layernorm_backward(dy, cache, dgamma, dbeta):
            xhat, rstd, gamma = cache
            F.layernorm_backward(dy, cache, dgamma, dbeta)
            g = dy * gamma
            return rstd * (g - g.mean(axis=-1, keepdims=True))
        """, "variance's term is missing"),
    ("dropout", """
        def dropout_forward(x, p, rng, mask=None):
            if mask is None:
                mask = (rng.random(x.shape) >= p).astype(x.dtype)
            return x * mask, mask
        def dropout_backward(dy, mask):
            return dy * mask
        """, "dropout not rescaled"),
    ("dropout", """
        def dropout_forward(x, p, rng, mask=None):
            if mask is None:
                mask = (rng.random(x.shape) < p) / p
            return x * mask, mask
        def dropout_backward(dy, mask):
            return dy * mask
        """, "probability of DROPPING"),
    ("embedding", """
        from minibert import functional as F
        embedding_forward = F.embedding_forward
        def embedding_backward(dout, ids, dweight):
            dweight[ids.reshape(-1)] += dout.reshape(-1, dout.shape[-1])
        """, "buffered"),
    ("attention_head", """
        import math
        import numpy as np
        from minibert import functional as F
        def attention_head_forward(q, k, v):
            s = math.sqrt(q.shape[-1])           # cancels the package's scale: no scaling at all
            no_mask = np.zeros(q.shape[:2])
            c, _, cache = F.attention_forward(q[:, None] * s, k[:, None], v[:, None], no_mask)
            return c[:, 0], cache
        def attention_head_backward(dc, cache):
            return tuple(g[:, 0] for g in F.attention_backward(dc[:, None], cache))
        """, "forgot the 1/sqrt(D) scale"),
    ("attention_head", """
        import numpy as np
        from minibert import functional as F
        def attention_head_forward(q, k, v):
            s = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
            e = np.exp(s - s.max(axis=-2, keepdims=True))
            p = e / e.sum(axis=-2, keepdims=True)
            return p @ v, None
        def attention_head_backward(dc, cache):
            return np.zeros_like(dc), np.zeros_like(dc), np.zeros_like(dc)
        """, "softmax over the queries"),
    ("multihead_attention", _replace("multihead_attention", """
            bias = (1 - attention_mask) * F.MASK_BIAS
            c, _, att = F.attention_forward(*(split(p[0], num_heads) for p in proj), bias)
        """, """
            bias = (1 - attention_mask) * F.MASK_BIAS
            q, k, v = (split(p[0], num_heads) for p in proj)
            s = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1]) + bias[:, None, :, None]
            e = np.exp(s - s.max(axis=-1, keepdims=True))
            c = (e / e.sum(axis=-1, keepdims=True)) @ v
            att = None
        """), "mask added on the wrong axis"),
    ("multihead_attention", _replace("multihead_attention", """
            c, _, att = F.attention_forward(*(split(p[0], num_heads) for p in proj), bias)
        """, """
            q, k, v = (split(p[0], num_heads) for p in proj)
            c, _, att = F.attention_forward(q * np.sqrt(q.shape[-1]), k, v, bias)
        """), "forgot the 1/sqrt(D) scale"),
    ("mlm_tied", """
        from minibert import functional as F
        mlm_decoder_forward = F.linear_forward
        def mlm_decoder_backward(dlogits, cache, dword_embeddings, dbias):
            h, E = cache
            dword_embeddings[...] = dlogits.T @ h
            dbias += dlogits.sum(axis=0)
            return dlogits @ E
        """, "'=' instead of '+='"),
    ("adamw", """
        import numpy as np
        def adamw_step(param, grad, m, v, t, lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                       correct_bias=True):
            b1, b2 = betas
            m *= b1; m += (1 - b1) * grad
            v *= b2; v += (1 - b2) * grad * grad
            param *= 1 - lr * weight_decay
            param -= lr * m / (np.sqrt(v) + eps)
        """, "bias correction missing"),
    ("adamw", """
        import numpy as np
        def adamw_step(param, grad, m, v, t, lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                       correct_bias=True):
            b1, b2 = betas
            grad = grad + weight_decay * param
            m *= b1; m += (1 - b1) * grad
            v *= b2; v += (1 - b2) * grad * grad
            c1 = 1 - b1 ** t if correct_bias else 1.0
            c2 = 1 - b2 ** t if correct_bias else 1.0
            param -= lr * (m / c1) / (np.sqrt(v / c2) + eps)
        """, "instead of decoupled"),
    ("mixout", _replace("mixout", """
            layer.weight.grad, layer.bias.grad = dweight, dbias
        """, """
            layer.weight.grad, layer.bias.grad = dweight, dbias
            layer.reference_gradient = True
        """), "reference implementation's gradient"),
    ("mixout", """
        import numpy as np
        def mixout_forward(x, weight, bias, target, p, keep):
            w_tilde = target + keep * (weight - target)
            return x @ w_tilde.T + bias, (x, w_tilde, keep)
        def mixout_backward(dy, cache, dweight, dbias):
            x, w_tilde, keep = cache
            dweight += (dy.T @ x) * keep
            dbias += dy.sum(axis=0)
            return dy @ w_tilde
        """, "not rescaled"),
    ("wordpiece", """
        def wordpiece_tokenize(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
            if len(word) > max_input_chars_per_word:
                return [unk_token]
            pieces, start = [], 0
            while start < len(word):
                for end in range(start + 1, len(word) + 1):
                    piece = ("##" if start else "") + word[start:end]
                    if piece in vocab:
                        break
                else:
                    return [unk_token]
                pieces.append(piece)
                start = end
            return pieces
        """, "shortest match first"),
    ("wordpiece", """
        def wordpiece_tokenize(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
            if len(word) > max_input_chars_per_word:
                return [unk_token]
            pieces, start = [], 0
            while start < len(word):
                for end in range(len(word), start, -1):
                    piece = ("##" if start else "") + word[start:end]
                    if piece in vocab:
                        break
                else:
                    return pieces + [unk_token]
                pieces.append(piece)
                start = end
            return pieces
        """, "only the part that failed"),
    ("masking", """
        def mask_tokens(ids, rng, vocab_size, mask_id, special_ids, num_to_predict):
            candidates = [i for i, t in enumerate(ids) if t not in special_ids]
            rng.shuffle(candidates)
            chosen = sorted(candidates[:num_to_predict])
            out = list(ids)
            for i in chosen:
                out[i] = mask_id
            return out, chosen, [ids[i] for i in chosen]
        """, "every chosen token became [MASK]"),
    ("masking", """
        def mask_tokens(ids, rng, vocab_size, mask_id, special_ids, num_to_predict):
            candidates = [i for i, t in enumerate(ids) if t not in special_ids]
            rng.shuffle(candidates)
            out = list(ids)
            for i in candidates[:num_to_predict]:
                r = rng.random()
                other = rng.randint(0, vocab_size - 1) if r >= 0.9 else None
                out[i] = mask_id if r < 0.8 else ids[i] if r < 0.9 else other
            positions = list(range(len(ids)))
            return out, positions, list(ids)
        """, "labels of unmasked tokens counted"),
]


@pytest.mark.parametrize("name, source, diagnosis", MISTAKES,
                         ids=[f"{m[0]}-{m[2][:24]}" for m in MISTAKES])
def test_a_classic_mistake_is_recognised(tmp_path, name, source, diagnosis):
    report = grade(tmp_path, name, source)
    assert not report.passed
    assert any(diagnosis in d for d in report.diagnoses), report.format()


def test_encoder_backward_missing_residual_is_recognised(tmp_path):
    blank = "    raise NotImplementedError\n"
    source = exercises.EXERCISES["encoder_backward"].body.replace(blank, """\
    from minibert.exercises.layers import _encoder_backward
    return _encoder_backward(dy, cache, grads, "ffn_residual")
""")
    report = grade(tmp_path, "encoder_backward", source)
    assert not report.passed
    assert any("feed-forward's residual is missing" in d for d in report.diagnoses), report.format()
    failed = [c for c in report.checks if not c.ok and "finite differences" in c.what]
    assert failed and "the first disagreement is in" in failed[0].detail


def test_feedback_names_shape_axis_and_element(tmp_path):
    report = grade(tmp_path, "linear", """
        from minibert import functional as F
        linear_forward = F.linear_forward
        def linear_backward(dy, cache, dweight, dbias=None):
            x, w = cache
            dx = F.linear_backward(dy, cache, dweight, dbias)
            return dx[..., :-1]
        """)
    expected = "dx: expected shape (3, 4, 5), got (3, 4, 4): axis 2 has 4, expected 5"
    assert expected in report.format()
    report = grade(tmp_path, "gelu", """
        from minibert import functional as F
        def gelu_forward(x):
            return F.gelu_forward(x)
        def gelu_backward(dy, cache):
            dx = F.gelu_backward(dy, cache)
            dx[1, 2, 3] += 0.5
            return dx
        """)
    text = report.format()
    assert "max error 0.5 at (1, 2, 3)" in text
    assert "the first disagreement is in x at (1, 2, 3)" in text


def test_the_blank_template_fails_with_a_clear_message(tmp_path):
    for name in exercises.EXERCISES:
        exercises.start(name, tmp_path)
        report = exercises.check(name, tmp_path)
        assert not report.passed
        assert "not written yet (it raises NotImplementedError)" in report.format(), name
        assert "def " in (tmp_path / f"{name}.py").read_text()


def test_command_cycle(tmp_path, capsys):
    assert main(["exercise", "list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in exercises.EXERCISES)
    assert main(["exercise", "start", "gelu", "--dir", str(tmp_path)]) == 0
    template = (tmp_path / "gelu.py").read_text()
    assert "raise NotImplementedError" in template
    assert "normal_cdf(x)" not in template.split("def gelu_forward")[1]
    # never overwrites the learner's file
    (tmp_path / "gelu.py").write_text(textwrap.dedent(SOLUTIONS["gelu"]))
    assert main(["exercise", "start", "gelu", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "gelu.py").read_text() == textwrap.dedent(SOLUTIONS["gelu"])
    assert main(["exercise", "check", "gelu", "--dir", str(tmp_path)]) == 0
    assert "PASSED" in capsys.readouterr().out
    tanh = SOLUTIONS["gelu"].replace("return F.gelu_forward(x)", "return F.gelu_forward(x, True)")
    write(tmp_path, "gelu", tanh)
    assert main(["exercise", "check", "gelu", "--dir", str(tmp_path), "--hint", "2"]) == 1
    out = capsys.readouterr().out
    assert "hint 1 of 3" in out and "hint 2 of 3" in out and "hint 3 of 3" not in out
    assert "recognised mistake: the tanh approximation" in out
    assert main(["exercise", "check", "gelu", "--dir", str(tmp_path / "elsewhere")]) == 1
    assert "exercise start gelu" in capsys.readouterr().err
    assert main(["exercise", "start", "nonsense", "--dir", str(tmp_path)]) == 1
    assert "unknown exercise 'nonsense'" in capsys.readouterr().err


def test_a_syntax_error_is_reported_with_its_line(tmp_path):
    report = grade(tmp_path, "linear", "def linear_forward(x, weight, bias=None):\n    return (\n")
    assert not report.passed and "line" in report.format() and "SyntaxError" in report.format()


def test_the_cycle_runs_outside_the_repository(tmp_path):
    """start and check from a folder that is not the repository: templates, grader and hints come
    from the installed package alone."""
    import subprocess
    import sys

    def run(*args):
        command = [sys.executable, "-m", "minibert.cli", "exercise", *args]
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    assert run("start", "wordpiece").returncode == 0
    blank = run("check", "wordpiece", "--hint")
    assert blank.returncode == 1 and "hint 1 of 3" in blank.stdout
    write(tmp_path, "wordpiece", SOLUTIONS["wordpiece"])
    done = run("check", "wordpiece")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wordpiece: 3 of 3 checks passed: PASSED" in done.stdout
