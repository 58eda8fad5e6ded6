"""The training loop's encoding cache: each clip is encoded once, alone, and read back exactly."""
from __future__ import annotations

import torch

from cinelora import objective, train
from cinelora.train import EncodingCache


def _batch(indices: list[int]) -> dict:
    g = torch.Generator().manual_seed(0)
    videos = torch.rand(4, 3, 5, 32, 32, generator=g) * 2 - 1
    return {"video": videos[indices], "condition": videos[indices, :, 0], "caption": [f"clip {i}" for i in indices],
            "index": indices}


def test_each_clip_is_encoded_once_alone_and_read_back_exactly(smoke_components, monkeypatch):
    cache = EncodingCache(smoke_components, torch.device("cpu"), torch.float32)
    calls = []
    encode = objective.encode_batch
    monkeypatch.setattr(train.objective, "encode_batch", lambda c, b, *a: calls.append(len(b["caption"])) or encode(c, b, *a))
    first = cache.inputs(_batch([2, 0]))
    again = cache.inputs(_batch([0, 2, 1]))
    assert calls == [1, 1, 1]  # three clips, each encoded once, one at a time
    alone = encode(smoke_components, _batch([0]), torch.device("cpu"), torch.float32)
    for key in EncodingCache.KEYS:
        assert torch.equal(again[key][0], alone[key][0])  # exactly what encoding the clip gives
        assert torch.equal(first[key][1], again[key][0])  # the same clip, wherever it sits in a batch
    assert torch.equal(again["video"], _batch([0, 2, 1])["video"])  # pixels come from the batch
