# Shouhu: `make run` serves the demo, `make test` runs the whole suite.
# Both install everything first (Python deps in .venv, Debian packages as root).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEBS   := fonts-noto-cjk fonts-lxgw-wenkai fontconfig poppler-utils libharfbuzz-subset0 libpango-1.0-0 libpangoft2-1.0-0 postgresql-client chromium chromium-l10n
HOST   ?= 127.0.0.1
PORT   ?= 8000
export SHOUHU_DATA_DIR ?= $(CURDIR)/var

.PHONY: install debs fonts run test screenshots bench docs lint clean

install: debs fonts $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages:$$missing -- install them as root (sudo apt-get install$$missing)"; \
	  fi; \
	fi

# The Fandol faces (GPL v3 with the font exception; GB 2312 complete, ~10 k glyphs each): FandolFang for
# body text, FandolSong (Bold: titles and the issuer mark; Regular: page numbers), FandolHei and FandolKai
# for headings. Small faces keep issuing fast (an embedded subset keeps glyph ids: a 65 k-glyph Noto face
# costs several times more). They ship in texlive-lang-chinese (~100 MB installed): take just these files.
FONT_DIR    := /usr/local/share/fonts/shouhu
FANDOL_DIR  := usr/share/texlive/texmf-dist/fonts/opentype/public/fandol
FANDOL_OTFS := FandolFang-Regular FandolSong-Regular FandolSong-Bold FandolHei-Regular FandolKai-Regular
FANDOL_DOC  := usr/share/doc/texlive-doc/fonts/fandol

fonts: debs
	@missing=; for f in $(FANDOL_OTFS); do [ -f $(FONT_DIR)/$$f.otf ] || missing="$$missing $$f"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "installing$$missing into $(FONT_DIR)"; \
	  tmp=$$(mktemp -d) && chmod 755 $$tmp && cd $$tmp && \
	  { apt-get download texlive-lang-chinese >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get download texlive-lang-chinese >/dev/null; }; } && \
	  dpkg-deb --fsys-tarfile texlive-lang-chinese_*.deb | tar -x $(foreach f,$(FANDOL_OTFS),./$(FANDOL_DIR)/$(f).otf) ./$(FANDOL_DOC)/README ./$(FANDOL_DOC)/COPYING.gz && \
	  install -d -m 755 $(FONT_DIR) && \
	  install -m 644 $(FANDOL_DOC)/README $(FONT_DIR)/Fandol-README && \
	  install -m 644 $(FANDOL_DOC)/COPYING.gz $(FONT_DIR)/Fandol-COPYING.gz && \
	  for f in $(FANDOL_OTFS); do install -m 644 $(FANDOL_DIR)/$$f.otf $(FONT_DIR)/$$f.otf || exit 1; done && \
	  cd / && rm -rf $$tmp && fc-cache -f $(FONT_DIR) >/dev/null; \
	else \
	  echo "Fandol fonts missing ($$missing): run 'make fonts' as root (it puts them into $(FONT_DIR))"; \
	fi

run: install
	$(BIN)/shouhu init
	$(BIN)/shouhu demo --if-empty
	SHOUHU_DEMO_MODE=true $(BIN)/shouhu serve --host $(HOST) --port $(PORT)

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy --follow-imports=silent
	$(BIN)/python -m pytest -n auto --dist loadgroup -m "not serial" && $(BIN)/python -m pytest -m serial

# The browser tests, writing their screenshots into docs/screenshots (with its README).
screenshots: install
	E2E_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest tests/e2e -q

bench: install
	$(BIN)/python -m bench

# Regenerate the parts of docs/ that the code defines (CLI reference, error table).
docs: install
	$(BIN)/python docs/gen_reference.py

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
