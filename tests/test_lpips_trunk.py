"""The LPIPS trunk file is read as tensors only: a malicious pickle is refused, a real state dict is loaded."""
import os

import pytest
import torch
import torchvision

from cinelora.metrics.lpips_distance import build_lpips, trunk_path


class _Payload:
    """What a malicious checkpoint holds: unpickling it runs code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    trunk_path("alex").parent.mkdir(parents=True)
    return tmp_path


def test_a_malicious_trunk_file_is_refused_and_never_runs(hub):
    marker = hub / "payload_ran"
    torch.save({"features.0.weight": _Payload(str(marker))}, trunk_path("alex"))
    with pytest.raises(ValueError, match="refused to unpickle"):
        build_lpips("alex", "torchvision", seed=0)
    assert not marker.exists()


def test_torchvisions_trunk_file_is_loaded_into_the_lpips_trunk(hub):
    alexnet = torchvision.models.alexnet(weights=None)
    torch.save(alexnet.state_dict(), trunk_path("alex"))
    model = build_lpips("alex", "torchvision", seed=0)
    torch.testing.assert_close(model.net.slice1[0].weight, alexnet.features[0].weight, rtol=0, atol=0)
    torch.testing.assert_close(getattr(model.net.slice5, "10").bias, alexnet.features[10].bias, rtol=0, atol=0)
    assert not torch.equal(build_lpips("alex", "random", seed=0).net.slice1[0].weight, alexnet.features[0].weight)


def test_building_lpips_says_nothing_of_torchvisions_deprecations():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_lpips("alex", "random", seed=0)
    assert not [w for w in caught if issubclass(w.category, UserWarning)]
