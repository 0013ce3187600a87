"""The one exception type of the quantization library.

Every refusal (unsupported bits, a group size that does not divide a layer's channels,
non-finite calibration data, ...) is a :class:`QuantError` whose message names the layer
and the problem, so the app can show it to a person as it is.
"""


class QuantError(ValueError):
    """A quantization request that cannot be carried out as asked."""
