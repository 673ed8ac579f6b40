# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The main job: E2-Train (SMD + SLU + PSG) on the emulated engine, ResNet-20 on the built-in MNIST-5k.
RUN_ARGS ?= --backend emu --model resnet20 --dataset mnist5k --epochs 15 --smd 0.5 --slu-target 0.6 --slu-beta 1e-3 \
            --slu-gate-init 0.95 --slu-band 0.05 --precision fixed --psg --psg-tau 0 --out runs/make-run
RUN_OUT := runs/make-run

.PHONY: run test bench venv clean cross-tools

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# one pip command for everything, so numpy stays <2 for pynq
	$(PY) -m pip install --quiet -r requirements.txt -e .
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	rm -rf $(RUN_OUT)
	$(VENV)/bin/e2t train $(RUN_ARGS)

# The aarch64 engine's tests run it under qemu-user: Debian's cross compiler and qemu-user.
cross-tools:
	@if command -v aarch64-linux-gnu-g++ >/dev/null && command -v qemu-aarch64 >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq g++-aarch64-linux-gnu qemu-user >/dev/null) \
	  || echo "make: could not install the aarch64 cross tools; their tests will be skipped"; \
	else echo "make: no aarch64-linux-gnu-g++ / qemu-aarch64 (apt-get install g++-aarch64-linux-gnu qemu-user);" \
	  "the aarch64 engine tests will be skipped"; fi

test: $(STAMP) cross-tools
	$(PY) -m pytest -q

bench: $(STAMP)
	mkdir -p bench/out
	$(PY) bench/train_speed.py --json bench/out/train_speed.json
	$(PY) bench/engine_speed.py --json bench/out/engine_speed.json
	$(PY) bench/emu_speed.py --json bench/out/emu_speed.json
	$(PY) bench/ablation.py --out bench/out/ablation

clean:
	rm -rf $(VENV) build *.egg-info
