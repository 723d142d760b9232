"""The real ComfyUI server as a subprocess, for end-to-end tests and the demo.

`ComfyServer(base_dir)` starts `main.py` on 127.0.0.1 at a free port with every ComfyUI folder
(models, input, output, temp, user, custom_nodes, the user database) inside `base_dir`, so
nothing is written to the ComfyUI install. It loads this pack (a `texttune` link to the repo in
`<base>/custom_nodes`) and the test-only nodes of tests/custom_nodes (TinySD registration).
Talks plain HTTP (requests); no websocket needed: results are read from /history.

    with ComfyServer(base) as srv:
        pid = srv.post_prompt(graph)
        entry = srv.wait(pid, timeout=120)       # raises ComfyError with the server's message

Not named `server.py`: tests/ precedes ComfyUI on sys.path under pytest, and a tests/server.py
would shadow ComfyUI's own `server` module (`from server import PromptServer` in core nodes and
in the pack's progress reporting).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid

import requests

from comfy_host import comfyui_path

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
PACK_NODE = "TextTuneTrainTextualInversion"


class ComfyError(RuntimeError):
    """The server refused a prompt, failed executing it, or stopped."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _has_cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def _link_or_copy_dir(src: str, dst: str):
    if os.path.lexists(dst):
        return
    try:
        os.symlink(src, dst, target_is_directory=True)
    except OSError:                 # no symlinks (e.g. Windows without privileges)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".git", ".host", "__pycache__", "*-output"))


class ComfyServer:
    def __init__(self, base_dir: str, port: int | None = None, log_path: str | None = None,
                 extra_args: list[str] | None = None, python: str | None = None, startup_timeout: float = 180,
                 threads: int | None = 1):
        self.base = os.path.abspath(base_dir)
        self.port = port
        self.log_path = log_path or os.path.join(self.base, "comfyui.log")
        self.extra_args = list(extra_args or [])
        self.python = python or sys.executable
        self.startup_timeout = startup_timeout
        # Intra-op CPU threads of the server (None: torch's default). The tiny test models gain
        # nothing from threads, and on a shared CPU every multi-threaded op can stall on a
        # descheduled thread: measured 10-100x slower TinySD steps with 2 threads under load.
        self.threads = threads
        self.client_id = uuid.uuid4().hex
        self.proc = None
        self._log = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _prepare_base(self) -> str:
        for sub in ("models/checkpoints", "models/embeddings", "input", "output", "temp", "user", "custom_nodes"):
            os.makedirs(os.path.join(self.base, sub), exist_ok=True)
        _link_or_copy_dir(REPO, os.path.join(self.base, "custom_nodes", "texttune"))
        yaml_path = os.path.join(self.base, "extra_model_paths.yaml")
        with open(yaml_path, "w", encoding="utf-8") as f:
            f.write("texttune_tests:\n"
                    f"  custom_nodes: {os.path.join(TESTS, 'custom_nodes')}\n")
        return yaml_path

    def command(self, yaml_path: str) -> list[str]:
        db = os.path.join(self.base, "user", "comfyui.db")
        cmd = [self.python, os.path.join(comfyui_path(), "main.py"),
               "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", self.base,
               "--extra-model-paths-config", yaml_path,
               "--database-url", f"sqlite:///{db}",    # default is <ComfyUI>/user/comfyui.db, outside base
               "--disable-api-nodes"]
        if not _has_cuda():
            cmd.append("--cpu")
        return cmd + self.extra_args

    def start(self):
        yaml_path = self._prepare_base()
        self.port = self.port or free_port()
        os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
        self._log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.threads:
            env.update(OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        self.proc = subprocess.Popen(self.command(yaml_path), cwd=self.base, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait_ready()
            self._check_pack_loaded()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if requests.get(self.url + "/system_stats", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.25)
        raise ComfyError(f"ComfyUI did not answer /system_stats within {self.startup_timeout:.0f} s.\n"
                         + self.log_tail())

    def _check_pack_loaded(self):
        info = self.object_info()
        missing = [n for n in (PACK_NODE,) if n not in info]
        if missing:
            raise ComfyError(f"ComfyUI started without {', '.join(missing)}: the pack did not load.\n"
                             + self.log_tail())

    def _check_alive(self):
        if self.proc is None:
            raise ComfyError("The ComfyUI server is not started.")
        code = self.proc.poll()
        if code is not None:
            raise ComfyError(f"The ComfyUI server exited with code {code}.\n" + self.log_tail())

    def stop(self, timeout: float = 15):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log_tail(self, lines: int = 60) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                tail = f.readlines()[-lines:]
        except OSError:
            return f"(no server log at {self.log_path})"
        return f"--- last lines of {self.log_path} ---\n" + "".join(tail)

    # -- HTTP API --------------------------------------------------------------------------
    def get(self, path: str, **kw):
        r = requests.get(self.url + path, timeout=kw.pop("timeout", 30), **kw)
        r.raise_for_status()
        return r.json()

    def object_info(self, node_class: str | None = None) -> dict:
        return self.get("/object_info" + (f"/{node_class}" if node_class else ""))

    def submit(self, graph: dict) -> tuple[int, dict]:
        """POST an API-format graph to /prompt as it is (NaN and infinity included, as JSON numbers
        the server's parser reads); (HTTP status, the server's answer)."""
        self._check_alive()
        data = json.dumps({"prompt": graph, "client_id": self.client_id})
        r = requests.post(self.url + "/prompt", data=data, headers={"Content-Type": "application/json"}, timeout=30)
        try:
            body = r.json()
        except ValueError:
            body = {"error": r.text}
        return r.status_code, body

    def post_prompt(self, graph: dict) -> str:
        """Queue an API-format graph; return its prompt_id. Raises ComfyError if it is refused."""
        status, body = self.submit(graph)
        if status != 200 or body.get("node_errors"):
            raise ComfyError(f"ComfyUI refused the prompt (HTTP {status}): {_refusal(body)}")
        return body["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        return self.get(f"/history/{prompt_id}").get(prompt_id)

    def finish(self, prompt_id: str, timeout: float = 300, poll: float = 0.25) -> dict:
        """Wait until the prompt finished, however it ended; return its /history entry."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            entry = self.history(prompt_id)
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                return entry
            if time.monotonic() > deadline:
                raise ComfyError(f"Prompt {prompt_id} did not finish within {timeout:.0f} s.")
            time.sleep(poll)

    def wait(self, prompt_id: str, timeout: float = 300, poll: float = 0.25) -> dict:
        """Wait until the prompt finished; return its /history entry (outputs, status).
        Raises ComfyError with the server's error message if it failed or was interrupted."""
        entry = self.finish(prompt_id, timeout, poll)
        status = entry["status"]
        if status.get("status_str") == "success":
            return entry
        raise ComfyError(_failure(status.get("messages", [])))

    def run(self, graph: dict, timeout: float = 300) -> dict:
        return self.wait(self.post_prompt(graph), timeout)

    def interrupt(self, prompt_id: str | None = None):
        requests.post(self.url + "/interrupt", json={"prompt_id": prompt_id} if prompt_id else {},
                      timeout=10).raise_for_status()

    def output_files(self, entry: dict, node_id: str, key: str = "images") -> list[str]:
        """Absolute paths of the files a node reported in its UI output (type output/temp)."""
        paths = []
        for item in entry.get("outputs", {}).get(node_id, {}).get(key, []):
            folder = os.path.join(self.base, item.get("type", "output"))
            paths.append(os.path.join(folder, item.get("subfolder", ""), item["filename"]))
        return paths


def _refusal(body: dict) -> str:
    parts = []
    err = body.get("error")
    if isinstance(err, dict):
        parts.append(f"{err.get('message', '')} {err.get('details', '')}".strip())
    elif err:
        parts.append(str(err))
    for node_id, ne in (body.get("node_errors") or {}).items():
        for e in ne.get("errors", []):
            parts.append(f"node {node_id} ({ne.get('class_type')}): {e.get('message')} {e.get('details', '')}".strip())
    return "; ".join(parts) or str(body)


def _failure(messages: list) -> str:
    for event, data in messages:
        if event == "execution_error":
            return (f"{data.get('node_type')} (node {data.get('node_id')}) failed: "
                    f"{data.get('exception_type')}: {data.get('exception_message')}")
        if event == "execution_interrupted":
            return f"Interrupted at {data.get('node_type')} (node {data.get('node_id')})."
    return f"The prompt failed without an error message: {messages}"
