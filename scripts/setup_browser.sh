#!/usr/bin/env bash
# Debian's chromium for the browser tests (tests/test_browser.py), installed with apt-get only: no
# browser build is ever downloaded. Idempotent: nothing happens when chromium is installed; apt keeps
# the packages it fetched in its cache. Without root or sudo it says so and the browser tests skip
# (on CI, which runs as root, a failed install fails `make test`).
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  echo "chromium ready: $(command -v chromium)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup_browser: no apt-get here; install Debian's or your distribution's chromium package to run the browser tests." >&2
  [ -z "${CI:-}" ] || exit 1
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    echo "setup_browser: installing chromium needs root: run 'sudo apt-get install chromium' to run the browser tests." >&2
    [ -z "${CI:-}" ] || exit 1
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
# fonts-dejavu-core: readable text in the screenshots without the recommended font packages
$sudo apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
echo "chromium ready: $(command -v chromium)"
