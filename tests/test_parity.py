"""Parity with Hugging Face transformers: outputs, every named gradient, ten training steps, checkpoints.

The optional test group: it needs PyTorch and transformers (``pip install "torch==2.13.0" && pip install
".[parity]"``) and skips, saying so, where they are missing, so the main test command stays free of PyTorch.

Each case builds a random ``transformers.BertForPreTraining`` of a small configuration with odd sizes,
perturbs every parameter (so LayerNorm weights are not all ones and biases not all zeros), saves it with
``save_pretrained`` and loads the folder into minibert. transformers runs with eager attention (the same
matmul-softmax-matmul as ours) and both run in float32 with dropout off.

Padding uses [PAD] = 0 only at padded positions, as real batches do. (transformers' word embedding has
``padding_idx``, which withholds the input-lookup gradient from the [PAD] row; ours does not. With [PAD]
only at padded positions that gradient is exactly zero in both, because masked keys get probability 0.)
"""
import re
import subprocess
import sys

import numpy as np
import pytest

SKIP_REASON = ('the parity tests compare minibert with PyTorch; install the optional group with '
               '`pip install "torch==2.13.0" && pip install ".[parity]"`')
torch = pytest.importorskip("torch", reason=f"torch is not installed: {SKIP_REASON}")
transformers = pytest.importorskip("transformers", reason=f"transformers is not installed: {SKIP_REASON}")

from minibert import interop  # noqa: E402
from minibert.config import BertConfig  # noqa: E402
from minibert.models import BertForPreTraining, BertModel  # noqa: E402
from minibert.optim import AdamW, clip_grad_norm, triples_from_model  # noqa: E402
from minibert.paths import data_path  # noqa: E402

OUTPUT_TOL = 1e-5        # float32 outputs, absolute (they are of order 1)
GRAD_TOL = 1e-4          # each gradient, relative to that tensor's largest entry
LOSS_TOL = 1e-4          # training losses, absolute

CASES = {
    # name: (transformers config fields, batch size, sequence length, predictions per sequence, seed)
    "H18-A3-I29-L2-gelu": (dict(vocab_size=37, hidden_size=18, num_attention_heads=3, intermediate_size=29,
                                num_hidden_layers=2, max_position_embeddings=16, hidden_act="gelu"), 3, 13, 4, 0),
    "H20-A5-I7-L3-gelu_new-3types": (dict(vocab_size=53, hidden_size=20, num_attention_heads=5, intermediate_size=7,
                                          num_hidden_layers=3, max_position_embeddings=11, type_vocab_size=3,
                                          hidden_act="gelu_new"), 4, 11, 3, 1),
    "H12-A4-I30-L1-gelu_pytorch_tanh": (dict(vocab_size=41, hidden_size=12, num_attention_heads=4,
                                             intermediate_size=30, num_hidden_layers=1, max_position_embeddings=9,
                                             hidden_act="gelu_pytorch_tanh"), 2, 9, 5, 2),
}
WORST: dict[str, float] = {}     # largest difference seen per output / gradient, printed at the end (-s)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)          # tiny tensors: threads only add noise on a shared machine
    yield
    torch.set_num_threads(previous)
    if WORST:
        print("\nlargest differences seen:\n" + "\n".join(f"  {k:40s} {v:.2e}" for k, v in sorted(WORST.items())))


def note(key: str, value: float) -> float:
    WORST[key] = max(WORST.get(key, 0.0), float(value))
    return float(value)


def random_hf_model(fields: dict, seed: int):
    torch.manual_seed(seed)
    config = transformers.BertConfig(**fields, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.BertForPreTraining(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def random_batch(rng: np.random.Generator, V: int, types: int, B: int, T: int, P: int) -> dict:
    """A padded batch as ``minibert prepare`` makes them: lengths from T/2 to T (one full), [PAD] = 0 after
    the end, segment B from a random split on, P sorted masked positions, the last one padding (weight 0)."""
    lengths = rng.integers(max(P + 2, T // 2), T + 1, B)
    lengths[0] = T
    real = np.arange(T) < lengths[:, None]
    ids = np.where(real, rng.integers(1, V, (B, T)), 0)
    split = rng.integers(2, lengths)
    token_types = np.where(real & (np.arange(T) >= split[:, None]), rng.integers(1, types, (B, 1)), 0)
    positions = np.zeros((B, P), np.int64)
    weights = np.zeros((B, P), np.float32)
    for b in range(B):
        n = P - 1 if b % 2 else P
        positions[b, :n] = np.sort(rng.choice(np.arange(1, lengths[b]), n, replace=False))
        weights[b, :n] = 1
    return {"input_ids": ids, "token_type_ids": token_types, "attention_mask": real.astype(np.int64),
            "masked_lm_positions": positions, "masked_lm_ids": rng.integers(0, V, (B, P)) * (weights > 0),
            "masked_lm_weights": weights, "next_sentence_labels": rng.integers(0, 2, B)}


def pair(fields, seed, tmp_path):
    """(transformers model, minibert model) with the same weights, via transformers' save_pretrained."""
    hf = random_hf_model(fields, seed)
    hf.save_pretrained(tmp_path / "hf")
    ours, info = BertForPreTraining.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not (info.missing_keys or info.unexpected_keys or info.upcast)
    hf = transformers.BertForPreTraining.from_pretrained(tmp_path / "hf", attn_implementation="eager")
    return hf, ours


@pytest.mark.parametrize("case", list(CASES))
def test_outputs_and_every_gradient_agree(case, tmp_path):
    fields, B, T, P, seed = CASES[case]
    hf, ours = pair(fields, seed, tmp_path)
    assert ours.config.hidden_act == ("gelu" if fields["hidden_act"] == "gelu" else "gelu_new")
    batch = random_batch(np.random.default_rng(seed), fields["vocab_size"], fields.get("type_vocab_size", 2), B, T, P)
    assert (batch["attention_mask"] == 0).any() and (batch["token_type_ids"] > 0).any()

    ours.train()
    out = ours.forward(**batch, output_hidden_states=True)
    pooled_ours = ours.bert.pooler.cache[0]            # read before the backward, which releases it
    ours.zero_grad()
    ours.backward()
    hf.train()
    hf_out = interop.hf_forward(hf, batch, output_hidden_states=True)
    loss, mlm, nsp = interop.hf_pretraining_loss(hf_out, batch)
    loss.backward()

    def diff(a, t):
        return float(np.abs(a - t.detach().numpy()).max())

    assert len(out.hidden_states) == len(hf_out.hidden_states) == fields["num_hidden_layers"] + 1
    real = batch["attention_mask"] == 1          # padded positions: zeros here, values no loss reads there
    for i, (a, t) in enumerate(zip(out.hidden_states, hf_out.hidden_states)):
        assert note("hidden states", diff(a[real], t[torch.as_tensor(real)])) < OUTPUT_TOL, f"hidden_states[{i}]"
    # The pooled output is not among transformers' BertForPreTraining outputs: run its BertModel.
    pooled = hf.bert(input_ids=torch.as_tensor(batch["input_ids"]), token_type_ids=torch.as_tensor(batch["token_type_ids"]),
                     attention_mask=torch.as_tensor(batch["attention_mask"])).pooler_output
    assert note("pooled output", diff(pooled_ours, pooled)) < OUTPUT_TOL
    gathered = hf_out.prediction_logits[torch.arange(B)[:, None], torch.as_tensor(batch["masked_lm_positions"])]
    scored = batch["masked_lm_weights"] != 0                 # padding predictions are not computed here
    assert note("MLM logits", diff(out.prediction_logits[scored], gathered[torch.as_tensor(scored)])) < OUTPUT_TOL
    assert note("NSP logits", diff(out.seq_relationship_logits, hf_out.seq_relationship_logits)) < OUTPUT_TOL
    for name, a, t in (("loss", out.loss, loss), ("MLM loss", out.mlm_loss, mlm), ("NSP loss", out.nsp_loss, nsp)):
        assert note(name, diff(np.asarray(a), t)) < OUTPUT_TOL

    # Every gradient, by name. transformers lists a tied parameter once; ask for all names.
    hf_params = dict(hf.named_parameters(remove_duplicate=False))
    ours_grads = dict(ours.named_grads())
    assert set(ours_grads) <= set(hf_params)
    assert {id(p) for p in hf_params.values()} == {id(hf_params[n]) for n in ours_grads}   # nothing left out
    scale = max(float(p.grad.abs().max()) for p in hf_params.values())
    for name, g in ours_grads.items():
        t = hf_params[name].grad.numpy()
        if name.endswith("attention.self.key.bias"):
            # softmax ignores a shift shared by a row's scores, and the key bias shifts q.k by q.b_k for
            # every key alike: its true gradient is 0, and both sides show only rounding.
            assert note("key.bias gradient (both ~0), / largest", max(np.abs(g).max(), np.abs(t).max()) / scale) < 1e-6
            continue
        rel = np.abs(g - t).max() / np.abs(t).max()
        group = re.sub(r"layer\.\d+\.", "layer.N.", name).replace("bert.", "")
        assert note(f"grad {group}", rel) < GRAD_TOL, f"{name}: relative difference {rel:.2e}"


@pytest.mark.parametrize("case", list(CASES)[:2])
def test_ten_training_steps_give_the_same_losses(case, tmp_path):
    fields, B, T, P, seed = CASES[case]
    hf, ours = pair(fields, seed, tmp_path)
    lr, wd, eps = 2e-3, 0.01, 1e-6
    ours_opt = AdamW(triples_from_model(ours), lr=lr, weight_decay=wd, eps=eps, correct_bias=True)
    hf_opt = interop.torch_adamw_like(hf, lr=lr, weight_decay=wd, eps=eps)
    # The same no-decay grouping on both sides (LayerNorm and biases), checked by count.
    n_plain = sum(p.numel() for p in hf_opt.param_groups[1]["params"])
    assert n_plain == sum(p.size for p, decay in zip(ours_opt.params, ours_opt.decay) if not decay)
    rng = np.random.default_rng(seed + 10)
    # Two batches in turn: random labels are learnable only by heart, which shows the steps did something.
    batches = [random_batch(rng, fields["vocab_size"], fields.get("type_vocab_size", 2), B, T, P) for _ in range(2)]
    ours.train()
    hf.train()
    losses = []
    for step in range(10):
        batch = batches[step % 2]
        ours.zero_grad()
        ours_loss = float(ours.forward(**batch).loss)
        ours.backward()
        clip_grad_norm([g for _, g in ours.named_grads()], 1.0)
        ours_opt.step()

        hf_opt.zero_grad()
        hf_loss, _, _ = interop.hf_pretraining_loss(interop.hf_forward(hf, batch), batch)
        hf_loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        hf_opt.step()
        losses.append((ours_loss, hf_loss.item()))
        assert note("training loss, 10 steps", abs(ours_loss - hf_loss.item())) < LOSS_TOL, losses
    assert losses[8][0] < losses[0][0] - 0.1, f"the model did not learn: {losses}"


def assert_same_parameters(ours, hf_model):
    hf_params = dict(hf_model.named_parameters(remove_duplicate=False))
    for name, a in ours.named_parameters():
        np.testing.assert_array_equal(a, hf_params[name].detach().numpy(), err_msg=name)


@pytest.mark.parametrize("cls", [BertForPreTraining, BertModel])
def test_round_trip_minibert_transformers_minibert(cls, tmp_path):
    """minibert -> save_pretrained -> transformers -> save_pretrained -> minibert: identical weights."""
    config = BertConfig(vocab_size=29, hidden_size=10, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=14, max_position_embeddings=12, hidden_act="gelu_new")
    model = cls(config, np.random.default_rng(3))
    rng = np.random.default_rng(4)
    for _, p in model.named_parameter_objects():
        p.data += rng.standard_normal(p.data.shape).astype(np.float32)
    model.save_pretrained(tmp_path / "ours")
    hf, info = transformers.AutoModel.from_pretrained(tmp_path / "ours", output_loading_info=True) \
        if cls is BertModel else transformers.AutoModelForPreTraining.from_pretrained(tmp_path / "ours",
                                                                                     output_loading_info=True)
    assert type(hf).__name__ == cls.__name__                          # config.json's architectures
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    assert hf.config.hidden_act == "gelu_new" and hf.dtype == torch.float32
    assert_same_parameters(model, hf)
    hf.save_pretrained(tmp_path / "theirs")
    again = cls.from_pretrained(tmp_path / "theirs")
    for (name, a), (_, b) in zip(model.named_parameters(), again.named_parameters()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    if cls is BertForPreTraining:
        assert again.cls.predictions.decoder.weight is again.bert.embeddings.word_embeddings.weight
        # And the encoder alone, from transformers' pretraining folder.
        encoder = BertModel.from_pretrained(tmp_path / "theirs")
        np.testing.assert_array_equal(encoder.pooler.dense.weight.data, model.bert.pooler.dense.weight.data)


@pytest.mark.parametrize("dtype, name", [(torch.float16, "F16"), (torch.bfloat16, "BF16")])
def test_half_precision_checkpoints_from_transformers(dtype, name, tmp_path):
    hf = random_hf_model(CASES["H18-A3-I29-L2-gelu"][0], seed=5).to(dtype)
    hf.save_pretrained(tmp_path / "half")
    ours, info = BertForPreTraining.from_pretrained(tmp_path / "half", output_loading_info=True)
    assert set(info.upcast.values()) == {name} and len(info.upcast) == len(list(ours.named_parameters()))
    assert_same_parameters(ours, hf.float())


def test_pickle_only_folder_converts_with_the_command_in_the_message(tmp_path):
    hf = random_hf_model(CASES["H12-A4-I30-L1-gelu_pytorch_tanh"][0], seed=6)
    folder = tmp_path / "old"
    hf.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(hf.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="never unpickles") as caught:
        BertForPreTraining.from_pretrained(folder)
    command = re.search(r'python -c "(.+)"', str(caught.value)).group(1)
    subprocess.run([sys.executable, "-c", command], check=True, capture_output=True, timeout=300)
    assert_same_parameters(BertForPreTraining.from_pretrained(folder), hf)


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_tokenizer_folders_both_ways(do_lower_case, tmp_path):
    """A tokenizer saved by transformers (5 writes tokenizer.json, no vocab.txt) reads back in minibert, and
    ours reads in transformers; both tokenise the corpus the same way."""
    from minibert.tokenization import BertTokenizer

    vocab = data_path("vocab.txt")
    ours = BertTokenizer(vocab, do_lower_case=do_lower_case)
    ours.save_pretrained(tmp_path / "ours")
    theirs = transformers.BertTokenizer.from_pretrained(tmp_path / "ours")
    assert theirs.do_lower_case == do_lower_case
    theirs.save_pretrained(tmp_path / "theirs")
    back = BertTokenizer.from_pretrained(tmp_path / "theirs")
    assert back.vocab == ours.vocab and back.do_lower_case == do_lower_case
    with open(data_path("corpus", "train.txt"), encoding="utf-8") as f:
        lines = [line.strip() for line, _ in zip(f, range(200)) if line.strip()]
    lines += ["Café au lait, naïve Zoë!", "The [MASK] sat on the mat.", "x" * 150]
    for a, b in zip(lines, lines[1:] + [None]):
        expected = theirs(a, b)
        got = back.encode(a, b)
        assert got.input_ids == expected["input_ids"], (a, b)
        assert got.token_type_ids == expected["token_type_ids"]


def test_bench_parity_trains_both_and_plots(tmp_path, capsys):
    from minibert.cli import main

    assert main(["bench", "parity", "--steps", "4", "--lines", "300", "--batch-size", "4", "--seq-len", "32",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^step\s+(\d+)\s+minibert (\S+)\s+huggingface (\S+)", out, flags=re.M)
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4]
    assert all(abs(float(a) - float(b)) < LOSS_TOL for _, a, b in rows)
    assert float(re.search(r"max \|loss difference\| over 4 steps: (\S+)", out).group(1)) < LOSS_TOL
    assert (tmp_path / "parity_loss.png").is_file() and (tmp_path / "parity_losses.json").is_file()


def test_a_model_folder_with_vocab_loads_whole_in_transformers(tmp_path):
    """``save_pretrained(path, vocab)`` writes config.json, model.safetensors and vocab.txt: transformers'
    Auto classes build the model and the tokenizer from it, and they tokenise as minibert does."""
    from minibert.tokenization import BertTokenizer

    tokenizer = BertTokenizer(data_path("vocab.txt"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=12, max_position_embeddings=32)
    BertForPreTraining(config, np.random.default_rng(0)).save_pretrained(
        tmp_path / "m", vocab=tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size)))
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "m")
    model = transformers.AutoModelForPreTraining.from_pretrained(tmp_path / "m")
    text = "The farmer fed the goats every morning."
    assert theirs(text)["input_ids"] == tokenizer.encode(text).input_ids
    assert model(**theirs(text, return_tensors="pt")).prediction_logits.shape[-1] == tokenizer.vocab_size
