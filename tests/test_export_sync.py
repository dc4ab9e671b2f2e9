"""helpers/ must be exactly what the notebooks export, and the check must notice drift."""
import shutil
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import export_notebooks  # noqa: E402


def test_helpers_in_sync_with_notebooks():
    problems = export_notebooks.check(ROOT)
    assert not problems, "helpers/ is out of sync; run `make export`:\n\n" + "\n\n".join(problems)


def _toy_repo(tmp_path: Path) -> Path:
    (tmp_path / "helpers").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Toy"),
        nbformat.v4.new_code_cell("#| export toy\nimport math\n\ndef area(r):\n    return math.pi * r * r\n\n_hidden = 1"),
        nbformat.v4.new_code_cell("print(area(2))"),  # not exported
    ]
    nbformat.write(nb, tmp_path / "ch09_toy.ipynb")
    for path, text in export_notebooks.build(tmp_path).items():
        path.write_text(text)
    return tmp_path


def test_export_writes_cells_with_provenance(tmp_path):
    root = _toy_repo(tmp_path)
    module = (root / "helpers" / "toy.py").read_text()
    assert "generated from ch09_toy.ipynb. DO NOT EDIT" in module
    assert "# ---- ch09_toy.ipynb, cell 2 ----" in module
    assert "__all__ = ['area']" in module
    assert "print(area(2))" not in module
    namespace = {}
    exec(compile(module, "toy.py", "exec"), namespace)
    assert abs(namespace["area"](1.0) - 3.141592653589793) < 1e-12
    assert "from .toy import *" in (root / "helpers" / "__init__.py").read_text()
    assert export_notebooks.check(root) == []


def test_check_detects_hand_edits_and_stale_modules(tmp_path):
    root = _toy_repo(tmp_path)
    toy = root / "helpers" / "toy.py"
    toy.write_text(toy.read_text().replace("math.pi * r * r", "3.14 * r * r"))
    problems = export_notebooks.check(root)
    assert len(problems) == 1 and "3.14 * r * r" in problems[0]
    shutil.copy(toy, root / "helpers" / "old.py")  # a module no notebook exports any more
    assert any("old.py" in p for p in export_notebooks.check(root))


def test_check_detects_notebook_edits(tmp_path):
    root = _toy_repo(tmp_path)
    nb = nbformat.read(root / "ch09_toy.ipynb", as_version=4)
    nb.cells[1].source = nb.cells[1].source.replace("r * r", "r ** 2")
    nbformat.write(nb, root / "ch09_toy.ipynb")
    assert export_notebooks.check(root)


def test_a_broken_cell_or_notebook_is_named_in_one_line_and_nothing_is_written(tmp_path, capsys):
    root = _toy_repo(tmp_path)
    before = (root / "helpers" / "toy.py").read_text()
    nb = nbformat.read(root / "ch09_toy.ipynb", as_version=4)
    nb.cells[1].source = nb.cells[1].source.replace("def area(r):", "def area(r)").replace(
        "#| export toy\n", "#| export toy\n\n")  # a blank line before the code: counted too
    nbformat.write(nb, root / "ch09_toy.ipynb")
    assert export_notebooks.main([], root) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ch09_toy.ipynb, cell 2 (`#| export toy`), line 5 of the cell: ")
    assert "fix the cell" in err and len(err.strip().splitlines()) == 1
    assert (root / "helpers" / "toy.py").read_text() == before

    (root / "ch09_toy.ipynb").write_text('{"cells": [', encoding="utf-8")  # cut short
    assert export_notebooks.main(["--check"], root) == 2
    err = capsys.readouterr().err
    assert "ch09_toy.ipynb is not a readable notebook" in err and len(err.strip().splitlines()) == 1


def test_export_replaces_a_module_atomically(tmp_path, monkeypatch):
    root = _toy_repo(tmp_path)
    nb = nbformat.read(root / "ch09_toy.ipynb", as_version=4)
    nb.cells[1].source = nb.cells[1].source.replace("r * r", "r ** 2")
    nbformat.write(nb, root / "ch09_toy.ipynb")
    import os
    replaced = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append(Path(dst).name), real(src, dst)))
    assert export_notebooks.main([], root) == 0
    assert replaced == ["toy.py"] and "r ** 2" in (root / "helpers" / "toy.py").read_text()
    assert not [p for p in (root / "helpers").iterdir() if p.name.startswith(".")]  # no temporary left
