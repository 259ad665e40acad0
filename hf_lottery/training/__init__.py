"""Training one model: the loop and what it needs, knowing nothing of levels or lottery tickets.

The launcher and its Accelerator; the training loop and its mid-level checkpoints; data files, model and
tokenizer loading, metrics; masked low-rank adapters; the ``transformers.Trainer`` callback; the task kinds
(``tasks/``), each of which loads its data, builds its head and scores a model.
"""
