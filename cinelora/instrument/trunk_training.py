"""The proxy AlexNet trunk of LPIPS and R-LPIPS: torchvision's `alexnet().features` (its architecture and state-dict
keys, which the lpips package's trunk copies), trained from a seeded init on world frames, `stills` photos among
them, to classify frame-level attributes (`attributes`: domain, object, colour, backdrop) through a linear head on
the spatially averaged relu5 features, as ImageNet classification trained torchvision's trunk. The head is only a
training device and is not saved: LPIPS reads the five relu outputs, and its own linear heads are trained on top by
the project's R-LPIPS recipe (experiments/rlpips_metric, whose proxy profile names the trunk file).

Inputs go through LPIPS's scaling layer (`lpips.ScalingLayer`, ImageNet's mean and std in [-1, 1] units), so the
trunk is trained on exactly what LPIPS feeds it. Augmentation: horizontal flips (no label depends on left/right in
a single frame). The saved file holds `features.<i>.weight|bias` alone (`save_trunk`), read by
`lpips_distance.load_trunk`.
"""
from __future__ import annotations

import lpips
import torch
import torchvision
from torch import nn

from cinelora import seeding
from cinelora.config import TrunkPhaseConfig
from cinelora.instrument.attributes import LabelSpace

STREAM = 2  # data-order stream: step s draws from index 3·s + STREAM (I3D 0, CLIP 1)
RELU5 = 12  # torchvision's alexnet.features[:12] ends at relu5, the last layer LPIPS reads; [12] is a max pool
INIT_INDEX = 18  # derive_seed(seed, "init", 18): I3D takes 16, CLIP 17


class TrunkClassifier(nn.Module):
    """Frames [N, 3, H, W] in [-1, 1] → logits [N, classes]: LPIPS's scaling, AlexNet features to relu5, spatial
    mean, linear head."""

    def __init__(self, classes: int):
        super().__init__()
        self.scaling = lpips.ScalingLayer()
        self.features = torchvision.models.alexnet(weights=None).features
        self.head = nn.Linear(256, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.scaling(x)
        for layer in self.features[:RELU5]:
            x = layer(x)
        return self.head(x.mean(dim=(2, 3)))


def build_trunk(classes: int, seed: int) -> TrunkClassifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeding.derive_seed(seed, "init", INIT_INDEX))
        return TrunkClassifier(classes)


def to_images(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, 3] → float [N, 3, H, W] in [-1, 1]."""
    return frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def trunk_state(model: TrunkClassifier) -> dict[str, torch.Tensor]:
    """torchvision's `features.<i>.*` tensors of the trunk (what `lpips_distance.load_trunk` reads)."""
    return {f"features.{k}": v.detach().cpu().contiguous() for k, v in model.features.state_dict().items()}


def _autocast(device: torch.device):
    return torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")


def step_loss(phase: TrunkPhaseConfig, model: TrunkClassifier, space: LabelSpace, frames: torch.Tensor,
              targets: torch.Tensor, seed: int):
    """`loop.fit`'s step: `batch_size` random frames of random clips, half flipped, drawn by (seed, step)."""
    device = frames.device

    def loss(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        g = seeding.generator(seed, "data_order", 3 * step + STREAM)
        idx = torch.randint(frames.shape[0], (phase.batch_size,), generator=g)
        t = torch.randint(frames.shape[1], (phase.batch_size,), generator=g)
        flip = (torch.rand(phase.batch_size, generator=g) < 0.5).to(device)
        x = to_images(frames[idx.to(device), t.to(device)])
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        with _autocast(device):
            logits = model(x)
        return space.loss(logits, targets[idx.to(device)])

    return loss


def logits_of(model: TrunkClassifier, frames: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits [N, classes] (float32, CPU) of frames uint8 [N, H, W, 3]."""
    out = []
    with torch.no_grad(), _autocast(frames.device):
        for i in range(0, frames.shape[0], batch_size):
            out.append(model(to_images(frames[i:i + batch_size])).float().cpu())
    return torch.cat(out)


def validation(model: TrunkClassifier, space: LabelSpace, frames: torch.Tensor, targets: torch.Tensor):
    """`loop.fit`'s validation on the middle frame of each validation clip: loss and mean accuracy over sets."""

    def validate() -> dict[str, float]:
        logits = logits_of(model, frames[:, frames.shape[1] // 2])
        loss, _ = space.loss(logits, targets.cpu())
        rows = space.accuracy_rows(logits, targets.cpu(), targets.cpu())
        return {"loss": loss.item(), "accuracy": sum(r["accuracy"] for r in rows) / len(rows)}

    return validate


__all__ = ["TrunkClassifier", "build_trunk", "trunk_state", "step_loss", "logits_of", "validation", "to_images"]
