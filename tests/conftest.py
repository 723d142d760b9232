"""Test set-up: the ComfyUI host prepared by scripts/setup_host.sh, on CPU when there is no GPU,
with every ComfyUI folder redirected into a temporary directory."""
import pytest

from comfy_host import redirect_folders, setup_in_process

setup_in_process()

import torch  # noqa: E402

# Tiny models on a small shared CPU: one thread avoids stalls from oversubscription (measured: a
# full suite took 548 s with default threads on a loaded 2-core machine, 21 s with one).
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def comfy_dirs(tmp_path_factory):
    """Output, temp, input and model folders of this test session, away from the real install."""
    return redirect_folders(str(tmp_path_factory.mktemp("comfy")))


@pytest.fixture(scope="session")
def texttune():
    import texttune as pack
    return pack


@pytest.fixture(scope="session")
def tiny():
    import tinysd
    tinysd.register()
    return tinysd


# Lines a test module asks to show after the run (e.g. test_reliability's case matrix), printed in
# pytest's terminal summary, so they appear with -q and without -s.
SUMMARIES: list[str] = []


@pytest.fixture(scope="session")
def summaries() -> list[str]:
    return SUMMARIES


def pytest_terminal_summary(terminalreporter):
    for text in SUMMARIES:
        terminalreporter.write_line(text)
