"""Training, evaluation and the synthetic benchmark for vcat models (``vcat train``/``eval``)."""
