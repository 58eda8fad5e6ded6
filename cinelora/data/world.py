"""The procedural world: synthetic video domains for the `proxy` and `smoke` profiles (DESIGN.md §3).

Every clip is a pure function of (domain, index, seed). `render_clip` first draws the clip's attributes
(shapes, colours, motion, camera, grade, …) from `clip_rng(domain, index, seed)`, then renders frames
from those attributes alone, so the attributes are a complete description of the clip, the same at
every resolution and length. Time t runs from 0 to 1 over the clip whatever its number of frames, so
each clip shows its whole described motion. The caption, built from the attributes, is stored in the
attributes under "caption".

Domains:
- `studio` (generator pre-training): plain or patterned backdrop, 1-3 shapes that move, spin, bounce,
  grow or shrink, and a camera that is static, pans, tilts or zooms;
- `cinematic` (the small fine-tuning set): the same scene grammar with slower motion, filmed with a slow
  eased dolly or pan and finished with a colour grade, vignette, film grain and letterbox bars;
- `actors` (held out): articulated limb figures walking, jogging, waving or boxing in a room, a
  HumanEva-like stand-in;
- `photos` (held out): slow pans, tilts and zooms over the real photos that ship inside scikit-image
  (`skimage.data`) and scikit-learn (`load_sample_image`); nothing is downloaded;
- `figures` (generator pre-training, beside `studio`; the stand-in for the people and lighting of a web-scale
  video corpus): 1-2 limb figures of the `actors` model (any action) over the studio backdrops, sometimes
  beside a studio shape, under steady, brightening, dimming or sweeping spot light, with a studio camera move;
- `particles` (held out, motion the pre-training covers only partly): 20-60 small dots of one kind (snow
  falls, rain falls as short streaks, embers rise, fireflies wander and twinkle) with a common wind drift
  and their own speeds, over a dark plain or gradient backdrop, static camera or slow pan;
- `stills` (real images for training the project's evaluators only, never an evaluation domain): the
  `photos` camera moves over the other images that ship inside scikit-image (`STILLS`). `photos` and
  `stills` share no image (neither a name nor a pixel array; a test holds it).

Geometry: the screen spans y in [-1, 1] (downwards) and x in [-W/H, W/H]; a camera (cx, cy, zoom) maps a
screen point p to the world point (cx, cy) + p / zoom.

`generate_world` writes `<root>/<domain>/<split>/<domain>_<split>_<i:05d>.avi` (lossless: the decoded frames are
the rendered ones on any machine, `cinelora.data.video_writer`), a `manifest.jsonl` and a `world.json` sidecar per
split folder.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import imageio.v2 as imageio
import numpy as np
from tqdm.auto import tqdm

from cinelora.atomic import atomic_write_text
from cinelora.config import WORLD_DOMAINS, WorldConfig
from cinelora.data.video_writer import write_video
from cinelora.seeding import derive_seed

# Bump when rendering or the file format changes: a world on disk made by another version then no longer matches.
WORLD_VERSION = 2  # 2: lossless .avi clips (1: H.264 .mp4)
CLIP_SUFFIX = ".avi"
DECORD_BAD_WIDTHS = (16, 48)  # of the multiples of 16 up to 384, the widths whose FFV1 frames decord mis-sizes
# Clip index = SPLIT_BLOCK * (position of the split in `splits`) + i, so splits never share a clip and a
# split's clips stay the same when another split's count changes.
SPLIT_BLOCK = 100_000

COLOURS = {
    "red": (214, 48, 49), "orange": (235, 130, 40), "yellow": (240, 200, 50), "green": (60, 170, 80),
    "teal": (30, 150, 150), "blue": (50, 100, 210), "purple": (130, 70, 180), "pink": (235, 120, 170),
    "white": (240, 240, 235), "black": (25, 25, 30), "grey": (128, 128, 128), "brown": (130, 85, 50),
    "beige": (215, 200, 170), "navy": (30, 40, 90), "olive": (110, 120, 60), "maroon": (110, 30, 40),
}
OBJECT_COLOURS = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink", "white", "black")
BACKDROP_COLOURS = ("grey", "beige", "navy", "white", "black", "brown", "olive", "maroon", "teal")
SKIN_TONES = {"light": (235, 200, 170), "tan": (200, 150, 110), "brown": (140, 95, 65), "dark": (90, 60, 45)}

SHAPES = ("circle", "square", "triangle", "diamond", "ring")
OBJECT_MOTIONS = ("still", "moves left", "moves right", "moves up", "moves down", "bounces", "spins", "grows",
                  "shrinks")
BACKDROPS = ("plain", "gradient", "checkered", "striped", "mottled")
STUDIO_MOVES = ("static camera", "camera pans left", "camera pans right", "camera tilts up", "camera tilts down",
                "camera zooms in", "camera zooms out")
CINEMATIC_MOVES = ("slow dolly in", "slow dolly out", "slow pan left", "slow pan right")
ACTIONS = ("walks", "jogs", "waves", "boxes")
PHOTO_MOVES = ("slow pan left", "slow pan right", "slow tilt up", "slow tilt down", "slow zoom in", "slow zoom out")
# Colour grades: saturation, contrast, tint added in the shadows, tint added in the highlights (RGB, [0, 1]).
GRADES = {
    "teal-orange": (1.1, 1.15, (-0.06, 0.03, 0.07), (0.09, 0.03, -0.07)),
    "warm": (1.0, 1.05, (0.03, 0.0, -0.03), (0.08, 0.03, -0.05)),
    "cool": (0.9, 1.05, (-0.03, 0.0, 0.05), (-0.04, 0.01, 0.07)),
    "bleach-bypass": (0.45, 1.3, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    "noir": (0.0, 1.35, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
}
LETTERBOX_ASPECTS = (1.85, 2.0, 2.39)
# Real photos shipped with the packages: name -> (package, `skimage.data` loader or
# `sklearn.datasets.load_sample_image` file, what the caption calls it).
PHOTOS = {
    "astronaut": ("skimage", "astronaut", "an astronaut"),
    "cat": ("skimage", "chelsea", "a tabby cat"),
    "coffee": ("skimage", "coffee", "a cup of coffee"),
    "rocket": ("skimage", "rocket", "a rocket on its launch pad"),
    "galaxies": ("skimage", "hubble_deep_field", "a field of distant galaxies"),
    "tissue": ("skimage", "immunohistochemistry", "stained tissue under a microscope"),
    "cameraman": ("skimage", "camera", "a man with a camera"),
    "coins": ("skimage", "coins", "old coins"),
    "moon": ("skimage", "moon", "the surface of the moon"),
    "temple": ("sklearn", "china.jpg", "a chinese temple"),
    "flower": ("sklearn", "flower.jpg", "a flower"),
}
# The `stills` domain's images, in the format of PHOTOS: the other real images that `skimage.data` ships inside
# the package (left out: those it would download, synthetic ones, and the too small lfw_subset (25x25 faces) and
# microaneurysms (102x102)). None is in PHOTOS.
STILLS = {
    "brick": ("skimage", "brick", "a brick wall"),
    "grass": ("skimage", "grass", "a patch of grass"),
    "gravel": ("skimage", "gravel", "gravel"),
    "cell": ("skimage", "cell", "a cell floating in saline"),
    "clock": ("skimage", "clock", "a motion-blurred wall clock"),
    "page": ("skimage", "page", "a scanned page of printed text"),
    "handwriting": ("skimage", "text", "handwritten text on paper"),
    "retina": ("skimage", "retina", "a human retina"),
    "motorcycle": ("skimage", "stereo_motorcycle", "a motorcycle in a workshop"),
}
LIGHTINGS = ("steady light", "light brightens", "light dims", "spotlight sweeps left", "spotlight sweeps right")
# Particle kinds: RGB colour, vertical speed range (screen heights per clip, + is down), radius range, sway and
# wander amplitudes, streak length (per unit of speed: rain is drawn as capsules along its motion), twinkle
# depth and glow strength.
PARTICLE_KINDS = {
    "snow falls": {"colour": (240, 240, 235), "fall": (0.45, 0.8), "radius": (0.05, 0.09), "sway": 0.06,
                   "wander": 0.0, "streak": 0.0, "twinkle": 0.0, "glow": 0.0},
    "rain falls": {"colour": (170, 190, 220), "fall": (1.6, 2.4), "radius": (0.035, 0.045), "sway": 0.0,
                   "wander": 0.0, "streak": 0.12, "twinkle": 0.0, "glow": 0.0},
    "embers rise": {"colour": (255, 140, 40), "fall": (-0.8, -0.4), "radius": (0.05, 0.07), "sway": 0.05,
                    "wander": 0.0, "streak": 0.0, "twinkle": 0.4, "glow": 0.2},
    "fireflies drift": {"colour": (200, 235, 90), "fall": (-0.1, 0.1), "radius": (0.05, 0.07), "sway": 0.0,
                        "wander": 0.2, "streak": 0.0, "twinkle": 0.9, "glow": 0.35},
}
PARTICLE_BACKDROP_COLOURS = ("black", "navy", "maroon", "olive", "brown", "teal")
WINDS = {"no wind": 0.0, "wind from the left": 1.0, "wind from the right": -1.0}  # sign of the drift in x
# The backdrop is farther away than the objects, so camera moves shift and zoom it less (a depth cue).
BACKDROP_PARALLAX = 0.5
# Photo moves keep the view inside the photo for every frame aspect up to 16:9.
WIDEST_ASPECT = 16 / 9
# Particles live in a field that wraps around (a dot leaving one side enters the other): wide enough for
# every frame aspect up to 16:9 and a slow pan (PARTICLE_PAN), with a margin so that no dot wraps in view.
PARTICLE_PAN = 0.25
PARTICLE_FIELD = (WIDEST_ASPECT + PARTICLE_PAN + 0.3, 1.3)  # half width, half height


class WorldError(ValueError):
    """The world on disk or the requested world is inconsistent; the message says where and why."""


# ---------------------------------------------------------------------------------------------------------
# Attributes: everything a clip is made of, drawn from its own random stream


def clip_rng(domain: str, index: int, seed: int) -> np.random.Generator:
    """The random stream of one clip: depends on (seed, domain, index) only, via the project's seeding."""
    if domain not in WORLD_DOMAINS:
        raise WorldError(f"unknown domain {domain!r}; expected one of {list(WORLD_DOMAINS)}")
    if index < 0 or seed < 0:
        raise WorldError(f"clip ({domain}, index={index}, seed={seed}): expected index >= 0 and seed >= 0")
    return np.random.default_rng([derive_seed(seed, "world", index), WORLD_DOMAINS.index(domain)])


def _r(value: float) -> float:
    """Attributes hold rounded floats so the manifest is readable and rendering uses exactly what it says."""
    return round(float(value), 4)


def _pick(rng: np.random.Generator, options, exclude=()) -> str:
    return str(rng.choice([o for o in options if o not in exclude]))


def _draw_backdrop(rng: np.random.Generator) -> dict:
    kind = _pick(rng, BACKDROPS)
    first = _pick(rng, BACKDROP_COLOURS)
    second = _pick(rng, BACKDROP_COLOURS, exclude=(first,))
    return {"kind": kind, "colours": [first, second], "scale": _r(rng.uniform(1.5, 3.0)),
            "angle": _r(rng.uniform(0, np.pi)), "texture_seed": int(rng.integers(2**31))}


def _draw_object(rng: np.random.Generator, exclude: tuple, speed: float, band: float) -> dict:
    """One shape whose path is centred within |y| < band / 2 (the picture left between letterbox bars)."""
    motion = _pick(rng, OBJECT_MOTIONS)
    shape = _pick(rng, SHAPES)
    # A spinning solid circle or ring would look still: stripes make the rotation visible.
    striped = motion == "spins" and shape in ("circle", "ring") or rng.random() < 0.3
    distance = speed * rng.uniform(0.6, 1.0)
    direction = {"moves left": (-1, 0), "moves right": (1, 0), "moves up": (0, -1), "moves down": (0, 1)}
    vx, vy = (distance * d for d in direction.get(motion, (0, 0)))
    centre = rng.uniform(-0.5, 0.5, size=2) * [1.0, band]
    return {
        "shape": shape, "colour": _pick(rng, OBJECT_COLOURS, exclude), "fill": "striped" if striped else "solid",
        "motion": motion, "size": _r(rng.uniform(0.18, 0.32)),
        "start": [_r(centre[0] - vx / 2), _r(centre[1] - vy / 2)], "velocity": [_r(vx), _r(vy)],
        "bounce": _r(speed * rng.uniform(0.4, 0.6)) if motion == "bounces" else 0.0,
        "bounces": int(rng.integers(1, 3)) if motion == "bounces" else 0,
        "angle": _r(rng.uniform(0, 2 * np.pi)),
        "spin": _r(rng.choice([-1, 1]) * speed * rng.uniform(2.0, 4.0)) if motion == "spins" else 0.0,
        "grow": _r({"grows": 0.6, "shrinks": -0.4}.get(motion, 0.0) * speed),
    }


def _draw_camera(rng: np.random.Generator, move: str, distance: float, zoom: float, ease: str) -> dict:
    """Camera keyframes [cx, cy, zoom] at t=0 and t=1 for a named move."""
    start, end = [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]
    d, z = _r(distance * rng.uniform(0.7, 1.0)), _r(1 + zoom * rng.uniform(0.7, 1.0))
    if move.endswith("left"):
        end[0] = -d
    elif move.endswith("right"):
        end[0] = d
    elif move.endswith("up"):
        end[1] = -d
    elif move.endswith("down"):
        end[1] = d
    elif move.endswith("in"):
        end[2] = z
    elif move.endswith("out"):
        start[2] = z
    return {"move": move, "start": start, "end": end, "ease": ease}


def _draw_shapes_scene(rng: np.random.Generator, speed: float, band: float = 1.0) -> dict:
    backdrop = _draw_backdrop(rng)
    count = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
    objects = [_draw_object(rng, tuple(backdrop["colours"]), speed, band) for _ in range(count)]
    return {"backdrop": backdrop, "objects": objects}


def _draw_studio(rng: np.random.Generator) -> dict:
    scene = _draw_shapes_scene(rng, speed=1.0)
    # Every clip moves: if all shapes stay still, the camera does not.
    still = all(obj["motion"] == "still" for obj in scene["objects"])
    move = _pick(rng, STUDIO_MOVES, exclude=("static camera",) if still else ())
    camera = _draw_camera(rng, move, distance=0.5, zoom=0.4, ease="linear")
    return {**scene, "camera": camera}


def _draw_cinematic(rng: np.random.Generator) -> dict:
    look = {"grade": _pick(rng, GRADES), "letterbox": float(rng.choice(LETTERBOX_ASPECTS)),
            "vignette": _r(rng.uniform(0.25, 0.45)), "grain": _r(rng.uniform(0.02, 0.045)),
            "grain_seed": int(rng.integers(2**31))}
    # Keep the action in the picture between the bars, which span |y| < 1 / aspect in a square frame.
    scene = _draw_shapes_scene(rng, speed=0.45, band=1.0 / look["letterbox"])
    camera = _draw_camera(rng, _pick(rng, CINEMATIC_MOVES), distance=0.18, zoom=0.15, ease="smooth")
    return {**scene, "camera": camera, "look": look}


def _draw_figure(rng: np.random.Generator, x: float, exclude: tuple) -> dict:
    action = _pick(rng, ACTIONS)
    facing = int(rng.choice([-1, 1]))
    travels = action in ("walks", "jogs")
    speed = {"walks": 0.7, "jogs": 1.2}.get(action, 0.0) * rng.uniform(0.8, 1.0)
    cycles = {"walks": (1.0, 1.5), "jogs": (1.5, 2.0), "waves": (1.5, 2.5), "boxes": (1.5, 2.5)}[action]
    return {
        "action": action, "facing": facing, "shirt": _pick(rng, OBJECT_COLOURS, exclude),
        "trousers": _pick(rng, ("navy", "black", "grey", "brown", "olive", "blue"), exclude),
        "skin": _pick(rng, SKIN_TONES), "height": _r(rng.uniform(0.9, 1.15)),
        "start": [_r(x - facing * speed / 2 if travels else x), _r(rng.uniform(0.75, 0.9))],
        "speed": _r(facing * speed), "cycles": _r(rng.uniform(*cycles)), "phase": _r(rng.uniform(0, 2 * np.pi)),
    }


def _draw_actors(rng: np.random.Generator) -> dict:
    wall = _pick(rng, ("beige", "grey", "white", "olive", "navy", "maroon"))
    floor = _pick(rng, ("brown", "grey", "beige", "black", "olive"), exclude=(wall,))
    room = {"wall": wall, "floor": floor, "horizon": _r(rng.uniform(0.15, 0.35))}
    count = int(rng.choice([1, 2], p=[0.7, 0.3]))
    xs = [float(rng.uniform(-0.3, 0.3))] if count == 1 else [float(rng.uniform(-0.7, -0.4)),
                                                             float(rng.uniform(0.4, 0.7))]
    figures = [_draw_figure(rng, x, (wall, floor)) for x in xs]
    move = _pick(rng, ("static camera", "slow pan left", "slow pan right"))
    camera = _draw_camera(rng, move, distance=0.25, zoom=0.0, ease="smooth")
    return {"room": room, "figures": figures, "camera": camera}


def _draw_photos(rng: np.random.Generator) -> dict:
    return _draw_photo_move(rng, PHOTOS)


def _draw_stills(rng: np.random.Generator) -> dict:
    return _draw_photo_move(rng, STILLS)


def _draw_photo_move(rng: np.random.Generator, table: dict) -> dict:
    """A slow pan, tilt or zoom over one image of `table` (PHOTOS or STILLS)."""
    name = _pick(rng, sorted(table))
    height, width = _load_photo(name, None).shape[:2]
    half_width = width / height  # the photo spans y in [-1, 1] and x in [-half_width, half_width]
    zoom = max(1.0, WIDEST_ASPECT / half_width) * rng.uniform(1.15, 1.5)
    slack_x, slack_y = half_width - WIDEST_ASPECT / zoom, 1 - 1 / zoom  # how far the view centre may go
    move = _pick(rng, PHOTO_MOVES)
    start, end = [0.0, 0.0, zoom], [0.0, 0.0, zoom]
    if "pan" in move or "tilt" in move:
        axis, slack = (0, slack_x) if "pan" in move else (1, slack_y)
        sign = -1 if move.endswith(("left", "up")) else 1
        travel = slack * rng.uniform(0.6, 1.0)
        start[axis], end[axis] = -sign * travel, sign * travel
    else:
        factor = rng.uniform(1.2, 1.4)
        centre = [rng.uniform(-slack_x, slack_x), rng.uniform(-slack_y, slack_y)]
        start[:2] = end[:2] = centre
        (start if move.endswith("out") else end)[2] = zoom * factor
    camera = {"move": move, "start": [_r(v) for v in start], "end": [_r(v) for v in end], "ease": "smooth"}
    return {"photo": name, "subject": table[name][2], "camera": camera}


def _draw_lighting(rng: np.random.Generator) -> dict:
    """Gain over the whole frame at t=0 and t=1, and for a spotlight its light pool (world units): a soft
    disc of `radius` whose centre moves from `start` to `end`, with `ambient` light left outside it."""
    kind = _pick(rng, LIGHTINGS)
    low = _r(rng.uniform(0.35, 0.55))
    gain = {"light brightens": [low, 1.0], "light dims": [1.0, low]}.get(kind, [1.0, 1.0])
    pool = None
    if kind.startswith("spotlight"):
        sign = -1 if kind.endswith("left") else 1
        travel, height = _r(rng.uniform(0.5, 0.9)), _r(rng.uniform(-0.1, 0.4))
        pool = {"start": [-sign * travel, height], "end": [sign * travel, height],
                "radius": _r(rng.uniform(0.45, 0.7)), "ambient": low}
    return {"kind": kind, "gain": gain, "pool": pool}


def _draw_figures(rng: np.random.Generator) -> dict:
    backdrop = _draw_backdrop(rng)
    colours = tuple(backdrop["colours"])
    count = int(rng.choice([1, 2], p=[0.6, 0.4]))
    xs = [float(rng.uniform(-0.3, 0.3))] if count == 1 else [float(rng.uniform(-0.7, -0.4)),
                                                             float(rng.uniform(0.4, 0.7))]
    figures = [_draw_figure(rng, x, colours) for x in xs]
    objects = [_draw_object(rng, colours, speed=1.0, band=1.0)] if rng.random() < 0.35 else []
    lighting = _draw_lighting(rng)
    camera = _draw_camera(rng, _pick(rng, STUDIO_MOVES), distance=0.5, zoom=0.4, ease="linear")
    return {"backdrop": backdrop, "objects": objects, "figures": figures, "lighting": lighting, "camera": camera}


def _draw_particles(rng: np.random.Generator) -> dict:
    """One kind of particle; the dots themselves (positions, speeds, sizes, phases) are drawn at render time
    from `particle_seed`. `count` is how many a square frame shows on average; `drift` is the wind's common
    speed in x and `fall` the kind's common speed in y (screen heights per clip), both jittered per dot."""
    kind = _pick(rng, PARTICLE_KINDS)
    first = _pick(rng, PARTICLE_BACKDROP_COLOURS)
    second = _pick(rng, PARTICLE_BACKDROP_COLOURS, exclude=(first,))
    # Only what a plain or gradient backdrop reads (`_render_backdrop` reads "scale" for every kind).
    backdrop = {"kind": _pick(rng, ("plain", "gradient")), "colours": [first, second], "scale": 1.0}
    wind = _pick(rng, WINDS)
    move = _pick(rng, ("static camera", "slow pan left", "slow pan right"))
    return {"kind": kind, "count": int(rng.integers(20, 61)), "backdrop": backdrop, "wind": wind,
            "drift": _r(WINDS[wind] * rng.uniform(0.2, 0.5)), "fall": _r(rng.uniform(*PARTICLE_KINDS[kind]["fall"])),
            "particle_seed": int(rng.integers(2**31)),
            "camera": _draw_camera(rng, move, distance=PARTICLE_PAN, zoom=0.0, ease="smooth")}


# ---------------------------------------------------------------------------------------------------------
# Captions


def _object_phrase(obj: dict, slow: bool) -> str:
    fill = "striped " if obj["fill"] == "striped" else ""
    verb = obj["motion"] if obj["motion"] != "still" else "stays still"
    if slow and obj["motion"] != "still":
        verb = "slowly " + verb.replace("moves", "drifts")
    return f"a {fill}{obj['colour']} {obj['shape']} {verb}"


def _backdrop_phrase(backdrop: dict) -> str:
    first, second = backdrop["colours"]
    kind = backdrop["kind"]
    if kind == "plain":
        return f"a plain {first} backdrop"
    if kind == "gradient":
        return f"a {first}-to-{second} gradient backdrop"
    return f"a {kind} {first} and {second} backdrop"


def _join(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _figure_phrase(fig: dict) -> str:
    where = {"walks": " {}", "jogs": " {}"}.get(fig["action"], "").format("right" if fig["facing"] > 0 else "left")
    return f"a figure in a {fig['shirt']} shirt {fig['action']}{where}"


def caption_of(domain: str, attributes: dict) -> str:
    """A one-line caption built from a clip's attributes."""
    if domain in ("photos", "stills"):
        move = attributes["camera"]["move"]
        preposition = {"slow zoom in": "on", "slow zoom out": "from"}.get(move, "across")
        return f"a {move} {preposition} a photo of {attributes['subject']}"
    if domain == "actors":
        room = attributes["room"]
        people = _join([_figure_phrase(f) for f in attributes["figures"]])
        return f"{people} in a room with a {room['wall']} wall, {attributes['camera']['move']}"
    if domain == "figures":
        actors = [_figure_phrase(f) for f in attributes["figures"]] + [_object_phrase(o, False)
                                                                       for o in attributes["objects"]]
        return f"{_join(actors)} over {_backdrop_phrase(attributes['backdrop'])}, " \
               f"{attributes['lighting']['kind']}, {attributes['camera']['move']}"
    if domain == "particles":
        return f"{attributes['kind']} over {_backdrop_phrase(attributes['backdrop'])}, {attributes['wind']}, " \
               f"{attributes['camera']['move']}"
    slow = domain == "cinematic"
    scene = f"{_join([_object_phrase(o, slow) for o in attributes['objects']])} over " \
            f"{_backdrop_phrase(attributes['backdrop'])}"
    if not slow:
        return f"{scene}, {attributes['camera']['move']}"
    look = attributes["look"]
    return f"{scene}, cinematic {look['grade']} grade, {look['letterbox']:g}:1 letterbox, film grain, vignette, " \
           f"{attributes['camera']['move']}"


# ---------------------------------------------------------------------------------------------------------
# Rendering: float images [H, W, 3] in [0, 1]


def _rgb(name: str) -> np.ndarray:
    return np.asarray(COLOURS.get(name) or SKIN_TONES[name], dtype=np.float32) / 255.0


def _screen_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in screen units: x in [-W/H, W/H], y in [-1, 1] downwards; each [H, W]."""
    aspect = width / height
    y = (np.arange(height, dtype=np.float32) + 0.5) / height * 2 - 1
    x = ((np.arange(width, dtype=np.float32) + 0.5) / width * 2 - 1) * aspect
    return np.meshgrid(x, y)


def _times(num_frames: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)


def _camera_at(camera: dict, t: float, parallax: float = 1.0) -> tuple[float, float, float]:
    """(cx, cy, zoom) at time t; `parallax` < 1 scales the move down for far layers."""
    if camera["ease"] == "smooth":
        t = t * t * (3 - 2 * t)  # camera operators ease in and out
    start, end = np.asarray(camera["start"]), np.asarray(camera["end"])
    cx, cy, zoom = start + (end - start) * t * parallax
    return float(cx), float(cy), float(zoom)


def _coverage(distance: np.ndarray, pixel: float) -> np.ndarray:
    """Antialiased inside-ness of a signed distance field (world units): ~1 px soft edge."""
    return np.clip(0.5 - distance / pixel, 0.0, 1.0)[..., None]


@functools.lru_cache(maxsize=16)
def _value_noise(seed: int, cells: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).random((cells, cells), dtype=np.float32)


def _sample_noise(lattice: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smooth periodic value noise in [0, 1] at lattice coordinates (u, v)."""
    n = lattice.shape[0]
    u0, v0 = np.floor(u), np.floor(v)
    fu, fv = u - u0, v - v0
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    i0, j0 = u0.astype(np.int64) % n, v0.astype(np.int64) % n
    i1, j1 = (i0 + 1) % n, (j0 + 1) % n
    top = lattice[j0, i0] * (1 - fu) + lattice[j0, i1] * fu
    bottom = lattice[j1, i0] * (1 - fu) + lattice[j1, i1] * fu
    return top * (1 - fv) + bottom * fv


def _render_backdrop(backdrop: dict, wx: np.ndarray, wy: np.ndarray) -> np.ndarray:
    a, b = (_rgb(c) for c in backdrop["colours"])
    kind, scale = backdrop["kind"], backdrop["scale"]
    if kind == "plain":
        mix = np.zeros_like(wx)
    elif kind == "gradient":
        mix = np.clip(0.5 + 0.35 * wy, 0, 1)
    elif kind == "checkered":
        # Squashed through tanh of a product of sines: square cells with soft (antialiased) edges.
        mix = 0.5 + 0.5 * np.tanh(6 * np.sin(np.pi * scale * wx) * np.sin(np.pi * scale * wy))
    elif kind == "striped":
        along = wx * np.cos(backdrop["angle"]) + wy * np.sin(backdrop["angle"])
        mix = 0.5 + 0.5 * np.tanh(3 * np.sin(np.pi * scale * along))
    else:
        mix = _sample_noise(_value_noise(backdrop["texture_seed"]), (wx + 8) * scale, (wy + 8) * scale)
    mix = mix[..., None]
    return a * (1 - mix) + b * mix


def _shape_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (units of the object's size) of a unit shape centred at 0; negative inside."""
    if shape == "circle":
        return np.hypot(u, v) - 1.0
    if shape == "ring":
        return np.abs(np.hypot(u, v) - 0.75) - 0.25
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.85
    if shape == "diamond":
        return (np.abs(u) + np.abs(v) - 1.15) / np.sqrt(2)
    # Triangle, apex up: the largest distance to its three edge lines (normals 120 degrees apart).
    normals = [(np.cos(a), np.sin(a)) for a in np.pi / 2 + 2 * np.pi * np.arange(3) / 3]
    return np.max([nx * u + ny * v for nx, ny in normals], axis=0) - 0.6


def _render_object(image: np.ndarray, obj: dict, t: float, wx: np.ndarray, wy: np.ndarray, pixel: float) -> None:
    """Paint one shape over `image` (in place) at its pose at time t."""
    x = obj["start"][0] + obj["velocity"][0] * t
    y = obj["start"][1] + obj["velocity"][1] * t - obj["bounce"] * abs(np.sin(np.pi * obj["bounces"] * t))
    size = obj["size"] * (1 + obj["grow"] * t)
    angle = obj["angle"] + obj["spin"] * t
    dx, dy = wx - x, wy - y
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / size
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / size
    alpha = _coverage(_shape_distance(obj["shape"], u, v) * size, pixel)
    colour = _rgb(obj["colour"])
    if obj["fill"] == "striped":
        stripes = (0.5 + 0.5 * np.tanh(3 * np.sin(4 * np.pi * u)))[..., None]
        colour = colour * (1 - 0.45 * stripes)
    image *= 1 - alpha
    image += alpha * colour


def _render_shapes_frame(attributes: dict, t: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    camera = attributes["camera"]
    bx, by, bzoom = _camera_at(camera, t, BACKDROP_PARALLAX)
    image = _render_backdrop(attributes["backdrop"], bx + x / bzoom, by + y / bzoom)
    cx, cy, zoom = _camera_at(camera, t)
    pixel = 2.0 / (x.shape[0] * zoom)
    for obj in attributes["objects"]:
        _render_object(image, obj, t, cx + x / zoom, cy + y / zoom, pixel)
    return image


def _grade(image: np.ndarray, grade: str) -> np.ndarray:
    saturation, contrast, shadows, highlights = GRADES[grade]
    luma = (image @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    image = luma + saturation * (image - luma)
    image = 0.5 + contrast * (image - 0.5)
    return image + (1 - luma) * np.asarray(shadows, np.float32) + luma * np.asarray(highlights, np.float32)


def _finish_cinematic(frames: np.ndarray, look: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Grade, vignette, grain and letterbox bars over rendered frames [T, H, W, 3]."""
    frames = _grade(frames, look["grade"])
    aspect = x.shape[1] / x.shape[0]
    radius2 = (x / aspect) ** 2 + y**2  # 2 in the corners
    frames = frames * (1 - look["vignette"] * radius2 / 2)[..., None]
    grain = np.random.default_rng(look["grain_seed"]).normal(0, look["grain"], frames.shape[:3]).astype(np.float32)
    frames = frames + grain[..., None]  # luminance grain, like film
    height = x.shape[0]
    bar = max(0, round((height - x.shape[1] / look["letterbox"]) / 2))
    frames[:, :bar] = 0.0
    frames[:, height - bar:] = 0.0
    return frames


def _render_shapes(attributes: dict, height: int, width: int, num_frames: int) -> np.ndarray:
    x, y = _screen_grid(height, width)
    frames = np.stack([_render_shapes_frame(attributes, t, x, y) for t in _times(num_frames)])
    if "look" in attributes:
        frames = _finish_cinematic(frames, attributes["look"], x, y)
    return frames


# Limb lengths in units of figure height; angles are measured from straight down, positive = forwards.
THIGH, SHIN, TORSO, UPPER_ARM, FOREARM, HEAD = 0.25, 0.24, 0.3, 0.16, 0.15, 0.075
LIMB_WIDTH = 0.035


def _pose(action: str, phase: float) -> dict:
    """Joint angles (radians) of one frame: hips, knees (flexion), shoulders, elbows (flexion), for the
    near and far limbs, plus pelvis bob and torso lean (units of figure height)."""
    s, c = np.sin(phase), np.cos(phase)
    if action in ("walks", "jogs"):
        swing, flex, arm, elbow = (0.45, 0.7, 0.4, 0.3) if action == "walks" else (0.7, 1.3, 0.7, 1.4)
        return {"hip": (swing * s, -swing * s), "knee": (flex * max(0, -c), flex * max(0, c)),
                "shoulder": (-arm * s, arm * s), "elbow": (elbow, elbow),
                "bob": 0.02 * abs(c), "lean": 0.05 if action == "walks" else 0.15}
    if action == "waves":
        return {"hip": (0.05, -0.05), "knee": (0.0, 0.0), "shoulder": (2.6, 0.1),
                "elbow": (0.6 + 0.5 * s, 0.1), "bob": 0.0, "lean": 0.0}
    near_punch, far_punch = max(0.0, s) ** 2, max(0.0, -s) ** 2
    return {"hip": (0.3, -0.3), "knee": (0.25, 0.25),
            "shoulder": (1.1 + 0.45 * near_punch, 1.1 + 0.45 * far_punch),
            "elbow": (1.9 * (1 - near_punch), 1.9 * (1 - far_punch)), "bob": 0.02 * np.sin(2 * phase), "lean": 0.1}


def _limb_segments(fig: dict, t: float) -> tuple[list, list, tuple]:
    """World-space segments of one figure at time t: (far limbs, body and near limbs, head (centre, r))."""
    pose = _pose(fig["action"], fig["phase"] + 2 * np.pi * fig["cycles"] * t)
    scale, facing = fig["height"], fig["facing"]

    def step(point, angle, length):
        return point + scale * length * np.array([facing * np.sin(angle), np.cos(angle)])

    feet_y = fig["start"][1]
    pelvis = np.array([fig["start"][0] + fig["speed"] * t, feet_y - scale * (THIGH + SHIN - pose["bob"])])
    neck = step(pelvis, np.pi - pose["lean"], TORSO)
    far, near = [], [(pelvis, neck)]
    for side, limbs in ((1, far), (0, near)):
        knee = step(pelvis, pose["hip"][side], THIGH)
        limbs += [(pelvis, knee), (knee, step(knee, pose["hip"][side] - pose["knee"][side], SHIN))]
        elbow = step(neck, pose["shoulder"][side], UPPER_ARM)
        limbs += [(neck, elbow), (elbow, step(elbow, pose["shoulder"][side] + pose["elbow"][side], FOREARM))]
    head = step(neck, np.pi - pose["lean"], HEAD * 1.6)
    return far, near, (head, scale * HEAD)


def _segment_distance(wx: np.ndarray, wy: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    along = np.clip(((wx - a[0]) * ab[0] + (wy - a[1]) * ab[1]) / max(float(ab @ ab), 1e-12), 0, 1)
    return np.hypot(wx - a[0] - along * ab[0], wy - a[1] - along * ab[1])


def _paint_limbs(image, segments, colours, wx, wy, width, pixel) -> None:
    """Paint one capsule per segment (a, b) in place, each in its colour (RGB in [0, 1])."""
    for (a, b), colour in zip(segments, colours):
        alpha = _coverage(_segment_distance(wx, wy, a, b) - width, pixel)
        image *= 1 - alpha
        image += alpha * colour


def _render_actors(attributes: dict, height: int, width: int, num_frames: int) -> np.ndarray:
    x, y = _screen_grid(height, width)
    room, camera = attributes["room"], attributes["camera"]
    frames = []
    for t in _times(num_frames):
        cx, cy, zoom = _camera_at(camera, t)
        wx, wy = cx + x / zoom, cy + y / zoom
        pixel = 2.0 / (height * zoom)
        floor = _coverage(room["horizon"] - wy, pixel)
        depth = np.clip((wy - room["horizon"]) / 1.5, 0, 1)[..., None]  # the floor lightens towards the camera
        image = _rgb(room["wall"]) * (1 - floor) + _rgb(room["floor"]) * (0.75 + 0.35 * depth) * floor
        for fig in attributes["figures"]:
            image = _paint_figure(image, fig, t, wx, wy, pixel)
        frames.append(image)
    return np.stack(frames)


def _paint_figure(image: np.ndarray, fig: dict, t: float, wx: np.ndarray, wy: np.ndarray,
                  pixel: float) -> np.ndarray:
    """One limb figure at its pose at time t over `image` [H, W, 3] (painted in place, then returned with the
    head): far limbs shaded, then the torso and near limbs, then the head."""
    far, near, (head, radius) = _limb_segments(fig, t)
    shirt, trousers, skin = _rgb(fig["shirt"]), _rgb(fig["trousers"]), _rgb(fig["skin"])
    limb_colours = [trousers, trousers, shirt, skin]  # thigh, shin, upper arm, forearm
    limb_width = fig["height"] * LIMB_WIDTH
    _paint_limbs(image, far, [0.7 * c for c in limb_colours], wx, wy, limb_width, pixel)
    _paint_limbs(image, near, [shirt] + limb_colours, wx, wy, limb_width * 1.3, pixel)
    alpha = _coverage(np.hypot(wx - head[0], wy - head[1]) - radius, pixel)
    return image * (1 - alpha) + alpha * skin


def _light(lighting: dict, t: float, wx: np.ndarray, wy: np.ndarray) -> np.ndarray:
    """Light [H, W, 1] in [0, 1] that multiplies a frame: the gain at time t, times the spotlight's pool."""
    start, end = lighting["gain"]
    light = np.full_like(wx, start + (end - start) * t)
    pool = lighting["pool"]
    if pool is not None:
        (x0, y0), (x1, y1) = pool["start"], pool["end"]
        distance2 = (wx - (x0 + (x1 - x0) * t)) ** 2 + (wy - (y0 + (y1 - y0) * t)) ** 2
        light *= pool["ambient"] + (1 - pool["ambient"]) * np.exp(-distance2 / pool["radius"] ** 2)
    return light[..., None]


def _render_figures(attributes: dict, height: int, width: int, num_frames: int) -> np.ndarray:
    x, y = _screen_grid(height, width)
    frames = []
    for t in _times(num_frames):
        image = _render_shapes_frame(attributes, t, x, y)  # the backdrop (with parallax) and any studio shape
        cx, cy, zoom = _camera_at(attributes["camera"], t)
        wx, wy = cx + x / zoom, cy + y / zoom
        pixel = 2.0 / (height * zoom)
        for fig in attributes["figures"]:
            image = _paint_figure(image, fig, t, wx, wy, pixel)
        frames.append(image * _light(attributes["lighting"], t, wx, wy))
    return np.stack(frames)


def _particle_paths(attributes: dict, times: np.ndarray) -> dict:
    """Every dot of the field at every time: world centres x, y [T, N] (wrapped into PARTICLE_FIELD), unit
    direction of motion dx, dy [T, N], streak length [N], radius [N] and brightness [T, N] in [0, 1]."""
    kind = PARTICLE_KINDS[attributes["kind"]]
    half_width, half_height = PARTICLE_FIELD
    n = round(attributes["count"] * half_width * half_height)  # count per square frame (area 4) → field
    rng = np.random.default_rng(attributes["particle_seed"])
    x0 = rng.uniform(-half_width, half_width, n)
    y0 = rng.uniform(-half_height, half_height, n)
    vx = attributes["drift"] * rng.uniform(0.8, 1.2, n)
    vy = attributes["fall"] * rng.uniform(0.7, 1.3, n)  # each dot's own speed
    radius = rng.uniform(*kind["radius"], n)
    phase = rng.uniform(0, 2 * np.pi, (4, n))
    frequency = rng.uniform(0.4, 1.4, (4, n))  # cycles per clip: sway (0), wander (1, 2), twinkle (3)
    amplitude = rng.uniform(0.5, 1.0, (2, n))
    t = times[:, None]
    wave = [np.sin(2 * np.pi * frequency[k] * t + phase[k]) for k in range(4)]
    swing = [2 * np.pi * frequency[k] * np.cos(2 * np.pi * frequency[k] * t + phase[k]) for k in range(3)]
    # Fireflies wander along two smooth sinusoids of their own; snow and embers sway side to side.
    x = x0 + vx * t + kind["sway"] * wave[0] + kind["wander"] * amplitude[0] * wave[1]
    y = y0 + vy * t + kind["wander"] * amplitude[1] * wave[2]
    vel_x = vx + kind["sway"] * swing[0] + kind["wander"] * amplitude[0] * swing[1]
    vel_y = vy + kind["wander"] * amplitude[1] * swing[2]
    speed = np.maximum(np.hypot(vel_x, vel_y), 1e-9)
    return {"x": (x + half_width) % (2 * half_width) - half_width,
            "y": (y + half_height) % (2 * half_height) - half_height,
            "dx": vel_x / speed, "dy": vel_y / speed, "streak": kind["streak"] * np.hypot(vx, vy),
            "radius": radius, "brightness": 1 - kind["twinkle"] * (0.5 + 0.5 * wave[3])}


def _render_particles(attributes: dict, height: int, width: int, num_frames: int) -> np.ndarray:
    """Dots (capsules along their motion for rain) with antialiased edges and, for glowing kinds, a soft halo.
    Each dot in view is painted over its own small patch of pixels: one vectorised pass over [P, ky, kx] for
    the P (frame, dot) pairs in view, summed into the frames' coverage by one bincount."""
    x, y = _screen_grid(height, width)
    times = _times(num_frames)
    camera, kind = attributes["camera"], PARTICLE_KINDS[attributes["kind"]]
    frames = []
    for t in times:
        bx, by, bzoom = _camera_at(camera, t, BACKDROP_PARALLAX)
        frames.append(_render_backdrop(attributes["backdrop"], bx + x / bzoom, by + y / bzoom))
    frames = np.stack(frames)
    dots = _particle_paths(attributes, times)
    cx, cy, zoom = np.array([_camera_at(camera, t) for t in times]).T[..., None]  # each [T, 1]
    sx, sy = (dots["x"] - cx) * zoom, (dots["y"] - cy) * zoom  # centres in screen units [T, N]
    half_streak, radius = dots["streak"] / 2 * zoom, dots["radius"] * zoom
    halo = radius * (2.5 if kind["glow"] else 1.0)  # how far a dot's paint reaches beyond its streak
    reach_x, reach_y = halo + np.abs(dots["dx"]) * half_streak, halo + np.abs(dots["dy"]) * half_streak
    aspect, per_unit = width / height, height / 2  # per_unit: pixels per screen unit
    frame, dot = np.nonzero((np.abs(sx) < aspect + reach_x) & (np.abs(sy) < 1 + reach_y))
    if not len(frame):
        return frames
    sx, sy, half_streak, radius = sx[frame, dot], sy[frame, dot], half_streak[frame, dot], radius[frame, dot]
    dx, dy = dots["dx"][frame, dot], dots["dy"][frame, dot]
    kx = int(np.ceil(reach_x[frame, dot].max() * per_unit + 1))
    ky = int(np.ceil(reach_y[frame, dot].max() * per_unit + 1))
    rows = np.round((sy + 1) * per_unit - 0.5).astype(np.int64)[:, None, None] + np.arange(-ky, ky + 1)[:, None]
    cols = np.round((sx + aspect) * per_unit - 0.5).astype(np.int64)[:, None, None] + np.arange(-kx, kx + 1)
    # Pixel centres relative to the dot's centre (screen units), and their distance to its streak segment.
    u = (cols + 0.5) / per_unit - aspect - sx[:, None, None]
    v = (rows + 0.5) / per_unit - 1 - sy[:, None, None]
    dx, dy, half_streak, radius = (a[:, None, None] for a in (dx, dy, half_streak, radius))
    along = np.clip(u * dx + v * dy, -half_streak, half_streak)
    distance = np.hypot(u - along * dx, v - along * dy)
    alpha = np.clip(0.5 - (distance - radius) * per_unit, 0.0, 1.0)
    if kind["glow"]:
        alpha = np.maximum(alpha, kind["glow"] * np.exp(-(distance / (1.2 * radius)) ** 2))
    alpha = alpha * dots["brightness"][frame, dot][:, None, None]
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    flat = np.broadcast_to((frame[:, None, None] * height + rows) * width + cols, alpha.shape)[inside]
    cover = np.bincount(flat, weights=alpha[inside], minlength=len(times) * height * width)
    cover = np.minimum(cover, 1.0).reshape(len(times), height, width, 1).astype(np.float32)
    colour = np.asarray(kind["colour"], dtype=np.float32) / 255.0
    return frames * (1 - cover) + cover * colour


@functools.lru_cache(maxsize=32)
def _load_photo(name: str, height: int | None) -> np.ndarray:
    """A shipped photo as float32 [H, W, 3] in [0, 1], optionally resized (antialiased) to `height` rows."""
    package, item, _ = PHOTOS[name] if name in PHOTOS else STILLS[name]
    if package == "skimage":
        import skimage.data
        image = getattr(skimage.data, item)()
        if isinstance(image, tuple):  # stereo_motorcycle: (left view, right view, disparity)
            image = image[0]
    else:
        # The same files `sklearn.datasets.load_sample_image` reads, without its one-second import of sklearn.
        package_dir = Path(importlib.util.find_spec("sklearn").submodule_search_locations[0])
        image = imageio.imread(package_dir / "datasets" / "images" / item)
    image = np.asarray(image, dtype=np.float32) / 255.0
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if height is not None and height != image.shape[0]:
        from skimage.transform import resize
        width = max(1, round(image.shape[1] * height / image.shape[0]))
        image = resize(image, (height, width), order=1, anti_aliasing=height < image.shape[0]).astype(np.float32)
    return image


def _sample_bilinear(image: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """image [h, w, 3] at fractional pixel coordinates (clamped to the edges) → [H, W, 3]."""
    h, w = image.shape[:2]
    row, col = np.clip(row, 0, h - 1), np.clip(col, 0, w - 1)
    r0, c0 = row.astype(np.int64), col.astype(np.int64)
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
    fr, fc = (row - r0)[..., None], (col - c0)[..., None]
    top = image[r0, c0] * (1 - fc) + image[r0, c1] * fc
    bottom = image[r1, c0] * (1 - fc) + image[r1, c1] * fc
    return top * (1 - fr) + bottom * fr


def _render_photos(attributes: dict, height: int, width: int, num_frames: int) -> np.ndarray:
    x, y = _screen_grid(height, width)
    camera = attributes["camera"]
    # Resize once to the pixel density the most zoomed-in frame needs (never above the original).
    original_height = _load_photo(attributes["photo"], None).shape[0]
    max_zoom = max(camera["start"][2], camera["end"][2])
    photo = _load_photo(attributes["photo"], min(original_height, int(np.ceil(height * max_zoom))))
    ph, pw = photo.shape[:2]
    half_width = pw / ph
    frames = []
    for t in _times(num_frames):
        cx, cy, zoom = _camera_at(camera, t)
        wx, wy = cx + x / zoom, cy + y / zoom
        frames.append(_sample_bilinear(photo, (wy + 1) / 2 * ph - 0.5, (wx + half_width) / (2 * half_width) * pw - 0.5))
    return np.stack(frames)


_DRAW: dict[str, Callable[[np.random.Generator], dict]] = {
    "studio": _draw_studio, "cinematic": _draw_cinematic, "actors": _draw_actors, "photos": _draw_photos,
    "figures": _draw_figures, "particles": _draw_particles, "stills": _draw_stills,
}
_RENDER: dict[str, Callable[[dict, int, int, int], np.ndarray]] = {
    "studio": _render_shapes, "cinematic": _render_shapes, "actors": _render_actors, "photos": _render_photos,
    "figures": _render_figures, "particles": _render_particles, "stills": _render_photos,
}


def clip_attributes(domain: str, index: int, seed: int) -> dict:
    """The attributes (JSON-serialisable, resolution-independent) and "caption" of one clip."""
    rng = clip_rng(domain, index, seed)
    attributes = {"domain": domain, **_DRAW[domain](rng)}
    attributes["caption"] = caption_of(domain, attributes)
    return attributes


def render_clip(domain: str, index: int, seed: int, height: int, width: int,
                num_frames: int) -> tuple[np.ndarray, dict]:
    """Frames uint8 [T, H, W, 3] and attributes (with "caption") of clip `index` of `domain` under `seed`."""
    if min(height, width, num_frames) < 1:
        raise WorldError(f"clip size {height}x{width}x{num_frames}: expected positive height, width, frames")
    attributes = clip_attributes(domain, index, seed)
    frames = _RENDER[domain](attributes, height, width, num_frames)
    return np.clip(frames * 255 + 0.5, 0, 255).astype(np.uint8), attributes


# ---------------------------------------------------------------------------------------------------------
# Writing the world to disk


def _split_params(cfg: WorldConfig, domain: str, split: str, position: int, count: int) -> dict:
    """What a split folder's clips are a function of; stored as its `world.json`."""
    return {"world_version": WORLD_VERSION, "domain": domain, "split": split, "seed": cfg.seed,
            "first_index": position * SPLIT_BLOCK, "count": count, "height": cfg.height, "width": cfg.width,
            "num_frames": cfg.num_frames, "fps": cfg.fps}


def _check_request(cfg: WorldConfig) -> None:
    unknown = [d for d in cfg.domains if d not in WORLD_DOMAINS]
    if unknown:
        raise WorldError(f"world.domains: {unknown} unknown; expected names among {list(WORLD_DOMAINS)}")
    bad = {split: n for split, n in cfg.splits.items() if not 0 <= n < SPLIT_BLOCK}
    if bad:
        raise WorldError(f"world.splits: counts {bad}; expected 0 <= count < {SPLIT_BLOCK}")
    if cfg.seed < 0:
        raise WorldError(f"world.seed: {cfg.seed}; expected a value >= 0")
    if cfg.width in DECORD_BAD_WIDTHS:
        raise WorldError(f"world.width: {cfg.width}; expected another multiple of 16 (decord 0.6 misreads lossless "
                         f"clips {' or '.join(map(str, DECORD_BAD_WIDTHS))} pixels wide)")


def _split_is_current(folder: Path, params: dict) -> bool:
    """True if `folder` is complete and was made with `params`; raises WorldError if made with others."""
    sidecar = folder / "world.json"
    if not sidecar.is_file():
        return False  # new, or interrupted before its sidecar (written last) existed
    stored = json.loads(sidecar.read_text())
    if stored != params:
        changed = {k: (stored.get(k), params.get(k)) for k in sorted(stored.keys() | params.keys())
                   if stored.get(k) != params.get(k)}
        raise WorldError(f"{folder}: holds a world made with other parameters (key: (on disk, requested)) "
                         f"{changed}; expected the same parameters. Delete it, or pass force=True (--force) "
                         "to regenerate it")
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        return False
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    return len(rows) == params["count"] and all((folder / row["path"]).is_file() for row in rows)


def _write_clip(folder: Path, params: dict, i: int) -> dict:
    """Render and write clip i of a split; returns its manifest row."""
    domain, split, index = params["domain"], params["split"], params["first_index"] + i
    frames, attributes = render_clip(domain, index, params["seed"], params["height"], params["width"],
                                     params["num_frames"])
    name = f"{domain}_{split}_{i:05d}{CLIP_SUFFIX}"
    write_video(folder / name, frames, params["fps"])
    caption = attributes.pop("caption")
    return {"path": name, "caption": caption, "domain": domain, "split": split, "index": index,
            "seed": params["seed"], "attributes": attributes}


def _write_split(folder: Path, params: dict, pool: ThreadPoolExecutor, bar: tqdm) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "world.json").unlink(missing_ok=True)  # the split counts as incomplete until rewritten
    for stale in folder.glob(f"{params['domain']}_{params['split']}_*.*"):
        stale.unlink()

    def write(i: int) -> dict:
        row = _write_clip(folder, params, i)
        bar.update(1)
        return row

    rows = list(pool.map(write, range(params["count"])))  # in clip order, whatever finishes first
    atomic_write_text(folder / "manifest.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    atomic_write_text(folder / "world.json", json.dumps(params, indent=2) + "\n")


def generate_world(cfg: WorldConfig, force: bool = False, progress: bool = True) -> dict[str, dict[str, Path]]:
    """Render and write every split of every domain; returns {domain: {split: split folder}}.

    A split folder that is complete and was made with the same parameters is skipped; one made with other
    parameters raises WorldError unless `force`, which regenerates every split.
    """
    _check_request(cfg)
    root = Path(cfg.root)
    folders: dict[str, dict[str, Path]] = {}
    pending = []
    for domain in cfg.domains:
        folders[domain] = {}
        for position, (split, count) in enumerate(cfg.splits.items()):
            folder = root / domain / split
            folders[domain][split] = folder
            params = _split_params(cfg, domain, split, position, count)
            if force or not _split_is_current(folder, params):
                pending.append((folder, params))
    # Threads overlap the ffmpeg encoder processes (one per clip, each single-threaded for determinism).
    workers = min(8, os.cpu_count() or 1)
    with tqdm(total=sum(p["count"] for _, p in pending), desc="world", unit="clip", disable=not progress) as bar, \
            ThreadPoolExecutor(workers) as pool:
        for folder, params in pending:
            _write_split(folder, params, pool, bar)
    return folders


__all__ = [
    "WORLD_VERSION", "SPLIT_BLOCK", "WorldError", "clip_rng", "clip_attributes", "caption_of",
    "render_clip", "generate_world",
]
