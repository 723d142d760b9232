"""ShapeWorld: a deterministic synthetic world of flat shapes on flat backgrounds, with captions.

A scene is a background colour and one or two shapes; a shape has a kind, a colour, a size and
a position. Six kinds have names in captions; the three UNNAMED kinds are called "an object" in
every caption a user or a learner sees, so a model trained on the world can draw them but the
public vocabulary has no word for them: the situation textual inversion and TextBoost exist for.

The model's own training captions (`caption_variant(..., private_words=True)`) also call each
unnamed kind by a PRIVATE code word in 60% of its captions ("a dax", "a dax object"). Without it
the three kinds would share one caption and the model would have no reason to let any text choose
between them: no embedding, learned or not, could ask for a ring. A real checkpoint is in the same
position as this one: it has seen a concept under words the person learning it is never told.
Nothing outside `shapeworld/train_model.py` uses the code words.

Images are 64x64 RGB, drawn 4x larger and box-filtered down so edges are anti-aliased. Shapes are
at least 14 px in radius: smaller ones come back from an 8x latent autoencoder as blobs.
Everything is a pure function of a seed (`random.Random`), so a scene list is reproducible.
"""
import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SUPERSAMPLE = 4

COLOURS = {
    "red": (220, 40, 40),
    "yellow": (240, 210, 40),
    "green": (40, 160, 70),
    "blue": (40, 90, 220),
    "purple": (140, 60, 190),
    "white": (240, 240, 240),
}
NAMED_KINDS = ("circle", "square", "triangle", "star", "cross", "heart")
UNNAMED_KINDS = ("ring", "crescent", "hourglass")
KINDS = NAMED_KINDS + UNNAMED_KINDS
COLOUR_NAMES = tuple(COLOURS)
UNNAMED_WORD = "object"
# Private code words of the unnamed kinds: in the model's training captions only (see the docstring).
CODE_WORDS = {"ring": "dax", "crescent": "kiki", "hourglass": "toma"}
CODE_WORD_P = 0.6

RADIUS = {"small": 14, "large": 20}
# 3x3 grid of centres per size (pixels at 64 px), so a shape never leaves the image.
GRID = {"small": (18, 32, 46), "large": (22, 32, 42)}
ROWS = ("top", "", "bottom")
COLS = ("left", "", "right")
TWO_SHAPE_X = (17, 47)          # two small shapes: one on the left, one on the right


def position_name(row: int, col: int) -> str:
    r, c = ROWS[row], COLS[col]
    if r and c:
        return f"top {c}" if r == "top" else f"bottom {c}"
    return r or c or "center"


def position_phrase(name: str) -> str:
    if name == "center":
        return "in the center"
    if name in ("left", "right"):
        return f"on the {name}"
    return f"at the {name}"


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: str           # "small" | "large"
    x: float            # centre in pixels at SIZE
    y: float
    position: str       # "top left", ..., "center"

    @property
    def word(self) -> str:
        return self.kind if self.kind in NAMED_KINDS else UNNAMED_WORD


@dataclass(frozen=True)
class Scene:
    background: str
    shapes: tuple

    def caption(self) -> str:
        """The full plain-English caption, e.g. 'a small red star at the top left on a blue background'."""
        if len(self.shapes) == 1:
            s = self.shapes[0]
            return f"a {s.size} {s.colour} {s.word} {position_phrase(s.position)} on a {self.background} background"
        a, b = self.shapes
        return (f"a {a.colour} {a.word} on the left and a {b.colour} {b.word} on the right"
                f" on a {self.background} background")


# -- sampling ----------------------------------------------------------------------------------

def sample_scene(rng: random.Random, kinds=KINDS, two_shape_p: float = 0.2, colours=COLOUR_NAMES,
                 backgrounds=COLOUR_NAMES) -> Scene:
    """One random scene; shape colours always differ from the background."""
    if rng.random() < two_shape_p:
        bg = rng.choice(backgrounds)
        shapes = []
        for x in TWO_SHAPE_X:
            colour = rng.choice([c for c in colours if c != bg])
            shapes.append(Shape(rng.choice(kinds), colour, "small", x + rng.uniform(-1, 1),
                                32 + rng.uniform(-6, 6), "left" if x < 32 else "right"))
        return Scene(bg, tuple(shapes))
    return single_scene(rng, kind=rng.choice(kinds), colour=rng.choice(colours),
                        background=None, backgrounds=backgrounds)


def single_scene(rng: random.Random, kind: str, colour: str, background: str | None = None,
                 size: str | None = None, backgrounds=COLOUR_NAMES) -> Scene:
    """A one-shape scene with the given attributes; the others are drawn from `rng`."""
    if background is None:
        background = rng.choice([c for c in backgrounds if c != colour])
    if background == colour:
        raise ValueError(f"shape colour and background are both {colour}: pick different colours")
    size = size or rng.choice(tuple(RADIUS))
    row, col = rng.randrange(3), rng.randrange(3)
    x = GRID[size][col] + rng.uniform(-1, 1)
    y = GRID[size][row] + rng.uniform(-1, 1)
    return Scene(background, (Shape(kind, colour, size, x, y, position_name(row, col)),))


def concept_scenes(kind: str, n: int = 5, seed: int = 0) -> list:
    """n one-shape scenes of `kind`, each in a different colour (n <= 6), backgrounds, sizes and
    positions drawn from `seed`: the training images for learning a word for `kind`."""
    rng = random.Random(seed)
    return [single_scene(rng, kind, c) for c in rng.sample(COLOUR_NAMES, n)]


def scenes(seed: int, n: int, **kw) -> list:
    rng = random.Random(seed)
    return [sample_scene(rng, **kw) for _ in range(n)]


# -- training captions: the full caption and shorter ones, so prompts may leave attributes out --

def caption_variant(scene: Scene, rng: random.Random, private_words: bool = False) -> str:
    """A caption that is true of the scene, with some attributes left out (for training; a bare
    "a <kind>" or "a photo of a <kind>" is 3% of one-shape captions, since prompts use it). With
    `private_words`, an unnamed kind is called by its code word in CODE_WORD_P of captions, half of
    those alone ("a dax") and half before the public word ("a dax object")."""
    def word(s: Shape) -> str:
        if s.kind in NAMED_KINDS or not private_words or rng.random() >= CODE_WORD_P:
            return s.word
        return CODE_WORDS[s.kind] + ("" if rng.random() < 0.5 else f" {UNNAMED_WORD}")

    if len(scene.shapes) == 2:
        a, b = scene.shapes
        text = (f"a {a.colour} {word(a)} on the left and a {b.colour} {word(b)} on the right"
                f" on a {scene.background} background")
        if rng.random() < 0.3:
            text = text.rsplit(" on a ", 1)[0]
    else:
        s = scene.shapes[0]
        words = ["a"]
        if rng.random() < 0.5:
            words.append(s.size)
        words += [s.colour, word(s)] if rng.random() < 0.7 else [word(s)]
        if rng.random() < 0.5:
            words.append(position_phrase(s.position))
        if rng.random() < 0.6:
            words.append(f"on a {scene.background} background")
        text = " ".join(words)
    if text.startswith("a object"):
        text = "an" + text[1:]
    if rng.random() < 0.3:
        text = "a photo of " + text
    return text


# -- drawing -----------------------------------------------------------------------------------

def _circle(n=96):
    return [(math.cos(2 * math.pi * i / n), math.sin(2 * math.pi * i / n)) for i in range(n)]


def _star(points=5, inner=0.45):
    out = []
    for i in range(2 * points):
        r = 1.0 if i % 2 == 0 else inner
        a = -math.pi / 2 + math.pi * i / points
        out.append((r * math.cos(a), r * math.sin(a)))
    return out


def _heart(n=96):
    out = []
    for i in range(n):
        t = 2 * math.pi * i / n
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        out.append((x / 16.5, -(y + 2.5) / 16.5))
    return out


# Each kind: a list of (polygon in unit coordinates, paint) where paint is "fg" or "bg".
_OUTLINES = {
    "circle": [(_circle(), "fg")],
    "square": [([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)], "fg")],
    "triangle": [([(0.0, -1.0), (0.95, 0.65), (-0.95, 0.65)], "fg")],
    "star": [(_star(), "fg")],
    "cross": [([(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1), (-0.3, 1),
                (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)], "fg")],
    "heart": [(_heart(), "fg")],
    "ring": [(_circle(), "fg"), ([(0.5 * x, 0.5 * y) for x, y in _circle()], "bg")],
    "crescent": [(_circle(), "fg"), ([(0.85 * x + 0.45, 0.85 * y - 0.25) for x, y in _circle()], "bg")],
    "hourglass": [([(-0.85, -0.95), (0.85, -0.95), (0.12, 0.0), (0.85, 0.95), (-0.85, 0.95), (-0.12, 0.0)], "fg")],
}
assert set(_OUTLINES) == set(KINDS)


def render(scene: Scene) -> np.ndarray:
    """The scene as a (SIZE, SIZE, 3) uint8 array."""
    big = SIZE * SUPERSAMPLE
    img = Image.new("RGB", (big, big), COLOURS[scene.background])
    draw = ImageDraw.Draw(img)
    for s in scene.shapes:
        r = RADIUS[s.size] * SUPERSAMPLE
        cx, cy = s.x * SUPERSAMPLE, s.y * SUPERSAMPLE
        for poly, paint in _OUTLINES[s.kind]:
            fill = COLOURS[s.colour] if paint == "fg" else COLOURS[scene.background]
            draw.polygon([(cx + r * px, cy + r * py) for px, py in poly], fill=fill)
    return np.asarray(img.resize((SIZE, SIZE), Image.BOX))


def render_batch(batch) -> np.ndarray:
    """(N, SIZE, SIZE, 3) float32 in 0..1: ComfyUI's IMAGE layout."""
    return np.stack([render(s) for s in batch]).astype(np.float32) / 255.0
