"""Errors of the model registry, worded for the person in front of the app.

Why their own module: the runner and the UI catch these to show a one-line message ("this
model needs a download; this machine is offline") instead of a traceback, without importing
torch-heavy registry code just to name an exception type.
"""

from __future__ import annotations


class ModelError(Exception):
    """Base class: anything the registry refuses, with a message fit for a user."""


class UnknownModelError(ModelError, LookupError):
    """A model name that is not in the registry; the message lists the valid names."""


class ModelUnavailableError(ModelError, RuntimeError):
    """A known model that cannot be loaded here: weights not cached offline, a gated repo
    without a token, a missing embedded asset folder, or a failed download."""


class DenoiserNotFoundError(ModelError, AttributeError):
    """The pipeline has no module under the attribute the registry names as its denoiser."""
