# The course's entry points. `make course` runs every notebook headless and reports;
# `make test` runs the whole test suite (what CI runs). Both create .venv first if missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Offline copies of the course data (see ../shared/data/README.md); used when present.
SHARED_DATA ?= $(or $(COURSE_SHARED_DATA),../shared/data)
# torch goes in first, pinned, so requirements.txt adds no second (CUDA) build of it.
TORCH_SPEC ?= torch==2.13.0
TORCH_ARGS ?=
MODE ?= auto
PYTEST_ARGS ?=

.PHONY: course test export check-export lab data clean-runs

course: $(VENV)/.installed data
	$(PY) tools/run_course.py --mode $(MODE)

# The tests run offline on copies of the course files: those in $(SHARED_DATA), or else the
# cache's, which the first run fills online (set-up, like .venv: the tests themselves never download).
test: $(VENV)/.installed
	@[ -d "$(SHARED_DATA)" ] || $(PY) -m helpers.support fetch > /dev/null
	COURSE_REQUIRE_BOOK_PACKAGE=1 COURSE_SHARED_DATA="$(SHARED_DATA)" $(PY) -m pytest -n 2 --dist loadfile tests $(PYTEST_ARGS)

export: $(VENV)/.installed
	$(PY) tools/export_notebooks.py

check-export: $(VENV)/.installed
	$(PY) tools/export_notebooks.py --check

lab: $(VENV)/.installed data
	$(VENV)/bin/jupyter lab

# Fill the data cache (data/) from the offline copies, when there are any.
data: $(VENV)/.installed
	@if [ -d "$(SHARED_DATA)" ]; then $(PY) -m helpers.support seed "$(SHARED_DATA)"; \
	else echo "no $(SHARED_DATA): notebooks download course files on first use"; fi

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(TORCH_ARGS)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	# the book's own package, for the tests only: a second implementation that helpers must
	# match seed for seed (tests/test_book_api.py); never imported by the course
	$(PY) -m pip install -q --no-deps "llms-from-scratch==1.0.19"
	touch $@

clean-runs:
	rm -rf runs
