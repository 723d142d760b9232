"""A loss-curve PNG for run folders (Pillow only)."""
from PIL import Image, ImageDraw

from . import files


def loss_plot(series: dict[str, list[float]], path: str, width=640, height=320) -> str:
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    m = 40
    values = [v for vs in series.values() for v in vs]
    if values:
        lo, hi = min(values), max(values)
        span = (hi - lo) or 1.0
        colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
        for (name, vs), col in zip(series.items(), colours * 4):
            if len(vs) > 1:
                pts = [(m + i * (width - 2 * m) / (len(vs) - 1), height - m - (v - lo) / span * (height - 2 * m))
                       for i, v in enumerate(vs)]
                d.line(pts, fill=col, width=2)
        d.text((m, 8), f"{', '.join(series)}   min {lo:.4g}   max {hi:.4g}   steps {max(map(len, series.values()))}",
               fill="black")
    d.rectangle([m, m, width - m, height - m], outline="#888888")
    files.atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
    return path


def bar_chart(values: list[float], labels: list[str], title: str, width=640, height=360) -> Image.Image:
    """One bar per value, from a zero line (negative values go below it), each labelled with its
    value and name (Pillow only)."""
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 50, 20, 30, 40
    d.text((left, 8), title[:100], fill="black")
    lo, hi = min(0.0, *values), max(0.0, *values)
    span = (hi - lo) or 1.0
    y = lambda v: top + (hi - v) / span * (height - top - bottom)       # noqa: E731
    d.line([(left, y(0)), (width - right, y(0))], fill="#888888")
    d.text((4, y(hi) - 6), f"{hi:.4g}", fill="#555555")
    d.text((4, y(lo) - 6), f"{lo:.4g}", fill="#555555")
    slot = (width - left - right) / max(1, len(values))
    for i, (v, name) in enumerate(zip(values, labels)):
        x0, x1 = left + i * slot + slot * 0.15, left + (i + 1) * slot - slot * 0.15
        d.rectangle([x0, min(y(0), y(v)), x1, max(y(0), y(v))], fill="#1f77b4")
        d.text((x0, min(y(0), y(v)) - 12), f"{v:.4g}", fill="black")
        d.text((x0, height - bottom + 6), name[:12], fill="black")
    return img
