"""The Compare tab: pick a model, bits, a method and its settings, prompts and seeds; run; hear
(or see) FP and quantized outputs side by side with scores, size and speed.

Why the run is a job id, not a Gradio computation: the work happens in ``backend.api``'s own
queue, which outlives a closed browser tab and a restart (the Gradio queue does not). The Run
handler only submits and then polls ``api.status`` into ``gr.Progress``; when the job is done
it sets the app-wide ``current_run`` state, and every tab that shows a run (this one,
Inspect) redraws from it. So a run reopened from the Runs tab and a fresh run are shown by the
same code, and an identical request answered from the content-hash cache shows at once.

Bad input never reaches the page as a traceback: form parse errors (:class:`FormError`) and
the API's ``RequestError`` become a warning toast plus the status line; an unexpected
exception is logged with its traceback and shown as one line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
import pandas as pd

from backend.api import RequestError
from ui.loudness import matched_copy
from ui.recipe_form import (
    FP_BITS_LABEL,
    SETTING_SPECS,
    FormError,
    bits_label,
    build_request,
    choice_label,
    widget_value,
)
from ui.result_view import METRIC_COLUMNS, headline, media_items, metrics_table, notes_markdown, size_speed_markdown

log = logging.getLogger(__name__)

TERMINAL = ("done", "failed", "cancelled", "interrupted")
POLL_SECONDS = 0.25
MAX_WAIT_SECONDS = 3600.0
MAX_SHOWN = 24  # media rows drawn; the rest are in the run's zip (Runs tab)
DEFAULT_INPUTS_SHOWN = 4  # of a model's default prompts, how many the form starts with
RUN_CONCURRENCY = 4  # page sessions waiting on jobs at once (the API's queue does the work)
EXAMPLES = [
    # model, W, A, method, inputs, seeds, steps
    ["tiny-sounds", "8", "8", "ptq", "a low humming tone\na high beep", "0", 8],
    ["tiny-sounds", "4", "8", "qdit", "a low humming tone\na high beep", "0", 8],
    ["tiny-digits", "8", "8", "ptq", "3\n7", "0", 8],
    ["tiny-digits", "4", "6", "smooth", "3\n7", "0", 8],
]


def request_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions whose message is meant for the user as is."""
    return (FormError, RequestError)


def problem_markdown(message: str) -> str:
    return f"⚠️ **Could not run:** {message}"


def model_markdown(info: dict[str, Any] | None) -> str:
    """What the chosen model is, and why it cannot run here if it cannot."""
    if not info:
        return ""
    what = ("text-to-audio" if info["kind"] == "audio" else "image") + (
        ", text prompts" if info["conditioning"] == "text" else ", class labels")
    where = "embedded, runs offline" if info.get("embedded") else "hub model"
    text = f"{info.get('title', info['name'])} — {what}; {where}."
    if not info.get("available", True):
        text += f"\n\n⚠️ **Unavailable here:** {info.get('unavailable_reason') or 'cannot be loaded'}"
    return text


def method_markdown(info: dict[str, Any] | None) -> str:
    if not info:
        return ""
    w = ", ".join(bits_label(b) for b in info.get("w_bits", []))
    a = ", ".join(bits_label(b) for b in info.get("a_bits", []))
    return f"{info.get('title', info['name'])}: weight bits {w or 'any'}; activation bits {a or 'any'}."


def inputs_label(info: dict[str, Any] | None) -> str:
    if info and info.get("conditioning") == "class":
        return "Classes, one per line"
    return "Prompts, one per line"


def _bit_choices(methods: list[dict[str, Any]], key: str) -> list[str]:
    """Every bit-width any method offers (a method's own limits are the API's to enforce, so
    that picking one it cannot do gets its clear message), plus 16 = left unquantized."""
    bits = {int(b) for m in methods for b in m.get(key, []) if b is not None and b < 16} | {4, 8}
    return [str(b) for b in sorted(bits)] + [FP_BITS_LABEL]


def _setting_widget(name: str, default: Any, visible: bool) -> gr.components.Component:
    spec = SETTING_SPECS.get(name)
    kw = {"elem_id": f"setting-{name}", "visible": visible}
    if spec is None:
        return gr.Textbox(value="" if default is None else str(default), label=name, **kw)
    info = spec.info or None
    if spec.kind == "choice":
        return gr.Dropdown(choices=[choice_label(name, c) for c in spec.choices],
                           value=widget_value(name, default), label=spec.label, info=info, **kw)
    if spec.kind == "bool":
        return gr.Checkbox(value=bool(default), label=spec.label, info=info, **kw)
    if spec.kind in ("number", "int") and default is None:  # gr.Number shows None as 0: blank text = None
        return gr.Textbox(value="", placeholder="blank = off", label=spec.label, info=info, **kw)
    if spec.kind in ("number", "int"):
        return gr.Number(value=default, label=spec.label, info=info, precision=0 if spec.kind == "int" else None,
                         **kw)
    return gr.Textbox(value=widget_value(name, default), label=spec.label, info=info, **kw)


def example_request(methods: list[dict[str, Any]], row: list[Any]) -> dict[str, Any]:
    """The request an example row runs: its values, the method's default settings."""
    model, w, a, method, inputs, seeds, steps = row
    own = next((m.get("settings", {}) for m in methods if m["name"] == method), {})
    return build_request(model=model, w_bits=w, a_bits=a, method=method, settings={}, method_settings=own,
                         inputs_text=inputs, seeds_text=seeds, steps=steps)


def prewarm_examples(api: Any) -> list[str]:
    """Queue every example (for ``QLISTEN_PREWARM_EXAMPLES=1`` at launch): once they ran, a click
    on one is answered from the run store at once. Returns the job ids; refused ones are skipped."""
    methods, jobs = api.methods(), []
    for row in EXAMPLES:
        try:
            jobs.append(api.submit(example_request(methods, list(row))))
        except Exception as exc:  # noqa: BLE001 - a model missing here must not stop the app
            log.warning("example %s not prewarmed: %s", row[:4], exc)
    return jobs


def build_compare_tab(api: Any, current_run: gr.State) -> dict[str, Any]:
    """Create the tab's components inside the caller's ``gr.Tab``; wire them to ``api``.

    ``current_run`` is the app-wide state holding the run id on show. Returns the components
    by name (for the app, the Runs tab and the tests).
    """
    models = api.models()
    methods = api.methods()
    by_model = {m["name"]: m for m in models}
    by_method = {m["name"]: m for m in methods}
    first = next((m for m in models if m.get("available", True)), models[0])
    default_method = "ptq" if "ptq" in by_method else methods[0]["name"]
    all_settings: dict[str, Any] = {}
    for m in methods:
        for name, default in m.get("settings", {}).items():
            all_settings.setdefault(name, default)

    job_state = gr.State("")
    view_state = gr.State(None)
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            model = gr.Dropdown(
                choices=[(m["title"] + ("" if m.get("available", True) else " (unavailable here)"), m["name"])
                         for m in models],
                value=first["name"], label="Model", elem_id="model")
            model_info = gr.Markdown(model_markdown(first), elem_id="model-info")
            with gr.Row():
                w_bits = gr.Dropdown(choices=_bit_choices(methods, "w_bits"), value="8", label="Weight bits",
                                     elem_id="w-bits")
                a_bits = gr.Dropdown(choices=_bit_choices(methods, "a_bits"), value="8",
                                     label="Activation bits", elem_id="a-bits")
            method = gr.Dropdown(choices=[(m["title"], m["name"]) for m in methods], value=default_method,
                                 label="Method", elem_id="method")
            method_info = gr.Markdown(method_markdown(by_method[default_method]), elem_id="method-info")
            own = by_method[default_method].get("settings", {})
            settings = {name: _setting_widget(name, default, name in own) for name, default in all_settings.items()}
            inputs_text = gr.Textbox(
                value="\n".join(first["default_inputs"][:DEFAULT_INPUTS_SHOWN]), lines=4, max_lines=16,
                label=inputs_label(first), elem_id="inputs")
            with gr.Row():
                seeds = gr.Textbox(value="0", label="Seeds (e.g. 0, 1 or 0-3)", elem_id="seeds")
                steps = gr.Number(value=first.get("default_steps", 25), precision=0, label="Steps",
                                  elem_id="steps")
                guidance = gr.Textbox(value="", placeholder=f"model default ({first.get('default_guidance')})",
                                      label="Guidance (blank = model default)", elem_id="guidance")
            telemetry = gr.Checkbox(value=True, label="Record activation histograms (Inspect tab)",
                                    elem_id="telemetry")
            with gr.Row():
                run_btn = gr.Button("Run comparison", variant="primary", elem_id="run")
                cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel")
            status = gr.Markdown("", elem_id="status")
        with gr.Column(scale=3, min_width=420):
            title = gr.Markdown("Run a comparison to hear (or see) FP and quantized outputs side by side.",
                                elem_id="run-title")
            match = gr.Checkbox(value=False, elem_id="loudness-match",
                                label="Loudness-match the quantized clips to FP for playback (ITU-R BS.1770; "
                                      "off = both at their true, stored level; scores are never affected)")

            @gr.render(inputs=[view_state, match])
            def _media(view: dict[str, Any] | None, matched: bool) -> None:
                if not view:
                    return
                items = view["items"]
                with gr.Column(elem_id="media"):
                    for it in items[:MAX_SHOWN]:
                        i = it["index"]
                        gr.Markdown(f"**{it['caption']}**" + (f" — {it['score']}" if it["score"] else ""),
                                    elem_classes=["item-caption"])
                        with gr.Row(equal_height=True):
                            if view["kind"] == "audio":
                                gr.Audio(it["fp"], type="filepath", label="FP", interactive=False,
                                         elem_id=f"fp-audio-{i}", elem_classes=["fp-audio"])
                                q_path, q_label = it["q"], "Quantized"
                                if matched and it["fp"] and it["q"]:
                                    q_path, gain = matched_copy(it["fp"], it["q"])
                                    q_label = f"Quantized, loudness-matched ({gain:+.1f} dB)"
                                gr.Audio(q_path, type="filepath", label=q_label, interactive=False,
                                         elem_id=f"q-audio-{i}", elem_classes=["q-audio"])
                            else:
                                gr.Image(it["fp"], type="filepath", label="FP", interactive=False, height=160,
                                         elem_id=f"fp-image-{i}", elem_classes=["fp-image", "pixelated"])
                                gr.Image(it["q"], type="filepath", label="Quantized", interactive=False,
                                         height=160, elem_id=f"q-image-{i}", elem_classes=["q-image", "pixelated"])
                    if len(items) > MAX_SHOWN:
                        gr.Markdown(f"First {MAX_SHOWN} of {len(items)} shown; the Runs tab downloads all.")

            metrics = gr.Dataframe(value=pd.DataFrame(columns=METRIC_COLUMNS), label="Scores", interactive=False,
                                   elem_id="metrics", wrap=True,
                                   column_widths=["27%", "12%", "12%", "12%", "37%"])
            notes = gr.Markdown("", elem_id="metric-notes")
            size_speed = gr.Markdown("", elem_id="size-speed")

    # --- handlers -------------------------------------------------------------------------
    errors = request_error_types()

    def on_model_change(name: str):
        info = by_model.get(name)
        return model_markdown(info), gr.update(label=inputs_label(info))

    def on_model_input(name: str):
        """A person picked a model: start from its defaults (not on programmatic changes,
        so loading an example or a stored run keeps its prompts)."""
        info = by_model.get(name) or {}
        return ("\n".join(info.get("default_inputs", [])[:DEFAULT_INPUTS_SHOWN]),
                info.get("default_steps", 25),
                gr.update(value="", placeholder=f"model default ({info.get('default_guidance')})"))

    def on_method_change(name: str):
        own = by_method.get(name, {}).get("settings", {})
        return [method_markdown(by_method.get(name))] + [gr.update(visible=n in own) for n in settings]

    def form_request(values: dict) -> dict[str, Any]:
        name = values[method]
        return build_request(
            model=values[model], w_bits=values[w_bits], a_bits=values[a_bits], method=name,
            settings={n: values[c] for n, c in settings.items()},
            method_settings=by_method.get(name, {}).get("settings", {}),
            inputs_text=values[inputs_text], seeds_text=values[seeds], steps=values[steps],
            guidance=values[guidance], telemetry=values[telemetry])

    def run_request(request_fn, progress: gr.Progress) -> Iterator[tuple]:
        try:
            request = request_fn()
            job = api.submit(request)
        except errors as exc:
            msg = str(getattr(exc, "message", None) or exc)
            gr.Warning(msg)
            yield problem_markdown(msg), "", gr.skip()
            return
        except Exception as exc:  # noqa: BLE001 - never a traceback in the page
            log.exception("submit failed")
            msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            gr.Warning(msg)
            yield problem_markdown(msg), "", gr.skip()
            return
        yield f"Job `{job}` submitted…", job, gr.skip()
        deadline = time.monotonic() + MAX_WAIT_SECONDS
        st = api.status(job)
        while st["status"] not in TERMINAL and time.monotonic() < deadline:
            frac = float(st.get("progress") or 0.0)
            desc = st.get("stage") or st["status"]
            if st.get("message"):
                desc += f": {st['message']}"
            progress(min(max(frac, 0.0), 1.0), desc=desc)
            time.sleep(POLL_SECONDS)
            st = api.status(job)
        if st["status"] == "done":
            yield f"**Done:** run `{job}`.", job, job
            return
        reason = st.get("error") or st.get("message") or st["status"]
        if st["status"] not in TERMINAL:
            reason = f"still {st['status']} after {MAX_WAIT_SECONDS:.0f} s; see the Runs tab later"
        gr.Warning(f"Run {st['status']}: {reason}")
        yield f"⚠️ **Run {st['status']}:** {reason}", job, gr.skip()

    def on_run(values: dict, progress: gr.Progress = gr.Progress()):  # noqa: B008 - gradio's idiom
        yield from run_request(lambda: form_request(values), progress)

    def on_example(m, w, a, meth, inp, sd, st, progress: gr.Progress = gr.Progress()):  # noqa: B008
        yield from run_request(lambda: example_request(methods, [m, w, a, meth, inp, sd, st]), progress)

    def on_cancel(job: str):
        if not job:
            return "Nothing to cancel."
        try:
            now = api.cancel(job)
        except Exception as exc:  # noqa: BLE001
            return problem_markdown(f"cancel failed: {exc}")
        return f"Cancel requested for job `{job}` (now {now})."

    def show_run(run_id: str):
        """Everything the tab shows of one run (fresh, cached or reopened)."""
        if not run_id:
            return None, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        try:
            st = api.status(run_id)
            result = api.result(run_id)
        except Exception as exc:  # noqa: BLE001 - a bad id from the Runs tab
            return None, f"⚠️ Cannot open run `{run_id}`: {exc}", None, "", "", gr.skip()
        if result is None:
            reason = st.get("error") or st.get("message") or ""
            return (None, f"Run `{run_id}` is **{st['status']}**{': ' + reason if reason else ''}.",
                    None, "", "", gr.skip())
        view = {"kind": result.get("kind", "audio"), "items": media_items(result, api.run_dir(run_id))}
        return (view, headline(result), metrics_table(result), notes_markdown(result), size_speed_markdown(result),
                f"Showing run `{run_id}`.")

    model.change(on_model_change, [model], [model_info, inputs_text], api_visibility="private")
    model.input(on_model_input, [model], [inputs_text, steps, guidance], api_visibility="private")
    method.change(on_method_change, [method], [method_info] + list(settings.values()), api_visibility="private")
    form = {model, w_bits, a_bits, method, inputs_text, seeds, steps, guidance, telemetry, *settings.values()}
    run_btn.click(on_run, form, [status, job_state, current_run], concurrency_limit=RUN_CONCURRENCY,
                  concurrency_id="compare-run", api_visibility="private")
    cancel_btn.click(on_cancel, [job_state], [status], api_visibility="private")
    current_run.change(show_run, [current_run], [view_state, title, metrics, notes, size_speed, status],
                       api_visibility="private")
    with gr.Row():
        gr.Examples(
            examples=EXAMPLES, inputs=[model, w_bits, a_bits, method, inputs_text, seeds, steps],
            outputs=[status, job_state, current_run], fn=on_example, run_on_click=True, cache_examples=False,
            label="Examples (small; a click runs one — at once when it ran before, from the run store)",
            elem_id="examples", api_visibility="private",
        )

    return {"model": model, "model_info": model_info, "w_bits": w_bits, "a_bits": a_bits, "method": method,
            "method_info": method_info, "settings": settings, "inputs": inputs_text, "seeds": seeds,
            "steps": steps, "guidance": guidance, "telemetry": telemetry, "run": run_btn, "cancel": cancel_btn,
            "status": status, "title": title, "metrics": metrics, "notes": notes, "size_speed": size_speed,
            "job": job_state, "view": view_state, "loudness_match": match,
            "show_run": show_run, "on_run": on_run, "form_request": form_request}
