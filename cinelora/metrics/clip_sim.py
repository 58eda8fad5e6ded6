"""CLIP-SIM and CLIP frame consistency of a generated clip, through transformers' `CLIPModel`.

CLIP-SIM (as the text-to-video literature reports it, e.g. Wu et al. 2021, GODIVA; Singer et al. 2022, Make-A-Video)
is the mean over frames of the raw cosine between the CLIP image embedding of the frame and the CLIP text embedding
of the caption: in [-1, 1], not ×100 and not clamped at 0. torchmetrics' `CLIPScore` (Hessel et al. 2021) is a
different convention (100·cos, clamped at 0, ViT-L/14 by default, 0-255 images): never mix the two.
Frame consistency is the mean cosine between the image embeddings of consecutive frames (1 for a static clip).

Models: `load_clip` reads a local transformers folder (ViT-B/32 by default in `full`: openai/clip-vit-base-patch32,
or ViT-L/14: openai/clip-vit-large-patch14), safetensors only. `random_clip` builds a tiny random CLIPModel and an
offline tokenizer (smoke and tests: no hub, no files). Images go through the checkpoint's own CLIP preprocessing
(bicubic resize of the shorter side, centre crop, CLIP mean/std).
"""
from __future__ import annotations

import collections
import functools
import re
from pathlib import Path

import torch
from tokenizers import pre_tokenizers
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

from cinelora import seeding
from cinelora.metrics.lpips_distance import MissingWeightsError
from cinelora.tokenizer import caption_corpus

DEFAULT_HUB_ID = "openai/clip-vit-base-patch32"  # ViT-B/32, DESIGN.md §7
INIT_INDEX = 17  # derive_seed(seed, "init", 17); Wan components use 0-3, I3D 16
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CONTEXT_LENGTH = 77  # CLIP's text context; longer captions are truncated, as CLIP itself does
SMOKE_IMAGE_SIZE = 32


def _merge_pair(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged, i = [], 0
    while i < len(symbols):
        if symbols[i:i + 2] == pair:
            merged.append(pair[0] + pair[1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return tuple(merged)


@functools.cache
def caption_bpe_merges() -> tuple[tuple[str, str], ...]:
    """BPE merges (Sennrich et al. 2016) learned on the words of the caption corpus until every word is one token.

    Learned here rather than with the `tokenizers` BpeTrainer, which breaks ties between equally frequent pairs in
    hash order (its merges differ from process to process): ties go to the smallest pair, so the merges are a fixed
    function of the corpus. About 0.3 s, once per process.
    """
    counts = collections.Counter(re.findall(r"[a-z]+", " ".join(caption_corpus()).lower()))
    words = {(*word[:-1], word[-1] + "</w>"): count for word, count in counts.items()}  # CLIP marks word ends
    merges = []
    while True:
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for symbols, count in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += count
        if not pairs:
            return tuple(merges)
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        words = {_merge_pair(symbols, best): count for symbols, count in words.items()}


def build_clip_tokenizer() -> CLIPTokenizer:
    """An offline CLIP BPE tokenizer (CLIP's normalizer, pre-tokenizer and `</w>` word ends): the 256 byte-level
    symbols, alone and word-final, plus `caption_bpe_merges`; caption words are one token, others split into pieces."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {BOS: 0, EOS: 1}
    for token in [*alphabet, *(symbol + "</w>" for symbol in alphabet)]:
        vocab[token] = len(vocab)
    merges = list(caption_bpe_merges())
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CONTEXT_LENGTH)


def random_clip(seed: int) -> tuple[CLIPModel, CLIPProcessor]:
    """A tiny CLIPModel with seeded random weights and its processor (smoke scale: not the published metric)."""
    tokenizer = build_clip_tokenizer()
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=CONTEXT_LENGTH, **ids),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=SMOKE_IMAGE_SIZE, patch_size=8),
        projection_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeding.derive_seed(seed, "init", INIT_INDEX))
        model = CLIPModel(config)
    image_processor = CLIPImageProcessor(size={"shortest_edge": SMOKE_IMAGE_SIZE},
                                         crop_size={"height": SMOKE_IMAGE_SIZE, "width": SMOKE_IMAGE_SIZE})
    return model.eval().requires_grad_(False), CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def missing_clip_files(folder: Path) -> list[str]:
    """Files a transformers CLIP folder lacks (relative names); empty when complete."""
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    # the hub's CLIP folders carry preprocessor_config.json; CLIPProcessor.save_pretrained (transformers 5) writes
    # processor_config.json: either holds the image preprocessing
    if not any((folder / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
        missing.append("preprocessor_config.json (or processor_config.json)")
    if not any((folder / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
        missing.append("model.safetensors (weights are read from safetensors only, never unpickled)")
    if not ((folder / "tokenizer.json").is_file() or all((folder / f).is_file() for f in ("vocab.json", "merges.txt"))):
        missing.append("tokenizer.json (or vocab.json + merges.txt)")
    return missing


def load_clip(path: str | Path) -> tuple[CLIPModel, CLIPProcessor]:
    """CLIPModel (frozen, eval) and CLIPProcessor from a local transformers folder; nothing is downloaded."""
    folder = Path(path).expanduser()
    missing = missing_clip_files(folder) if folder.is_dir() else ["the folder itself"]
    if missing:
        raise MissingWeightsError(
            f"CLIP-SIM needs a transformers CLIP folder at {folder}; missing: {', '.join(missing)}.\n"
            f"On a machine with network access: hf download {DEFAULT_HUB_ID} --local-dir {folder} "
            "(ViT-B/32; openai/clip-vit-large-patch14 for ViT-L/14); smoke runs use random_clip instead.")
    model = CLIPModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
    return model.eval().requires_grad_(False), processor


@torch.no_grad()
def image_embeddings(model: CLIPModel, processor: CLIPProcessor, frames: torch.Tensor) -> torch.Tensor:
    """Unit-norm CLIP image embeddings [T, D] (float32, CPU) of frames [T, 3, H, W] in [-1, 1] (the processor's
    resize and normalisation run where the model is)."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"expected frames [T, 3, H, W], found shape {tuple(frames.shape)}")
    images = ((frames.float().clamp(-1, 1) + 1) / 2).to(model.device)  # [0, 1] floats, do_rescale=False
    pixels = processor.image_processor(images=images, do_rescale=False, return_tensors="pt",
                                       device=model.device)["pixel_values"]
    embeddings = model.get_image_features(pixel_values=pixels.to(model.device, model.dtype)).pooler_output
    return torch.nn.functional.normalize(embeddings.float(), dim=-1).cpu()


@torch.no_grad()
def text_embeddings(model: CLIPModel, processor: CLIPProcessor, captions: list[str]) -> torch.Tensor:
    """Unit-norm CLIP text embeddings [N, D] (float32, CPU) of captions (each truncated to CLIP's 77 tokens)."""
    tokens = processor.tokenizer(captions, padding=True, truncation=True, max_length=CONTEXT_LENGTH,
                                 return_tensors="pt").to(model.device)
    embedding = model.get_text_features(input_ids=tokens["input_ids"],
                                        attention_mask=tokens["attention_mask"]).pooler_output
    return torch.nn.functional.normalize(embedding.float(), dim=-1).cpu()


def text_embedding(model: CLIPModel, processor: CLIPProcessor, caption: str) -> torch.Tensor:
    """Unit-norm CLIP text embedding [D] (float32, CPU) of one caption."""
    return text_embeddings(model, processor, [caption])[0]


def caption_similarity(images: torch.Tensor, text: torch.Tensor) -> float:
    """Mean cosine of unit image embeddings [T, D] to a unit text embedding [D]; in [-1, 1]."""
    return float((images @ text).mean())


def consecutive_similarity(images: torch.Tensor) -> float:
    """Mean cosine between consecutive unit image embeddings [T ≥ 2, D]; in [-1, 1]."""
    if images.shape[0] < 2:
        raise ValueError(f"frame consistency needs at least 2 frames, found {images.shape[0]}")
    return float((images[1:] * images[:-1]).sum(dim=-1).mean())


def clip_sim(model: CLIPModel, processor: CLIPProcessor, frames: torch.Tensor, caption: str) -> float:
    """CLIP-SIM of frames [T, 3, H, W] in [-1, 1] to their caption: mean raw cosine, in [-1, 1], higher is better."""
    return caption_similarity(image_embeddings(model, processor, frames), text_embedding(model, processor, caption))


def frame_consistency(model: CLIPModel, processor: CLIPProcessor, frames: torch.Tensor) -> float:
    """Mean CLIP cosine between consecutive frames of [T ≥ 2, 3, H, W] in [-1, 1]; in [-1, 1], 1 for a static clip."""
    return consecutive_similarity(image_embeddings(model, processor, frames))


__all__ = ["DEFAULT_HUB_ID", "build_clip_tokenizer", "random_clip", "missing_clip_files", "load_clip",
           "image_embeddings", "text_embeddings", "text_embedding", "caption_similarity", "consecutive_similarity", "clip_sim",
           "frame_consistency"]
