#!/usr/bin/env python3
"""Export the finalized code of the course notebooks into the `helpers` package.

A code cell whose first line is ``#| export <module>`` is copied, as the reader sees it, into
``helpers/<module>.py``. Notebooks are read in chapter order (ch01, ch02, ...), so a module
that several chapters add to keeps the order in which the course introduces things.
``helpers/__init__.py`` is generated too: it re-exports the public names of every module.

    python tools/export_notebooks.py           # write helpers/
    python tools/export_notebooks.py --check   # exit 1 and list the differences if out of sync
"""
from __future__ import annotations

import argparse
import ast
import difflib
import functools
import importlib.util
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "helpers"
DIRECTIVE = re.compile(r"^#\|\s*export\s+([A-Za-z_][A-Za-z0-9_]*)\s*$")
# Hand-written modules whose public names __init__ re-exports too (not generated).
SUPPORT_MODULES = ["support.data", "support.download", "support.runtime"]


class ExportError(ValueError):
    """A notebook or an exported cell that cannot be exported; the message names it and the fix."""


@functools.cache
def _files_module():
    """helpers/support/files.py, loaded once by its path: importing `helpers` would import the
    very modules this tool regenerates (and torch), and a broken one would stop the repair."""
    spec = importlib.util.spec_from_file_location("course_files", ROOT / PACKAGE / "support" / "files.py")
    files = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(files)
    return files


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) through the course's atomic writer."""
    _files_module().write_atomically(path, lambda f: f.write(text), mode="w")


def notebooks(root: Path = ROOT) -> list[Path]:
    return sorted(root.glob("ch[0-9][0-9]_*.ipynb"))


def exported_cells(nb_path: Path):
    """Yield (module, cell_number, code, lines_skipped) for each exported cell of one notebook:
    the code starts at line lines_skipped + 1 of the cell."""
    try:
        nb = nbformat.read(nb_path, as_version=4)
    except Exception as e:  # nbformat raises several kinds (not JSON, not a notebook, ...)
        raise ExportError(f"{nb_path.name} is not a readable notebook ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:160] if str(e) else ''}); restore it from git") from None
    for number, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code":
            continue
        first, _, rest = cell.source.partition("\n")
        match = DIRECTIVE.match(first.strip())
        if match:
            code = rest.strip("\n")
            skipped = 1 + len(rest) - len(rest.lstrip("\n"))  # the directive and blank lines before the code
            yield match.group(1), number, code, skipped


def public_names(code: str) -> list[str]:
    names = []
    for node in ast.parse(code).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return [n for n in dict.fromkeys(names) if not n.startswith("_")]


def build(root: Path = ROOT) -> dict[Path, str]:
    """Return {path: text} for every generated file, without touching the disk."""
    blocks: dict[str, list[tuple[str, int, str, int]]] = {}
    for nb_path in notebooks(root):
        for module, number, code, skipped in exported_cells(nb_path):
            blocks.setdefault(module, []).append((nb_path.name, number, code, skipped))

    files: dict[Path, str] = {}
    exports: dict[str, list[str]] = {}
    for module, parts in sorted(blocks.items()):
        sources = ", ".join(dict.fromkeys(nb for nb, _, _, _ in parts))
        names: list[str] = []
        body = []
        for nb, number, code, skipped in parts:
            try:
                found = public_names(code)
            except SyntaxError as e:
                raise ExportError(f"{nb}, cell {number} (`#| export {module}`), line {(e.lineno or 1) + skipped} of "
                                  f"the cell: {e.msg}; fix the cell, then export again") from None
            names += [n for n in found if n not in names]
            body.append(f"# ---- {nb}, cell {number} ----\n{code}\n")
        header = (
            f'"""{module}: generated from {sources}. DO NOT EDIT.\n\n'
            f"Edit the notebook cells that start with `#| export {module}` and run `make export`.\n"
            f'"""\n'
        )
        all_line = "__all__ = [" + ", ".join(repr(n) for n in names) + "]\n"
        files[root / PACKAGE / f"{module}.py"] = header + all_line + "\n\n" + "\n\n".join(body)
        exports[module] = names

    init = [
        '"""helpers: the code the course notebooks build, importable by later chapters and your scripts.',
        "",
        "GENERATED by tools/export_notebooks.py. DO NOT EDIT. Modules in helpers/support/ are",
        "hand-written; every other module is exported from the notebooks.",
        '"""',
    ]
    for module in sorted(exports):
        init.append(f"from .{module} import *  # noqa: F401,F403")
    for support in SUPPORT_MODULES:
        if (root / PACKAGE / (support.replace(".", "/") + ".py")).exists():
            init.append(f"from .{support} import *  # noqa: F401,F403")
    files[root / PACKAGE / "__init__.py"] = "\n".join(init) + "\n"
    return files


def generated_on_disk(root: Path = ROOT) -> list[Path]:
    """Modules on disk that claim to be generated (so stale ones can be found and removed)."""
    # the exact first line `build` writes, not any mention of "DO NOT EDIT": a hand-written module
    # that quotes those words must never be taken for a stale generated one and deleted
    header = re.compile(r'"""\w+: generated from [^\n]*\.ipynb\. DO NOT EDIT\.\n')
    return [p for p in (root / PACKAGE).glob("*.py")
            if p.name == "__init__.py" or header.match(p.read_text(encoding="utf-8", errors="replace")[:300])]


def check(root: Path = ROOT) -> list[str]:
    """Differences between helpers/ on disk and what the notebooks export (empty: in sync)."""
    expected = build(root)
    problems = []
    for path, text in expected.items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            diff = difflib.unified_diff(current.splitlines(), text.splitlines(),
                                        f"{path.relative_to(root)} (on disk)",
                                        f"{path.relative_to(root)} (from notebooks)", lineterm="", n=1)
            problems.append("\n".join(list(diff)[:40]))
    for path in generated_on_disk(root):
        if path not in expected:
            problems.append(f"{path.relative_to(root)} is generated but no notebook exports it any more")
    return problems


def main(argv=None, root: Path = ROOT) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report differences; exit 1 if any")
    args = parser.parse_args(argv)
    try:
        return _run(args.check, root)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as e:
        print(f"error: a file is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only checkout, a full disk: nothing half-written (atomic writes)
        print(f"error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}; fix the permissions or free "
              f"some space and export again (each module is either the old or the new one)", file=sys.stderr)
        return 2


def _run(check_only: bool, root: Path) -> int:
    if check_only:
        problems = check(root)
        for p in problems:
            print(p, end="\n\n")
        print("helpers/ is in sync with the notebooks" if not problems
              else "helpers/ is NOT in sync with the notebooks: run `make export`")
        return 1 if problems else 0
    expected = build(root)
    for path, text in expected.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            write_atomically(path, text)
            print(f"wrote {path.relative_to(root)}")
    # only once every new module is in place: a failed write leaves the old set whole
    for stale in generated_on_disk(root):
        if stale not in expected:
            stale.unlink()
            print(f"removed {stale.relative_to(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
