# The two set-up commands of the README: `make demo` and `make test`.
# Both prepare the ComfyUI host first (scripts/setup_host.sh; cached in .host/, a second run does nothing).
HOST_PY = $$(cat .host/python)

.PHONY: host demo test bench

host:
	bash scripts/setup_host.sh

demo: host
	$(HOST_PY) scripts/demo.py

test: host
	$(HOST_PY) -m pytest tests

bench: host
	$(HOST_PY) bench/ti_speed.py
	$(HOST_PY) bench/textboost_speed.py
	$(HOST_PY) bench/quality.py
