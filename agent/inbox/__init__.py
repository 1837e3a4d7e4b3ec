"""The inbox flow: watch → settle → batch → upload → file away."""
