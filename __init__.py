"""TextTune: text-encoder tuning and personalisation nodes for ComfyUI."""
from comfy_api.latest import ComfyExtension

from .nodes import NODES

WEB_DIRECTORY = "./web"


class TextTuneExtension(ComfyExtension):
    async def get_node_list(self):
        return list(NODES)


async def comfy_entrypoint():
    return TextTuneExtension()
