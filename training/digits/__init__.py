"""Training and evaluation of the embedded image model `tiny-digits` and its judge classifier."""
