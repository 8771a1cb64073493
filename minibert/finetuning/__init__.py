"""Fine-tuning BERT on a task, and the techniques that make it more stable.

    data.py         the bundled tasks as arrays, batches trimmed to their longest sequence
    metrics.py      accuracy, F1, Matthews correlation (and Pearson/Spearman for regression)
    scalar_mix.py   a learned softmax-weighted mix of every layer's [CLS] vector
    mixout.py       Mixout: dropout towards the pretrained weights instead of towards zero
    adversarial.py  FreeLB (adversarial token perturbations) and SMART (adversarial regularisation)
    trainer.py      the fine-tuning loop with every option, and two-stage fine-tuning
    cli.py          ``minibert finetune``
    stability.py    ``minibert stability``: many restarts per strategy, failed runs, a swarm plot
"""
