"""World attributes as class labels: the targets the proxy evaluators learn (the I3D on clips, the AlexNet trunk
on frames), as Kinetics' action classes were I3D's.

A label set maps a clip's attributes (`cinelora.data.world.clip_attributes`) to one class name, or to None where it
does not apply (a photo has no object colour). Label sets (`cinelora.config.CLIP_LABEL_SETS`, `FRAME_LABEL_SETS`):
- `domain`: the world domain;
- `camera`: the camera move, by direction (`canonical_camera`: a cinematic "slow dolly in" and a studio "camera zooms
  in" are both "zoom in"), so it needs the clip's frames in order;
- `motion`: what the main subject does: the first figure's action, else the first shape's motion, else the
  particles' kind (snow falls, embers rise, ...);
- `object`: the main subject: "figure", a shape's name, or the photo shown;
- `colour`: the first figure's shirt, else the first shape's colour;
- `backdrop`: the backdrop's kind ("room" for the actors' room).
The classes of a set are the names found in the training corpus, sorted (`LabelSpace.from_attributes`); a network's
logits hold one block per set, in the configured order, and its sidecar lists the classes.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100  # the target of a label that does not apply to a clip, or whose class the training corpus lacks


def canonical_camera(move: str) -> str:
    """A camera move by its direction: pan left|right, tilt up|down, zoom in|out, or static (the world's move
    names end in the direction: `world._draw_camera`)."""
    direction = move.rsplit(" ", 1)[-1]
    return {"left": "pan left", "right": "pan right", "up": "tilt up", "down": "tilt down", "in": "zoom in",
            "out": "zoom out"}.get(direction, "static")


def _motion(a: dict) -> str | None:
    if a.get("figures"):
        return a["figures"][0]["action"]
    if a.get("objects"):
        return a["objects"][0]["motion"]
    return a["kind"] if a["domain"] == "particles" else None


def _object(a: dict) -> str | None:
    if a.get("figures"):
        return "figure"
    if a.get("objects"):
        return a["objects"][0]["shape"]
    return a.get("photo")


def _colour(a: dict) -> str | None:
    if a.get("figures"):
        return a["figures"][0]["shirt"]
    return a["objects"][0]["colour"] if a.get("objects") else None


def _backdrop(a: dict) -> str | None:
    if "backdrop" in a:
        return a["backdrop"]["kind"]
    return "room" if "room" in a else None


LABELS: dict[str, Callable[[dict], str | None]] = {
    "domain": lambda a: a["domain"],
    "motion": _motion,
    "camera": lambda a: canonical_camera(a["camera"]["move"]) if "camera" in a else None,
    "object": _object,
    "colour": _colour,
    "backdrop": _backdrop,
}


@dataclass(frozen=True)
class LabelSpace:
    """The classes of each label set; logits [N, total] hold the sets' blocks in order."""
    classes: dict[str, tuple[str, ...]]

    @classmethod
    def from_attributes(cls, names: list[str], attributes: list[dict]) -> LabelSpace:
        return cls({n: tuple(sorted({v for a in attributes if (v := LABELS[n](a)) is not None})) for n in names})

    @property
    def total(self) -> int:
        return sum(len(c) for c in self.classes.values())

    def blocks(self) -> dict[str, tuple[int, int]]:
        """{label set: (first logit, one past its last)}."""
        out, start = {}, 0
        for name, classes in self.classes.items():
            out[name] = (start, start + len(classes))
            start += len(classes)
        return out

    def encode(self, attributes: list[dict]) -> torch.Tensor:
        """Targets long [N, sets]: class indices, IGNORE where a label does not apply or its class is unknown."""
        index = {n: {c: i for i, c in enumerate(classes)} for n, classes in self.classes.items()}
        return torch.tensor([[index[n].get(LABELS[n](a), IGNORE) for n in self.classes] for a in attributes],
                            dtype=torch.long).reshape(len(attributes), len(self.classes))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Sum over label sets of the cross-entropy of their block (mean over the clips the set applies to)."""
        total, terms = logits.new_zeros(()), {}
        for j, (name, (a, b)) in enumerate(self.blocks().items()):
            keep = targets[:, j] != IGNORE
            if keep.any():
                ce = F.cross_entropy(logits[keep, a:b].float(), targets[keep, j])
                total = total + ce
                terms[f"ce_{name}"] = ce.item()
        return total, terms

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Predicted class per set, long [N, sets]."""
        return torch.stack([logits[:, a:b].argmax(1) for a, b in self.blocks().values()], dim=1)

    def accuracy_rows(self, logits: torch.Tensor, targets: torch.Tensor, train_targets: torch.Tensor) -> list[dict]:
        """Per label set: accuracy on the clips it applies to, beside two chance levels: `chance_majority` (always
        answering the training corpus's most frequent class) and `chance_uniform` (1 / classes)."""
        predicted, rows = self.predict(logits.float()), []
        for j, (name, classes) in enumerate(self.classes.items()):
            keep = targets[:, j] != IGNORE
            counts = Counter(train_targets[train_targets[:, j] != IGNORE, j].tolist())
            majority = counts.most_common(1)[0][0] if counts else IGNORE
            n = int(keep.sum())
            rows.append({"label_set": name, "classes": len(classes), "clips": n,
                         "accuracy": float((predicted[keep, j] == targets[keep, j]).float().mean()) if n else 0.0,
                         "chance_majority": float((targets[keep, j] == majority).float().mean()) if n else 0.0,
                         "chance_uniform": 1.0 / len(classes) if classes else 0.0})
        return rows


__all__ = ["IGNORE", "LABELS", "LabelSpace", "canonical_camera"]
