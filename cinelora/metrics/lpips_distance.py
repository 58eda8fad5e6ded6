"""LPIPS (Zhang et al. 2018, arXiv 1801.03924) through the `lpips` package, version 0.1 linear heads.

The trunk comes from torchvision's standard weight file in the torch hub cache (`backbone="torchvision"`),
never downloaded and read with `weights_only=True` (`load_trunk`): a missing file is one clear error.
`backbone="random"` builds a seeded random trunk (`pnet_rand=True`): smoke scale only, and every result
written with it says so. Any other backbone is the path of a trunk file with torchvision's `features.*` keys
(a `.safetensors` file: the proxy instrument's AlexNet trunk, trained by experiments/proxy_evaluators).

Linear heads (the five 1×1 convolutions `lin0..lin4`, seven for squeeze) come from one place whatever their
origin: `heads=""` reads the package's shipped v0.1 file (a torch pickle, read with `weights_only=True` and
converted), any other value names a safetensors file this project trained (`save_heads`, same state-dict
keys as the package, e.g. `lin0.model.1.weight`; a "tune" file also holds the trunk as `net.*`).
"""
from __future__ import annotations

import json
import pickle
import re
import warnings
from pathlib import Path

import lpips
import torch
from safetensors.torch import load_file, save

from cinelora import seeding
from cinelora.atomic import atomic_write_bytes, atomic_write_text

TRUNK_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth", "squeeze": "squeezenet1_1-b8a52dc0.pth"}
SHIPPED_HEADS_DIR = Path(lpips.__file__).parent / "weights" / "v0.1"
BACKBONES = ("torchvision", "random")  # or the path of a trunk file (`is_trunk_file`)


class MissingWeightsError(FileNotFoundError):
    """An evaluator's weight file is absent; the message says which file goes where."""


def trunk_path(net: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / TRUNK_FILES[net]


def new_lpips(net: str, backbone: str, seed: int, *, tune: bool = False) -> lpips.LPIPS:
    """LPIPS with randomly initialised (seeded) linear heads, in train mode: the start of head training.

    Heads keep the package's dropout (as LPIPS trains them), so state-dict keys match the shipped files.
    `tune=True` also makes the trunk trainable. The same (net, backbone, seed) always gives the same heads
    and random trunk, so natural and adversarial training start from identical weights.
    """
    if net not in TRUNK_FILES:
        raise ValueError(f"LPIPS net: found {net!r}, expected one of {list(TRUNK_FILES)}")
    if backbone == "torchvision":
        path = trunk_path(net)
        if not path.is_file():
            raise MissingWeightsError(
                f"LPIPS '{net}' needs torchvision's trunk weights at {path} (file {TRUNK_FILES[net]}); "
                "copy it there (or set TORCH_HOME), or use a `random` backbone for smoke/proxy runs")
    elif is_trunk_file(backbone):
        path = Path(backbone)
        if not path.is_file():
            raise MissingWeightsError(
                f"LPIPS '{net}' trunk file {path} is missing: the proxy trunk is written by `python -m cinelora run "
                "--config experiments/proxy_evaluators/config.yaml --profile <profile>` (run it first)")
    elif backbone != "random":
        raise ValueError(f"LPIPS backbone: found {backbone!r}, expected one of {list(BACKBONES)} or the path of a "
                         "trunk file (.safetensors)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeding.derive_seed(seed, "lpips_init"))
        # always built without weights (pnet_rand): the package would have torchvision unpickle the trunk file
        # (load_state_dict_from_url, weights_only=False); the same modules are drawn either way, so the heads'
        # seeded init does not depend on the backbone
        with warnings.catch_warnings():  # the package calls torchvision's deprecated `pretrained=`: not ours to mend
            warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
            model = lpips.LPIPS(pretrained=False, net=net, version="0.1", pnet_rand=True, pnet_tune=tune,
                                use_dropout=True, eval_mode=False, verbose=False)
    if backbone != "random":
        load_trunk(model, path)
    return model


def is_trunk_file(backbone: str) -> bool:
    """Whether an LPIPS backbone names a trunk file (the path of a `.safetensors` file), not a source keyword."""
    return backbone.endswith(".safetensors")


def load_trunk(model: lpips.LPIPS, path: Path) -> None:
    """Load torchvision's trunk file (`features.<i>.*` of its state dict) into the LPIPS trunk (`slice<k>.<i>.*`),
    read with `weights_only=True`: a file that is not a plain tensor state dict is refused, never unpickled. A
    `.safetensors` file holds those keys alone (the classifier's are not needed), in any float dtype (upcast)."""
    if path.suffix == ".safetensors":
        state = load_file(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(f"{path}: not a plain tensor state dict; refused to unpickle it "
                             f"({str(err).splitlines()[0]})") from None
    mapped = {}
    for key in model.net.state_dict():
        index, rest = re.fullmatch(r"slice\d+\.(\d+)\.(.+)", key).groups()
        if f"features.{index}.{rest}" not in state:
            raise ValueError(f"{path}: no tensor features.{index}.{rest}; expected torchvision's "
                             f"{path.name} state dict")
        mapped[key] = state[f"features.{index}.{rest}"]
    model.net.load_state_dict(mapped)


def read_heads(net: str, heads: str | Path = "") -> dict[str, torch.Tensor]:
    """Head state dict: the package's shipped v0.1 heads for `heads=""`, else a project safetensors file."""
    if not str(heads):
        return torch.load(SHIPPED_HEADS_DIR / f"{net}.pth", map_location="cpu", weights_only=True)
    path = Path(heads)
    if not path.is_file():
        raise MissingWeightsError(f"LPIPS heads file {path} is missing: train it with `python -m cinelora "
                                  "rlpips-train` (it writes heads_*.safetensors), or use '' for the shipped heads")
    return load_file(path)


def _is_head_key(key: str) -> bool:
    # `lins.<i>.*` aliases `lin<i>.*` (the package keeps both a ModuleList and attributes); files use `lin<i>`.
    return re.match(r"lin\d+\.", key) is not None


def _head_keys(model: lpips.LPIPS) -> set[str]:
    return {k for k in model.state_dict() if _is_head_key(k)}


def load_heads(model: lpips.LPIPS, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy heads (and, for a "tune" file, the trunk `net.*`) into `model`; every head key must be present."""
    expected = _head_keys(model)
    allowed = expected | {k for k in model.state_dict() if k.startswith("net.")}
    missing, unexpected = expected - state.keys(), state.keys() - allowed
    if missing or unexpected:
        raise ValueError(f"{source}: LPIPS '{model.pnet_type}' heads: missing keys {sorted(missing)}, "
                         f"unexpected keys {sorted(unexpected)}")
    model.load_state_dict(state, strict=False)


def build_lpips(net: str, backbone: str, seed: int, heads: str | Path = "") -> lpips.LPIPS:
    """A frozen LPIPS model in eval mode; inputs [N, 3, H, W] in [-1, 1], output [N, 1, 1, 1].

    `heads`: "" = the package's shipped v0.1 heads, else a safetensors file written by `save_heads`.
    """
    model = new_lpips(net, backbone, seed)
    load_heads(model, read_heads(net, heads), str(heads) or f"shipped {net}.pth")
    return model.eval().requires_grad_(False)


def save_heads(model: lpips.LPIPS, path: str | Path, *, mode: str, training: str, data: str, backbone: str,
               attack: dict | None = None) -> None:
    """Write the heads (mode "lin"; "tune" adds the trunk) as safetensors plus a `<stem>.json` sidecar.

    Sidecar: net, version, mode, training ("natural" | "adversarial"), attack (norm, target, eps and steps
    with their units; null when natural), data (which 2AFC data, proxy or real), backbone, keys.
    """
    if mode not in ("lin", "tune") or training not in ("natural", "adversarial"):
        raise ValueError(f"save_heads: mode {mode!r} / training {training!r}; expected lin|tune / natural|adversarial")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if _is_head_key(k) or (mode == "tune" and k.startswith("net."))}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(state, metadata={"format": "pt"}))
    sidecar = {"weights": path.name, "net": model.pnet_type, "version": "0.1", "mode": mode, "training": training,
               "attack": attack, "data": data, "backbone": backbone, "keys": sorted(state)}
    atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=2, sort_keys=True) + "\n")


@torch.no_grad()
def lpips_per_frame(model: lpips.LPIPS, generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """[T] LPIPS between matching frames of two clips [T, 3, H, W] in [-1, 1]."""
    if generated.shape != reference.shape:
        raise ValueError(f"clip shapes differ: generated {tuple(generated.shape)} vs reference {tuple(reference.shape)}")
    device = next(model.parameters()).device
    return model(generated.to(device, torch.float32), reference.to(device, torch.float32)).flatten().cpu()
