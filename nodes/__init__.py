"""The ComfyUI face of TextTune: V3 node schemas with short `execute` methods."""
from .textual_inversion import TrainTextualInversion

NODES = [TrainTextualInversion]
