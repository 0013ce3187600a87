"""The Dockerfile's steps, checked without a Docker engine (none runs here).

What is checked, and how:

* Offline, always: the Dockerfile is parsed; its Space contract holds (python 3.11 base as
  pyproject requires, non-root user 1000 with HOME=/home/user, port 7860 exposed and set as
  GRADIO_SERVER_PORT, server name 0.0.0.0, analytics off, the run store in the user's home,
  CMD ``python app.py``, requirements
  copied before they are installed); every file its RUN / COPY lines name exists; the torch it
  installs is the one requirements.txt pins.
* In a clean virtualenv (``python -m venv``, no site packages): the image's torch step, with
  the CPU wheel index replaced by the same wheel on this machine's disk (/opt/wheels), is
  resolved with ``pip install --dry-run --no-deps``: it must pick exactly torch <pin>+cpu for
  CPython 3.11.
* Opt-in (``QLISTEN_TEST_PYPI=1``, because tests do not touch the network by default): the
  image's ``pip install -r requirements.txt`` step is resolved in that clean venv against PyPI
  (``--dry-run --report``), with torch given as the local CPU wheel the way the image's first
  pip command provides it. It must succeed and must not pull another torch or any CUDA
  (nvidia-*) package. A full install would take minutes and gigabytes; the resolver run
  answers the question that breaks images — does this requirement set resolve, on Python 3.11,
  without replacing torch.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
WHEELS = Path("/opt/wheels")
pytestmark = pytest.mark.slow


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        op, _, args = buf.partition(" ")
        out.append((op.upper(), args.strip()))
        buf = ""
    return out


def pip_commands(instrs: list[tuple[str, str]]) -> list[list[str]]:
    """Every ``pip install ...`` in the RUN lines, as argument lists."""
    cmds = []
    for op, args in instrs:
        if op != "RUN":
            continue
        for part in re.split(r"&&|;", args):
            words = shlex.split(part)
            if len(words) >= 2 and words[0] in ("pip", "pip3") and words[1] == "install":
                cmds.append(words)
            elif words[:4] in (["python", "-m", "pip", "install"], ["python3", "-m", "pip", "install"]):
                cmds.append(["pip", *words[3:]])
    return cmds


def env_of(instrs: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in instrs:
        if op == "ENV":
            for word in shlex.split(args):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def torch_pin() -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.match(r"\s*torch==([\w.]+)\s*(#.*)?$", line)
        if m:
            return m.group(1)
    raise AssertionError("requirements.txt pins no torch")


INSTRS = instructions(DOCKERFILE.read_text())


def test_dockerfile_keeps_the_space_contract():
    ops = [op for op, _ in INSTRS]
    base = dict(INSTRS)["FROM"]
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim", base), base
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"
    run_user = [args for op, args in INSTRS if op == "RUN" and "useradd" in args]
    assert run_user and "-u 1000" in run_user[0]
    assert ("USER", "user") in INSTRS and ops.index("USER") < ops.index("CMD")
    env = env_of(INSTRS)
    assert env["HOME"] == "/home/user" and env["GRADIO_SERVER_NAME"] == "0.0.0.0"
    assert env["GRADIO_SERVER_PORT"] == "7860" and ("EXPOSE", "7860") in INSTRS
    assert env["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert env["QLISTEN_HOME"].startswith("/home/user/")  # a store the non-root user can write
    assert json.loads(dict(INSTRS)["CMD"]) == ["python", "app.py"] and (ROOT / "app.py").is_file()
    # requirements are copied (as the user) before the pip step, the app after it (layer cache)
    copies = [(i, args) for i, (op, args) in enumerate(INSTRS) if op == "COPY"]
    first_pip = next(i for i, (op, args) in enumerate(INSTRS) if op == "RUN" and "pip install" in args)
    assert any("requirements.txt" in a and "--chown=user" in a and i < first_pip for i, a in copies)
    assert any(a.split()[-2:] == [".", "."] and i > first_pip for i, a in copies)


def test_pip_steps_install_the_pinned_cpu_torch_and_the_requirements():
    cmds = pip_commands(INSTRS)
    assert len(cmds) == 2, cmds
    torch_step, req_step = cmds
    assert f"torch=={torch_pin()}" in torch_step
    assert "--index-url" in torch_step and torch_step[torch_step.index("--index-url") + 1].endswith("/whl/cpu")
    assert req_step[-2:] == ["-r", "requirements.txt"] and (ROOT / "requirements.txt").is_file()
    for cmd in cmds:
        assert "--user" in cmd and "--no-cache-dir" in cmd  # user 1000 installs into ~/.local


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory) -> Path:
    """A fresh virtualenv of this Python (3.11), nothing but pip in it."""
    venv = tmp_path_factory.mktemp("docker_steps") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=180)
    py = venv / "bin" / "python"
    out = subprocess.run([str(py), "-c", "import sys; print(sys.prefix != sys.base_prefix, sys.version_info[:2])"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True (3, 11)"
    return py


def local_torch_wheel() -> Path:
    wheels = sorted(WHEELS.glob(f"torch-{torch_pin()}+cpu-cp311-*.whl"))
    if not wheels:
        pytest.skip(f"no local torch {torch_pin()}+cpu wheel in {WHEELS} (the image gets it from the CPU index)")
    return wheels[0]


def dry_run(py: Path, args: list[str], report: Path, timeout: int = 540) -> dict:
    cmd = [str(py), "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
           "--disable-pip-version-check", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(report.read_text())


def installed(report: dict) -> dict[str, str]:
    return {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}


def test_torch_step_resolves_in_a_clean_venv(clean_venv, tmp_path):
    wheel = local_torch_wheel()
    torch_step = pip_commands(INSTRS)[0]
    pins = [w for w in torch_step if w.startswith("torch==")]
    # offline: only torch itself is on this disk (its own dependencies are resolved in the PyPI step)
    report = dry_run(clean_venv, ["--no-index", "--no-deps", "--find-links", str(wheel.parent), *pins],
                     tmp_path / "r.json")
    got = installed(report)
    assert got["torch"] == f"{torch_pin()}+cpu"
    assert not [n for n in got if n.startswith("nvidia")]


@pytest.mark.skipif(os.environ.get("QLISTEN_TEST_PYPI") != "1",
                    reason="resolves requirements.txt against PyPI: set QLISTEN_TEST_PYPI=1 to allow the network")
def test_requirements_step_resolves_in_a_clean_venv_without_another_torch(clean_venv, tmp_path):
    wheel = local_torch_wheel()
    report = dry_run(clean_venv, [str(wheel), "-r", "requirements.txt"], tmp_path / "r.json")
    got = installed(report)
    assert got["torch"] == f"{torch_pin()}+cpu", "a requirement pulled another torch"
    assert not [n for n in got if n.startswith(("nvidia", "triton"))], sorted(got)
    for name in ("gradio", "diffusers", "transformers", "huey", "fastapi", "uvicorn", "plotly", "librosa"):
        assert name in got, name
