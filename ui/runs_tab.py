"""The Runs tab: the history from the run store; reopen any run in Compare / Inspect, download
its artifacts as one zip.

Why reopening goes through ``current_run``: Compare and Inspect already redraw from that state,
so a stored run is shown by exactly the code that shows a fresh one. Reopening also puts the
run's request back into the Compare form, so "run it again with A6" is one change away.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from ui.recipe_form import bits_label

RUN_COLUMNS = ["run", "status", "created (UTC)", "model", "bits", "method", "inputs", "seeds", "steps", "message"]
LIST_LIMIT = 200


def _when(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(float(value), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value).replace("T", " ")[:19]


def runs_table(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per stored run (newest first, as ``api.list_runs`` gives them)."""
    rows = []
    for r in runs:
        req = r.get("request") or {}
        rec = req.get("recipe") or {}
        rows.append([
            r.get("id", ""), r.get("status", ""), _when(r.get("created_at")), req.get("model", ""),
            f"W{bits_label(rec.get('w_bits')).split()[0]} A{bits_label(rec.get('a_bits')).split()[0]}",
            rec.get("method", ""), len(req.get("inputs") or []),
            ", ".join(str(s) for s in req.get("seeds") or []), req.get("steps", ""),
            r.get("error") or r.get("message") or "",
        ])
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def zip_run(run_dir: Path, run_id: str, out_dir: Path | None = None) -> Path:
    """The whole run folder (wavs/pngs, run.json, report.json, telemetry) as ``qlisten-<id>.zip``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run {run_id} has no folder (was it deleted?)")
    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="qlisten_zip_"))
    base = out_dir / f"qlisten-{run_id}"
    return Path(shutil.make_archive(str(base), "zip", root_dir=run_dir.parent, base_dir=run_dir.name))


def build_runs_tab(api: Any, current_run: gr.State, tabs: gr.Tabs, compare: dict[str, Any]) -> dict[str, Any]:
    """Create the tab inside the caller's ``gr.Tab``; ``compare`` is build_compare_tab's dict."""
    with gr.Row():
        refresh = gr.Button("Refresh", elem_id="runs-refresh", scale=0)
        pick = gr.Dropdown(choices=[], label="Run", elem_id="runs-pick", scale=3)
        open_btn = gr.Button("Open in Compare / Inspect", variant="primary", elem_id="runs-open", scale=1)
        zip_btn = gr.Button("Download artifacts (zip)", elem_id="runs-zip", scale=1)
    message = gr.Markdown("", elem_id="runs-message")
    table = gr.Dataframe(headers=RUN_COLUMNS, label="Stored runs (newest first)", interactive=False,
                         elem_id="runs-table", wrap=True)
    zip_file = gr.File(label="Artifacts", elem_id="runs-file", interactive=False, height=90)

    def on_refresh():
        runs = api.list_runs(limit=LIST_LIMIT)
        choices = [(f"{r['id']} · {r.get('status', '')} · {(r.get('request') or {}).get('model', '')}", r["id"])
                   for r in runs]
        return runs_table(runs), gr.update(choices=choices, value=choices[0][1] if choices else None)

    def on_select(evt: gr.SelectData, df: pd.DataFrame):
        """Clicking a table row picks that run."""
        row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
        return df.iloc[int(row)]["run"]

    def on_open(run_id: str):
        keep = [gr.skip()] * 7
        if not run_id:
            return ("Pick a run first.", gr.skip(), gr.skip(), *keep)
        try:
            req = api.status(run_id).get("request") or {}
        except Exception as exc:  # noqa: BLE001 - an id that is no longer in the store
            return (f"⚠️ Cannot open `{run_id}`: {exc}", gr.skip(), gr.skip(), *keep)
        rec = req.get("recipe") or {}
        form = [req.get("model", gr.skip()), bits_label(rec.get("w_bits")), bits_label(rec.get("a_bits")),
                rec.get("method", gr.skip()), "\n".join(req.get("inputs") or []),
                ", ".join(str(s) for s in req.get("seeds") or []), req.get("steps", gr.skip())]
        return (f"Opened run `{run_id}`.", run_id, gr.Tabs(selected="compare"), *form)

    def on_zip(run_id: str):
        if not run_id:
            return "Pick a run first.", None
        try:
            path = zip_run(api.run_dir(run_id), run_id)
        except Exception as exc:  # noqa: BLE001
            return f"⚠️ No artifacts for `{run_id}`: {exc}", None
        return f"Zip of run `{run_id}` ready ({path.stat().st_size / 1e6:.2f} MB).", str(path)

    form_out = [compare[k] for k in ("model", "w_bits", "a_bits", "method", "inputs", "seeds", "steps")]
    refresh.click(on_refresh, None, [table, pick], api_visibility="private")
    table.select(on_select, [table], [pick], api_visibility="private")
    open_btn.click(on_open, [pick], [message, current_run, tabs, *form_out], api_visibility="private")
    zip_btn.click(on_zip, [pick], [message, zip_file], api_visibility="private")
    return {"refresh": refresh, "pick": pick, "open": open_btn, "zip": zip_btn, "message": message,
            "file": zip_file, "table": table, "on_refresh": on_refresh}
