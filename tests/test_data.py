"""The video dataset: manifests and folders, decoding, frame sampling, resize/crop, and clear errors."""
import json
import logging
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cinelora.data.buckets import Bucket
from cinelora.data.video_writer import ENCODERS, write_video
from cinelora.data.videos import (VideoClipDataset, VideoDataError, decode_frames, probe_video, read_clip_records,
                                  resize_and_crop)
from cinelora.data.world import render_clip


def _grey_ramp(num_frames: int, height: int = 32, width: int = 32) -> np.ndarray:
    """Frame k is uniform grey 8 + 24k, so decoded frames say which frame they are."""
    levels = (8 + 24 * np.arange(num_frames)).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).copy()


def _green_centre(height: int = 32, width: int = 64, num_frames: int = 5) -> np.ndarray:
    """Green in the centre square, red at the sides: a centre crop is all green, a squash is not."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:, :, 0] = 200
    side = (width - height) // 2
    frame[:, side:side + height] = (0, 200, 0)
    return np.repeat(frame[None], num_frames, axis=0)


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    """Videos written once per module; tests copy the ones they need into their own folder."""
    folder = tmp_path_factory.mktemp("bank")
    for index in range(3):
        write_video(folder / f"world{index}.mp4", render_clip("studio", index, 0, 32, 32, 9)[0], fps=8)
    write_video(folder / "ramp.mp4", _grey_ramp(9), fps=8)
    write_video(folder / "short.mp4", _grey_ramp(3), fps=8)
    write_video(folder / "wide.mp4", _green_centre(), fps=8)
    (folder / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    return folder


def _clips(bank, folder, names, captions=True):
    """Copy `names` (bank stems) into `folder` as <name>.mp4, with sidecar captions unless told not to."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(bank / f"{name}.mp4", folder / f"{name}.mp4")
        if captions:
            (folder / f"{name}.txt").write_text(f"caption of {name}\n")
    return folder


def test_items_have_layout_range_and_first_frame_condition(bank, tmp_path):
    folder = _clips(bank, tmp_path / "clips", ["world0", "world1", "world2"])
    dataset = VideoClipDataset(folder, height=32, width=32, num_frames=5)
    assert len(dataset) == 3
    item = dataset[1]
    assert item["video"].shape == (3, 5, 32, 32) and item["video"].dtype == torch.float32
    decoded = decode_frames(folder / "world1.mp4", 5).permute(3, 0, 1, 2).float()  # [3, T, H, W] in [0, 255]
    torch.testing.assert_close(item["video"], decoded / 127.5 - 1)
    assert item["video"].min() >= -1 and item["video"].max() <= 1
    assert torch.equal(item["condition"], item["video"][:, 0])
    assert item["caption"] == "caption of world1"
    assert item["path"] == str(folder / "world1.mp4") and item["index"] == 1
    batch = next(iter(DataLoader(dataset, batch_size=2)))
    assert batch["video"].shape == (2, 3, 5, 32, 32) and batch["condition"].shape == (2, 3, 32, 32)
    assert batch["caption"] == ["caption of world0", "caption of world1"]


def test_frames_are_the_first_num_frames_at_the_stride(bank, tmp_path):
    folder = _clips(bank, tmp_path / "clips", ["ramp"])
    video = VideoClipDataset(folder, 16, 16, num_frames=3, frame_stride=3)[0]["video"]
    levels = (video.mean(dim=(0, 2, 3)) + 1) * 127.5
    torch.testing.assert_close(levels, torch.tensor([8.0, 80.0, 152.0]), atol=3.0, rtol=0)


def test_resize_covers_the_target_then_crops_the_centre(bank, tmp_path):
    folder = _clips(bank, tmp_path / "clips", ["wide"])
    for height, width in ((32, 32), (16, 16)):
        condition = VideoClipDataset(folder, height, width, num_frames=5)[0]["condition"]
        assert condition.shape == (3, height, width)
        inner = condition[:, :, 1:-1]  # the outer columns may blend with the red sides when resized
        assert inner[1].min() > 0.3 and inner[0].max() < -0.7  # all green: cropped, not squashed


def test_resize_and_crop_keeps_aspect_for_any_target():
    frames = torch.arange(48 * 64, dtype=torch.float32).reshape(1, 1, 48, 64)
    assert resize_and_crop(frames, 48, 48).equal(frames[..., 8:56])
    assert resize_and_crop(frames, 16, 48).shape == (1, 1, 16, 48)
    assert resize_and_crop(frames, 96, 64).shape == (1, 1, 96, 64)


def test_jsonl_csv_and_sidecar_folder_sources_agree(bank, tmp_path):
    folder = _clips(bank, tmp_path / "clips", ["world2", "world0", "world1"])
    shutil.copy(bank / "corrupt.mp4", folder / ".world3.partial.mp4")  # hidden: a half-written file, ignored
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    rows = [{"path": f"../clips/{name}.mp4", "caption": f"caption of {name}", "take": i}
            for i, name in enumerate(["world2", "world0", "world1"])]
    (manifests / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (manifests / "clips.csv").write_text("path,caption,take\n" + "".join(
        f"{r['path']},\"{r['caption']}\",{r['take']}\n" for r in rows))
    expected = [(folder / f"world{i}.mp4", f"caption of world{i}") for i in range(3)]
    for source in (folder, manifests / "clips.jsonl", manifests / "clips.csv"):
        records = read_clip_records(source)
        assert [(r.path, r.caption) for r in records] == expected, source
    assert read_clip_records(manifests / "clips.jsonl")[0].attributes == {"take": 1}
    assert read_clip_records(manifests / "clips.csv")[0].attributes == {"take": "1"}


def test_a_folder_manifest_takes_precedence_over_sidecars(bank, tmp_path):
    folder = _clips(bank, tmp_path / "clips", ["world0", "world1"])
    (folder / "manifest.jsonl").write_text(json.dumps({"path": "world1.mp4", "caption": "from manifest"}) + "\n")
    records = read_clip_records(folder)
    assert [(r.path.name, r.caption) for r in records] == [("world1.mp4", "from manifest")]


def test_probing_a_corrupt_video_prints_nothing_of_decords_own(bank, tmp_path, capfd):
    error = probe_video(bank / "corrupt.mp4", (Bucket(32, 32, 5),), 1)
    assert error is not None and "corrupt.mp4: cannot be decoded" in str(error)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""  # no C++ "ERROR opening" line, no ffmpeg "moov atom" line


def test_corrupt_video_names_the_file(bank, tmp_path):
    folder = _clips(bank, tmp_path / "clips", ["world0", "corrupt"])
    with pytest.raises(VideoDataError, match=r"corrupt\.mp4: cannot be decoded"):
        VideoClipDataset(folder, 32, 32, num_frames=5)


def test_too_short_video_says_how_many_frames_it_needs(bank, tmp_path):
    folder = _clips(bank, tmp_path / "clips", ["ramp"])
    with pytest.raises(VideoDataError, match=r"ramp\.mp4: has 9 frames; expected at least 13"):
        VideoClipDataset(folder, 32, 32, num_frames=5, frame_stride=3)


def test_missing_and_empty_captions_name_the_file(bank, tmp_path):
    folder = _clips(bank, tmp_path / "clips", ["world0"], captions=False)
    with pytest.raises(VideoDataError, match=r"world0\.mp4: has no caption file; expected .*world0\.txt"):
        read_clip_records(folder)
    (folder / "world0.txt").write_text("  \n")
    with pytest.raises(VideoDataError, match=r"world0\.txt: is empty"):
        read_clip_records(folder)
    manifest = tmp_path / "clips.jsonl"
    manifest.write_text(json.dumps({"path": "clips/world0.mp4", "caption": "fine"}) + "\n"
                        + json.dumps({"path": "clips/world0.mp4", "caption": ""}) + "\n")
    with pytest.raises(VideoDataError, match=r"clips\.jsonl:2: caption ''; expected a non-empty caption"):
        read_clip_records(manifest)


def test_manifest_errors_name_the_manifest_and_line(bank, tmp_path):
    _clips(bank, tmp_path / "clips", ["world0"])
    no_caption_column = tmp_path / "a.csv"
    no_caption_column.write_text("path,text\nclips/world0.mp4,hello\n")
    with pytest.raises(VideoDataError, match=r"a\.csv:1: .*lack \['caption'\]"):
        read_clip_records(no_caption_column)
    missing_video = tmp_path / "b.csv"
    missing_video.write_text("path,caption\nclips/world0.mp4,hello\nclips/gone.mp4,bye\n")
    with pytest.raises(VideoDataError, match=r"b\.csv:3: video .*gone\.mp4' does not exist"):
        read_clip_records(missing_video)
    with pytest.raises(VideoDataError, match=r"nowhere\.jsonl: does not exist"):
        read_clip_records(tmp_path / "nowhere.jsonl")


def test_skip_bad_keeps_good_videos_and_reports_the_rest(bank, tmp_path, caplog):
    folder = _clips(bank, tmp_path / "clips", ["world0", "corrupt", "short", "world1"])
    with caplog.at_level(logging.WARNING, logger="cinelora.data"):
        dataset = VideoClipDataset(folder, 32, 32, num_frames=5, skip_bad=True)
    assert [r.path.name for r in dataset.records] == ["world0.mp4", "world1.mp4"]
    assert [(p.name, reason.split(" (")[0]) for p, reason in dataset.skipped] == [
        ("corrupt.mp4", "cannot be decoded"), ("short.mp4", "has 3 frames; expected at least 5")]
    assert "skipped 2 of 4 videos" in caplog.text and "corrupt.mp4" in caplog.text
    assert dataset[1]["caption"] == "caption of world1"


def test_nothing_usable_raises_even_when_skipping(bank, tmp_path):
    folder = _clips(bank, tmp_path / "clips", ["corrupt", "short"])
    with pytest.raises(VideoDataError, match="no usable videos"):
        VideoClipDataset(folder, 32, 32, num_frames=5, skip_bad=True)


def test_write_video_rejects_odd_sizes_and_leaves_no_file(tmp_path):
    with pytest.raises(VideoDataError, match=r"odd\.mp4: frames of 31x32; expected even"):
        write_video(tmp_path / "odd.mp4", _grey_ramp(3, 31, 32), fps=8)
    with pytest.raises(VideoDataError, match=r"float\.mp4: frames of float32"):
        write_video(tmp_path / "float.mp4", _grey_ramp(3).astype(np.float32), fps=8)
    with pytest.raises(VideoDataError, match=r"clip\.gif: suffix '\.gif'; expected one of \['\.avi', '\.mp4'\]"):
        write_video(tmp_path / "clip.gif", _grey_ramp(3), fps=8)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("encoder", ENCODERS)
def test_both_encoders_write_avi_losslessly_and_mp4_faithfully(tmp_path, encoder):
    """The GPU machine has no ffmpeg binary, only OpenCV: the world it writes must decode to the same pixels."""
    frames = render_clip("cinematic", 3, 0, 32, 64, 9)[0]
    write_video(tmp_path / "clip.avi", frames, fps=8, encoder=encoder)
    assert np.array_equal(decode_frames(tmp_path / "clip.avi", 9).numpy(), frames)
    write_video(tmp_path / "clip.mp4", frames, fps=8, encoder=encoder)
    assert np.abs(decode_frames(tmp_path / "clip.mp4", 9).numpy().astype(int) - frames).mean() < 8  # lossy, faithful
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi", "clip.mp4"]  # no temporary left


def test_a_caption_or_manifest_that_is_not_utf8_names_its_file(bank, tmp_path):
    folder = _clips(bank, tmp_path / "clips", ["world0"])
    (folder / "world0.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(VideoDataError, match=r"world0\.txt: is not UTF-8 text \(byte b'\\xe9' at offset 3\)"):
        read_clip_records(folder)
    for name, text in (("m.jsonl", '{"path": "clips/world0.mp4", "caption": "café"}\n'),
                       ("m.csv", "path,caption\nclips/world0.mp4,café\n")):
        (tmp_path / name).write_bytes(text.encode("cp1252"))
        with pytest.raises(VideoDataError, match=rf"{name}: is not UTF-8 text"):
            read_clip_records(tmp_path / name)


def test_a_manifest_path_outside_its_folder_is_allowed_but_said(bank, tmp_path, caplog):
    _clips(bank, tmp_path / "elsewhere", ["world0"])
    (tmp_path / "set").mkdir()
    manifest = tmp_path / "set" / "manifest.jsonl"
    manifest.write_text(json.dumps({"path": "../elsewhere/world0.mp4", "caption": "a clip"}) + "\n")
    with caplog.at_level(logging.WARNING, logger="cinelora.data"):
        records = read_clip_records(manifest)
    assert records[0].path == tmp_path / "elsewhere" / "world0.mp4"
    assert "manifest.jsonl:1: path '../elsewhere/world0.mp4' lies outside the manifest's folder" in caplog.text
