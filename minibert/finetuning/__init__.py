"""Fine-tuning BERT on a task, and the techniques that make it more stable.

    data.py         the bundled tasks as arrays, batches trimmed to their longest sequence
    metrics.py      accuracy, F1, Matthews correlation (and Pearson/Spearman for regression)
    mixout.py       Mixout: dropout towards the pretrained weights instead of towards zero
    adversarial.py  FreeLB (adversarial token perturbations) and SMART (adversarial regularisation)
    trainer.py      the fine-tuning loop with every option, and two-stage fine-tuning
                    (``from minibert.finetuning.trainer import finetune``)

The scalar mix of layers (``minibert.nn.ScalarMix``) and the classification heads live with the models,
which import nothing from this package.
    cli.py          ``minibert finetune``
    stability.py    ``minibert stability``: many restarts per strategy, failed runs, a swarm plot
"""

from minibert.finetuning.adversarial import (BregmanTeacher, freelb_step, perturbation_gradient, smart_step,
                                             symmetric_kl, symmetric_kl_backward)
from minibert.finetuning.data import Encoded, TaskInfo, batches, encode, load_examples, majority_score, task_info
from minibert.finetuning.mixout import MixoutLinear, apply_mixout, reference_weight_gradient

__all__ = ["BregmanTeacher", "freelb_step", "perturbation_gradient", "smart_step", "symmetric_kl",
           "symmetric_kl_backward", "Encoded", "TaskInfo", "batches", "encode", "load_examples", "majority_score",
           "task_info", "MixoutLinear", "apply_mixout", "reference_weight_gradient"]
