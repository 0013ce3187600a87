"""The Listen tab: the admin side of blind listening tests (issue 7).

Why only the admin side here: raters never see Gradio; they get a plain page served by
``backend.mos.http`` under opaque ids. This tab picks stored runs, creates a session, shows
the rater links and, later, the results (table, plotly chart with 95 % CIs, CSV/JSON files).
Every action needs the admin token, and the events are private (not callable through the
Gradio API), because links and results are admin data.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd

from backend.mos.service import MosError, MosService, json_safe
from backend.mos.sources import conditions_from_runs

PROTOCOL_CHOICES = [("MUSHRA (BS.1534, 0-100)", "mushra"), ("ACR (P.800, 1-5)", "acr"),
                    ("A/B preference", "ab")]


def list_runs(runs_root: str | Path) -> list[tuple[str, str]]:
    """(display, run_id) for each ``<runs_root>/<run_id>/run.json``, newest first."""
    root = Path(runs_root)
    out = []
    if root.is_dir():
        for d in sorted(root.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
            meta_file = d / "run.json"
            if meta_file.is_file():
                try:
                    meta = json.loads(meta_file.read_text())
                except (OSError, json.JSONDecodeError):
                    continue
                if not meta.get("fp_audio"):
                    continue  # an image run: nothing to listen to
                label = meta.get("recipe_label") or d.name
                out.append((f"{label}  [{d.name}, {len(meta.get('prompts', []))} clips]", d.name))
    return out


def create_session(service: MosService, admin_token: str, runs_root: str, run_ids: list[str],
                   anchor_run: str | None, lowpass: bool, protocol: str, trials: int,
                   checks: int, n_raters: int, title: str) -> tuple[str, str]:
    """Create a session from the chosen runs; returns (session id, Markdown list of links)."""
    if not run_ids:
        raise ValueError("pick at least one run")
    root = Path(runs_root)
    conds = conditions_from_runs([root / r for r in run_ids],
                                 anchor_run=root / anchor_run if anchor_run else None,
                                 lowpass=lowpass)
    out = service.create_session(admin_token, conds, protocol=protocol,
                                 trials_per_rater=int(trials), n_attention_checks=int(checks),
                                 n_raters=int(n_raters), title=title or "Listening test")
    lines = [f"**Session `{out['session_id']}`** ({protocol}); one link per rater, each works "
             "for that rater only:", ""]
    lines += [f"{i + 1}. `{link['link']}`" for i, link in enumerate(out["raters"])]
    return out["session_id"], "\n".join(lines)


def session_results(service: MosService, admin_token: str, session_id: str):
    """(condition table, pairwise table, rater table, figure, csv path, json path)."""
    service.check_admin(admin_token)
    res = service.results(session_id)
    outdir = Path(tempfile.mkdtemp(prefix="qlisten_mos_"))
    csv_path = outdir / f"{session_id}.csv"
    json_path = outdir / f"{session_id}.json"
    csv_path.write_text(service.export_csv(session_id))
    json_path.write_text(service.export_json(session_id))
    cond = pd.DataFrame(json_safe(res["conditions"]))
    pair_rows = res["pairwise"] or res["bradley_terry"]
    pairs = pd.DataFrame(json_safe(pair_rows))
    raters = pd.DataFrame(json_safe(res["raters"]))
    return cond, pairs, raters, res["figure"], str(csv_path), str(json_path)


def build_listen_tab(service: MosService, runs_root: str | Path | None = None) -> dict:
    """Create the admin view inside the caller's ``gr.Blocks()`` (e.g. within a ``gr.Tab``).

    Returns the components by name, so the app and its tests can address them.
    """
    import gradio as gr

    root = str(runs_root or service.runs_root or "runs")
    with gr.Column():
        gr.Markdown("### Listening test\nPick stored runs, create a blind session, send each "
                    "rater their link. FP is the hidden reference; the anchor is a chosen bad "
                    "run and/or the 3.5 kHz low-pass of FP (BS.1534).")
        token = gr.Textbox(label="Admin token", type="password", elem_id="mos-admin-token")
        with gr.Row():
            runs_dir = gr.Textbox(value=root, label="Runs folder", elem_id="mos-runs-dir")
            refresh = gr.Button("Refresh runs", elem_id="mos-refresh")
        choices = list_runs(root)
        runs = gr.CheckboxGroup(choices=choices, label="Runs to test", elem_id="mos-runs")
        with gr.Row():
            anchor = gr.Dropdown(choices=[("(none)", "")] + choices, value="",
                                 label="Anchor run (a deliberately bad quantization)",
                                 elem_id="mos-anchor")
            lowpass = gr.Checkbox(value=True, label="Add 3.5 kHz low-pass anchor",
                                  elem_id="mos-lowpass")
        with gr.Row():
            protocol = gr.Radio(choices=PROTOCOL_CHOICES, value="mushra", label="Protocol",
                                elem_id="mos-protocol")
            trials = gr.Number(value=12, precision=0, minimum=1, maximum=500,
                               label="Trials per rater", elem_id="mos-trials")
            checks = gr.Number(value=2, precision=0, minimum=0, maximum=50,
                               label="Attention checks", elem_id="mos-checks")
            n_raters = gr.Number(value=10, precision=0, minimum=1, maximum=1000,
                                 label="Raters", elem_id="mos-raters")
        title = gr.Textbox(value="Listening test", label="Title shown to raters",
                           elem_id="mos-title")
        create = gr.Button("Create session", variant="primary", elem_id="mos-create")
        links = gr.Markdown(elem_id="mos-links")
        gr.Markdown("### Results")
        with gr.Row():
            session = gr.Textbox(label="Session id", elem_id="mos-session")
            load = gr.Button("Load results", elem_id="mos-load")
        status = gr.Markdown(elem_id="mos-status")
        plot = gr.Plot(label="Mean with 95 % CI", elem_id="mos-plot")
        cond_df = gr.Dataframe(label="Per condition", elem_id="mos-conditions")
        pair_df = gr.Dataframe(label="Pairwise (Wilcoxon, Holm) / Bradley-Terry",
                               elem_id="mos-pairwise")
        rater_df = gr.Dataframe(label="Raters (screening, attention)", elem_id="mos-rater-table")
        with gr.Row():
            csv_file = gr.File(label="CSV", elem_id="mos-csv")
            json_file = gr.File(label="JSON", elem_id="mos-json")

    def on_refresh(folder):
        ch = list_runs(folder)
        return gr.update(choices=ch, value=[]), gr.update(choices=[("(none)", "")] + ch, value="")

    def on_create(tok, folder, run_ids, anchor_id, lp, proto, n_trials, n_checks, n, ttl):
        try:
            sid, text = create_session(service, tok, folder, run_ids, anchor_id or None, lp,
                                       proto, n_trials, n_checks, n, ttl)
        except (MosError, ValueError, FileNotFoundError, KeyError) as exc:
            raise gr.Error(getattr(exc, "message", str(exc))) from exc
        return text, sid

    def on_load(tok, sid):
        try:
            cond, pairs, raters, fig, csv_p, json_p = session_results(service, tok, sid.strip())
        except MosError as exc:
            raise gr.Error(exc.message) from exc
        msg = f"{len(raters)} raters; MOS per condition below (excluded raters left out)."
        return msg, fig, cond, pairs, raters, csv_p, json_p

    refresh.click(on_refresh, [runs_dir], [runs, anchor], api_visibility="private")
    create.click(on_create, [token, runs_dir, runs, anchor, lowpass, protocol, trials, checks,
                             n_raters, title], [links, session], api_visibility="private")
    load.click(on_load, [token, session],
               [status, plot, cond_df, pair_df, rater_df, csv_file, json_file],
               api_visibility="private")
    return {"token": token, "runs": runs, "anchor": anchor, "create": create, "links": links,
            "session": session, "load": load, "plot": plot, "conditions": cond_df,
            "pairwise": pair_df, "csv": csv_file, "json": json_file}
