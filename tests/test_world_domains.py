"""The world's later domains (figures, particles, stills), and that adding them left the first four unchanged.

The parametrized tests of tests/test_world.py (determinism, JSON attributes, resolution independence, first
and last frames differ) run over every name in WORLD_DOMAINS, the new ones included; these add what is
particular to each new domain.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import ndimage

import cinelora.data.world as world
from cinelora.config import WORLD_DOMAINS
from cinelora.data.world import (LIGHTINGS, PARTICLE_FIELD, PARTICLE_KINDS, PHOTO_MOVES, PHOTOS, STILLS, STUDIO_MOVES,
                                 WINDS, clip_attributes, render_clip)

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"height": 32, "width": 32, "num_frames": 5}
NEW = ("figures", "particles", "stills")

# sha256 of the uint8 frames (32x32x5) and first 16 hex digits of the sha256 of the attributes' JSON (sorted
# keys), computed from the code before the new domains existed.
BEFORE = {
    ("studio", 0, 0): ("98d779cdebf1d82953d70ad46e43c63ace04040e1657e546625f4611bc346e59", "c45a33daee7a00c2"),
    ("studio", 1, 0): ("185fa20ebc90785a399c14cb6d70890ca2a3a6130be4ceb9fb3da74d6ec3a302", "1198c970291e8aab"),
    ("studio", 2, 7): ("d919007f2711b8fbd25e879dba3557ddb0c560564391d6e2193d6837d8ddec9f", "2632a259eb6a98e0"),
    ("cinematic", 0, 0): ("6bae8eb92e22475b2e1b7cc5d38d9618cd59ae02b0542f81a85455699f0def13", "fb4259ebc23be03d"),
    ("cinematic", 1, 0): ("da6d1750c4e2004a9dc147bbdfb007afa16a66b5c3edac6fe93bffb7191a57d2", "d3b0cc49971af4ad"),
    ("cinematic", 2, 7): ("b9371db92a3b726e9cb719d94aa5f64d14467687ffc87a9d092379831d63ed1c", "ec2394d56f21e77c"),
    ("actors", 0, 0): ("70fb4881ec8efc7a7990e13d3b514f85f2e2e4edbd047f8232488135b2425ce8", "f75b30440458f86d"),
    ("actors", 1, 0): ("c290a4279c5315fd34cbeb51d678bbe4c94b3bcf4e8669e48b2aa5fffcec2d5c", "252e29f0553e383d"),
    ("actors", 2, 7): ("f85494e2a3f464f801cad7b47f48dc6eaa1bdf038894b2ee9968b92fae54eb14", "4859bf93fc84056e"),
    ("photos", 0, 0): ("b9b02b63540733b2bd823a3d22b6052a4704af9d80b6c19c2390fa76c534015e", "cf163830387e69e6"),
    ("photos", 1, 0): ("2941ae56665e46ddf9d3968bfdb2742f24ed51744e908f2dffd42e8a1b4e0165", "afae87b8fd73696e"),
    ("photos", 2, 7): ("4d1f27aefd640f734278fea33bdb83a28840f72612cb0cc0f9e07b053153a71a", "12e79026a88d3e44"),
}


def _first_clip(domain: str, accept) -> int:
    """The first index (seed 0) whose attributes `accept` takes."""
    return next(i for i in range(200) if accept(clip_attributes(domain, i, 0)))


def test_first_four_domains_keep_their_positions():
    assert WORLD_DOMAINS[:4] == ("studio", "cinematic", "actors", "photos")  # clip_rng uses the position
    assert set(NEW) <= set(WORLD_DOMAINS) and set(WORLD_DOMAINS) == set(world._DRAW) == set(world._RENDER)


@pytest.mark.parametrize("clip", sorted(BEFORE), ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_first_four_domains_render_byte_identically_to_before(clip):
    frames, attributes = render_clip(*clip, **SMALL)
    frames_hash, attributes_hash = BEFORE[clip]
    assert hashlib.sha256(frames.tobytes()).hexdigest() == frames_hash
    assert hashlib.sha256(json.dumps(attributes, sort_keys=True).encode()).hexdigest()[:16] == attributes_hash


@pytest.mark.parametrize("domain", NEW)
def test_new_domains_render_deterministic_moving_clips(domain):
    frames, attributes = render_clip(domain, 5, 3, **SMALL)
    assert frames.dtype == np.uint8 and frames.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(frames, render_clip(domain, 5, 3, **SMALL)[0])
    assert json.loads(json.dumps(attributes)) == attributes
    assert clip_attributes(domain, 6, 3) != attributes
    for index in range(4):
        frames = render_clip(domain, index, 0, **SMALL)[0].astype(np.int16)
        assert np.abs(np.diff(frames, axis=0)).mean() > 0.1, (domain, index)  # every step of the clip moves


def test_figures_captions_name_figures_backdrop_lighting_and_camera():
    for index in range(6):
        attributes = clip_attributes("figures", index, 0)
        caption = attributes["caption"]
        assert 1 <= len(attributes["figures"]) <= 2 and len(attributes["objects"]) <= 1
        for figure in attributes["figures"]:
            assert f"{figure['shirt']} shirt {figure['action']}" in caption
        for obj in attributes["objects"]:
            assert f"{obj['colour']} {obj['shape']}" in caption
        assert world._backdrop_phrase(attributes["backdrop"]) in caption
        assert attributes["lighting"]["kind"] in LIGHTINGS and attributes["camera"]["move"] in STUDIO_MOVES
        assert caption.endswith(f", {attributes['lighting']['kind']}, {attributes['camera']['move']}")


@pytest.mark.parametrize("kind", LIGHTINGS)
def test_figures_lighting_does_what_its_name_says(kind):
    index = _first_clip("figures", lambda a: a["lighting"]["kind"] == kind)
    lighting = clip_attributes("figures", index, 0)["lighting"]
    x, y = world._screen_grid(32, 32)
    first, last = world._light(lighting, 0.0, x, y)[..., 0], world._light(lighting, 1.0, x, y)[..., 0]
    assert first.max() <= 1 and last.min() > 0
    if kind == "light brightens":
        assert last.mean() > first.mean() / 0.6
    elif kind == "light dims":
        assert last.mean() < 0.6 * first.mean()
    elif kind == "steady light":
        assert (first == 1).all() and (last == 1).all()
    else:  # the light pool's brightest column moves the way the spotlight sweeps
        shift = np.argmax(last.mean(axis=0)) - np.argmax(first.mean(axis=0))
        assert (shift < -8) if kind.endswith("left") else (shift > 8)
        assert first.min() < 0.6  # it is dark outside the pool


def test_particles_captions_and_motion_follow_their_attributes():
    seen = set()
    for index in range(12):
        attributes = clip_attributes("particles", index, 0)
        kind, wind = attributes["kind"], attributes["wind"]
        seen.add(kind)
        assert attributes["caption"] == f"{kind} over {world._backdrop_phrase(attributes['backdrop'])}, {wind}, " \
                                        f"{attributes['camera']['move']}"
        assert 20 <= attributes["count"] <= 60 and attributes["backdrop"]["kind"] in ("plain", "gradient")
        assert np.sign(attributes["drift"]) == WINDS[wind]
        dots = world._particle_paths(attributes, np.linspace(0, 1, 5))
        assert np.abs(dots["x"]).max() <= PARTICLE_FIELD[0] and np.abs(dots["y"]).max() <= PARTICLE_FIELD[1]
        assert (0.035 <= dots["radius"]).all() and (dots["radius"] <= 0.09).all()  # 2-6 px across at 64x64
        if kind in ("snow falls", "rain falls"):
            assert (dots["dy"] > 0).all()  # down the screen
        if kind == "embers rise":
            assert (dots["dy"] < 0).all()
        if kind != "fireflies drift" and wind != "no wind":
            assert np.sign(dots["dx"].mean()) == WINDS[wind]
        assert (dots["streak"] > 0).all() == (kind == "rain falls")
    assert seen == set(PARTICLE_KINDS)


def test_particles_are_small_separate_dots():
    index = _first_clip("particles", lambda a: a["kind"] == "snow falls" and a["backdrop"]["kind"] == "plain")
    frames, attributes = render_clip("particles", index, 0, 64, 64, 3)
    backdrop = np.asarray(world.COLOURS[attributes["backdrop"]["colours"][0]])
    lit = np.abs(frames[1].astype(np.int16) - backdrop).max(axis=-1) > 60
    labels, count = ndimage.label(lit)
    sizes = np.bincount(labels.ravel())[1:]
    assert attributes["count"] / 3 < count < 2 * attributes["count"]  # about `count` dots per square frame
    assert np.median(sizes) < 40  # single dots a few pixels across (merged neighbours aside)


def test_stills_share_no_image_with_photos():
    assert not set(STILLS) & set(PHOTOS)
    assert not {(p, item) for p, item, _ in STILLS.values()} & {(p, item) for p, item, _ in PHOTOS.values()}
    assert not {s for _, _, s in STILLS.values()} & {s for _, _, s in PHOTOS.values()}
    photos = {name: world._load_photo(name, None) for name in PHOTOS}
    for name in STILLS:
        still = world._load_photo(name, None)
        assert still.ndim == 3 and still.shape[2] == 3 and min(still.shape[:2]) >= 160, name
        assert 0 <= still.min() and still.max() <= 1 and still.std() > 0.02, name
        for photo_name, photo in photos.items():
            assert not np.array_equal(still, photo), (name, photo_name)


def test_stills_use_the_photo_moves_and_say_their_subject():
    for index in range(6):
        attributes = clip_attributes("stills", index, 0)
        assert attributes["photo"] in STILLS and attributes["camera"]["move"] in PHOTO_MOVES
        assert STILLS[attributes["photo"]][2] in attributes["caption"]


def test_stills_is_never_an_evaluation_domain():
    found = 0
    for path in [*ROOT.glob("experiments/*/config.yaml"), *ROOT.glob("configs/profiles/*.yaml")]:
        text = yaml.safe_load(path.read_text()) or {}
        # An experiment's `eval: {domains: ...}`, or a profile section's `eval.domains: ...`.
        for section in (text, *(v for v in text.values() if isinstance(v, dict))):
            evaluation = section.get("eval") if isinstance(section.get("eval"), dict) else {}
            for domains in (evaluation.get("domains"), section.get("eval.domains")):
                found += bool(domains)
                assert "stills" not in (domains or {}), path
    assert found  # the scan saw evaluation domains at all
