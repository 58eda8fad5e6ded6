"""The encoding cache: each clip is encoded once, alone, and read back exactly, in memory and from the disk store,
whose keys change with anything the encoding depends on and whose entries survive a rerun but not corruption."""
from __future__ import annotations

import dataclasses
import logging

import torch

from cinelora import latent_cache, objective
from cinelora.data.buckets import Bucket
from cinelora.data.videos import VideoClipDataset
from cinelora.latent_cache import EncodingCache, LatentStore, cache_dataset, clip_key, model_fingerprint

CPU = torch.device("cpu")


def _batch(indices: list[int]) -> dict:
    g = torch.Generator().manual_seed(0)
    videos = torch.rand(4, 3, 5, 32, 32, generator=g) * 2 - 1
    return {"video": videos[indices], "condition": videos[indices, :, 0], "caption": [f"clip {i}" for i in indices],
            "index": indices}


def _counting(monkeypatch) -> list[int]:
    calls, encode = [], objective.encode_batch
    monkeypatch.setattr(latent_cache.objective, "encode_batch",
                        lambda c, b, *a: calls.append(len(b["caption"])) or encode(c, b, *a))
    return calls


def test_each_clip_is_encoded_once_alone_and_read_back_exactly(smoke_components, monkeypatch):
    cache = EncodingCache(smoke_components, CPU, torch.float32)
    calls = _counting(monkeypatch)
    first = cache.inputs(_batch([2, 0]))
    again = cache.inputs(_batch([0, 2, 1]))
    assert calls == [1, 1, 1]  # three clips, each encoded once, one at a time
    alone = objective.encode_batch(smoke_components, _batch([0]), CPU, torch.float32)
    for key in EncodingCache.KEYS:
        assert torch.equal(again[key][0], alone[key][0])  # exactly what encoding the clip gives
        assert torch.equal(first[key][1], again[key][0])  # the same clip, wherever it sits in a batch
    assert torch.equal(again["video"], _batch([0, 2, 1])["video"])  # pixels come from the batch


def test_the_disk_store_serves_a_new_run_and_replaces_a_corrupt_entry(smoke_components, monkeypatch, tmp_path,
                                                                       caplog):
    store, keys = LatentStore(tmp_path), {i: f"{i:02d}" + "ab" * 31 for i in range(4)}
    first = EncodingCache(smoke_components, CPU, torch.float32, store, keys).inputs(_batch([0, 1, 2]))
    assert len(list(tmp_path.rglob("*.safetensors"))) == 3
    calls = _counting(monkeypatch)
    rerun = EncodingCache(smoke_components, CPU, torch.float32, store, keys)
    second = rerun.inputs(_batch([2, 1, 0]))
    assert calls == [] and (rerun.reused, rerun.encoded) == (3, 0)  # nothing encoded again
    for key in EncodingCache.KEYS:
        assert torch.equal(second[key][2], first[key][0])
    store.path(keys[1]).write_bytes(b"not a safetensors file")  # a damaged entry
    with caplog.at_level(logging.WARNING):
        third = EncodingCache(smoke_components, CPU, torch.float32, store, keys).inputs(_batch([1]))
    assert calls == [1] and "unreadable cache entry" in caplog.text and store.get(keys[1]) is not None
    assert torch.equal(third["latents"][0], first["latents"][1])


def test_the_key_changes_with_everything_the_encoding_depends_on(tiny_world):
    cfg = tiny_world("lora_r8", ["cinematic"], {"train": 1, "val": 1})
    size = Bucket(cfg.data.height, cfg.data.width, cfg.data.num_frames)
    base = dict(fingerprint="f" * 64, video_sha256="v" * 64, cfg=cfg, size=size, caption="a caption",
                condition="first")
    key = clip_key(**base)
    assert clip_key(**base) == key
    changes = [{"fingerprint": "g" * 64}, {"video_sha256": "w" * 64}, {"caption": "another"}, {"condition": "black"},
               {"size": dataclasses.replace(size, height=16)}, {"size": dataclasses.replace(size, width=16)},
               {"size": dataclasses.replace(size, num_frames=1)},
               {"cfg": dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, frame_stride=2))},
               {"cfg": dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weight_dtype="bf16"))}]
    assert len({clip_key(**{**base, **change}) for change in changes} | {key}) == len(changes) + 1


def test_a_pretrained_fingerprint_follows_the_encoder_files_bytes(tmp_path):
    (tmp_path / "vae").mkdir()
    (tmp_path / "transformer").mkdir()
    (tmp_path / "vae" / "w.safetensors").write_bytes(b"one")
    cfg = dataclasses.replace(latent_cache.ModelConfig(), source="pretrained", path=str(tmp_path))
    before = model_fingerprint(cfg, 0)
    (tmp_path / "transformer" / "w.safetensors").write_bytes(b"the LoRA's base, not an encoder")
    assert model_fingerprint(cfg, 0) == before
    (tmp_path / "vae" / "w.safetensors").write_bytes(b"two")
    assert model_fingerprint(cfg, 0) != before


def test_cache_command_fills_the_store_once_and_training_reads_it(tiny_world, tmp_path):
    cfg = tiny_world("lora_r8", ["cinematic"], {"train": 3, "val": 1})
    first = cache_dataset(cfg, tmp_path, progress=False)
    assert (first["clips"], first["encoded"], first["reused"]) == (3, 3, 0) and first["seconds_per_encoded_clip"] > 0
    again = cache_dataset(cfg, tmp_path, progress=False)
    assert (again["encoded"], again["reused"]) == (0, 3)
    two_stage = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, stage="two_stage"))
    both = cache_dataset(two_stage, tmp_path, progress=False)  # the style stage: single frames, black condition
    assert (both["clips"], both["encoded"], both["reused"]) == (6, 3, 3)
    dataset = VideoClipDataset(cfg.data.train, cfg.data.height, cfg.data.width, cfg.data.num_frames)
    keys = latent_cache.dataset_keys(dataset, cfg, "first")
    assert all(LatentStore(tmp_path).path(k).is_file() for k in keys.values())
