"""qlisten's entry point: ``python app.py`` serves the web app (see ui/app.py).

Listens on ``GRADIO_SERVER_NAME``:``GRADIO_SERVER_PORT`` (default 127.0.0.1:7860; the
Dockerfile sets 0.0.0.0:7860 for a Hugging Face Space), keeps runs under ``QLISTEN_HOME``
(default ``<repo>/.qlisten``). Analytics are off, no share link is made, nothing is fetched at
start. If the UI package is missing (a partial checkout), this says so and exits cleanly; the
quantization library is usable on its own (``from backend.quant import quantize, QuantConfig``).
"""

from __future__ import annotations

import importlib.util
import sys


def main() -> int:
    if importlib.util.find_spec("ui.app") is None:
        print("qlisten: the app (ui/) is not in this checkout — the quantization library is in "
              "backend/quant (see README); the benchmarks run with `python -m bench.core`.")
        return 0
    from ui.app import launch

    launch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
