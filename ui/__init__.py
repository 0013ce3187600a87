"""Gradio Blocks UI, one module per tab (compare, inspect, listen, runs); built in issue 6."""
