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
