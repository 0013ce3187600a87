"""The four papers' PTQ methods, one module per idea (see ../shared/METHODS.md).

Each module exposes a function of (denoiser, config, calibration data) whose docstring names
the paper and section it follows.
"""
