"""``minibert evaluate MODEL``: held-out masked-LM loss and accuracy and NSP accuracy of a model
(a checkpoint folder, a run folder of ``minibert pretrain``, or a shipped model's name:
``minibert evaluate mini``).

The held-out instances are made with the checkpoint's own vocabulary, one masking seeded by
``--seed`` (``EVAL_SEED``), 128 tokens and one pass (``eval_data_config``): the same instances
``minibert pretrain`` evaluates on when it reads the same held-out text, so both print the same
numbers for a checkpoint.
"""
from __future__ import annotations

import tempfile

from minibert import checkpoint
from minibert.models import BertForPreTraining
from minibert.paths import data_path
from minibert.pretraining.data import DataConfig, PretrainingDataset, prepare
from minibert.pretraining.trainer import evaluate
from minibert.tokenization import BertTokenizer
from minibert.validation import positive_int

EVAL_SEED = 12345


def eval_data_config(max_position_embeddings: int) -> DataConfig:
    """How held-out text becomes instances: up to 128 tokens, one pass (each sentence masked
    once)."""
    return DataConfig(max_seq_length=min(128, max_position_embeddings), dupe_factor=1)


def add_arguments(parser) -> None:
    parser.add_argument("model", help="a shipped model's name (tiny, mini), a checkpoint folder "
                                      "(config.json, model.safetensors, vocab.txt), or the output "
                                      "folder of `minibert pretrain` (its latest checkpoint); a "
                                      "folder named like a shipped model in the working "
                                      "directory wins")
    parser.add_argument("--text", nargs="+",
                        help="held-out text in BERT format (default: the bundled held-out documents)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=EVAL_SEED,
                        help="seed of the masking and pairing of the held-out text (default "
                             f"{EVAL_SEED}, as `minibert pretrain` uses)")


def evaluate_checkpoint(model_dir, text=None, batch_size=32, seed=EVAL_SEED, log=None) -> dict:
    """Prepare ``text`` with the checkpoint's own vocabulary (one masking, seeded) and evaluate."""
    model_dir = checkpoint.resolve(model_dir)
    model = BertForPreTraining.from_pretrained(model_dir)
    if not (model_dir / "vocab.txt").is_file():
        raise FileNotFoundError(f"{model_dir} has no vocab.txt: cannot tokenise text for it")
    tokenizer = BertTokenizer.from_pretrained(model_dir)
    text = text or [str(data_path("corpus", "heldout.txt"))]
    with tempfile.TemporaryDirectory() as tmp:
        config = eval_data_config(model.config.max_position_embeddings)
        prepare(text, tokenizer, tmp, config, seed=seed, log=log)
        data = PretrainingDataset(tmp)
        return {**evaluate(model, data, batch_size), "checkpoint": str(model_dir)}


def main(args) -> int:
    positive_int("--batch-size", args.batch_size)
    result = evaluate_checkpoint(args.model, args.text, args.batch_size, args.seed)
    print(f"{result['checkpoint']}: masked LM loss {result['eval_mlm_loss']:.4f}, accuracy "
          f"{result['eval_mlm_accuracy']:.4f} over {result['eval_predictions']} predictions; next "
          f"sentence accuracy {result['eval_nsp_accuracy']:.4f}")
    return 0
