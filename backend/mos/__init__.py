"""Blind MOS / MUSHRA / A-B listening sessions (issue 7).

Why a package of its own: a listening test is a small survey system (plans, tokens, a durable
store, statistics, a rater web page) that must stay independent of the quantization code so
that it can be mounted into the Gradio app or served on its own.

Modules: ``sources`` (runs -> conditions, low-pass anchor), ``plans`` (protocols, per-rater
seeded trial plans, attention checks), ``tokens``, ``store`` (SQLite WAL, synchronous=FULL),
``stats`` (t-based CIs, BS.1534 post-screening, Wilcoxon + Holm, Bradley-Terry),
``service`` (the Python API), ``http`` (FastAPI router), ``server`` (standalone app),
``demo_runs`` (synthetic run folders).

Mounting next to Gradio::

    app = backend.mos.server.create_app("runs/mos.sqlite", admin_token, runs_root="runs")
    with gr.Blocks() as demo:
        with gr.Tab("Listen"):
            ui.listen_tab.build_listen_tab(app.state.mos)
    app = gr.mount_gradio_app(app, demo, path="/")

Standalone: ``python -m backend.mos.server --db runs/mos.sqlite --runs runs --port 8765``.
"""
