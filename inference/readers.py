"""Readers: images (`read_image`), a folder of frames (`ImageSequenceReader`), video files
(`VideoReader`, PyAV, converted to RGB as the ffmpeg command line does: `FFmpegRGB`), cameras and
streams (`Capture`), and what a composite shows behind the subject (`ReplacementBackground`).

Frames are (H, W, 3) uint8 RGB, upright.
"""
import itertools
import os
import queue
import re
import threading
from fractions import Fraction
from typing import Dict, Iterator, NamedTuple, Optional, Tuple, Union

import av
import cv2
import numpy as np
from PIL import ImageColor

from common.files import IMAGE_EXTENSIONS, is_image_file, list_images, names_by_stem
from common.images import image_size, read_rgb

from .audio import copies, open_media, stream_label, track_problem
from .cli import InputError, warn
from .colour import UNTAGGED, Colour
from .decoding import StreamDamage, counted, decode_video, stated_end
from .pipeline import END, offer


def read_image(path: str, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB, upright (EXIF orientation applied), resized to size (W, H) if
    given. 16-bit grayscale is scaled to 8 bits; see `common.images.read_rgb`."""
    image = read_rgb(path)
    return resize_image(image, size) if size else image


def resize_image(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8 -> (size[1], size[0], C): area averaging to shrink, bilinear to enlarge."""
    width, height = size
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrink = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def fit_cover(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Scales (H, W, 3) to cover size (W, H) keeping its aspect ratio, then crops the centre."""
    width, height = size
    scale = max(width / image.shape[1], height / image.shape[0])
    scaled_w, scaled_h = max(width, round(image.shape[1] * scale)), max(height, round(image.shape[0] * scale))
    image = resize_image(image, (scaled_w, scaled_h))
    left, top = (scaled_w - width) // 2, (scaled_h - height) // 2
    return np.ascontiguousarray(image[top:top + height, left:left + width])


class Frame(NamedTuple):
    image: np.ndarray  # (H, W, 3) uint8 RGB, upright
    pts: int           # presentation time in the reader's time_base
    name: str          # file stem for an image sequence, zero-padded index for a video


class ImageSequenceReader:
    """The images of a folder (not its sub-folders), in natural order, as one clip.

    Args:
        folder: the frames, all the same size.
        resize: (W, H) to resize every frame to, or None.
        frame_rate: the clip's frame rate, exact.
    Attributes:
        size (W, H), frame_rate, time_base (1 / frame_rate), num_frames, has_audio (False), colour
        (UNTAGGED), sample_aspect_ratio (1).
    Iterating gives `Frame`s with pts = frame index.
    """

    def __init__(self, folder: str, resize: Optional[Tuple[int, int]] = None, frame_rate: Fraction = Fraction(30)):
        self.path, self.resize = folder, resize
        self.files = list_images(folder, recursive=False)
        if not self.files:
            raise InputError(f"{folder}: no images found (extensions {', '.join(IMAGE_EXTENSIONS)})")
        names_by_stem(self.files, folder)
        first = image_size(os.path.join(folder, self.files[0]))
        for file in self.files[1:]:
            size = image_size(os.path.join(folder, file))
            if size != first:
                raise InputError(f"{os.path.join(folder, file)} is {size[0]}x{size[1]} but {self.files[0]} is "
                                 f"{first[0]}x{first[1]}: the frames of a sequence must have the same size")
        self.size = resize or first
        self.frame_rate = Fraction(frame_rate)
        self.time_base = 1 / self.frame_rate
        self.num_frames: Optional[int] = len(self.files)
        self.has_audio = False
        self.colour, self.sample_aspect_ratio = UNTAGGED, Fraction(1)

    def __iter__(self) -> Iterator[Frame]:
        for index, file in enumerate(self.files):
            yield Frame(read_image(os.path.join(self.path, file), self.resize), index, os.path.splitext(file)[0])

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FFmpegRGB:
    """Decoded video frames to (H, W, 3) uint8 RGB, as the ffmpeg command line converts them with
    `-pix_fmt rgb24`: through FFmpeg's scale filter with the command line's bicubic filter, in the
    matrix and range each frame is tagged with (untagged: BT.601, limited range, as FFmpeg reads it).

    PyAV's own `to_ndarray(format='rgb24')` converts 8-bit 4:2:0 and 4:2:2 frames of even height the
    same way, but not the others: it interpolates chroma bilinearly, and horizontally too where the
    decoder says the chroma samples sit on the left (H.264, HEVC), so on 10-bit video thin lines at
    colour edges came out tens of levels off FFmpeg's decode and the true picture.
    """

    def __init__(self):
        self._graph: Optional[av.filter.Graph] = None
        self._key: Optional[tuple] = None

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        key = (frame.width, frame.height, frame.format.name, frame.colorspace, frame.color_range)
        if key != self._key:  # a new graph for a stream whose frames change size, format or colour
            self._graph, self._key = self._build(frame), key
        self._graph.push(frame)
        return self._graph.pull().to_ndarray()

    @staticmethod
    def _build(frame: av.VideoFrame) -> av.filter.Graph:
        graph = av.filter.Graph()
        source = graph.add('buffer', video_size=f'{frame.width}x{frame.height}', pix_fmt=frame.format.name,
                           time_base=str(frame.time_base or Fraction(1, 1)), pixel_aspect='1/1',
                           colorspace=str(frame.colorspace), range=str(frame.color_range))
        scale = graph.add('scale', 'flags=bicubic')
        rgb = graph.add('format', 'rgb24')
        sink = graph.add('buffersink')
        source.link_to(scale)
        scale.link_to(rgb)
        rgb.link_to(sink)
        graph.configure()
        return graph


class VideoReader:
    """The frames of a video file, decoded with PyAV, upright (rotation metadata applied), in RGB as
    `ffmpeg -pix_fmt rgb24` gives them (see `FFmpegRGB`).

    Args:
        path: a video file.
        resize: (W, H) of the upright frames, or None.
        check_audio: also decode the audio tracks, to warn of damage that the outputs would carry (see
            `inference.audio`); a track whose header is damaged is named at once.
    Attributes:
        size (W, H) of the frames given, frame_rate (exact Fraction), time_base (of the pts),
        num_frames (as the container declares it; None when it does not say), has_audio, rotation
        (degrees, counter-clockwise, as stored), colour (`Colour`: the source's colour description,
        as its first frame states it), sample_aspect_ratio (the shape of the pixels given, width /
        height: the stored one turned with the frames and stretched by `resize`, so that the
        picture keeps its displayed shape).
    Iterating (once) gives `Frame`s with the stream's own presentation times. Damaged data is skipped
    as the ffmpeg command line skips it (`inference.decoding`); at the end a warning says how many
    frames were decoded and where the first error was, for a damaged stream and where fewer frames
    came than the header declares (or than its duration holds).
    """

    def __init__(self, path: str, resize: Optional[Tuple[int, int]] = None, check_audio: bool = False):
        self.path, self.resize = path, resize
        try:
            self.container = open_media(path)
        except (av.FFmpegError, OSError, ValueError) as error:  # ValueError: metadata that is not UTF-8
            raise InputError(f"{path}: cannot open it as a video ({error})") from error
        if not self.container.streams.video:
            self.container.close()
            raise InputError(f"{path}: has no video stream")
        self.stream = self.container.streams.video[0]
        if self.stream.codec_context is None:
            label = stream_label(self.stream)
            self.container.close()
            raise InputError(f"{path}: {label}: FFmpeg has no decoder for it (a damaged header?)")
        self.stream.thread_type = 'AUTO'
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        if not rate:
            warn(f"{path}: the frame rate is unknown; assuming 30 fps")
        self.frame_rate = Fraction(rate or 30)
        self.time_base = Fraction(self.stream.time_base) if self.stream.time_base else 1 / self.frame_rate
        self.num_frames: Optional[int] = self.stream.frames or None
        self.has_audio = bool(self.container.streams.audio)

        # Damage is counted while decoding (see `inference.decoding`), the audio's too where it is kept.
        self.damage: Dict[int, StreamDamage] = {}
        checked = []
        for stream in self.container.streams.audio if check_audio else ():
            problem = track_problem(stream)
            if problem:
                warn(f"{path}: {stream_label(stream)}: {problem} (a damaged header?); it is left out of the outputs")
            else:
                checked.append(stream)
        self._decoded = decode_video(self.container, self.stream, checked, self.damage)
        # The first frame tells the orientation, hence the size of the frames given.
        self._first = next(self._decoded, None)
        if self._first is None:
            video = self.damage[self.stream.index]
            self.container.close()
            if video:
                raise InputError(f"{path}: {video.label} cannot be decoded: {video.describe()}")
            raise InputError(f"{path}: has no frames")
        self.rotation = int(round(self._first.rotation or 0))
        if self.rotation % 90:
            warn(f"{path}: rotation of {self.rotation} degrees is not a quarter turn; ignored")
        self._quarter_turns = (self.rotation // 90) % 4 if self.rotation % 90 == 0 else 0
        width, height = self._first.width, self._first.height
        upright = (height, width) if self._quarter_turns % 2 else (width, height)
        self.size = resize or upright
        first = self._first
        self.colour = Colour(first.colorspace, first.color_primaries, first.color_trc, first.color_range)
        stored = Fraction(self.stream.sample_aspect_ratio or self.stream.codec_context.sample_aspect_ratio or 1)
        upright_aspect = 1 / stored if self._quarter_turns % 2 else stored
        stretch = Fraction(upright[0], self.size[0]) / Fraction(upright[1], self.size[1])
        self.sample_aspect_ratio = (upright_aspect * stretch).limit_denominator(1000)

    def __iter__(self) -> Iterator[Frame]:
        assert self._first is not None, 'a VideoReader is iterated once'
        first, self._first = self._first, None
        step = max(1, round(1 / (self.frame_rate * self.time_base)))
        pts = start = None
        to_rgb = FFmpegRGB()
        count = 0
        for count, frame in enumerate(itertools.chain([first], self._decoded), start=1):
            pts = frame.pts if frame.pts is not None else (0 if pts is None else pts + step)
            start = pts if start is None else start
            image = to_rgb(frame)
            if self._quarter_turns:
                image = np.ascontiguousarray(np.rot90(image, self._quarter_turns))
            yield Frame(resize_image(image, self.resize) if self.resize else image, pts, f"{count - 1:05d}")
        self._warn_of_damage(count, float((pts + step) * self.time_base) if pts is not None else 0.0,
                             float(start * self.time_base) if start is not None else 0.0)

    def _warn_of_damage(self, count: int, end: float, start: float) -> None:
        """Warns where fewer frames were decoded than the header says there are, and of each damaged
        stream: FFmpeg goes on past damage, or stops quietly where the data ends (a copy cut short, a
        recording that crashed)."""
        video = self.damage[self.stream.index]
        short = None
        if self.num_frames and count < self.num_frames:
            short = f"its header declares {self.num_frames} frames but only {count} could be decoded"
        elif not self.num_frames:
            audio = [record for index, record in self.damage.items() if index != self.stream.index]
            others_end = max((record.end or 0.0 for record in audio), default=None) \
                if audio and len(audio) == len(self.container.streams) - 1 else None
            stated, slack = stated_end(self.container, self.stream, self.frame_rate, others_end)
            if stated is not None and end < stated - slack:
                short = (f"its header gives a duration of {stated - start:.2f} s (about "
                         f"{round((stated - start) * self.frame_rate)} frames) but only {count} frames could be "
                         f"decoded, up to {end:.2f} s")
        if video:
            decoded = short or f"{counted(count, 'frame')} decoded"
            warn(f"{self.path}: {decoded}; {video.label} is damaged: {video.describe()}")
        elif short:
            warn(f"{self.path}: {short}: is the file truncated or damaged?")
        for index, record in self.damage.items():
            if index != self.stream.index and record:
                kept = []
                if record.failed or record.concealed or record.unread:
                    kept.append('its packets are copied into the outputs as they are, damage and all'
                                if copies(self.container.streams[index]) else
                                'what decodes of it is re-encoded into the outputs')
                if record.bad_times:
                    kept.append('the packets with impossible times are left out of the outputs')
                warn(f"{self.path}: {record.label} is damaged: {record.describe()}; {'; '.join(kept)}")

    def close(self) -> None:
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_clip(path: str, resize: Optional[Tuple[int, int]] = None, frame_rate: Optional[Fraction] = None,
              option: str = '--video-src', check_audio: bool = False) -> Union[VideoReader, ImageSequenceReader]:
    """A video file (its audio checked with `check_audio`) or a folder of frames (at `frame_rate`, 30 if
    None) as a reader."""
    if os.path.isdir(path):
        return ImageSequenceReader(path, resize, frame_rate or Fraction(30))
    if os.path.isfile(path):
        return VideoReader(path, resize, check_audio)
    raise InputError(f"{option} {path}: no such file or folder")


class Capture:
    """Frames of a camera, a stream URL or a video file, read by a background thread.

    A live source (camera, stream) keeps only its newest frame, so a slow model drops frames instead
    of falling behind; a file gives every frame, in order.

    Args:
        source: a camera index ('0'), a stream URL ('rtsp://...') or a video file.
        resolution: (W, H) to ask a camera for (it may give another).
    Attributes:
        size (W, H), frame_rate (Fraction; 30 when the source does not say), live.
    `read()` gives (H, W, 3) uint8 RGB, or None once a file or stream has ended.
    """

    def __init__(self, source: str, resolution: Optional[Tuple[int, int]] = None, queue_size: int = 4):
        if source.isdigit():
            target, self.live = int(source), True
        elif '://' in source:
            target, self.live = source, True
        elif os.path.isfile(source):
            target, self.live = source, False
        else:
            raise InputError(f"--source {source}: not a camera index, a stream URL or an existing video file")
        self.capture = cv2.VideoCapture(target)
        if not self.capture.isOpened():
            raise InputError(f"--source {source}: cannot open it")
        if resolution and isinstance(target, int):
            self.capture.set(cv2.CAP_PROP_FRAME_WIDTH, resolution[0])
            self.capture.set(cv2.CAP_PROP_FRAME_HEIGHT, resolution[1])
        ok, frame = self.capture.read()
        if not ok:
            self.capture.release()
            raise InputError(f"--source {source}: gives no frames")
        self.size = (frame.shape[1], frame.shape[0])
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.frame_rate = Fraction(fps).limit_denominator(1001) if fps and fps > 0 else Fraction(30)
        self._queue: queue.Queue = queue.Queue(1 if self.live else queue_size)
        self._queue.put(frame)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='capture', daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ok, frame = self.capture.read()
            if not ok:
                break
            if self.live:  # replace the frame nobody took yet
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
            if not offer(self._queue, frame, self._stop):
                return
        offer(self._queue, END, self._stop)

    def read(self) -> Optional[np.ndarray]:
        frame = self._queue.get()
        if frame is END:
            self._queue.put(END)  # later reads end too
            return None
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if not self._thread.is_alive():  # a stalled stream may still be inside read(): leave it to exit
            self.capture.release()


class ReplacementBackground:
    """What a composite shows behind the subject: a colour, an image or a video.

    Images and video frames are scaled to cover each frame and centre-cropped. A video follows the
    source's clock: at source time t (seconds from its first frame) it shows its frame presented at t,
    starting over when it ends (t modulo its length), so a 25 fps backdrop under a 29.97 fps source plays
    at its own speed; without times, one backdrop frame per source frame.

    Args:
        spec: a colour ('white', '#78ff9b', '120,255,155'), an image file or a video file.
        allow_video: False where a video makes no sense (single images).
        option: the command-line option it came from, for error messages.
    """

    def __init__(self, spec: str, allow_video: bool = True, option: str = '--replacement-background'):
        self.spec = spec
        self.colour = self.image = self._reader = self._frames = None
        self._current = self._next = self._length = None  # video: the frame shown, the next, its length (s)
        self._fitted: Dict[Tuple[int, int], np.ndarray] = {}
        if os.path.isfile(spec):
            if is_image_file(spec):
                self.image = read_image(spec)
            elif allow_video:
                self._start_video()
            else:
                raise InputError(f"{option} {spec}: expected a colour or an image file")
        else:
            rgb = parse_colour(spec)
            if rgb is None:
                raise InputError(f"{option} {spec}: no such file, and not a colour (expected a name such as "
                                 "'white', a hex code such as '#78ff9b', or 'R,G,B')")
            self.colour = np.array(rgb, np.uint8).reshape(1, 1, 3)

    def _start_video(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = VideoReader(self.spec)
        self._frames = iter(self._reader)

    def frame(self, size: Tuple[int, int], time: Optional[float] = None) -> np.ndarray:
        """The background of a frame of size (W, H) shown at `time` seconds of the source (None: the next
        backdrop frame): (H, W, 3) uint8, or (1, 1, 3) for a colour. A colour or an image gives the same
        array object for every frame of a size."""
        if self.colour is not None:
            return self.colour
        if self.image is not None:
            if size not in self._fitted:
                self._fitted = {size: fit_cover(self.image, size)}
            return self._fitted[size]
        if time is not None:
            return fit_cover(self._frame_at(time).image, size)
        frame = next(self._frames, None)
        if frame is None:  # start over
            self._start_video()
            frame = next(self._frames)
        return fit_cover(frame.image, size)

    def _seconds(self, frame: Frame) -> float:
        return float((frame.pts - self._first_pts) * self._reader.time_base)

    def _frame_at(self, time: float) -> Frame:
        """The backdrop's frame nearest to `time` seconds from its start, looped: the last one presented by
        `time` plus half a frame, as FFmpeg's fps filter rounds (which also absorbs containers' rounded
        timestamps, Matroska's milliseconds). Its length, once known, is its frame count over its rate."""
        frame_s = float(1 / self._reader.frame_rate)
        target = time + frame_s / 2
        if self._length:
            target %= self._length
        if self._current is None or target < self._seconds(self._current):  # the first call, or looped
            self._start_video()
            self._current, self._count = next(self._frames), 1
            self._first_pts = self._current.pts
            self._next = next(self._frames, None)
        while self._next is not None and self._seconds(self._next) <= target:
            self._current, self._next, self._count = self._next, next(self._frames, None), self._count + 1
        if self._next is None and self._length is None and target >= self._seconds(self._current) + frame_s:
            self._length = self._count * frame_s  # past the end: its length is known
            return self._frame_at(time)
        return self._current

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


def parse_colour(text: str) -> Optional[Tuple[int, int, int]]:
    """(R, G, B), 0 ~ 255, from a colour name, '#rrggbb', 'rgb(r, g, b)' or 'r,g,b'; None if not a colour."""
    text = text.strip()
    if re.fullmatch(r'\d{1,3}\s*,\s*\d{1,3}\s*,\s*\d{1,3}', text):
        text = f"rgb({text})"
    try:
        return tuple(ImageColor.getrgb(text)[:3])
    except ValueError:
        return None
