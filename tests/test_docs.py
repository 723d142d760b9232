"""Every node's page in web/docs/ (what ComfyUI's frontend shows as the node's help) covers what the
node docs promise: each input, the outputs, a typical graph, and memory and time on a GPU."""
import os
import re

import pytest

from texttune.nodes import NODES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = {"inputs": r"^## Inputs\b", "outputs": r"^## Outputs?\b", "typical graph": r"^## (Typical graphs?|Sampling with it)\b",
            "memory and time": r"^## Memory and time\b"}


def page(node) -> tuple[str, str]:
    node_id = node.define_schema().node_id
    path = os.path.join(REPO, "web", "docs", node_id + ".md")
    assert os.path.isfile(path), f"{node_id} has no page web/docs/{node_id}.md"
    with open(path, encoding="utf-8") as f:
        return node_id, f.read()


@pytest.mark.parametrize("node", NODES, ids=lambda n: n.define_schema().node_id)
def test_page_has_every_section(node):
    node_id, text = page(node)
    missing = [name for name, pattern in SECTIONS.items() if not re.search(pattern, text, re.MULTILINE)]
    assert not missing, f"web/docs/{node_id}.md has no section for: {', '.join(missing)}"


@pytest.mark.parametrize("node", NODES, ids=lambda n: n.define_schema().node_id)
def test_page_names_every_input(node):
    node_id, text = page(node)
    inputs = text[re.search(SECTIONS["inputs"], text, re.MULTILINE).start():]
    schema = node.define_schema()
    names = [i.id for i in schema.inputs]
    missing = [n for n in names if not re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", inputs)]
    assert not missing, f"web/docs/{node_id}.md does not describe the inputs {missing}"


def test_memory_sections_say_how_the_figures_were_obtained():
    """The GPU figures are estimates (no GPU here): each page points at what produced them."""
    for node in NODES:
        node_id, text = page(node)
        section = text[re.search(SECTIONS["memory and time"], text, re.MULTILINE).end():]
        section = section.split("\n## ")[0]
        assert re.search(r"bench/|counted|measured|estimate|Nothing of its own", section), \
            f"web/docs/{node_id}.md: its memory and time section does not say where its figures come from"
