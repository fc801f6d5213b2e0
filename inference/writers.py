"""Writers: PNG files (`save_image`, all or none for the outputs of one source: `save_images`), frame
folders (`ImageSequenceWriter`, swapped in when complete) and H.264 videos (`VideoWriter`, through
PyAV, with every audio track of the source: `audio.SourceAudio`). Nothing is ever half-written under its
final name."""
import contextlib
import math
import os
import shutil
from fractions import Fraction
from typing import Dict, Optional, Sequence, Tuple

import av
import numpy as np
from av.video.reformatter import Interpolation
from PIL import Image

from common.files import remove_quietly, temporary_path

from .audio import MP4_AUDIO_CODECS, SourceAudio, ffmpeg_reason, in_samples  # noqa: F401  (their earlier home)
from .audio import open_media
from .cli import InputError
from .colour import SWSCALE_MATRICES, UNTAGGED, Colour, output_colour


PNG_COMPRESS_LEVEL = 3  # zlib level: lossless at any level; 3 is much faster than 6 for ~5% more bytes


def save_image(image: np.ndarray, path: str) -> None:
    """Writes (H, W, C) uint8 as a lossless PNG (C = 1 gray, 3 RGB, 4 RGBA), creating its folder.

    The file is written under a temporary name and renamed, so `path` is never half-written.
    """
    save_images([(path, image)])


def save_images(images: Sequence[Tuple[str, np.ndarray]]) -> None:
    """Writes several PNGs (path, (H, W, C) uint8), all or none: the outputs of one source appear
    together. Each is encoded under a temporary name first; only when all are written are they renamed.
    A failure (a full disk, say) removes the temporaries and raises InputError naming the file."""
    written = []  # (temporary, path)
    path = None
    try:
        for path, image in images:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] in (1, 3, 4), image.shape
            os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
            written.append((temporary_path(path), path))
            Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(
                written[-1][0], format='PNG', compress_level=PNG_COMPRESS_LEVEL)
        for temporary, path in written:
            os.replace(temporary, path)
    except OSError as error:
        raise InputError(f"{path}: cannot write it ({error.strerror or error})") from error
    finally:
        for temporary, _ in written:
            remove_quietly(temporary)


DEFAULT_CRF = 18  # x264 constant quality: 0 lossless, 18 visually lossless, 23 x264's default


class ImageSequenceWriter:
    """Writes frames as PNG files, named after their source frames, into a folder.

    The frames go into a hidden folder beside it (`.<name>.<random>.partial`), which `close()` puts
    in the folder's place once every frame is written: a stopped or failed run (`abort()` deletes the
    hidden folder) leaves the folder as it was, and a replaced folder keeps no frame of an earlier run.

    Args:
        folder: the sequence's folder (its parent is created if missing).
        overwrite: replace an existing folder with all it holds (deleted once the new one is in
            place); without it, only a missing or empty folder is written.
    """

    def __init__(self, folder: str, overwrite: bool = False):
        self.folder, self.overwrite = os.path.normpath(folder), overwrite
        self.temporary = temporary_path(self.folder)
        os.makedirs(self.temporary)

    def write(self, frames: np.ndarray, names: Sequence[str]) -> None:
        """frames: (T, H, W, C) uint8, C = 1, 3 or 4; names: T file names without extension."""
        for image, name in zip(frames, names):
            save_image(image, os.path.join(self.temporary, name + '.png'))

    def close(self) -> None:
        """Puts the finished sequence in the folder's place."""
        try:
            if os.path.isdir(self.folder) and os.listdir(self.folder):
                if not self.overwrite:
                    raise InputError(f"{self.folder} is not empty; pass --overwrite to replace it")
                earlier = temporary_path(self.folder)
                os.rename(self.folder, earlier)
                try:
                    os.rename(self.temporary, self.folder)
                except OSError:
                    os.rename(earlier, self.folder)
                    raise
                shutil.rmtree(earlier)
            else:
                if os.path.isdir(self.folder):
                    os.rmdir(self.folder)
                os.rename(self.temporary, self.folder)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Deletes the unfinished sequence; the folder stays as it was."""
        shutil.rmtree(self.temporary, ignore_errors=True)


class VideoWriter:
    """Encodes frames with H.264 (libx264) through PyAV, with the audio tracks of a source.

    The file is written under a temporary name in the same folder: `close()` renames it to `path`,
    `abort()` deletes it, so `path` never holds a half-written video.

    Args:
        path: the video file (.mp4, .mov or .mkv).
        frame_rate: the exact frame rate, stored as the stream's rate.
        time_base: the unit of the pts given to `write`; default 1 / frame_rate. Give the source's
            time base and pts to keep its timing exactly (variable frame rate, audio sync).
        bit_rate: bits per second; None for constant quality `crf`.
        crf: x264 constant rate factor (0 lossless ... 51); DEFAULT_CRF if neither is given.
        audio_source: a media file whose audio tracks are all kept (see `SourceAudio`: what a damaged
            file holds that MP4 cannot take is left out), interleaved by time with the video.
        colour: the colour description to convert RGB to YUV with and to store (matrix, primaries,
            transfer, range); default `output_colour(UNTAGGED, size)`, what players assume.
        sample_aspect_ratio: the shape of the pixels to store (anamorphic video); default square.
        yuv444: store full-resolution chroma (H.264 High 4:4:4 Predictive): exact colours and sizes, but
            many players and browsers cannot play it. By default yuv420p, which every player plays:
            frames of odd width or height are padded by one pixel, their last column or row repeated
            (4:2:0 needs even sides), so that every pixel keeps its place and none is lost.
    In MP4 and MOV files, times are exact: the movie's time scale (in which the edit lists that
    place each track's start are written; FFmpeg's default is milliseconds) holds those of every track.
    """

    def __init__(self, path: str, frame_rate: Fraction, time_base: Optional[Fraction] = None,
                 bit_rate: Optional[int] = None, crf: Optional[float] = None, audio_source: Optional[str] = None,
                 colour: Optional[Colour] = None, sample_aspect_ratio: Optional[Fraction] = None,
                 yuv444: bool = False):
        self.path, self.colour, self.sample_aspect_ratio, self.yuv444 = path, colour, sample_aspect_ratio, yuv444
        self._padding = ((0, 0), (0, 0), (0, 0))
        self.input_time_base = Fraction(time_base) if time_base else 1 / Fraction(frame_rate)
        self.frame_duration = 1 / Fraction(frame_rate)
        # A coarse time base (1/1000 in MKV and WebM) cannot hold the frames' true times (30000/1001
        # fps is 33.366... ms a frame): write in a unit that holds both, and put times that are a
        # frame-grid time rounded to the input unit back on the grid (see `output_pts`).
        self.time_base = Fraction(1, math.lcm(self.input_time_base.denominator, self.frame_duration.denominator))
        self.temporary = temporary_path(path)
        self.audio: Optional[SourceAudio] = None
        self.container = None
        self._last_pts: Optional[int] = None
        try:
            self.audio = SourceAudio(audio_source) if audio_source else None
            with self._naming_ffmpeg_errors():
                self.container = open_media(self.temporary, mode='w', container_options=self._timescales())
                self.stream = self.container.add_stream('libx264', rate=Fraction(frame_rate))
                self.stream.codec_context.time_base = self.time_base
                if bit_rate:
                    self.stream.bit_rate = int(bit_rate)
                else:
                    self.stream.options = {'crf': str(DEFAULT_CRF if crf is None else crf)}
                if self.audio:
                    self.audio.add_to(self.container)
        except BaseException:
            self.abort()
            raise

    def _timescales(self) -> Dict[str, str]:
        """MP4 / MOV muxer options: the video track's time scale (the muxer's own choice: our time
        base, doubled up to at least 10000) and a movie time scale that holds it and the audio
        tracks' (their sample rates), so that the edit lists place every track's start exactly."""
        if os.path.splitext(self.path)[1].lower() not in ('.mp4', '.mov', '.m4v'):
            return {}
        video = self.time_base.denominator
        while video < 10000:
            video *= 2
        movie = math.lcm(video, *(self.audio.rates if self.audio else []))
        return {'video_track_timescale': str(video), 'movie_timescale': str(movie if movie < 2 ** 31 else video)}

    def write(self, frames: np.ndarray, pts: Sequence[int]) -> None:
        """frames: (T, H, W, C) uint8, C = 1 (gray) or 3 (RGB); pts: T times in the time base given
        to the constructor (`input_time_base`)."""
        if self._last_pts is None:
            self._configure(width=frames.shape[2], height=frames.shape[1])
        with self._naming_ffmpeg_errors():
            for image, t in zip(frames, pts):
                t = self.output_pts(int(t))
                if self._last_pts is not None and t <= self._last_pts:  # H.264 needs increasing times
                    t = self._last_pts + 1
                if self.audio:
                    self.audio.mux_until(self.container, t * self.time_base)
                frame = self.to_yuv(image)
                frame.pts, frame.time_base = t, self.time_base
                self.container.mux(self.stream.encode(frame))
                self._last_pts = t

    @contextlib.contextmanager
    def _naming_ffmpeg_errors(self):
        """FFmpeg's errors name the temporary file, or nothing: InputError names the output, and the
        source's audio, which is all that comes from another file (a damaged one, where this fails)."""
        try:
            yield
        except av.FFmpegError as error:
            audio = (f" with the audio of {self.audio.path} ({', '.join(self.audio.labels())}), which may be "
                     "damaged (--no-audio leaves it out)") if self.audio and self.audio.tracks else ''
            raise InputError(f"{self.path}: FFmpeg cannot write it{audio}: {ffmpeg_reason(error)}") from error

    def _configure(self, width: int, height: int) -> None:
        """The size, pixel format and colour description of the stream, from its first frames."""
        if not self.yuv444:
            self._padding = ((0, height % 2), (0, width % 2), (0, 0))
            width, height = width + width % 2, height + height % 2
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = 'yuv444p' if self.yuv444 else 'yuv420p'
        self.colour = self.colour or output_colour(UNTAGGED, (width, height))
        codec = self.stream.codec_context
        # libx264 stores these in the stream (H.264 VUI), where decoders and ffprobe read them.
        codec.colorspace, codec.color_primaries, codec.color_trc, codec.color_range = self.colour
        if self.sample_aspect_ratio:
            codec.sample_aspect_ratio = self.sample_aspect_ratio

    def to_yuv(self, image: np.ndarray) -> av.VideoFrame:
        """(H, W, 1) gray or (H, W, 3) RGB uint8 -> a frame in the stream's pixel format, converted
        with its colour description's matrix and range (gray, as alpha, maps 0 ~ 255 onto the range)."""
        if any(after for _, after in self._padding):
            image = np.pad(image, self._padding, mode='edge')
        frame = av.VideoFrame.from_ndarray(image[:, :, 0], format='gray') if image.shape[2] == 1 else \
            av.VideoFrame.from_ndarray(image, format='rgb24')
        # Bicubic chroma filtering (the ffmpeg command line's), rounded exactly: without ACCURATE_RND
        # a flat colour's chroma comes out a level low in places (#78ff9b's blue by 3 once decoded).
        yuv = frame.reformat(format=self.stream.pix_fmt, dst_colorspace=SWSCALE_MATRICES[self.colour.matrix],
                             dst_color_range=self.colour.range,
                             interpolation=Interpolation.BICUBIC | Interpolation.ACCURATE_RND)
        yuv.colorspace, yuv.color_primaries, yuv.color_trc, yuv.color_range = self.colour
        return yuv

    def output_pts(self, pts: int) -> int:
        """A time in `input_time_base` units as a time in `time_base` units; a time within one input
        unit of the frame grid (k / frame_rate) is snapped onto it, so a constant frame rate stays exact
        and a variable one keeps its times."""
        seconds = pts * self.input_time_base
        on_grid = round(seconds / self.frame_duration) * self.frame_duration
        if abs(seconds - on_grid) < self.input_time_base:
            seconds = on_grid
        return int(seconds / self.time_base)

    def close(self) -> None:
        """Finishes the file and gives it its name."""
        if self._last_pts is None:
            self.abort()
            raise InputError(f"{self.path}: no frames to write")
        try:
            with self._naming_ffmpeg_errors():
                self.container.mux(self.stream.encode())
                if self.audio:
                    self.audio.mux_until(self.container, None)
                self.container.close()
        except BaseException:
            self.abort()
            raise
        if self.audio:
            self.audio.close()
        os.replace(self.temporary, self.path)

    def abort(self) -> None:
        """Stops writing and deletes the unfinished file."""
        for closable in (self.container, self.audio):
            if closable is not None:
                try:
                    closable.close()
                except Exception:
                    pass
        remove_quietly(self.temporary)
