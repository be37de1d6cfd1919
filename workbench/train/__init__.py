"""Train stage: accepted/ -> training records -> LoRA/DeepSpeed fine-tune -> exported embedder.

Public entry point: :func:`workbench.train.stage.run_train`. See docs/train.md.
"""
