"""Video files, read and written with PyAV (the ``video`` extra: ``pip install 'deltaprop[video]'``).

PyAV is FFmpeg's libraries bound in-process: one package whose wheels bundle FFmpeg (no ``ffmpeg`` program to
find or run), frames come out as NumPy arrays, and a damaged file is an exception this module turns into the
project's one-line error. Its wheel is about 36 MB (133 MB installed, mostly FFmpeg's codecs); imageio with
imageio-ffmpeg, the other candidate, installs 168 MB and pipes raw frames through an ``ffmpeg`` subprocess.

- :class:`VideoReader`: the frames of a video's first video stream as float32 (3, H, W) RGB in [0, 1], in
  display order. A stream of more pixels a frame than the picture budget (``data.images.max_image_pixels``) is
  refused before a frame is decoded; frames far larger than the network input are reduced as they are
  converted (``data.images.reduction``, the rule of photos).
- :class:`VideoWriter`: RGB uint8 frames into a new video, written as every file deltaprop writes: into a
  temporary file beside the target, renamed over it when complete (an interrupted or failed write leaves no
  file). The container and codec come from the name: ``.mp4``, ``.mkv``, ``.mov`` (H.264), ``.avi`` (Motion
  JPEG, as Darknet's ``-out_filename`` writes). Frames of an odd width or height get one more column or row,
  a copy of the last (H.264 and Motion JPEG store colour at half resolution).
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

import numpy as np

from ..errors import ConfigError, DataError
from .images import MAX_PIXELS_SETTING, max_image_pixels, reduction

PathLike = Union[str, "os.PathLike[str]"]
#: Video files written here: extension → (FFmpeg container, codec, pixel format).
WRITTEN = {".mp4": ("mp4", "libx264", "yuv420p"), ".mkv": ("matroska", "libx264", "yuv420p"),
           ".mov": ("mov", "libx264", "yuv420p"), ".avi": ("avi", "mjpeg", "yuvj420p")}
#: When FFmpeg's build has no H.264 encoder: MPEG-4 part 2, which every FFmpeg has.
FALLBACK_CODEC = "mpeg4"
#: Frames per second of a video whose stream does not say.
DEFAULT_FPS = 25.0


def _av():
    try:
        import av
    except ImportError:
        raise ImportError("reading and writing videos needs PyAV: pip install 'deltaprop[video]' (or pip install "
                          "av)") from None
    return av


def _reason(e: BaseException) -> str:
    """FFmpeg's words for a failure (its ``strerror``, without the file descriptor PyAV appends), or the
    exception's."""
    text = (getattr(e, "strerror", None) or str(e)).strip().replace("\n", " ")
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class VideoReader:
    """``with VideoReader(path, fit=(w, h)) as video: for frame in video: ...``: the frames of ``path``'s first
    video stream. ``width``, ``height``: a frame's size in the file; ``size``: as the frames come out (reduced
    for ``fit``); ``fps``; ``frames``: the count the file declares (0 when it does not)."""

    def __init__(self, path: PathLike, fit: Optional[Tuple[int, int]] = None,
                 max_pixels: Optional[int] = None) -> None:
        from .files import open_regular
        av = _av()
        self.path = os.fspath(path)
        self._file = open_regular(self.path, "video file")   # a FIFO, device or directory: refused at once
        try:
            self._container = av.open(self._file, "r")
        except Exception as e:  # noqa: BLE001 - FFmpeg's failure to recognise or open the file
            self._file.close()
            raise DataError(f"{self.path}: cannot read video: {_reason(e)}") from None
        try:
            streams = self._container.streams.video
            if not streams:
                raise DataError(f"{self.path}: no video stream in this file")
            self._stream = streams[0]
            self.width, self.height = int(self._stream.width), int(self._stream.height)
            if self.width < 1 or self.height < 1:
                raise DataError(f"{self.path}: video frames of {self.width}x{self.height} pixels: no pixels")
            limit = max_image_pixels() if max_pixels is None else int(max_pixels)
            if self.width * self.height > limit:
                raise DataError(f"{self.path}: video frames of {self.width}x{self.height} = "
                                f"{self.width * self.height:,} pixels, more than the budget of {limit:,} pixels "
                                f"({MAX_PIXELS_SETTING} raises it)")
            k = reduction(self.width, self.height, fit)
            self.size = (self.width // k, self.height // k)
            rate = self._stream.average_rate or self._stream.guessed_rate
            self.fps = float(rate) if rate else DEFAULT_FPS
            self.frames = int(self._stream.frames or 0)
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Iterator[np.ndarray]:
        w, h = self.size
        reduced = (w, h) != (self.width, self.height)
        decoded = self._container.decode(self._stream)
        while True:
            try:
                frame = next(decoded)
                rgb = (frame.to_ndarray(width=w, height=h, format="rgb24") if reduced
                       else frame.to_ndarray(format="rgb24"))
            except StopIteration:
                return
            except MemoryError:
                raise DataError(f"{self.path}: out of memory decoding a {self.width}x{self.height} frame") from None
            except Exception as e:  # noqa: BLE001 - FFmpeg's decoders on damaged data
                raise DataError(f"{self.path}: cannot read video: damaged frames ({_reason(e)})") from None
            yield np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)

    def close(self) -> None:
        self._container.close()
        self._file.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def written_format(path: PathLike) -> Tuple[str, str, str]:
    """(container, codec, pixel format) of a video written to ``path`` (by its extension); a ConfigError names
    the extensions when it is none of them."""
    suffix = Path(path).suffix.lower()
    if suffix not in WRITTEN:
        raise ConfigError(f"{path}: videos are written as {', '.join(WRITTEN)}; not '{suffix or 'no extension'}'")
    return WRITTEN[suffix]


class VideoWriter:
    """``with VideoWriter(path, fps) as out: out.write(rgb)``: RGB uint8 (H, W, 3) frames, all of one size,
    into a new video at ``path`` (module docstring); the file appears only when the block ends without error."""

    def __init__(self, path: PathLike, fps: float) -> None:
        av = _av()
        self.path = Path(path)
        self.container_format, codec, self.pix_fmt = written_format(self.path)
        self.codec = codec if codec in av.codecs_available else FALLBACK_CODEC
        self.fps = Fraction(float(fps)).limit_denominator(1001) if fps > 0 else Fraction(int(DEFAULT_FPS))
        self.frames = 0
        self._writer = None
        self._file = None
        self._container = None
        self._stream = None
        self._size: Optional[Tuple[int, int]] = None

    def _open(self, width: int, height: int) -> None:
        from ..atomic import atomic_writer
        av = _av()
        self._writer = atomic_writer(self.path, "wb")
        self._file = self._writer.__enter__()
        self._container = av.open(self._file, "w", format=self.container_format)
        self._stream = self._container.add_stream(self.codec, rate=self.fps)
        self._stream.width, self._stream.height = width + width % 2, height + height % 2
        self._stream.pix_fmt = self.pix_fmt
        self._size = (width, height)

    def write(self, rgb: np.ndarray) -> None:
        """Append one frame (uint8 (H, W, 3), the size of the first)."""
        av = _av()
        rgb = np.asarray(rgb, dtype=np.uint8)
        h, w = rgb.shape[:2]
        if self._container is None:
            self._open(w, h)
        elif (w, h) != self._size:
            raise DataError(f"{self.path}: frame {self.frames + 1} is {w}x{h}, the video's frames are "
                            f"{self._size[0]}x{self._size[1]}")
        if w % 2 or h % 2:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    def close(self, ok: bool = True) -> None:
        """Finish the video (``ok``) and rename it into place, or drop it."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        try:
            if ok:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            self._container.close()
        except BaseException as e:
            writer.__exit__(type(e), e, e.__traceback__)
            raise
        if ok:
            writer.__exit__(None, None, None)
        else:
            err = RuntimeError("video write abandoned")
            try:
                writer.__exit__(RuntimeError, err, None)
            except RuntimeError:
                pass

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)


__all__ = ["VideoReader", "VideoWriter", "written_format", "WRITTEN", "DEFAULT_FPS"]
