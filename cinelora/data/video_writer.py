"""Writing video files: the procedural world's clips (lossless) and clips for people to watch (H.264).

The file's suffix picks the codec: `.avi` holds FFV1 frames, lossless, so the decoded frames are exactly the
written ones whichever encoder wrote them (the world is bit-exact on every machine); `.mp4` holds H.264 at CRF 10
(visually lossless). The encoder is ffmpeg (imageio-ffmpeg's binary) where there is one, else OpenCV's bundled
libavcodec (opencv-python-headless), which has no H.264 encoder: there `.mp4` gets MPEG-4 Part 2 at top quality.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from cinelora.atomic import atomic_path
from cinelora.data.videos import VideoDataError

ENCODERS = ("ffmpeg", "opencv")
CODECS = {".avi": "FFV1 (lossless)", ".mp4": "H.264 CRF 10 (ffmpeg) or MPEG-4 Part 2 (OpenCV)"}
# one encoder thread makes the bytes independent of the machine's core count; the bitexact flags keep library
# version strings out of the container
FFMPEG_PARAMS = {".avi": ["-threads", "1", "-fflags", "+bitexact", "-flags:v", "+bitexact"],
                 ".mp4": ["-crf", "10", "-threads", "1", "-fflags", "+bitexact", "-flags:v", "+bitexact"]}
FFMPEG_CODECS = {".avi": ("ffv1", "bgr0"), ".mp4": ("libx264", "yuv420p")}
OPENCV_FOURCC = {".avi": "FFV1", ".mp4": "mp4v"}


@functools.cache
def available_encoder() -> str:
    """"ffmpeg" if imageio-ffmpeg has its binary, else "opencv" if cv2 imports; RuntimeError naming both."""
    if importlib.util.find_spec("imageio_ffmpeg") is not None:
        import imageio_ffmpeg

        with contextlib.suppress(RuntimeError):  # the package without its binary: try OpenCV
            imageio_ffmpeg.get_ffmpeg_exe()
            return "ffmpeg"
    if importlib.util.find_spec("cv2") is not None:
        return "opencv"
    raise RuntimeError("no video encoder: install imageio-ffmpeg or opencv-python-headless (both in requirements.txt)")


def write_video(path: str | Path, frames: np.ndarray, fps: int, encoder: str | None = None) -> None:
    """Write uint8 frames [T, H, W, 3] (even H and W) to `path` (`.avi` or `.mp4`, `CODECS`) atomically (temp
    name, rename), with `encoder` (default `available_encoder()`)."""
    path = Path(path)
    if path.suffix not in CODECS:
        raise VideoDataError(path, f"suffix {path.suffix!r}", f"one of {list(CODECS)} ({CODECS})")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoDataError(path, f"frames of {frames.dtype} {tuple(frames.shape)}", "uint8 [T, H, W, 3]")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise VideoDataError(path, f"frames of {frames.shape[1]}x{frames.shape[2]}",
                             "even height and width (H.264 stores colour at half resolution)")
    encoder = encoder or available_encoder()
    if encoder not in ENCODERS:
        raise ValueError(f"video encoder {encoder!r}: expected one of {ENCODERS}")
    with atomic_path(path) as tmp:
        (_write_ffmpeg if encoder == "ffmpeg" else _write_opencv)(tmp, frames, fps)


def _write_ffmpeg(path: Path, frames: np.ndarray, fps: int) -> None:
    codec, pixels = FFMPEG_CODECS[path.suffix]
    # macro_block_size=1: imageio would otherwise silently resize sizes that are not multiples of 16
    with imageio.get_writer(path, format="FFMPEG", fps=fps, codec=codec, pixelformat=pixels, quality=None,
                            macro_block_size=1, ffmpeg_log_level="error",
                            ffmpeg_params=FFMPEG_PARAMS[path.suffix]) as writer:
        for frame in frames:
            writer.append_data(frame)


def _write_opencv(path: Path, frames: np.ndarray, fps: int) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*OPENCV_FOURCC[path.suffix]), fps,
                             (frames.shape[2], frames.shape[1]))
    if not writer.isOpened():
        raise VideoDataError(path, f"OpenCV cannot encode {OPENCV_FOURCC[path.suffix]!r}", "an OpenCV build with "
                             "libavcodec (opencv-python-headless)")
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 100)
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))  # OpenCV takes BGR
    writer.release()


__all__ = ["ENCODERS", "CODECS", "available_encoder", "write_video"]
