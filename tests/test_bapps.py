"""The BAPPS 2AFC reader on a fixture in the real layout, LPIPS's soft 2AFC score, and the procedural 2AFC set."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cinelora.data.bapps import BAPPSLayoutError, TwoAFCDataset
from cinelora.metrics.two_afc import two_afc_agreement, two_afc_score
from cinelora.data.two_afc_world import judge_from_severity, make_triplet, write_two_afc_world

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "bapps"  # {train,val}/<set>/{ref,p0,p1,judge}


def test_reader_pairs_files_by_sorted_order_and_scales_to_minus_one_one():
    data = TwoAFCDataset(FIXTURE, ["traditional", "cnn"], "val")
    assert len(data) == 4 and data.set_sizes == {"traditional": 2, "cnn": 2}
    item = data[3]  # second triplet of the second set
    assert item["set"] == "cnn"
    for key in ("ref", "p0", "p1"):
        assert item[key].shape == (3, 64, 64) and item[key].dtype == torch.float32
        assert -1.0 <= item[key].min() and item[key].max() <= 1.0
    png = np.asarray(Image.open(FIXTURE / "val" / "cnn" / "p1" / "000001.png").convert("RGB"), dtype=np.float32)
    assert torch.allclose(item["p1"], torch.from_numpy(png).permute(2, 0, 1) / 127.5 - 1)
    assert item["judge"].item() == pytest.approx(float(np.load(FIXTURE / "val" / "cnn" / "judge" / "000001.npy")[0]))


def test_reader_resizes_patches_to_the_requested_size():
    assert TwoAFCDataset(FIXTURE, ["traditional"], "train", patch_size=32)[0]["ref"].shape == (3, 32, 32)


def test_reader_names_the_folder_of_a_broken_layout(tmp_path):
    root = tmp_path / "2afc"
    shutil.copytree(FIXTURE, root)
    with pytest.raises(BAPPSLayoutError, match=str(root / "val" / "superres")):
        TwoAFCDataset(root, ["superres"], "val")
    shutil.rmtree(root / "val" / "cnn" / "judge")
    with pytest.raises(BAPPSLayoutError, match=str(root / "val" / "cnn" / "judge")):
        TwoAFCDataset(root, ["cnn"], "val")
    (root / "train" / "traditional" / "p0" / "000002.png").unlink()
    with pytest.raises(BAPPSLayoutError, match="different numbers of files.*'p0': 2"):
        TwoAFCDataset(root, ["traditional"], "train")


def test_two_afc_score_is_lpips_soft_agreement_with_ties_at_half():
    d0 = torch.tensor([0.1, 0.5, 0.3, 0.2])
    d1 = torch.tensor([0.2, 0.4, 0.3, 0.9])
    judge = torch.tensor([0.25, 0.75, 1.0, 0.0])
    # picks p0 (raters: 75% p0), picks p1 (75% p1), tie, picks p0 (all raters p0)
    assert two_afc_agreement(d0, d1, judge).tolist() == [0.75, 0.75, 0.5, 1.0]
    assert two_afc_score(d0, d1, judge) == pytest.approx(0.75)
    assert two_afc_score(d1, d0, judge) == pytest.approx(0.25)  # swapping the distances inverts agreement


def test_judge_prefers_the_less_distorted_patch():
    assert judge_from_severity(1.0, 0.2) > 0.95 and judge_from_severity(0.2, 1.0) < 0.05
    assert judge_from_severity(0.7, 0.7) == 0.5
    assert judge_from_severity(0.5, 0.2) == pytest.approx(1 - judge_from_severity(0.2, 0.5))


def test_procedural_triplets_are_deterministic_and_differ_by_index_and_split():
    a = make_triplet(3, "train", "mix", 5, 32, (64, 64))
    b = make_triplet(3, "train", "mix", 5, 32, (64, 64))
    assert all(np.array_equal(a[k], b[k]) for k in ("ref", "p0", "p1")) and a["judge"] == b["judge"]
    assert a["p0_chain"] == b["p0_chain"] and 2 <= len(a["p0_chain"]) <= 3  # mix: 2-3 distortions
    assert not np.array_equal(make_triplet(3, "train", "mix", 6, 32, (64, 64))["ref"], a["ref"])
    assert make_triplet(3, "val", "mix", 5, 32, (64, 64))["clip"] != a["clip"]
    assert a["ref"].shape == (32, 32, 3) and a["ref"].dtype == np.uint8


def test_procedural_set_is_written_in_the_bapps_layout_and_kept_when_current(tmp_path):
    root = tmp_path / "2afc"
    kwargs = dict(seed=0, triplets={"train": 3, "val": 2}, sets={"train": ["cnn"], "val": ["traditional"]},
                  patch_size=32, frame_size=(64, 64), progress=False)
    write_two_afc_world(root, **kwargs)
    data = TwoAFCDataset(root, ["cnn"], "train", 32)
    assert len(data) == 3 and TwoAFCDataset(root, ["traditional"], "val", 32).set_sizes == {"traditional": 2}
    judge = float(np.load(root / "train" / "cnn" / "judge" / "000001.npy")[0])
    assert judge == pytest.approx(make_triplet(0, "train", "cnn", 1, 32, (64, 64))["judge"])
    stamp = (root / "train" / "cnn" / "ref" / "000000.png").stat().st_mtime_ns
    write_two_afc_world(root, **kwargs)  # same request: nothing rewritten
    assert (root / "train" / "cnn" / "ref" / "000000.png").stat().st_mtime_ns == stamp
    write_two_afc_world(root, **{**kwargs, "triplets": {"train": 2, "val": 2}})  # another request: replaced
    assert len(TwoAFCDataset(root, ["cnn"], "train", 32)) == 2
