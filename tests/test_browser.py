"""The example workflows and the live training panel in the real ComfyUI frontend.

Headless Chromium (Debian's `chromium` package, installed by scripts/setup_browser.sh; never a
downloaded browser build) is driven through Playwright against a real ComfyUI server with this pack
and the test model loaded:

(a) every example workflow loads with no missing nodes, is queued with the page's Run button once
    its checkpoint, folders and reward are swapped for the test ones, and finishes with its outputs;
(b) during a textual-inversion run the panel on the trainer shows at least three loss points and a
    preview picture before the run ends, and then the final plot (a screenshot is saved);
(c) the frontend's Cancel button stops a training run within two seconds, leaving a checkpoint that
    loads and the embedding saved at its step;
(d) reloading the page during a run brings the curve back (from GET /texttune/runs).
"""
import json
import os
import shutil
import time

import pytest

from comfyui_server import ComfyServer
from example_inputs import BY_NODE, EXAMPLES, TINY, prepare_base
from workflow_format import ui_to_api

CHROMIUM = os.environ.get("TEXTTUNE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
TI = "TextTuneTrainTextualInversion"
TI_EXAMPLE = next(p for p in EXAMPLES if os.path.basename(p) == "textual_inversion.json")
SETTINGS = {                       # a first visit without the new-user template browser and pop-ups
    "Comfy.TutorialCompleted": True,
    "Comfy.Workflow.ShowMissingModelsWarning": False,
    "Comfy.Notification.ShowVersionUpdates": False,
    "Comfy.EnableTooltips": False,
    "Comfy.Workflow.Persist": True,
    "Comfy.VueNodes.Enabled": False,
}
EVENTS = ["execution_start", "execution_success", "execution_error", "execution_interrupted"]
PAGE_TIMEOUT = 90_000              # ms; the frontend's first load on a busy 2-core machine


def _need_chromium():
    if CHROMIUM:
        return
    msg = ("Debian's chromium is not installed: scripts/setup_browser.sh (run by `make test`) installs it with "
           "apt-get, which needs root or sudo.")
    if os.environ.get("CI"):
        pytest.fail(msg + " CI must have it.")
    pytest.skip(msg)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny):
    _need_chromium()
    base = prepare_base(str(tmp_path_factory.mktemp("browser") / "base"), tiny)
    user = os.path.join(base, "user", "default")
    os.makedirs(user, exist_ok=True)
    with open(os.path.join(user, "comfy.settings.json"), "w", encoding="utf-8") as f:
        json.dump(SETTINGS, f)
    srv = ComfyServer(base).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        context = browser.new_context(viewport={"width": 1500, "height": 1200})
        pg = context.new_page()
        pg.texttune_errors = []            # uncaught errors thrown by this pack's script
        pg.on("pageerror", lambda e: pg.texttune_errors.append(f"{e.message}\n{e.stack or ''}")
              if "texttune" in f"{e.message}{e.stack}".lower() else None)
        open_app(pg, server)
        yield pg
        context.close()
        browser.close()


# -- page helpers ------------------------------------------------------------------------------
def open_app(pg, server, reload=False):
    if reload:
        pg.reload()
    else:
        pg.goto(server.url)
    pg.wait_for_function(
        f"""() => window.app?.graph && window.comfyAPI?.api?.api && window.app.graph.nodes.length > 0
               && window.LiteGraph?.registered_node_types?.["{TI}"]?.texttuneTrainer === true""",
        timeout=PAGE_TIMEOUT)
    pg.locator('[data-testid="queue-button"]').first.wait_for(state="visible", timeout=PAGE_TIMEOUT)
    pg.evaluate("""(types) => {
        window.__tt = [];
        const api = window.comfyAPI.api.api;
        for (const t of types) api.addEventListener(t, (e) => window.__tt.push({type: t, detail: e.detail,
                                                                                   t: performance.now()}));
    }""", EVENTS)


def load(pg, workflow: dict, values: dict[str, dict] | None = None, swap: bool = True) -> dict:
    """Load a UI workflow as the frontend's Load does, then (with `swap`) put the test values in its
    widgets, and `values` ({node type: {widget: value}}) on top. Returns what the page has: node
    types that are not registered, nodes with errors, the nodes' count and their ids by type."""
    pg.evaluate("async (wf) => { await window.app.loadGraphData(wf, true, true, 'texttune-test'); }", workflow)
    if swap:
        set_widgets(pg, TINY, {t: {**BY_NODE.get(t, {}), **(values or {}).get(t, {})}
                               for t in set(BY_NODE) | set(values or {})})
    return pg.evaluate("""(types) => {
        const reg = window.LiteGraph.registered_node_types;
        const nodes = window.app.graph.nodes;
        const ids = {};
        for (const n of nodes) (ids[n.type] ||= []).push(n.id);
        return {missing: types.filter((t) => !reg[t]), count: nodes.length, ids,
                broken: nodes.filter((n) => n.has_errors).map((n) => n.type)};
    }""", [n["type"] for n in workflow["nodes"]])


def set_widgets(pg, everywhere: dict, by_type: dict[str, dict]):
    """Set widget values by name: `everywhere` on every node, `by_type` on nodes of a type."""
    pg.evaluate("""([all, byType]) => {
        for (const node of window.app.graph.nodes) {
            const set = {...all, ...(byType[node.type] || {})};
            for (const w of node.widgets || []) if (w.name in set) w.value = set[w.name];
        }
    }""", [everywhere, by_type])


def queue(pg) -> int:
    """Press Run; returns the event index to wait from."""
    n = pg.evaluate("() => window.__tt.length")
    pg.locator('[data-testid="queue-button"]').first.click()
    return n


def wait_end(pg, since: int, timeout_s: float) -> dict:
    """The first execution_success / _error / _interrupted event after `since`."""
    handle = pg.wait_for_function("""(n) => window.__tt.slice(n).find((e) => e.type !== 'execution_start')""",
                                  arg=since, timeout=timeout_s * 1000, polling=100)
    return handle.json_value()


def panel(pg, node_id) -> dict | None:
    return pg.evaluate("""(id) => {
        const p = window.app.graph.getNodeById(id)?.texttunePanel;
        return p ? {...p.el.dataset, visible: p.el.isConnected} : null;
    }""", node_id)


def wait_panel(pg, node_id, condition: str, timeout_s: float = 60):
    """Wait until `condition` (JS, on `d` = the panel's data: run, step, total, first (step), points,
    state, preview, plot) holds for the panel of node `node_id`."""
    pg.wait_for_function(f"""(id) => {{
        const p = window.app.graph.getNodeById(id)?.texttunePanel;
        if (!p) return false;
        const d = p.el.dataset;
        return {condition};
    }}""", arg=node_id, timeout=timeout_s * 1000, polling=100)
    return panel(pg, node_id)


def ti_workflow(pg, token: str, steps: int, preview_every: int) -> int:
    with open(TI_EXAMPLE, encoding="utf-8") as f:
        workflow = json.load(f)
    got = load(pg, workflow, {TI: {"token_name": token, "steps": steps, "preview_every": preview_every,
                                   "save_every": 0, "batch_size": 1}})
    assert not got["missing"], got
    return got["ids"][TI][0]


def run_dir(server, token: str) -> str:
    return os.path.join(server.base, "output", "texttune", f"ti-{token}")


# -- (a) ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_loads_queues_from_the_page_and_finishes(server, page, path):
    with open(path, encoding="utf-8") as f:
        workflow = json.load(f)
    got = load(page, workflow, swap=False)
    assert not got["missing"], f"the frontend does not know {got['missing']}"
    assert not got["broken"], f"nodes with errors after loading: {got['broken']}"
    assert got["count"] == len(workflow["nodes"])
    # the prompt the page builds from the file is the one the file means (every saved value in its widget)
    built = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    meant = ui_to_api(workflow, server.object_info())
    assert {k: v["inputs"] for k, v in built.items()} == {k: v["inputs"] for k, v in meant.items()}
    set_widgets(page, TINY, BY_NODE)
    since = queue(page)
    end = wait_end(page, since, timeout_s=300)
    assert end["type"] == "execution_success", f"{os.path.basename(path)}: {end}\n{server.log_tail()}"
    entry = server.history(end["detail"]["prompt_id"])
    assert entry["status"]["status_str"] == "success"
    assert [o for o in entry["outputs"].values() if o.get("images")], "the example produced no images"
    assert not page.texttune_errors, page.texttune_errors


# -- (b) ----------------------------------------------------------------------------------------
def test_panel_shows_the_curve_and_a_preview_while_textual_inversion_trains(server, page):
    node = ti_workflow(page, "panel-b", steps=150, preview_every=25)
    since = queue(page)
    # Checked in one evaluation: three points drawn while the run has not ended.
    shown = wait_panel(page, node, "+d.points >= 3 && d.preview !== '' && d.state === 'running' && "
                                   "!window.__tt.slice(%d).some((e) => e.type !== 'execution_start')" % since)
    assert int(shown["points"]) >= 3 and int(shown["step"]) < 150
    page.wait_for_function("(id) => window.app.graph.getNodeById(id).texttunePanel.preview.naturalWidth > 0",
                           arg=node, timeout=30_000)
    box = page.evaluate("""(id) => {
        const c = window.app.canvas, n = window.app.graph.getNodeById(id), th = window.LiteGraph.NODE_TITLE_HEIGHT;
        c.ds.scale = 0.9; c.centerOnNode(n); c.setDirty(true, true);
        const r = c.canvas.getBoundingClientRect(), s = c.ds.scale, o = c.ds.offset;
        return {x: r.left + (n.pos[0] + o[0]) * s - 8, y: r.top + (n.pos[1] - th + o[1]) * s - 8,
                width: n.size[0] * s + 16, height: (n.size[1] + th) * s + 16};
    }""", node)
    page.wait_for_timeout(300)
    shots = os.path.join(server.base, "output", "browser")
    os.makedirs(shots, exist_ok=True)
    page.screenshot(path=os.path.join(shots, "ti_panel_page.png"))
    page.screenshot(path=os.path.join(shots, "ti_panel.png"), clip={
        "x": max(0, box["x"]), "y": max(0, box["y"]), "width": box["width"], "height": min(box["height"], 1200 - max(0, box["y"]))})
    assert os.path.getsize(os.path.join(shots, "ti_panel.png")) > 10_000
    end = wait_end(page, since, timeout_s=300)
    assert end["type"] == "execution_success", end
    done = wait_panel(page, node, "d.state === 'done' && d.plot !== ''", timeout_s=30)
    assert done["step"] == "150" and int(done["points"]) == 150
    previews = sorted(os.listdir(os.path.join(run_dir(server, "panel-b"), "samples")))
    assert previews == [f"step_{s:07d}.png" for s in range(25, 151, 25)]


# -- (c) ----------------------------------------------------------------------------------------
def test_cancel_button_stops_training_within_two_seconds_and_keeps_a_checkpoint(server, page):
    from safetensors import safe_open
    node = ti_workflow(page, "cancel-c", steps=100_000, preview_every=0)
    since = queue(page)
    wait_panel(page, node, "+d.points >= 3 && d.state === 'running'")
    cancel = page.locator('button[aria-label="Cancel current run"]').first
    t_click = page.evaluate("() => performance.now()")
    cancel.click()
    end = wait_end(page, since, timeout_s=30)
    assert end["type"] == "execution_interrupted", end
    assert end["t"] - t_click <= 2000, f"stopped {end['t'] - t_click:.0f} ms after Cancel"
    stopped = wait_panel(page, node, "d.state === 'stopped'", timeout_s=10)

    ckpts = sorted(os.listdir(os.path.join(run_dir(server, "cancel-c"), "checkpoints")))
    assert ckpts, "no checkpoint after cancel"
    path = os.path.join(run_dir(server, "cancel-c"), "checkpoints", ckpts[-1])
    with safe_open(path, "pt") as f:
        step = int(f.metadata()["step"])
        params = {k: f.get_tensor(k) for k in f.keys() if k.startswith("param.")}
    assert step >= 3 and step == int(stopped["step"])
    assert params and all(t.isfinite().all() for t in params.values())
    with safe_open(os.path.join(server.base, "models", "embeddings", "cancel-c.safetensors"), "pt") as f:
        assert int(f.metadata()["steps"]) == step        # the word as learnt at that checkpoint
        assert f.get_tensor("emb_params").isfinite().all()


# -- (d) ----------------------------------------------------------------------------------------
def test_reloading_the_page_mid_run_restores_the_curve(server, page):
    node = ti_workflow(page, "reload-d", steps=100_000, preview_every=10)
    queue(page)
    before = wait_panel(page, node, "+d.points >= 20 && d.preview !== ''")
    # the frontend keeps the open workflow in the browser's storage when the graph changes
    page.evaluate("() => window.comfyAPI.api.api.dispatchCustomEvent('graphChanged', null)")
    open_app(page, server, reload=True)
    assert page.evaluate("(id) => window.app.graph.getNodeById(id)?.type", node) == TI, \
        "the page did not restore the workflow"
    # the steps before the reload are back (live events alone would start the curve later)
    after = wait_panel(page, node, f"+d.points >= {before['points']} && d.first === '1' && d.run === 'ti-reload-d'",
                       timeout_s=60)
    assert after["state"] == "running" and int(after["step"]) >= int(before["step"])
    assert after["preview"], "the latest preview did not come back"
    # the live curve goes on from the restored one
    later = wait_panel(page, node, f"+d.points > {after['points']} + 5", timeout_s=60)
    rows = [json.loads(line) for line in open(os.path.join(run_dir(server, "reload-d"), "metrics.jsonl"))]
    assert int(later["points"]) <= len(rows) and [r["step"] for r in rows[:5]] == [1, 2, 3, 4, 5]
    server.interrupt()
    deadline = time.monotonic() + 30
    while page.evaluate("(id) => window.app.graph.getNodeById(id).texttunePanel.el.dataset.state", node) == "running":
        assert time.monotonic() < deadline, "the run did not stop after /interrupt"
        time.sleep(0.2)
