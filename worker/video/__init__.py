"""Video pipeline: probe, streaming decode, clip sampling, batched inference, segments."""
