"""An offline caption tokenizer for the `smoke` and `proxy` text encoders.

Why: the Wan pipeline tokenizes prompts with a T5 (UMT5) tokenizer, and diffusers' own Wan tests fetch a tiny
one from the hub, which this project cannot reach. The `full` profile uses the real UMT5 tokenizer that ships in
the Wan2.1 diffusers folder (`tokenizer/`); the small models the project builds itself use this one instead.

What: a SentencePiece-style Unigram model trained with the `tokenizers` library on a fixed built-in corpus (the
caption vocabulary of the procedural world plus basic English), wrapped as a transformers `T5Tokenizer` with
T5's special-token layout (`<pad>`=0, `</s>`=1, `<unk>`=2) and its post-processor (append `</s>`). So the stock
`WanImageToVideoPipeline._get_t5_prompt_embeds` call (padding="max_length", max_length=512, truncation,
add_special_tokens, return_attention_mask) works unchanged. Every printable ASCII character has a piece; other
characters map to `<unk>`.

Deterministic: the corpus is a fixed function of the word lists below; the Unigram trainer's EM sums in hash
order, so its scores vary in the last bits from run to run: they are rounded, and pieces are ordered by
(score, piece), so every build yields the same vocabulary and ids. Training takes milliseconds: nothing is cached.
"""
from __future__ import annotations

import functools
import json
import string

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import T5Tokenizer

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # T5's ids 0, 1, 2
VOCAB_SIZE = 512  # an upper bound: the trainer stops earlier when the corpus supports fewer pieces
_SCORE_DECIMALS = 6
# every printable ASCII character gets a piece, so English captions tokenize without <unk>
PRINTABLE_ASCII = string.ascii_letters + string.digits + string.punctuation

COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "black", "grey", "brown",
           "teal", "cyan", "magenta", "golden", "silver", "dark", "pale", "bright", "warm", "cold")
SHAPES = ("circle", "square", "triangle", "star", "ring", "disc", "cube", "sphere", "stripe", "checkerboard",
          "dots", "cross", "hexagon", "blob", "ball", "bar", "grid", "gradient", "texture", "pattern")
MOTIONS = ("moves left", "moves right", "drifts upward", "falls down", "rotates slowly", "spins quickly",
           "bounces", "slides across the frame", "grows", "shrinks", "orbits the centre", "zigzags", "pulses",
           "fades in", "fades out", "stays still")
CAMERA_MOVES = ("static camera", "slow dolly in", "slow dolly out", "pan left", "pan right", "tilt up",
                "tilt down", "tracking shot", "slow zoom in", "zoom out", "handheld camera", "crane shot",
                "push in")
LOOKS = ("cinematic", "film look", "colour grade", "teal and orange grade", "warm grade", "cold grade",
         "letterbox", "black bars", "anamorphic widescreen", "film grain", "vignette", "soft light",
         "high contrast", "low key lighting", "shallow depth of field", "moody", "dramatic", "golden hour",
         "night", "35mm film", "plain studio look", "flat lighting", "neutral colours", "clean background")
FIGURES = ("a figure", "a person", "an actor", "a stick figure", "a dancer", "a boxer")
ACTIONS = ("walks forward", "walks to the left", "walks to the right", "waves an arm", "waves both arms",
           "boxes", "throws a punch", "jumps", "runs", "turns around", "stands still", "raises its arms", "kicks")
PHOTOS = ("astronaut", "coffee cup", "rocket", "cameraman", "cat", "coins", "horse", "moon", "brick wall",
          "grass", "gravel", "rocks", "hubble deep field", "chinese temple", "flower", "page of text", "logo")
BASIC_ENGLISH = ("the of and with on in at over under from to into across behind front near far up down "
                 "left right slowly quickly small large big tiny one two three several many scene shot video "
                 "clip frame light shadow color colour sky ground floor wall room street day it its this that "
                 "very while then as by is are has have was were be not no yes good bad new old high low first "
                 "last next time place people man woman child hand face eye head body arm leg water fire tree "
                 "house car road city sun rain snow wind open close look see move make take give go come")


def caption_corpus() -> list[str]:
    """The fixed training corpus: procedural-world captions plus basic English, in a fixed order."""
    lines = []
    for i in range(2000):
        colour, background = COLOURS[i % len(COLOURS)], COLOURS[(7 * i + 3) % len(COLOURS)]
        shape, motion = SHAPES[(3 * i) % len(SHAPES)], MOTIONS[(5 * i) % len(MOTIONS)]
        camera, look = CAMERA_MOVES[(11 * i) % len(CAMERA_MOVES)], LOOKS[(13 * i) % len(LOOKS)]
        figure, action = FIGURES[i % len(FIGURES)], ACTIONS[(3 * i) % len(ACTIONS)]
        photo = PHOTOS[(7 * i) % len(PHOTOS)]
        lines += [
            f"a {colour} {shape} {motion} on a {background} background, {camera}",
            f"{look.capitalize()}, {camera}: a {colour} {shape} {motion}, {LOOKS[(17 * i + 5) % len(LOOKS)]}",
            f"{figure} {action} in front of a {background} wall, {camera}, {look}",
            f"A photo of a {photo}, the camera moves over it: {camera}, {look}",
        ]
    lines.append(BASIC_ENGLISH)
    return lines


@functools.cache
def caption_vocab(vocab_size: int) -> tuple[tuple[str, float], ...]:
    """(piece, log-probability) pairs: special tokens first, then pieces by descending score."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([  # the same pre-tokenization as T5Tokenizer
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
    ])
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                      unk_token="<unk>", show_progress=False)
    tokenizer.train_from_iterator(caption_corpus(), trainer)
    trained = json.loads(tokenizer.to_str())["model"]["vocab"]
    pieces = sorted(((p, round(s, _SCORE_DECIMALS)) for p, s in trained if p not in SPECIAL_TOKENS),
                    key=lambda ps: (-ps[1], ps[0]))
    # characters the corpus lacks get one fixed score far below any learned piece: used only when nothing
    # else segments the text (the trainer's own `initial_alphabet` scores them in hash order)
    fallback = pieces[-1][1] - 10.0
    known = {p for p, _ in pieces}
    pieces += [(c, fallback) for c in PRINTABLE_ASCII if c not in known]
    return tuple((t, 0.0) for t in SPECIAL_TOKENS) + tuple(pieces)


def build_caption_tokenizer(vocab_size: int = VOCAB_SIZE) -> T5Tokenizer:
    """A fresh T5Tokenizer over the built-in caption vocabulary (no network, no files)."""
    return T5Tokenizer(vocab=list(caption_vocab(vocab_size)), extra_ids=0)


__all__ = ["build_caption_tokenizer", "caption_vocab", "caption_corpus", "SPECIAL_TOKENS", "VOCAB_SIZE"]
