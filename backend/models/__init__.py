"""Model registry and the model classes qlisten ships (embedded tiny models and their judges)."""
