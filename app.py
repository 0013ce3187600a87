"""qlisten's entry point: ``python app.py`` serves the Gradio app.

The app itself (job queue, runner, UI tabs) is not built yet; until it lands this prints
so and exits cleanly, while the quantization library is usable on its own
(``from backend.quant import quantize, QuantConfig``).
"""

from __future__ import annotations

import importlib.util
import sys


def main() -> int:
    if importlib.util.find_spec("ui.app") is None:
        print("qlisten: app not built yet — the quantization library is in backend/quant "
              "(see README); the benchmarks run with `python -m bench.core`.")
        return 0
    from ui.app import launch

    launch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
