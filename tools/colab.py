#!/usr/bin/env python3
"""The first cell of every notebook and the Colab badges of the README, from one place.

The course's public repository URL lives in pyproject.toml (`[project.urls] Repository`). On
Colab, nothing of the course is installed when a notebook opens, so each notebook's first
cell must carry that URL itself: this tool writes the same cell into all of them (and the
badge links into README.md), and `--check` (run by the tests) fails if any drifted.

    python tools/colab.py           # rewrite the cells and badges from pyproject.toml
    python tools/colab.py --check   # exit 1 if a notebook's first cell or a badge differs
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # Python 3.10 (Ubuntu 22.04's): the same parser, from PyPI
    import tomli as tomllib

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_notebooks import write_atomically  # noqa: E402  (the course's writer, without importing helpers)

ROOT = Path(__file__).resolve().parent.parent
MARKER = "# Colab only:"
TEMPLATE = '''# Colab only: fetch the course and install `helpers`. Anywhere else this cell does nothing.
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess

    course_dir = "/content/llm-from-scratch"
    if not os.path.isdir(course_dir):
        subprocess.run(["git", "clone", "--depth", "1", "{url}", course_dir], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", course_dir], check=True)
    os.chdir(course_dir)             # data/ and models/ caches live in the clone, as locally
    sys.path.insert(0, course_dir)   # an editable install is only seen by a restarted kernel'''


def repository_url(root: Path = ROOT) -> str:
    with open(root / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["urls"]["Repository"].rstrip("/")


def cell_source(url: str) -> str:
    return TEMPLATE.replace("{url}", url)


def badge(url: str, notebook: str) -> str:
    path = url.removeprefix("https://github.com/")
    return (f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{path}/blob/main/{notebook})")


def notebooks(root: Path = ROOT) -> list[Path]:
    return sorted(root.glob("ch[0-9][0-9]_*.ipynb"))


def check(root: Path = ROOT) -> list[str]:
    url, problems = repository_url(root), []
    for path in notebooks(root):
        first = next((c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"), None)
        if first is None or first.source != cell_source(url):
            problems.append(f"{path.name}: the first code cell is not the Colab cell for {url}")
    readme = (root / "README.md").read_text(encoding="utf-8")
    for path in notebooks(root):
        if badge(url, path.name) not in readme:
            problems.append(f"README.md: no Colab badge for {path.name} pointing at {url}")
    return problems


def write(root: Path = ROOT) -> None:
    url = repository_url(root)
    for path in notebooks(root):
        nb = nbformat.read(path, as_version=4)
        first = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), None)
        if first is not None and nb.cells[first].source.startswith(MARKER):
            nb.cells[first].source = cell_source(url)
        else:
            nb.cells.insert(first if first is not None else len(nb.cells),
                            nbformat.v4.new_code_cell(cell_source(url)))
        text = nbformat.writes(nb)
        write_atomically(path, text if text.endswith("\n") else text + "\n")  # as nbformat.write ends it
    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8")
    text = re.sub(r"\[!\[Open in Colab\]\([^)]*\)\]\(https://colab\.research\.google\.com/github/[^)]*/blob/main/(ch\d\d_\w+\.ipynb)\)",
                  lambda m: badge(url, m.group(1)), text)
    write_atomically(readme, text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = check()
            print("\n".join(problems) or "Colab cells and badges are in sync with pyproject.toml")
            return 1 if problems else 0
        write()
    except (OSError, ValueError) as e:  # unreadable or unwritable files, a notebook that is not JSON
        where = f"{e.filename}: " if isinstance(e, OSError) and e.filename else ""
        print(f"error: {where}{getattr(e, 'strerror', None) or e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
