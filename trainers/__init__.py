"""TextTune training library: one shared engine and the per-method trainers.

Nothing here depends on a running ComfyUI server; `nodes/` is the ComfyUI face.
"""
