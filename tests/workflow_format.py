"""Convert between ComfyUI's API prompt format and the UI (LiteGraph) workflow format, following
the frontend's rules for which inputs are widgets. Used to build example_workflows/ from readable
API graphs and to run those examples on the server in tests."""
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def _inputs(info: dict):
    """(name, type, options) of a node's inputs in the frontend's order: required, then optional."""
    for section in ("required", "optional"):
        spec = info["input"].get(section, {})
        order = info.get("input_order", {}).get(section, list(spec))
        for name in order:
            typ, opts = spec[name][0], (spec[name][1] if len(spec[name]) > 1 else {})
            yield name, ("COMBO" if isinstance(typ, list) else typ), opts


def _is_widget(typ, opts) -> bool:
    return typ in WIDGET_TYPES and not opts.get("forceInput")


def _has_control(name, typ, opts) -> bool:
    """Whether the frontend adds a 'control after generate' widget (one more saved value) after this
    one: when the input asks for it, and for INT inputs named seed or noise_seed unless they say no."""
    flag = opts.get("control_after_generate")
    return typ == "INT" and (flag if flag is not None else name in ("seed", "noise_seed"))


def api_to_ui(graph: dict, object_info: dict, notes: list[str] = ()) -> dict:
    ids = {key: i + 1 for i, key in enumerate(graph)}
    depth = {}

    def level(key):
        if key not in depth:
            ups = [v[0] for v in graph[key]["inputs"].values() if isinstance(v, list)]
            depth[key] = 1 + max((level(u) for u in ups), default=-1)
        return depth[key]

    nodes, links, rows = [], [], {}
    out_links = {}                        # (node key, slot) -> link ids
    for key, node in graph.items():
        info = object_info[node["class_type"]]
        ui_inputs, widgets = [], []
        for name, typ, opts in _inputs(info):
            value = node["inputs"].get(name)
            if isinstance(value, list):                    # a link
                link_id = len(links) + 1
                src, slot = value
                src_type = object_info[graph[src]["class_type"]]["output"][slot]
                links.append([link_id, ids[src], slot, ids[key], len(ui_inputs), src_type])
                out_links.setdefault((src, slot), []).append(link_id)
                entry = {"name": name, "type": typ, "link": link_id}
                if _is_widget(typ, opts):                  # a widget fed by a link keeps its value slot
                    entry["widget"] = {"name": name}
                    widgets.append(opts.get("default"))
                    if _has_control(name, typ, opts):
                        widgets.append("fixed")
                ui_inputs.append(entry)
            elif _is_widget(typ, opts):
                widgets.append(value if value is not None else opts.get("default"))
                if _has_control(name, typ, opts):
                    widgets.append("fixed")
            elif name in info["input"].get("required", {}):
                ui_inputs.append({"name": name, "type": typ, "link": None})
        col = level(key)
        row = rows.get(col, 0)
        rows[col] = row + 1
        nodes.append({"id": ids[key], "type": node["class_type"], "pos": [40 + 380 * col, 40 + 330 * row],
                      "size": [340, 110 + 26 * len(widgets)], "flags": {}, "order": 0, "mode": 0,
                      "inputs": ui_inputs, "outputs": [], "properties": {"Node name for S&R": node["class_type"]},
                      "widgets_values": widgets, "_key": key})
    for n in nodes:
        info = object_info[n["type"]]
        n["outputs"] = [{"name": name, "type": typ, "links": out_links.get((n["_key"], i), []), "slot_index": i}
                        for i, (name, typ) in enumerate(zip(info["output_name"], info["output"]))]
    for i, n in enumerate(sorted(nodes, key=lambda n: depth[n["_key"]])):
        n["order"] = i
    for n in nodes:
        del n["_key"]
    next_id = len(nodes) + 1
    for i, text in enumerate(notes):
        nodes.append({"id": next_id + i, "type": "Note", "pos": [40 + 380 * i, -260], "size": [360, 220],
                      "flags": {}, "order": len(nodes), "mode": 0, "inputs": [], "outputs": [],
                      "properties": {}, "widgets_values": [text], "color": "#432", "bgcolor": "#653"})
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """The prompt the frontend would queue for a UI workflow (frontend-only nodes dropped)."""
    link_src = {l[0]: (str(l[1]), l[2]) for l in workflow["links"]}
    graph = {}
    for n in workflow["nodes"]:
        if n["type"] in FRONTEND_ONLY or n.get("mode", 0) in (2, 4):
            continue
        if n["type"] not in object_info:
            raise KeyError(f"Node type {n['type']} is not registered on the server.")
        linked = {i["name"]: link_src[i["link"]] for i in n.get("inputs", []) if i.get("link") is not None}
        values = list(n.get("widgets_values", []))
        # A workflow saved before a node gained a widget has fewer values: the frontend gives the
        # widgets past the saved values their defaults.
        take = lambda default: values.pop(0) if values else default     # noqa: E731
        inputs = {}
        for name, typ, opts in _inputs(object_info[n["type"]]):
            if name in linked:
                inputs[name] = list(linked[name])
                if _is_widget(typ, opts):                  # a widget converted to a socket keeps its slot
                    take(None)
                    if _has_control(name, typ, opts):
                        take(None)
            elif _is_widget(typ, opts):
                inputs[name] = take(opts.get("default"))
                if _has_control(name, typ, opts):
                    take(None)
        graph[str(n["id"])] = {"class_type": n["type"], "inputs": inputs}
    return graph
