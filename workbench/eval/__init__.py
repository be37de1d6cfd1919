"""Evaluation: mteb retrieval on hub or offline MIRACL/BEIR data, instruction-aware encoders,
BM25 baselines and an embedding cache in the run directory. Public entry: :func:`stage.run_eval`."""
