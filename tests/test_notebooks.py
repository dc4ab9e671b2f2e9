"""Rules every committed notebook follows, its committed outputs against a smoke execution, and
the course runner on toy notebooks."""
import ast
import copy
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from nbval.plugin import (IPyNbCell, coalesce_streams, find_comment_markers, find_metadata_tags,
                          nocolors)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import run_course  # noqa: E402

NOTEBOOKS = sorted(ROOT.glob("ch[0-9][0-9]_*.ipynb"))
NAMES = [p.stem for p in NOTEBOOKS]
REQUIRED_PARAMETERS = {"mode", "device", "seed", "data_dir", "metrics_path"}


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.fixture(params=NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def notebook(request):
    return request.param, nbformat.read(request.param, as_version=4)


def test_there_are_notebooks():
    assert NOTEBOOKS, "no chNN_*.ipynb notebooks found at the repository root"


def test_parameters_cell(notebook):
    path, nb = notebook
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    assigned = {t.id for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    assert REQUIRED_PARAMETERS <= assigned, f"{path.name}: parameters cell lacks {REQUIRED_PARAMETERS - assigned}"


def test_has_smoke_run_test(notebook):
    path, _ = notebook
    test_file = ROOT / "tests" / f"test_nb_{path.stem}.py"
    assert test_file.exists(), f"{test_file.name} missing: every notebook needs a smoke-run test"
    assert f'smoke_run("{path.stem}"' in test_file.read_text()


def test_committed_outputs_are_clean(notebook):
    path, nb = notebook
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), \
        f"{path.name}: should open with a markdown title"
    counts = [c.execution_count for c in _code_cells(nb) if c.source.strip()]
    assert None not in counts, f"{path.name}: has code cells that were never executed"
    assert counts == list(range(1, len(counts) + 1)), \
        f"{path.name}: not executed once top to bottom (execution counts {counts[:8]}…)"
    errors = [o for c in _code_cells(nb) for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: saved error output: {errors[0].get('ename')}"
    assert "papermill" not in nb.metadata and "widgets" not in nb.metadata
    assert not [c for c in nb.cells if "papermill" in c.metadata or "injected-parameters" in c.metadata.get("tags", [])]
    text = json.dumps([c.outputs for c in _code_cells(nb)])
    assert not re.search(r"/(tmp|work|home|root|Users)/", text), f"{path.name}: an output shows a local path"


LESSON_CELL_LINES = 40  # the longest code cell a main section may show (STYLE.md)


def test_main_sections_keep_code_cells_book_sized(notebook):
    """Before a notebook's closing "Under the hood" / "Appendix" sections, every code cell a
    reader sees is at most LESSON_CELL_LINES lines: longer, robust versions go in those sections.
    Folded cells (drawing code) count too: a reader who unfolds one should find a screenful."""
    path, nb = notebook
    closing = False
    for i, cell in enumerate(nb.cells, 1):
        if cell.cell_type == "markdown" and re.match(r"## (Under the hood|Appendix)\b", cell.source):
            closing = True
        if cell.cell_type == "code" and not closing:
            n = len(cell.source.splitlines())
            assert n <= LESSON_CELL_LINES, (
                f"{path.name} cell {i}: {n} lines before the closing sections; keep the book-sized "
                f"version here and move the exported one to an 'Under the hood' section")


def test_try_it_solutions_are_folded_with_their_outputs(notebook):
    """A "Try it" solution shows neither its code nor its printed answer until the reader
    unfolds it (JupyterLab's jupyter.source_hidden / outputs_hidden): an answer printed right
    under the question gives the exercise away. Bookkeeping cells (metrics.log) stay open."""
    path, nb = notebook
    section, solutions = "", 0
    for i, cell in enumerate(nb.cells, 1):
        if cell.cell_type == "markdown" and cell.source.startswith("## "):
            section = cell.source.splitlines()[0]
        if not section.startswith("## Try it") or cell.cell_type != "code":
            continue
        code = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith("#"))
        if code.lstrip().startswith("metrics.log("):  # bookkeeping, perhaps under a comment
            continue
        folded = cell.metadata.get("jupyter", {})
        assert folded.get("source_hidden") and folded.get("outputs_hidden"), (
            f"{path.name} cell {i}: a Try it solution must be folded, code and outputs "
            f"(metadata jupyter.source_hidden and jupyter.outputs_hidden)")
        solutions += 1
    assert solutions, f"{path.name}: no Try it solutions found"


def test_export_directives_are_first_lines(notebook):
    path, nb = notebook
    for i, cell in enumerate(nb.cells, 1):
        lines = cell.source.splitlines()
        late = [ln for ln in lines[1:] if ln.strip().startswith("#| export")]
        assert not late, f"{path.name} cell {i}: '#| export' only works on a cell's first line"
        if lines and lines[0].startswith("#| export"):
            assert cell.cell_type == "code", f"{path.name} cell {i}: export directive in a markdown cell"


# ---- committed outputs, compared under nbval's rules ----------------------------------------
#
# nbval (`pytest --nbval`) executes a notebook itself and compares each cell's new outputs with
# the committed ones. Here the comparison is fed by the notebook's one smoke execution, the one
# its tests/test_nb_*.py checks the metrics of (conftest's `executed_notebook`), so no notebook
# runs twice; what is compared, and how, is nbval's own code: the cell options from tags and
# comments (`nbval-ignore-output`, `nbval-skip`, ...), stream coalescing, and
# IPyNbCell.compare_outputs with the keys nbval skips by default.

class _NbvalCell:
    """What nbval's IPyNbCell.compare_outputs needs of `self`: the defaults of `pytest --nbval`
    (no sanitize file, no nbdime: images are not compared), plain-text messages."""
    colors = nocolors
    parent = type("NbvalFile", (), {
        "sanitize_patterns": {},
        # IPyNbFile.__init__'s skip_compare, with the images it adds when --nbdime is off
        "skip_compare": ("metadata", "traceback", "prompt_number", "output_type", "name", "execution_count",
                         "application/vnd.jupyter.widget-view+json", "image/png", "image/jpeg"),
    })
    # no pytest diff of the two texts (that needs a collected item): nbval's fallback shows both whole
    ihook = type("NoHook", (), {"pytest_assertrepr_compare": staticmethod(lambda **_: [])})()
    config = None
    compare_outputs = IPyNbCell.compare_outputs
    format_output_compare = IPyNbCell.format_output_compare
    sanitize = IPyNbCell.sanitize


def nbval_options(cell) -> dict:
    """The options nbval gives a code cell (IPyNbFile.collect under plain --nbval)."""
    options = defaultdict(bool, find_metadata_tags(cell.metadata))
    options.update(dict(find_comment_markers(cell.source)))
    options.setdefault("check", True)
    return options


def output_differences(committed, executed) -> list[str]:
    """nbval's verdict on each code cell of `committed` against the same cell of `executed` (the
    papermill copy: its injected-parameters cell is left out), up to the first cell that raised
    or never ran there (papermill stopped: at an error or a cell timeout, the smoke run's own
    failure). One message per failing cell."""
    runs = [c for c in executed.cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]
    cells = [c for c in committed.cells if c.cell_type == "code"]
    assert [c.source for c in runs] == [c.source for c in cells], "the executed copy has other cells than the notebook"
    raised = [i for i, c in enumerate(runs) if c.execution_count is None and c.source.strip()
              or any(o.output_type == "error" for o in c.outputs) and "raises-exception" not in c.metadata.get("tags", [])]
    failures = []
    for number, (cell, run) in enumerate(zip(cells[:raised[0]] if raised else cells, runs)):
        options = nbval_options(cell)
        where = f"Cell {number} ({next((ln for ln in cell.source.splitlines() if ln.strip()), '')[:70]!r})"
        if options["skip"]:
            continue
        if cell.execution_count is None:  # nbval: an unrun reference is not compared, unless it has outputs
            if cell.outputs:
                failures.append(f"{where}: unrun reference cell has outputs")
            continue
        if not options["check"]:
            continue
        checker = _NbvalCell()
        test = coalesce_streams(copy.deepcopy(run.outputs))
        ref = coalesce_streams(copy.deepcopy(cell.outputs))
        if not checker.compare_outputs(test, ref):
            failures.append(f"{where}: cell outputs differ\n" + "\n".join(checker.comparison_traceback))
    return failures


@pytest.mark.parametrize("name", NAMES)
def test_outputs_match_committed(name, executed_notebook):
    """Every output not tagged nbval-ignore-output is what the committed notebook shows."""
    path, error = executed_notebook(name)
    if not path.exists():
        pytest.fail(f"{name}.ipynb: the smoke execution failed before any cell ran: {type(error).__name__}: {error}")
    committed = nbformat.read(ROOT / f"{name}.ipynb", as_version=4)
    executed = nbformat.read(path, as_version=4)
    failures = output_differences(committed, executed)
    if error is not None:
        failures.append(f"the smoke execution stopped: {type(error).__name__}: {str(error)[-2000:]}")
    assert not failures, f"{name}.ipynb: " + "\n\n".join(failures)


def test_output_comparison_is_nbvals():
    """The comparison above fails where nbval fails, and passes what nbval passes."""
    def cell(source, outputs, tags=(), count=1):
        c = nbformat.v4.new_code_cell(source, outputs=outputs, execution_count=count)
        if tags:
            c.metadata["tags"] = list(tags)
        return c

    def stream(text, name="stdout"):
        return nbformat.v4.new_output("stream", name=name, text=text)

    def result(text, count=1, **more):
        return nbformat.v4.new_output("execute_result", data={"text/plain": text, **more}, execution_count=count)

    committed = nbformat.v4.new_notebook(cells=[
        cell("print('a'); print('b')", [stream("a\n"), stream("b\n")]),
        cell("x", [result("3", count=2, **{"image/png": "AAAA"})], count=2),
        cell("t", [stream("took 1.0 s\n")], tags=["nbval-ignore-output"], count=3),
        cell("# NBVAL_IGNORE_OUTPUT\nt2", [stream("took 2 s\n")], count=4),
        cell("s", [stream("x\n")], tags=["nbval-skip"], count=5),
        cell("later", [], count=None),
    ])
    good = copy.deepcopy(committed)
    for number, run in enumerate(good.cells, 1):  # an executed copy: every cell ran
        run.execution_count = number
    good.cells[0].outputs = [stream("a\nb\n")]                         # streams are coalesced
    good.cells[1].outputs = [result("3", count=7, **{"image/png": "BBBB"})]  # counts and images not compared
    good.cells[2].outputs = [stream("took 9.9 s\n")]
    good.cells[3].outputs = []
    good.cells[4].outputs = [stream("y\n")]
    good.cells[5].outputs = [stream("now run\n")]
    injected = nbformat.v4.new_code_cell("mode = 'smoke'")
    injected.metadata["tags"] = ["injected-parameters"]
    good.cells.insert(1, injected)
    assert output_differences(committed, good) == []

    bad = copy.deepcopy(good)
    bad.cells[0].outputs = [stream("a\nc\n")]
    bad.cells[2].outputs = [result("4")]
    bad.cells[3].outputs = [stream("oops\n", name="stderr")]  # ignored cell: still not compared
    found = output_differences(committed, bad)
    assert len(found) == 2 and found[0].startswith("Cell 0") and found[1].startswith("Cell 1"), found
    assert "  a\n  b" in found[0] and "  a\n  c" in found[0]  # both texts shown

    stopped = copy.deepcopy(bad)  # papermill stopped at cell 1: it and the cells after it ran not
    stopped.cells[2].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="x", traceback=[])]
    for later in stopped.cells[3:]:
        later.outputs, later.execution_count = [], None
    assert [f.split(":")[0] for f in output_differences(committed, stopped)] == ["Cell 0 (\"print('a'); print('b')\")"]
    stopped.cells[2].outputs, stopped.cells[2].execution_count = [], None  # a timeout: no error output, not run
    assert [f.split(":")[0] for f in output_differences(committed, stopped)] == ["Cell 0 (\"print('a'); print('b')\")"]

    unrun = copy.deepcopy(committed)
    unrun.cells[5].outputs = [stream("stale\n")]
    assert [f.split(":")[0] for f in output_differences(unrun, good)] == ["Cell 5 ('later')"]


# ---- the runner ----------------------------------------------------------------------------

def _toy_notebook(path: Path, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('mode = "full"\ndevice = "auto"\nmetrics_path = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Toy"), params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)
    return path


HEADLINE_CELL = """from helpers.support.runtime import Metrics
metrics = Metrics(metrics_path, notebook="toy", mode=mode)
metrics.log(losses=[round(0.1 * i, 3) for i in range(60)], note="a long recorded value " * 12)
metrics.log(headline={"final validation loss": 6.4516, "test accuracy": "95.67 %", "judge score": 50.1},
            book={"final validation loss": 6.39, "judge score": 50.3})"""


def test_runner_reports_headline_metrics_whole_and_failures(tmp_path):
    good = _toy_notebook(tmp_path / "ch08_good.ipynb", HEADLINE_CELL)
    bad = _toy_notebook(tmp_path / "ch09_bad.ipynb", "raise ValueError('broken on purpose')")
    out = tmp_path / "runs"
    assert run_course.main(["--mode", "smoke", "--out", str(out), str(good), str(bad)]) == 1
    report = json.loads((out / "report.json").read_text())
    by_name = {r["notebook"]: r for r in report["results"]}
    assert by_name["ch08_good.ipynb"]["status"] == "ok"
    assert by_name["ch08_good.ipynb"]["metrics"]["mode"] == "smoke"
    assert by_name["ch08_good.ipynb"]["metrics"]["headline"]["final validation loss"] == 6.4516
    assert by_name["ch09_bad.ipynb"]["status"] == "failed"
    assert "broken on purpose" in by_name["ch09_bad.ipynb"]["error"]
    # The failing cell is named: its execution count and first line.
    assert by_name["ch09_bad.ipynb"]["failed_cell"]["first_line"] == "raise ValueError('broken on purpose')"
    assert by_name["ch08_good.ipynb"]["mode"] == "smoke" and by_name["ch08_good.ipynb"]["device"] == "cpu"
    md = (out / "report.md").read_text()
    assert "ch09_bad.ipynb: cell" in md and "broken on purpose" in md
    # every headline result whole, with the book's figure where there is one; nothing cut with "…"
    assert ("final validation loss: 6.452 (book: 6.39); test accuracy: 95.67 %; judge score: 50.1 (book: 50.3)"
            in md.splitlines()[4])
    assert "| final validation loss | 6.452 | 6.39 |" in md and "| test accuracy | 95.67 % |  |" in md
    assert "…" not in md
    # the full record is there too, folded away
    details = md[md.index("<details><summary>all recorded metrics</summary>"):]
    assert "a long recorded value " * 12 in details and '"losses"' in details and "</details>" in details
    page = (out / "report.html").read_text()
    assert "<table>" in page and "broken on purpose" in page and "class='failed'" in page
    assert "<td>judge score</td><td>50.1</td><td>50.3</td>" in page
    assert page.index("<details><summary>all recorded metrics</summary>") > page.index("<td>judge score</td>")


def test_runner_names_the_cell_that_exited_hung_or_lost_its_kernel(tmp_path):
    exits = _toy_notebook(tmp_path / "ch08_exit.ipynb", "import sys\nsys.exit(0)")
    hangs = _toy_notebook(tmp_path / "ch09_hang.ipynb", "import time\ntime.sleep(120)")
    dies = _toy_notebook(tmp_path / "ch10_die.ipynb", "import os\nos._exit(1)")
    for path in (exits, hangs, dies):  # a cell after the culprit, which must not count as run
        nb = nbformat.read(path, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell("print('never')"))
        nbformat.write(nb, path)
    out = tmp_path / "runs"
    start = time.monotonic()
    assert run_course.main(["--mode", "full", "--cell-timeout", "3", "--out", str(out),
                            str(exits), str(hangs), str(dies)]) == 1
    assert time.monotonic() - start < 100  # full mode has a per-cell limit too, and no retry
    results = {r["notebook"]: r for r in json.loads((out / "report.json").read_text())["results"]}
    assert all(r["status"] == "failed" for r in results.values())
    for name, first_line in [("ch08_exit.ipynb", "import sys"), ("ch09_hang.ipynb", "import time"),
                             ("ch10_die.ipynb", "import os")]:
        assert results[name]["failed_cell"]["first_line"] == first_line, results[name]
    assert "SystemExit" in results["ch08_exit.ipynb"]["error"] and "1 later code cell(s) never ran" in results["ch08_exit.ipynb"]["error"]
    assert results["ch09_hang.ipynb"]["error"].startswith("timed out: the cell was still running after 3 s")
    assert results["ch10_die.ipynb"]["error"].startswith("the kernel died while this cell ran")
    assert "before any cell ran" not in (out / "report.md").read_text()


def test_runner_ctrl_c_still_writes_the_report_of_finished_notebooks(tmp_path, monkeypatch):
    calls = []

    def fake_execute(nb_in, nb_out, parameters=None, **kwargs):
        calls.append(nb_in.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        Path(parameters["metrics_path"]).write_text(json.dumps({"headline": {"loss": 1.25}}))

    monkeypatch.setattr(run_course, "execute", fake_execute)
    notebooks = [str(_toy_notebook(tmp_path / f"ch0{i}_toy.ipynb", "x = 1")) for i in (1, 2, 3)]
    out = tmp_path / "runs"
    assert run_course.main(["--mode", "smoke", "--out", str(out), *notebooks]) == 130
    results = json.loads((out / "report.json").read_text())["results"]
    assert [(r["notebook"], r["status"]) for r in results] == [("ch01_toy.ipynb", "ok"), ("ch02_toy.ipynb", "interrupted")]
    assert calls == ["ch01_toy.ipynb", "ch02_toy.ipynb"]  # the third never started
    md = (out / "report.md").read_text()
    assert "loss: 1.25" in md and "ch02_toy.ipynb: stopped by Ctrl-C" in md


def test_runner_embeds_tagged_figures_and_hides_kernel_warning(tmp_path, capfd):
    nb_path = _toy_notebook(tmp_path / "ch08_plot.ipynb",
                            "%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.plot([3, 1, 2]); plt.show()")
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells[2].metadata["tags"] = ["report-figure"]
    nb.cells.append(nbformat.v4.new_code_cell("plt.plot([1, 2]); plt.show()"))  # untagged: not in the report
    nbformat.write(nb, nb_path)
    out = tmp_path / "runs"
    assert run_course.main(["--mode", "smoke", "--out", str(out), str(nb_path)]) == 0
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 1
    assert (out / "figures" / "ch08_plot-1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "without encryption" not in capfd.readouterr().err


def test_inplace_saves_progress_bars_in_their_final_state(tmp_path):
    nb_path = _toy_notebook(tmp_path / "ch08_bar.ipynb",
                            "from tqdm.auto import tqdm\nfor _ in tqdm(range(30), desc='work'):\n    pass")
    assert run_course.main(["--inplace", "--mode", "smoke", "--out", str(tmp_path / "r"), str(nb_path)]) == 0
    outputs = nbformat.read(nb_path, as_version=4).cells[2].outputs
    texts = [o["data"]["text/plain"] for o in outputs if o.get("output_type") == "display_data"]
    assert texts and all("30/30" in t and "100%" in t for t in texts), texts
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)


def test_inplace_saves_a_control_widget_as_a_note_not_its_repr(tmp_path):
    nb_path = _toy_notebook(tmp_path / "ch08_slider.ipynb",
                            "import ipywidgets as widgets\nfrom IPython.display import display\n"
                            "display(widgets.VBox([widgets.HBox([widgets.IntSlider(description='head')])]))\n"
                            "display(widgets.HBox([widgets.HTML('no input here')]))\n"
                            "from tqdm.auto import tqdm\nfor _ in tqdm(range(5), desc='work'):\n    pass")
    assert run_course.main(["--inplace", "--mode", "smoke", "--out", str(tmp_path / "r"), str(nb_path)]) == 0
    outputs = nbformat.read(nb_path, as_version=4).cells[2].outputs
    texts = [o["data"]["text/plain"] for o in outputs if o.get("output_type") == "display_data"]
    assert texts[0] == run_course.WIDGET_NOTE and "VBox" not in texts[0]  # a slider inside two boxes
    assert texts[1].startswith("HBox(children=(HTML(")  # nothing to use: ipywidgets' own text stays
    assert "5/5" in texts[2] and "100%" in texts[2]  # the bar still shows its final state


def test_clean_metadata_merges_a_prints_pieces_into_one_output(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print('a', end=''); print('b')")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="a"),
                    nbformat.v4.new_output("stream", name="stdout", text="b\n"),
                    nbformat.v4.new_output("stream", name="stderr", text="warning\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="c\n")]
    nb.cells.append(cell)
    path = tmp_path / "pieces.ipynb"
    nbformat.write(nb, path)
    run_course.clean_metadata(path)
    outputs = nbformat.read(path, as_version=4).cells[0].outputs
    assert [(o["name"], o["text"]) for o in outputs] == [("stdout", "ab\n"), ("stderr", "warning\n"), ("stdout", "c\n")]


def test_runner_inplace_leaves_clean_notebook(tmp_path):
    nb_path = _toy_notebook(tmp_path / "ch08_toy.ipynb", "import os\nprint(os.environ['COURSE_MODE'])")
    assert run_course.main(["--inplace", "--mode", "full", "--out", str(tmp_path / "r"), str(nb_path)]) == 0
    nb = nbformat.read(nb_path, as_version=4)
    assert len(nb.cells) == 3, "no injected-parameters cell in a committed notebook"
    assert "papermill" not in nb.metadata
    assert nb.cells[2].outputs[0]["text"].strip() == "full"


def test_a_failed_inplace_run_leaves_the_committed_notebook_as_it_was(tmp_path):
    nb_path = _toy_notebook(tmp_path / "ch08_fails.ipynb", "print('partial')\nraise ValueError('broken on purpose')")
    before = nb_path.read_bytes()
    out = tmp_path / "r"
    assert run_course.main(["--inplace", "--mode", "smoke", "--out", str(out), str(nb_path)]) == 1
    assert nb_path.read_bytes() == before  # papermill wrote its progress to the copy in --out
    executed = nbformat.read(out / "ch08_fails.ipynb", as_version=4)
    assert any("partial" in o.get("text", "") for o in executed.cells[-1].outputs)
    assert not list(tmp_path.glob(".ch08_fails.ipynb.*"))  # no temporary left beside the notebook


def test_inplace_with_out_in_the_notebooks_own_folder_leaves_no_second_chapter(tmp_path):
    nb_path = _toy_notebook(tmp_path / "ch08_here.ipynb", "print('ran here')")
    assert run_course.main(["--inplace", "--mode", "smoke", "--out", str(tmp_path), str(nb_path)]) == 0
    assert "ran here" in nbformat.read(nb_path, as_version=4).cells[2].outputs[0]["text"]
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == ["ch08_here.ipynb"]
    assert not list(tmp_path.glob(".*.ipynb"))  # the executed copy is gone once it replaced the notebook
    before = nb_path.read_bytes()  # without --inplace the notebook is only read, even from its own folder
    assert run_course.main(["--mode", "smoke", "--out", str(tmp_path), str(nb_path)]) == 0
    assert nb_path.read_bytes() == before
    assert [p.name for p in tmp_path.glob(".*.ipynb")] == [".ch08_here.executed.ipynb"]


def test_an_earlier_runs_metrics_are_kept_but_not_reported_as_this_runs(tmp_path):
    out = tmp_path / "runs"
    out.mkdir()
    earlier = out / "ch09_bad.metrics.json"
    earlier.write_text(json.dumps({"headline": {"final validation loss": 1.0}}))
    bad = _toy_notebook(tmp_path / "ch09_bad.ipynb", "raise ValueError('broken before any metrics')")
    assert run_course.main(["--mode", "smoke", "--out", str(out), str(bad)]) == 1
    assert json.loads(earlier.read_text()) == {"headline": {"final validation loss": 1.0}}
    report = json.loads((out / "report.json").read_text())
    assert report["results"][0]["metrics"] == {}
    good = _toy_notebook(tmp_path / "ch09_bad.ipynb", HEADLINE_CELL)  # the same name, now working
    assert run_course.main(["--mode", "smoke", "--out", str(out), str(good)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["results"][0]["metrics"]["headline"]["final validation loss"] == 6.4516


def test_runner_inplace_does_not_leak_mode(tmp_path):
    import os
    before = os.environ.get("COURSE_MODE")
    nb_path = _toy_notebook(tmp_path / "ch08_toy.ipynb", "x = 1")
    run_course.main(["--inplace", "--mode", "full", "--out", str(tmp_path / "r"), str(nb_path)])
    assert os.environ.get("COURSE_MODE") == before


def _channel_missing_first_wakeup(monkeypatch, replies):
    """The runner's kernel-message channel over a fake socket poll: the first poll never hears of
    the waiting message (what zmq.asyncio did in the headless stalls), later polls do."""
    import asyncio
    from queue import Empty

    from jupyter_client.channels import AsyncZMQSocketChannel

    slices = []
    # A fake clock that a poll advances by exactly its timeout: a real sleep wakes late on a
    # loaded machine, and the slices' sum would then miss the deadline by chance.
    clock = [0.0]
    monkeypatch.setattr(run_course, "time", SimpleNamespace(monotonic=lambda: clock[0]))

    async def poll_once(self, timeout=None):
        slices.append(timeout)
        if len(slices) == 1 or not replies:
            await asyncio.sleep(0)
            clock[0] += timeout
            raise Empty
        return replies.pop(0)

    monkeypatch.setattr(AsyncZMQSocketChannel, "get_msg", poll_once)
    cls = run_course.sliced_poll_kernel_manager().poll_channel
    return cls.__new__(cls), slices  # no socket: the poll above stands in for it


def test_runner_survives_a_missed_kernel_reply(monkeypatch):
    import asyncio
    from queue import Empty

    channel, slices = _channel_missing_first_wakeup(monkeypatch, [{"reply": 1}])
    # no timeout: one long poll would wait forever; the second slice finds the reply
    assert asyncio.run(channel.get_msg(timeout=None)) == {"reply": 1}
    assert slices == [0.5, 0.5]

    channel, slices = _channel_missing_first_wakeup(monkeypatch, [])
    with pytest.raises(Empty):  # a real silence still ends at the caller's timeout, in slices
        asyncio.run(channel.get_msg(timeout=1.2))
    assert slices == pytest.approx([0.5, 0.5, 0.2])  # the last slice is what is left, not another 0.5


def test_metrics_headline_is_checked_where_it_is_logged(tmp_path):
    from helpers.support.runtime import Metrics
    m = Metrics(tmp_path / "m.json", notebook="toy", mode="smoke")
    m.log(headline={"test accuracy": 0.95, "weights": "standin", "judge score": None}, book={"test accuracy": 0.9567})
    assert json.loads((tmp_path / "m.json").read_text())["book"] == {"test accuracy": 0.9567}
    with pytest.raises(ValueError, match="book labels \\['accuracy'\\] are not headline labels"):
        m.log(book={"accuracy": 0.9567})  # a typo would leave the book's figure out of the report
    with pytest.raises(ValueError, match="headline\\['loss'\\] = \\[1, 2\\]"):
        m.log(headline={"loss": [1, 2]})
    assert not list(tmp_path.glob("*.tmp"))


def test_metrics_keep_an_earlier_runs_record_until_the_first_result(tmp_path):
    """Running a notebook's set-up cell again must not replace the last full run's record with
    an empty one; an unwritable path is refused at once, not at the first result."""
    from helpers.support.runtime import Metrics
    path = tmp_path / "runs" / "ch06.metrics.json"
    Metrics(path, notebook="ch06", mode="full").log(headline={"test accuracy": 0.913})
    full = path.read_text()
    m = Metrics(path, notebook="ch06", mode="smoke")
    assert path.read_text() == full
    m.log(headline={"test accuracy": 0.5})
    assert json.loads(path.read_text())["mode"] == "smoke"
    with pytest.raises(ValueError, match="cannot be written"):
        Metrics(tmp_path / "runs", notebook="ch06", mode="full")  # a folder
    with pytest.raises(ValueError, match="cannot be written"):
        Metrics(path / "m.json", notebook="ch06", mode="full")  # under a file


def test_runner_user_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    nb = _toy_notebook(tmp_path / "ch08_toy.ipynb", "x = 1")
    for args, words in [([str(tmp_path / "missing.ipynb")], "no such notebook: "),
                        ([str(tmp_path / "file")], "not a notebook (.ipynb): "),
                        (["--cell-timeout", "0", str(nb)], "--cell-timeout must be at least 1"),
                        (["--out", str(tmp_path / "file" / "runs"), str(nb)], "is not writable")]:
        with pytest.raises(SystemExit) as info:
            run_course.main(["--mode", "smoke", *args])
        err = capsys.readouterr().err
        assert info.value.code == 2 and words in err and "Traceback" not in err, err
