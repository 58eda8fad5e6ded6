"""The proxy CLIP: a small transformers `CLIPModel` (ViT image tower at the corpus frame size, the offline caption
tokenizer of `cinelora.metrics.clip_sim`) trained with CLIP's symmetric contrastive loss (Radford et al. 2021,
arXiv 2103.00020, Fig. 3) on (frame, caption) pairs of the world: each step takes one random frame of each clip of
the batch with the clip's caption. Saved as a transformers folder that `clip_sim.load_clip` reads.

The image preprocessing in training is the saved processor's (CLIP's mean and std; the frame is already the image
size, so its resize and crop leave it unchanged: a test holds the two to each other).

Retrieval (`retrieval_recall`): recall@k of text→image and image→text on held-out pairs. Captions repeat (a few
photos under a few camera moves share one), so a retrieved item counts as correct when its caption is the query's;
chance is computed exactly for each query from how many items share its caption (`chance_recall`).
"""
from __future__ import annotations

import math

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from cinelora import seeding
from cinelora.config import CLIPPhaseConfig
from cinelora.metrics import clip_sim

STREAM = 1  # data-order stream: step s draws from index 3·s + STREAM (I3D 0, trunk 2)
RECALL_AT = (1, 5)


def build_clip(phase: CLIPPhaseConfig, image_size: int, seed: int) -> tuple[CLIPModel, CLIPProcessor]:
    """A seeded CLIPModel of the configured size (trainable) and its processor (the offline tokenizer)."""
    tokenizer = clip_sim.build_clip_tokenizer()
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    tower = dict(hidden_size=phase.hidden_size, intermediate_size=4 * phase.hidden_size,
                 num_hidden_layers=phase.layers, num_attention_heads=phase.heads)
    config = CLIPConfig(text_config=dict(vocab_size=len(tokenizer), max_position_embeddings=clip_sim.CONTEXT_LENGTH,
                                         **tower, **ids),
                        vision_config=dict(image_size=image_size, patch_size=phase.patch_size, **tower),
                        projection_dim=phase.projection_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeding.derive_seed(seed, "init", clip_sim.INIT_INDEX))
        model = CLIPModel(config)
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def pixel_values(processor: CLIPProcessor, frames: torch.Tensor) -> torch.Tensor:
    """CLIP's input [N, 3, H, W] of frames uint8 [N, H, W, 3] already at the image size: scaled to [0, 1], then
    normalised with the processor's mean and std (what its resize, crop and normalisation give at that size)."""
    ip = processor.image_processor
    mean = torch.tensor(ip.image_mean, device=frames.device).view(1, 3, 1, 1)
    std = torch.tensor(ip.image_std, device=frames.device).view(1, 3, 1, 1)
    return (frames.permute(0, 3, 1, 2).float() / 255.0 - mean) / std


def tokenize(processor: CLIPProcessor, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) long [N, L] of captions, truncated to CLIP's context as `clip_sim` does."""
    tokens = processor.tokenizer(captions, padding=True, truncation=True, max_length=clip_sim.CONTEXT_LENGTH,
                                 return_tensors="pt")
    return tokens["input_ids"], tokens["attention_mask"]


def _autocast(device: torch.device):
    return torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")


def step_loss(phase: CLIPPhaseConfig, model: CLIPModel, processor: CLIPProcessor, frames: torch.Tensor,
              ids: torch.Tensor, mask: torch.Tensor, seed: int):
    """`loop.fit`'s step: `batch_size` clips and one random frame of each, drawn by (seed, step); CLIP's loss."""
    device = frames.device

    def loss(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        g = seeding.generator(seed, "data_order", 3 * step + STREAM)
        idx = torch.randperm(frames.shape[0], generator=g)[:phase.batch_size].to(device)
        t = torch.randint(frames.shape[1], (idx.shape[0],), generator=g).to(device)
        with _autocast(device):
            out = model(input_ids=ids[idx], attention_mask=mask[idx],
                        pixel_values=pixel_values(processor, frames[idx, t]), return_loss=True)
        return out.loss.float(), {"logit_scale": model.logit_scale.exp().item()}

    return loss


def embed(model: CLIPModel, processor: CLIPProcessor, frames: torch.Tensor, ids: torch.Tensor,
          mask: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit image and text embeddings [N, D] (float32) of frames uint8 [N, H, W, 3] and their tokens."""
    images, texts = [], []
    for i in range(0, frames.shape[0], batch_size):
        with _autocast(frames.device):
            images.append(model.get_image_features(
                pixel_values=pixel_values(processor, frames[i:i + batch_size])).pooler_output.float())
            texts.append(model.get_text_features(input_ids=ids[i:i + batch_size],
                                                 attention_mask=mask[i:i + batch_size]).pooler_output.float())
    return (torch.nn.functional.normalize(torch.cat(images), dim=-1),
            torch.nn.functional.normalize(torch.cat(texts), dim=-1))


def validation(model: CLIPModel, processor: CLIPProcessor, frames: torch.Tensor, ids: torch.Tensor,
               mask: torch.Tensor, captions: list[str]):
    """`loop.fit`'s validation: recall@1 both ways on the validation pairs (middle frame of each clip)."""

    def validate() -> dict[str, float]:
        images, texts = embed(model, processor, frames[:, frames.shape[1] // 2], ids, mask)
        recall = retrieval_recall(images.cpu(), texts.cpu(), captions)
        return {"t2i_r1": recall["t2i", 1], "i2t_r1": recall["i2t", 1]}

    return validate


def retrieval_recall(images: torch.Tensor, texts: torch.Tensor, captions: list[str],
                     ks: tuple[int, ...] = RECALL_AT) -> dict[tuple[str, int], float]:
    """{(direction, k): recall@k} of unit embeddings [N, D] of N (image, caption) pairs: "t2i" ranks the N images
    for each caption, "i2t" the N captions for each image; a hit is an item whose caption equals the query's among
    the top k (ties broken by index)."""
    group = torch.tensor([{c: i for i, c in enumerate(dict.fromkeys(captions))}[c] for c in captions])
    similarity = texts @ images.T  # [caption i, image j]
    out = {}
    for direction, scores in (("t2i", similarity), ("i2t", similarity.T)):
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        same = group[order] == group[:, None]
        for k in ks:
            out[direction, k] = float(same[:, :k].any(dim=1).float().mean())
    return out


def chance_recall(captions: list[str], k: int) -> float:
    """Expected recall@k of a random ranking: for a query whose caption g of the N items share, the chance that k
    items drawn without replacement include one of them, 1 − C(N − g, k) / C(N, k); averaged over queries."""
    n = len(captions)
    counts = {c: captions.count(c) for c in set(captions)}
    return sum(1 - math.comb(n - counts[c], k) / math.comb(n, k) for c in captions) / n


def recall_rows(images: torch.Tensor, texts: torch.Tensor, captions: list[str]) -> list[dict]:
    """Tidy rows: direction, k, recall, chance, pairs, distinct captions."""
    recall = retrieval_recall(images, texts, captions)
    return [{"direction": d, "k": k, "recall": recall[d, k], "chance": chance_recall(captions, k),
             "pairs": len(captions), "captions": len(set(captions))} for d in ("t2i", "i2t") for k in RECALL_AT]


def saved_model_recall(folder, frames: torch.Tensor, captions: list[str]) -> list[dict]:
    """Recall rows of the saved folder, read by `clip_sim.load_clip` and embedded by CLIP-SIM's own functions
    (`image_embeddings`, `text_embedding`): the numbers are those of the evaluator the study uses. Frames uint8
    [N, H, W, 3] (CPU), one per caption."""
    model, processor = clip_sim.load_clip(folder)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    images = clip_sim.image_embeddings(model, processor, frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0)
    unique = {c: clip_sim.text_embedding(model, processor, c) for c in dict.fromkeys(captions)}
    return recall_rows(images, torch.stack([unique[c] for c in captions]), captions)


__all__ = ["build_clip", "pixel_values", "tokenize", "step_loss", "embed", "validation", "retrieval_recall",
           "chance_recall", "recall_rows", "saved_model_recall", "RECALL_AT"]
