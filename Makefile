# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The main job: E2-Train (SMD + SLU + PSG) on the emulated engine, ResNet-20 on the built-in MNIST-5k.
RUN_ARGS ?= --preset e2train --backend emu --model resnet20 --dataset mnist5k --epochs 15 --elementwise engine --out runs/make-run
RUN_OUT := runs/make-run

.PHONY: run test bench venv clean test-tools bitstream

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# one pip command for everything, so numpy stays <2 for pynq
	$(PY) -m pip install --quiet -r requirements.txt -e .
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	@if [ -e $(RUN_OUT) ]; then echo "make run: removing $(RUN_OUT), the last make run's folder (keep a run with: mv $(RUN_OUT) runs/NAME)"; fi
	rm -rf $(RUN_OUT)
	$(VENV)/bin/e2t train $(RUN_ARGS)

# Debian tools some tests need (each of those tests skips, saying why, when its tool is missing):
# the aarch64 cross compiler and qemu-user (the ARM engine build), tcl (the Vivado script under
# tclsh), chromium (the energy report rendered headless).
TEST_TOOLS := aarch64-linux-gnu-g++:g++-aarch64-linux-gnu qemu-aarch64:qemu-user tclsh:tcl chromium:chromium
test-tools:
	@missing=""; for t in $(TEST_TOOLS); do command -v $${t%%:*} >/dev/null || missing="$$missing $${t#*:}"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq $$missing >/dev/null) \
	  || echo "make: could not install$$missing; the tests that need them will be skipped"; \
	else echo "make: missing Debian packages$$missing (apt-get install$$missing); the tests that need them will be skipped"; fi

# Two workers (pytest-xdist), a test file each at a time: tests/conftest.py keeps each on one core.
test: $(STAMP) test-tools
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15

# The overlay (e2t.bit + e2t.hwh in bitstreams/$(BOARD)/) with Vitis HLS and Vivado (docs/bitstream.md).
BOARD ?= pynq-z2
ifneq ($(filter bitstream,$(MAKECMDGOALS)),)
ifeq ($(strip $(PLAN)),)
$(error make bitstream needs PLAN=<plan folder> (e2t plan or e2t export writes one), e.g. make bitstream BOARD=$(BOARD) PLAN=plans/r20)
endif
endif
bitstream: $(STAMP)
	$(PY) -m bitstreams.vivado --board $(BOARD) --plan $(PLAN)

bench: $(STAMP)
	mkdir -p bench/out
	$(PY) bench/train_speed.py --json bench/out/train_speed.json
	$(PY) bench/engine_speed.py --json bench/out/engine_speed.json
	$(PY) bench/engine_dataflow.py --json bench/out/engine_dataflow.json
	$(PY) bench/per_element_model.py --json bench/out/per_element_model.json
	$(PY) bench/emu_speed.py --json bench/out/emu_speed.json
	$(PY) bench/call_overhead.py --json bench/out/call_overhead.json
	$(PY) bench/ablation.py --out bench/out/ablation
	$(PY) bench/finetune.py --out bench/out/finetune

clean:
	rm -rf $(VENV) build *.egg-info
