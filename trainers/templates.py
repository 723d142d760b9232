"""Caption templates for textual inversion (`{}` stands for the learned word)."""

OBJECT = [
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}", "a cropped photo of a {}",
    "a photo of the {}", "a good photo of the {}", "a photo of one {}", "a close-up photo of the {}",
    "a rendition of the {}", "a photo of the clean {}", "a rendition of a {}", "a photo of a nice {}",
    "a good photo of a {}", "a photo of the nice {}", "a photo of the small {}", "a photo of the weird {}",
    "a photo of the large {}", "a photo of a cool {}", "a photo of a small {}",
]

STYLE = [
    "a painting in the style of {}", "a rendering in the style of {}", "a cropped painting in the style of {}",
    "the painting in the style of {}", "a clean painting in the style of {}", "a dirty painting in the style of {}",
    "a dark painting in the style of {}", "a picture in the style of {}", "a cool painting in the style of {}",
    "a close-up painting in the style of {}", "a bright painting in the style of {}",
    "a good painting in the style of {}", "a close-up painting in the style of {}", "a rendition in the style of {}",
    "a nice painting in the style of {}", "a small painting in the style of {}", "a weird painting in the style of {}",
    "a large painting in the style of {}",
]

# TextBoost's own short captions (its code's default set); {} is "<instance> <class word>".
TEXTBOOST = ["{}", "a {}", "one {}", "the {}", "photo of a {}"]

SETS = {"object": OBJECT, "style": STYLE, "textboost": TEXTBOOST}


def resolve(kind: str, custom: str = "") -> list[str]:
    """Templates of a set, or the user's lines (each with exactly one `{}`) for "custom"."""
    if kind in SETS:
        return list(SETS[kind])
    if kind != "custom":
        raise ValueError(f"Unknown template set {kind!r}: choose {', '.join(SETS)} or custom.")
    lines = [ln.strip() for ln in (custom or "").splitlines() if ln.strip()]
    if not lines:
        raise ValueError("The custom template list is empty: write one caption per line, each with {} "
                         "where the learned word goes, e.g. 'a photo of a {}'.")
    bad = [ln for ln in lines if ln.count("{}") != 1]
    if bad:
        raise ValueError(f"Each custom template needs exactly one {{}} for the learned word; these do not: {bad[:3]}")
    return lines
