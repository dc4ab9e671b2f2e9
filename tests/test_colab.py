"""The Colab cell at the top of each notebook (tools/colab.py): the same everywhere, inert on any
machine but Colab, and, on Colab, commands that really clone and install the course (run here
against a local clone, with pip in --dry-run mode and no index, so nothing changes and no
network is needed)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import colab  # noqa: E402

TARGET = "/content/llm-from-scratch"


def test_cells_and_badges_in_sync_with_pyproject():
    assert colab.check(ROOT) == []
    for path in colab.notebooks(ROOT):
        first = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert first.source == colab.cell_source(colab.repository_url(ROOT)), path.name


def test_check_notices_a_drifted_cell(tmp_path):
    for name in ("pyproject.toml", "README.md"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Toy"),
                nbformat.v4.new_code_cell(colab.cell_source("https://github.com/someone/else"))]
    nbformat.write(nb, tmp_path / "ch01_overview.ipynb")
    problems = colab.check(tmp_path)
    assert any("ch01_overview.ipynb: the first code cell" in p for p in problems)


def test_inert_outside_colab(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"the Colab cell ran {args} outside Colab")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    cwd, path = os.getcwd(), list(sys.path)
    exec(colab.cell_source(colab.repository_url(ROOT)), {})
    assert os.getcwd() == cwd and sys.path == path


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the repository's git history to clone")
def test_on_colab_it_clones_and_installs_the_course(tmp_path, monkeypatch):
    target = tmp_path / "course"
    source = colab.cell_source(f"file://{ROOT}").replace(TARGET, str(target))
    monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
    monkeypatch.setenv("PIP_DRY_RUN", "1")          # resolve and build, install nothing
    monkeypatch.setenv("PIP_NO_INDEX", "1")         # no network: dependencies are already here
    monkeypatch.setenv("PIP_NO_BUILD_ISOLATION", "0")
    monkeypatch.setenv("PIP_REPORT", str(tmp_path / "pip-report.json"))  # what pip would install
    ran = []
    real_run = subprocess.run

    def run(cmd, **kwargs):
        result = real_run(cmd, capture_output=True, text=True, **kwargs)
        ran.append((cmd, result.stdout + result.stderr))
        return result

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.chdir(tmp_path)
    saved_path = list(sys.path)
    try:
        exec(source, {})
        assert os.getcwd() == str(target)
        assert sys.path[0] == str(target)
    finally:
        sys.path[:] = saved_path
    assert [cmd[:2] for cmd, _ in ran] == [["git", "clone"], [sys.executable, "-m"]]
    assert (target / "helpers" / "__init__.py").exists() and (target / "pyproject.toml").exists()
    report = json.loads((tmp_path / "pip-report.json").read_text())
    assert [(i["metadata"]["name"], i["is_direct"]) for i in report["install"]] == [("llm-from-scratch-helpers", True)]
    assert report["install"][0]["download_info"]["url"] == target.as_uri()
    exec(source, {})  # a second run (the notebook re-run) does not clone again
    assert [cmd[0] for cmd, _ in ran].count("git") == 1
