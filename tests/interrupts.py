"""Cancel a run at a given step, as the server's Cancel button does (the progress hook is the
server's cancel point)."""
import contextlib

import comfy.model_management as mm
import comfy.utils


@contextlib.contextmanager
def interrupt_at(step: int):
    def hook(value, total, preview, node_id=None):
        if value == step:
            mm.interrupt_current_processing(True)
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        yield
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
