"""``minibert evaluate DIR``: held-out masked-LM loss and accuracy and NSP accuracy of a checkpoint."""
from __future__ import annotations

import tempfile
from pathlib import Path

from minibert.models import BertForPreTraining
from minibert.paths import data_path
from minibert.pretraining.data import DataConfig, PretrainingDataset, prepare
from minibert.pretraining.trainer import evaluate
from minibert.tokenization import BertTokenizer


def add_arguments(parser) -> None:
    parser.add_argument("model", help="a checkpoint folder (config.json, model.safetensors, vocab.txt)")
    parser.add_argument("--text", nargs="+", help="held-out text in BERT format (default: the bundled held-out documents)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=12345, help="seed of the masking and pairing of the held-out text")


def evaluate_checkpoint(model_dir, text=None, batch_size=32, seed=12345, log=None) -> dict:
    """Prepare ``text`` with the checkpoint's own vocabulary (one masking, seeded) and evaluate."""
    model_dir = Path(model_dir)
    model = BertForPreTraining.from_pretrained(model_dir)
    if not (model_dir / "vocab.txt").is_file():
        raise FileNotFoundError(f"{model_dir} has no vocab.txt: cannot tokenise text for it")
    tokenizer = BertTokenizer.from_pretrained(model_dir)
    text = text or [str(data_path("corpus", "heldout.txt"))]
    with tempfile.TemporaryDirectory() as tmp:
        config = DataConfig(max_seq_length=min(128, model.config.max_position_embeddings), dupe_factor=1)
        prepare(text, tokenizer, tmp, config, seed=seed, log=log)
        data = PretrainingDataset(tmp)
        return evaluate(model, data, batch_size)


def main(args) -> int:
    result = evaluate_checkpoint(args.model, args.text, args.batch_size, args.seed)
    print(f"{args.model}: masked LM loss {result['eval_mlm_loss']:.4f}, accuracy {result['eval_mlm_accuracy']:.4f} "
          f"over {result['eval_predictions']} predictions; next sentence accuracy {result['eval_nsp_accuracy']:.4f}")
    return 0
