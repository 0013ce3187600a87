"""The one exception type of the metrics library.

The app shows metric failures to people, so every failure that comes from the *input*
(silent audio, NaN, too few samples, a missing checkpoint while offline) is raised as a
`MetricError` with a sentence that says what is wrong and what to do, never a bare
numpy/scipy traceback.
"""

from __future__ import annotations


class MetricError(ValueError):
    """Bad input or an unavailable resource for a metric; the message is meant for a user."""
