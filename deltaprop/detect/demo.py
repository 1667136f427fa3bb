"""Darknet's ``detector demo`` without a window: every frame of a video file or of a folder of pictures through
the path of ``detector test`` (``detect.predict``: letterbox, network, boxes, NMS; ``detect.draw``), written as
an annotated video or a folder of PNG frames, with each frame's time and the overall frames per second.

- The source: a folder (its pictures, sorted by name, each a frame; no extra package needed) or a video file
  (``data.video``, PyAV: the ``video`` extra). Frames far larger than the network input are reduced as they are
  decoded, as photos are (``data.images.reduction``); their boxes print in the original's pixels.
- The output: a video file when its name ends in a video extension (``data.video.WRITTEN``: ``.mp4``, ``.mkv``,
  ``.mov``, ``.avi``), at the source's frame rate (a folder's: ``fps``), else a folder of PNG frames (a folder
  source's frames keep their names, as ``detector test`` names them: ``<name>_pred.png``; a video's are
  ``frame_000001.png``, ...). Either appears only when the whole source is done: the video as every file
  deltaprop writes (a temporary file renamed), the folder built beside its place and renamed into it (unless
  ``exist_ok`` writes into a folder that holds files, frame by frame).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError, DataError
from .predict import Prediction, box_lines, detect_boxes

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class DemoResult:
    """What a demo did: ``frames``, ``boxes`` found, ``network_s`` (the time of ``Predicted in``, all frames),
    ``wall_s`` (decoding, detection, drawing and writing), where the output went (``out``)."""
    frames: int
    boxes: int
    network_s: float
    wall_s: float
    out: Path

    def summary(self) -> str:
        """Darknet's ``AVG_FPS`` in one line: frames, boxes, the network's rate and the whole loop's."""
        overall = self.frames / max(self.wall_s, 1e-9)
        per_frame = 1000 * self.network_s / max(self.frames, 1)
        return (f"{self.frames} frames, {self.boxes} boxes in {self.wall_s:.2f} s: AVG_FPS {overall:.1f} (decoding, "
                f"detection, drawing, writing); the network alone {per_frame:.1f} ms a frame "
                f"({self.frames / max(self.network_s, 1e-9):.1f} FPS); wrote {self.out}")


def is_video_name(path: PathLike) -> bool:
    """Whether an output named ``path`` is a video (else a folder of frames)."""
    from ..data.video import WRITTEN
    return Path(path).suffix.lower() in WRITTEN


class FrameSource:
    """The frames of ``source`` (a folder of pictures or a video file) for a network input ``fit = (w, h)``:
    iterating gives ``(name, image (3, h, w) float32, header)``; ``fps`` (a folder's: the one given), ``count``
    (0 when a video does not declare it), ``kind`` ("folder" or "video")."""

    def __init__(self, source: PathLike, fit: Tuple[int, int], fps: float = 25.0) -> None:
        from ..data.images import ImageHeader
        self.source = Path(source)
        self.fit = fit
        self._video = None
        if self.source.is_dir():
            from ..data.detection import read_image_list
            self.kind = "folder"
            self.pictures = read_image_list(self.source).paths
            if not self.pictures:
                raise DataError(f"{self.source}: no pictures in this folder (the frames of a demo)")
            self.fps, self.count = float(fps), len(self.pictures)
        else:
            from ..data.video import VideoReader
            self.kind = "video"
            self._video = VideoReader(self.source, fit=fit)
            self.fps, self.count = self._video.fps, self._video.frames
            self._header = ImageHeader(self._video.width, self._video.height, "RGB", "video")

    def describe(self) -> str:
        if self.kind == "folder":
            return f"{self.count} pictures of {self.source}"
        v = self._video
        size = f"{v.width}x{v.height}" + (f" (reduced to {v.size[0]}x{v.size[1]})" if v.size != (v.width, v.height)
                                           else "")
        return f"{self.source}: {v.frames or 'unknown number of'} frames of {size} at {v.fps:g} fps"

    def __iter__(self) -> Iterator[Tuple[str, np.ndarray, object]]:
        from ..data.images import image_header, load_image
        if self._video is None:
            for path in self.pictures:
                yield path, load_image(path, 3, fit=self.fit), image_header(path)
            return
        for k, frame in enumerate(self._video, 1):
            yield f"frame {k}", frame, self._header

    def close(self) -> None:
        if self._video is not None:
            self._video.close()


class FrameFolder:
    """PNG frames into the folder ``out``: built in a temporary folder beside it and renamed into place by
    :meth:`commit` (``out`` must be missing or empty), or, with ``exist_ok``, written into ``out`` as they come."""

    def __init__(self, out: Path, exist_ok: bool = False) -> None:
        self.out = out
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out}: exists and is not a folder (an output that is not a video "
                              f"({', '.join(_video_names())}) is a folder of frames)")
        self.direct = exist_ok and out.is_dir() and any(out.iterdir())
        if out.is_dir() and any(out.iterdir()) and not exist_ok:
            raise ConfigError(f"--out {out}: the folder holds files; choose another --out, empty it, or pass "
                              f"--exist-ok to write the frames into it")
        if self.direct:
            self.folder = out
        else:
            parent = out.parent if str(out.parent) else Path(".")
            parent.mkdir(parents=True, exist_ok=True)
            self.folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))

    def write(self, picture, name: str) -> None:
        from .draw import save_png
        save_png(picture, self.folder / name)

    def commit(self) -> None:
        if self.direct:
            return
        os.chmod(self.folder, 0o777 & ~_umask())
        if self.out.is_dir():
            self.out.rmdir()          # empty (checked above)
        os.replace(self.folder, self.out)

    def abort(self) -> None:
        if not self.direct:
            shutil.rmtree(self.folder, ignore_errors=True)


def _umask() -> int:
    from ..atomic import _umask as umask
    return umask()


def _video_names() -> Sequence[str]:
    from ..data.video import WRITTEN
    return list(WRITTEN)


def frame_names(pictures: Optional[Sequence[str]]) -> Callable[[int], str]:
    """The PNG name of frame k (from 0): a picture's ``<name>_pred.png`` (its extension kept in the name when two
    pictures of the folder share a stem: ``a_jpg_pred.png``), a video's ``frame_000001.png``."""
    if pictures is None:
        return lambda k: f"frame_{k + 1:06d}.png"
    from collections import Counter
    stems = [Path(p).stem for p in pictures]
    shared = {s for s, n in Counter(stems).items() if n > 1}
    return lambda k: (Path(pictures[k]).name.replace(".", "_") if stems[k] in shared else stems[k]) + "_pred.png"


def default_output(source: PathLike) -> Path:
    """Where a demo writes without ``--out``: beside the source, ``<video>_pred.<ext>`` (the source's
    extension when it is one written here, else ``.mp4``) or ``<folder>_pred`` (a folder of frames)."""
    from ..data.video import WRITTEN
    src = Path(os.path.abspath(source))
    if src.is_dir():
        return src.with_name(src.name + "_pred")
    ext = src.suffix.lower() if src.suffix.lower() in WRITTEN else ".mp4"
    return src.with_name(src.stem + "_pred" + ext)


def run_demo(net, source: PathLike, out: Optional[PathLike] = None, *, thresh: float = 0.5, nms: float = 0.45,
             names: Optional[Sequence[str]] = None, classes: Optional[int] = None, fps: float = 25.0,
             limit: Optional[int] = None, exist_ok: bool = False, ext_output: bool = False,
             log: Callable[[str], None] = print) -> DemoResult:
    """Detect and draw every frame of ``source`` (at most ``limit``) with ``net`` (a DarknetNet ending in [yolo]
    layers, in eval mode), writing ``out`` (default :func:`default_output`); ``log`` gets the lines Darknet's demo
    prints: each frame's ``Predicted in`` with its boxes, then the summary (:meth:`DemoResult.summary`)."""
    from .draw import draw_boxes
    from ..data.video import VideoWriter, written_format
    c, net_h, net_w = net.input_shape
    if c != 3:
        raise ConfigError(f"{net.source}: channels={c}; a demo feeds RGB frames (channels=3)")
    classes = classes if classes is not None else net.detection_heads[0].classes
    target = Path(out) if out is not None else default_output(source)
    if os.path.abspath(target) == os.path.abspath(source):
        raise ConfigError(f"--out {target}: is the source itself; choose another output")
    video = is_video_name(target)
    if video:
        written_format(target)
    frames = FrameSource(source, (net_w, net_h), fps)
    try:
        sink = VideoWriter(target, frames.fps) if video else FrameFolder(target, exist_ok)
    except BaseException:
        frames.close()
        raise
    names_of = frame_names(frames.pictures if frames.kind == "folder" else None)
    log(f"{frames.describe()} -> {target}")
    start = time.perf_counter()
    done, boxes, network = 0, 0, 0.0
    ok = False
    try:
        for name, image, header in frames:
            t0 = time.perf_counter()
            found = detect_boxes(net, image, thresh, nms, names, name)
            p = Prediction(name, image, found, header, time.perf_counter() - t0)
            network += p.seconds
            boxes += len(found)
            done += 1
            log(p.headline())
            for line in box_lines(p.original_boxes(), ext_output):
                log(line)
            picture = draw_boxes(image, found, classes)
            if video:
                sink.write(np.asarray(picture))
            else:
                sink.write(picture, names_of(done - 1))
            if limit is not None and done >= limit:
                break
        ok = True
    finally:
        frames.close()
        if video:
            sink.close(ok=ok and done > 0)
        elif ok and done > 0:
            sink.commit()
        else:
            sink.abort()
    if done == 0:
        raise DataError(f"{source}: no frames")
    return DemoResult(done, boxes, network, time.perf_counter() - start, target)


__all__ = ["run_demo", "DemoResult", "FrameSource", "FrameFolder", "default_output", "frame_names", "is_video_name"]
