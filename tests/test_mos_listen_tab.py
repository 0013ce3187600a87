"""The Listen tab (admin view) builds inside a Blocks and drives the real service."""

import pandas as pd
import pytest

from backend.mos.demo_runs import make_demo_runs
from backend.mos.service import MosError, MosService
from ui.listen_tab import build_listen_tab, create_session, list_runs, session_results


@pytest.fixture()
def setup(tmp_path):
    runs = make_demo_runs(tmp_path / "runs", {"W8A8": 30.0, "W4A8": 15.0, "W2A8": 0.0},
                          prompts=["a", "b"], seconds=0.2)
    return MosService(tmp_path / "mos.sqlite", "tok", runs_root=tmp_path / "runs"), runs


def test_tab_builds_in_blocks(setup):
    gr = pytest.importorskip("gradio")
    service, runs = setup
    with gr.Blocks() as demo, gr.Tab("Listen"):
        parts = build_listen_tab(service)
    assert {"create", "links", "plot", "csv"} <= set(parts)
    assert {c[1] for c in parts["runs"].choices} == {r.name for r in runs}
    assert demo is not None


def test_tab_actions_create_and_report(setup):
    service, runs = setup
    root = str(runs[0].parent)
    assert sorted(v for _, v in list_runs(root)) == sorted(r.name for r in runs)
    with pytest.raises(MosError):
        create_session(service, "wrong", root, [runs[0].name], None, True, "acr", 4, 1, 2, "t")
    sid, text = create_session(service, "tok", root, [runs[0].name, runs[1].name], runs[2].name,
                               True, "acr", 4, 1, 2, "t")
    assert text.count("/mos/rate/") == 2 and "token=" in text
    cond, pairs, raters, fig, csv_p, json_p = session_results(service, "tok", sid)
    assert isinstance(cond, pd.DataFrame) and list(cond["label"])[:3] == ["FP", "W8A8", "W4A8"]
    assert len(raters) == 2 and len(pairs) == 10  # 5 conditions -> 10 pairs
    assert fig.data[0].type == "bar"
    assert open(csv_p).readline().startswith("session_id,")
    with pytest.raises(MosError):
        session_results(service, "wrong", sid)


def test_mounts_next_to_gradio(tmp_path, setup):
    """The way the app combines them: rater routes and the Blocks on one FastAPI app."""
    gr = pytest.importorskip("gradio")
    from fastapi.testclient import TestClient

    from backend.mos.server import create_app

    _, runs = setup
    app = create_app(tmp_path / "m.sqlite", "tok", runs_root=runs[0].parent)
    with gr.Blocks() as demo, gr.Tab("Listen"):
        build_listen_tab(app.state.mos)
    app = gr.mount_gradio_app(app, demo, path="/app")
    client = TestClient(app)
    service = app.state.mos
    _, text = create_session(service, "tok", str(runs[0].parent), [runs[0].name], None, False,
                             "mushra", 2, 0, 1, "t")
    link = text.split("`")[-2]
    assert client.get(link).status_code == 200
    assert client.get("/app/").status_code == 200
