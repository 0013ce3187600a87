"""Blind MOS / MUSHRA listening sessions (issue 7).

Why a package of its own: a listening test is a small survey system (plans, tokens, a durable
store, statistics, a rater web page) that must stay independent of the quantization code so
that it can be mounted into the Gradio app or served on its own (``python -m
backend.mos.server``).
"""
