"""The four papers' PTQ methods, one module per idea (see ../shared/METHODS.md).

Each module exposes a function of (denoiser, config, calibration data) whose docstring names
the paper and section it follows.
"""

from .ptq4adm import build_calibration_prompts, random_calibration_prompts

__all__ = ["build_calibration_prompts", "random_calibration_prompts"]
