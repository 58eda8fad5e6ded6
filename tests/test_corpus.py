"""Corpora of world clips in memory: deterministic, the same with any number of workers, disjoint from the
world's video splits and from each other."""
from __future__ import annotations

import numpy as np
import pytest

from cinelora.data.corpus import CORPUS_BLOCKS, CorpusSpec, corpus_captions, render_corpus
from cinelora.data.world import SPLIT_BLOCK, WorldError, render_clip


def _spec(**kw) -> CorpusSpec:
    return CorpusSpec(**{"block": "base_train", "domains": ("studio", "figures"), "count": 6, "seed": 0,
                         "height": 32, "width": 32, "num_frames": 5, **kw})


def test_workers_do_not_change_the_corpus_and_clips_are_the_worlds():
    one, two = render_corpus(_spec(), workers=1, progress=False), render_corpus(_spec(), workers=2, progress=False)
    assert one.frames.shape == (6, 5, 32, 32, 3) and one.frames.dtype == np.uint8
    np.testing.assert_array_equal(one.frames, two.frames)
    assert one.captions == two.captions == corpus_captions(_spec())
    assert one.domains == ["studio", "figures"] * 3  # interleaved clip by clip
    frames, attributes = render_clip("figures", CORPUS_BLOCKS["base_train"] + 2, 0, 32, 32, 5)
    np.testing.assert_array_equal(one.frames[5], frames)
    assert one.captions[5] == attributes["caption"]


def test_blocks_are_disjoint_from_the_world_splits_and_each_other():
    starts = sorted(CORPUS_BLOCKS.values())
    assert starts[0] >= 3 * SPLIT_BLOCK  # train, val and test video splits use [0, 3 x SPLIT_BLOCK)
    assert all(b - a >= SPLIT_BLOCK for a, b in zip(starts, starts[1:]))
    train = render_corpus(_spec(count=2), workers=1, progress=False)
    val = render_corpus(_spec(block="base_val", count=2), workers=1, progress=False)
    assert train.captions != val.captions


def test_bad_specs_are_refused():
    with pytest.raises(WorldError, match="corpus block"):
        _spec(block="nope").clip(0)
    with pytest.raises(WorldError, match="clip 6 of 6"):
        _spec().clip(6)


def test_a_cached_corpus_is_read_back_and_a_changed_spec_misses(tmp_path, monkeypatch):
    from cinelora.data import corpus as corpus_module

    first = render_corpus(_spec(count=3), workers=1, progress=False, cache=tmp_path)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".npy"]  # no temporary left

    def no_rendering(*args):
        raise AssertionError("rendered again")

    monkeypatch.setattr(corpus_module, "_render", no_rendering)
    again = render_corpus(_spec(count=3), workers=1, progress=False, cache=tmp_path)
    assert np.array_equal(again.frames, first.frames)
    assert (again.domains, again.captions, again.attributes) == (first.domains, first.captions, first.attributes)
    with pytest.raises(AssertionError, match="rendered again"):
        render_corpus(_spec(count=4), workers=1, progress=False, cache=tmp_path)
