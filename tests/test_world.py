"""The procedural world: determinism, content per domain, files on disk, idempotent regeneration."""
import json

import decord
import numpy as np
import pytest

import cinelora.data.world as world
from cinelora.config import WORLD_DOMAINS as DOMAINS
from cinelora.config import WorldConfig
from cinelora.data.video_writer import write_video
from cinelora.data.world import PHOTOS, SPLIT_BLOCK, WorldError, generate_world, render_clip

SMALL = {"height": 32, "width": 32, "num_frames": 5}


@pytest.mark.parametrize("domain", DOMAINS)
def test_clip_is_a_function_of_domain_index_and_seed(domain):
    frames, attributes = render_clip(domain, 3, 7, **SMALL)
    again, attributes_again = render_clip(domain, 3, 7, **SMALL)
    assert frames.dtype == np.uint8 and frames.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(frames, again)
    assert attributes == attributes_again
    assert json.loads(json.dumps(attributes)) == attributes
    assert not np.array_equal(frames, render_clip(domain, 3, 8, **SMALL)[0])
    assert not np.array_equal(frames, render_clip(domain, 4, 7, **SMALL)[0])


@pytest.mark.parametrize("domain", DOMAINS)
def test_attributes_do_not_depend_on_resolution_or_length(domain):
    small = render_clip(domain, 1, 0, **SMALL)[1]
    large = render_clip(domain, 1, 0, height=48, width=64, num_frames=9)[1]
    assert small == large


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_clip_moves(domain):
    for index in range(8):
        frames, attributes = render_clip(domain, index, 0, **SMALL)
        assert np.abs(frames[0].astype(int) - frames[-1]).max() > 20, attributes["caption"]


def test_cinematic_clips_have_letterbox_bars_and_say_their_look():
    for index in range(4):
        frames, attributes = render_clip("cinematic", index, 0, **SMALL)
        assert frames[:, 0].max() == 0 and frames[:, -1].max() == 0
        assert frames[:, 16].max() > 0
        look = attributes["look"]
        assert f"{look['grade']} grade" in attributes["caption"]
        assert f"{look['letterbox']:g}:1 letterbox" in attributes["caption"]


def test_captions_name_what_was_drawn():
    for index in range(4):
        studio = render_clip("studio", index, 0, **SMALL)[1]
        for obj in studio["objects"]:
            assert f"{obj['colour']} {obj['shape']}" in studio["caption"]
        actors = render_clip("actors", index, 0, **SMALL)[1]
        for figure in actors["figures"]:
            assert f"{figure['shirt']} shirt {figure['action']}" in actors["caption"]
        photos = render_clip("photos", index, 0, **SMALL)[1]
        assert photos["photo"] in PHOTOS and PHOTOS[photos["photo"]][2] in photos["caption"]


def test_render_clip_rejects_unknown_domain_and_negative_seed():
    with pytest.raises(WorldError, match="unknown domain"):
        render_clip("cartoons", 0, 0, **SMALL)
    with pytest.raises(WorldError, match="seed=-1"):
        render_clip("studio", 0, -1, **SMALL)


def _world_config(root, **changes) -> WorldConfig:
    values = {"enabled": True, "root": str(root), "seed": 0, "domains": ["studio", "photos"],
              "splits": {"train": 2, "val": 1}, "height": 32, "width": 32, "num_frames": 5, "fps": 8}
    return WorldConfig(**{**values, **changes})


def _manifest_rows(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def _file_times(root) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_generate_world_writes_decodable_clips_and_manifests(tmp_path):
    cfg = _world_config(tmp_path / "world")
    folders = generate_world(cfg, progress=False)
    assert {d: set(s) for d, s in folders.items()} == {"studio": {"train", "val"}, "photos": {"train", "val"}}
    for domain, splits in folders.items():
        indices = []
        for split, folder in splits.items():
            assert folder == tmp_path / "world" / domain / split
            rows = _manifest_rows(folder)
            assert [r["path"] for r in rows] == [f"{domain}_{split}_{i:05d}.avi" for i in range(cfg.splits[split])]
            for row in rows:
                assert set(row) == {"path", "caption", "domain", "split", "index", "seed", "attributes"}
                assert (row["domain"], row["split"], row["seed"]) == (domain, split, 0)
                frames, attributes = render_clip(domain, row["index"], 0, **SMALL)
                assert row["caption"] == attributes.pop("caption") and row["attributes"] == attributes
                decoded = decord.VideoReader(str(folder / row["path"])).get_batch(list(range(5))).asnumpy()
                assert decoded.shape == (5, 32, 32, 3)
                assert np.array_equal(decoded, frames)  # lossless: the rendered frames exactly
            indices += [row["index"] for row in rows]
        assert sorted(indices) == [0, 1, SPLIT_BLOCK]  # splits never share a clip


def test_generate_world_is_byte_deterministic(tmp_path):
    generate_world(_world_config(tmp_path / "a", domains=["cinematic"]), progress=False)
    generate_world(_world_config(tmp_path / "b", domains=["cinematic"]), progress=False)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 7  # 3 clips + a manifest and world.json per split
    for relative in files_a:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()


def test_rerun_with_same_parameters_renders_nothing(tmp_path, monkeypatch):
    cfg = _world_config(tmp_path / "world")
    generate_world(cfg, progress=False)
    before = _file_times(tmp_path)

    def fail(*args, **kwargs):
        raise AssertionError("a complete split was rendered again")

    monkeypatch.setattr(world, "render_clip", fail)
    generate_world(cfg, progress=False)
    assert _file_times(tmp_path) == before


def test_interrupted_split_is_regenerated(tmp_path):
    cfg = _world_config(tmp_path / "world")
    folders = generate_world(cfg, progress=False)
    (folders["photos"]["val"] / "world.json").unlink()  # as if killed before the sidecar was written
    before = _file_times(tmp_path)
    generate_world(cfg, progress=False)
    after = _file_times(tmp_path)
    changed = {p for p in after if before.get(p) != after[p]}
    assert changed == {folders["photos"]["val"] / name for name in
                       ("photos_val_00000.avi", "manifest.jsonl", "world.json")}


def test_other_parameters_raise_unless_forced(tmp_path):
    generate_world(_world_config(tmp_path / "world"), progress=False)
    changed = _world_config(tmp_path / "world", num_frames=9, splits={"train": 1, "val": 1})
    with pytest.raises(WorldError, match="num_frames.*force"):
        generate_world(changed, progress=False)
    folders = generate_world(changed, force=True, progress=False)
    train = folders["studio"]["train"]
    assert json.loads((train / "world.json").read_text())["num_frames"] == 9
    assert sorted(p.name for p in train.glob("*.avi")) == ["studio_train_00000.avi"]  # stale clip removed
    assert len(decord.VideoReader(str(train / "studio_train_00000.avi"))) == 9


def test_generate_world_rejects_unknown_domains(tmp_path):
    with pytest.raises(WorldError, match="cartoons"):
        generate_world(_world_config(tmp_path, domains=["studio", "cartoons"]), progress=False)
    assert not any(tmp_path.iterdir())


def test_a_width_decord_cannot_read_back_is_refused_before_writing(tmp_path):
    with pytest.raises(WorldError, match="world.width: 48; expected another multiple of 16"):
        generate_world(_world_config(tmp_path, width=48), progress=False)
    assert not any(tmp_path.iterdir())
    frames = render_clip("studio", 0, 0, 32, 48, 5)[0]  # why: decord returns 4-channel rows it cannot copy
    write_video(tmp_path / "narrow.avi", frames, fps=8)
    with pytest.raises(decord.DECORDError, match="size must exactly match"):
        decord.VideoReader(str(tmp_path / "narrow.avi")).get_batch(list(range(5)))


def test_two_runs_writing_the_same_world_at_once_both_succeed(tmp_path):
    import threading

    cfg = WorldConfig(enabled=True, root=str(tmp_path), seed=0, domains=["studio"], splits={"train": 3},
                      height=32, width=32, num_frames=5, fps=8)
    errors = []

    def write():
        try:
            generate_world(cfg, progress=False)
        except Exception as err:  # noqa: BLE001 - the test reports whatever a concurrent writer hit
            errors.append(err)

    threads = [threading.Thread(target=write) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]  # no temporary left
    assert len(list((tmp_path / "studio" / "train").glob("*.avi"))) == 3
