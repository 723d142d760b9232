# The two set-up commands of the README: `make demo` and `make test`.
# Both prepare the ComfyUI host first (scripts/setup_host.sh; cached in .host/, a second run does nothing);
# `make test` also installs Debian's chromium for the browser tests (scripts/setup_browser.sh).
HOST_PY = $$(cat .host/python)

.PHONY: host browser demo test bench

host:
	bash scripts/setup_host.sh

# Debian's chromium for tests/test_browser.py (apt-get; a second run does nothing).
browser:
	bash scripts/setup_browser.sh

demo: host
	$(HOST_PY) scripts/demo.py

test: host browser
	$(HOST_PY) -m pytest tests

bench: host
	$(HOST_PY) bench/ti_speed.py
	$(HOST_PY) bench/textboost_speed.py
	$(HOST_PY) bench/quality.py
