"""The bug zoo: each planted bug makes its diagnostic fail, the clean code passes it, and leaving
the ``with`` block restores every patched function, method and instance."""
import numpy as np
import pytest

from minibert import kernels
from minibert.models import BertModel
from minibert.optim import AdamW
from minibert.pretraining import bugs
from minibert.pretraining.data import InstanceMaker


@pytest.mark.parametrize("name", list(bugs.BUGS))
def test_diagnostic_fails_with_the_bug_and_passes_without(name):
    clean = bugs.diagnose(name)
    assert clean.passed, str(clean)
    with bugs.planted(name):
        buggy = bugs.diagnose(name)
    assert not buggy.passed, str(buggy)
    assert bugs.diagnose(name).passed          # restored


def test_overfit_one_batch_catches_the_swallowed_nsp_label():
    clean = bugs.overfit_one_batch()
    assert clean.passed, str(clean)
    with bugs.planted("nsp_ignore_index"):
        buggy = bugs.overfit_one_batch()
    # the loss says "learned", the accuracy says "label 1 always"
    assert not buggy.passed, str(buggy)
    assert buggy.values["loss"] < 0.5 and buggy.values["nsp_accuracy"] == 0.5, str(buggy)


def test_gradient_check_names_the_tied_matrix_only():
    with bugs.planted("tied_by_assignment"):
        result = bugs.gradient_check()
    assert result.values["failed"] == ["bert.embeddings.word_embeddings.weight"], str(result)


def test_a_bug_planted_in_one_model_leaves_another_alone():
    model, other = bugs.tiny_model(0), bugs.tiny_model(0)
    with bugs.planted("dropout_at_eval", model):
        assert not bugs.eval_determinism(model).passed
        assert bugs.eval_determinism(other).passed
    assert bugs.eval_determinism(model).passed
    assert not any("forward" in vars(m) for m in model.modules())


def test_everything_is_restored_on_exit_even_after_an_error():
    def patched_names():
        return (kernels.attention_forward, kernels.attention_backward,
                kernels.unpadded_attention_forward, kernels.unpadded_attention_backward,
                kernels.cross_entropy_forward, InstanceMaker.mask,
                InstanceMaker.instances_from_document, AdamW.__init__, BertModel.__init__,
                getattr(BertModel, "unpad", None))
    saved = patched_names()
    for name in bugs.BUGS:
        with pytest.raises(RuntimeError):
            with bugs.planted(name):
                model = bugs.tiny_model()
                raise RuntimeError("stop")
        assert saved == patched_names(), name
        # an instance built inside the block is clean again afterwards
        assert not any(k in vars(m) for m in model.modules() for k in ("forward", "backward")), name


def test_unknown_bug_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown bug 'nope'; expected one of: nsp_ignore_index"):
        with bugs.planted("nope"):
            pass


def test_data_bugs_get_their_own_folder(tmp_path):
    assert bugs.data_folder(tmp_path, None) == tmp_path / "data"
    assert bugs.data_folder(tmp_path, "no_sqrt_scale") == tmp_path / "data"
    folder = bugs.data_folder(tmp_path, "mlm_unmasked_labels")
    assert folder == tmp_path / "data-bug-mlm_unmasked_labels"


def test_bugs_change_training_not_just_diagnostics():
    """A planted bug changes what the model computes (here its loss), and only inside the block."""
    batch = bugs.random_batch(64)
    model = bugs.tiny_model(initializer_range=0.3).eval()
    clean = model.forward(**batch).loss
    with bugs.planted("no_sqrt_scale"):
        assert abs(float(model.forward(**batch).loss) - float(clean)) > 1e-3
    assert np.isclose(float(model.forward(**batch).loss), float(clean))


def test_pretrain_command_plants_a_bug(tmp_path, capsys):
    from minibert.cli import main
    from minibert.paths import data_path

    lines = data_path("corpus", "train.txt").read_text(encoding="utf-8").splitlines()[:600]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    saved = InstanceMaker.mask
    args = ["pretrain", "--corpus", str(corpus), "--max-seq-length", "64", "--dupe-factor", "1",
            "--batch-size", "8", "--steps", "2", "--eval-every", "2", "--out", str(tmp_path / "run"),
            "--bug", "mlm_unmasked_labels"]
    assert main(args) == 0
    assert "planting bug mlm_unmasked_labels" in capsys.readouterr().out
    assert (tmp_path / "run" / "data-bug-mlm_unmasked_labels").is_dir()
    assert not (tmp_path / "run" / "data").exists()       # never mixed with clean instances
    assert InstanceMaker.mask is saved                      # the bug left with the command
