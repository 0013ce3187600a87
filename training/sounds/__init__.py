"""Training of the tiny-sounds generator and its classifier (reproducible from a seed)."""
