"""Decoding a video file packet by packet, on past damage as the ffmpeg command line goes, and
keeping count of it (`decode_video`, `StreamDamage`), so that a damaged file is matted as far as it
decodes and said to be damaged, where and how much, instead of ending in an FFmpeg error that names
no file, or in fewer frames without a word.
"""
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import re
from fractions import Fraction

import av

from .audio import PacketTimes, end_of, ffmpeg_reason, stream_label


class StreamDamage:
    """What decoding one stream of a file found wrong.

    Attributes:
        label: 'video stream #0 (h264)'; packets: packets with data read;
        failed: packets that did not decode (skipped); concealed: frames decoded with errors
        concealed (the decoder flagged them corrupt); bad_times: packets whose times cannot be right
        (see `audio.PacketTimes`); unread: the file could not be read on past some point;
        first: (seconds, what failed) of the first of these; end: where the last packet read ends.
    """

    def __init__(self, stream):
        self.label = stream_label(stream)
        self.packets = self.failed = self.concealed = self.bad_times = 0
        self.unread = False
        self.first: Optional[Tuple[float, str]] = None
        self.end: Optional[float] = None  # where its last packet read ends, seconds

    def note(self, seconds: float, what: str) -> None:
        if self.first is None:
            self.first = (max(0.0, seconds), what)  # not before the start: audio priming is timed before 0

    def __bool__(self) -> bool:
        return bool(self.failed or self.concealed or self.bad_times or self.unread)

    def describe(self) -> str:
        """'2 of 15 packets did not decode, the first at 0.24 s (Invalid data found when processing input)'"""
        parts = []
        if self.failed:
            parts.append(f"{self.failed} of {self.packets} packets did not decode")
        if self.concealed:
            parts.append(f"{counted(self.concealed, 'frame')} decoded with errors concealed")
        if self.bad_times:
            parts.append(f"{counted(self.bad_times, 'packet')} with impossible times")
        if self.unread:
            parts.append("the file could not be read to its end")
        seconds, what = self.first or (0.0, 'unknown')
        return f"{', '.join(parts)}; the first error at {seconds:.2f} s ({what})"


def counted(number: int, noun: str) -> str:
    """'1 packet', '3 packets'."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def packet_seconds(packet: av.Packet) -> Optional[float]:
    time = packet.pts if packet.pts is not None else packet.dts
    return None if time is None or packet.time_base is None else float(time * packet.time_base)


def decode_video(container, video, audio: Sequence = (),
                 damage: Optional[Dict[int, StreamDamage]] = None) -> Iterator[av.VideoFrame]:
    """The frames of stream `video` of `container`, in order, decoded packet by packet: a packet that
    fails to decode is skipped and decoding goes on with the next; where the file cannot be read on,
    the decoder gives what it holds and the frames end. The packets of the `audio` streams are decoded
    too, only to check them (their times as `SourceAudio` checks them before copying).

    damage: {stream index: StreamDamage}, filled in for `video` and `audio` while iterating.
    """
    damage = damage if damage is not None else {}
    for stream in (video, *audio):
        damage.setdefault(stream.index, StreamDamage(stream))
    times = PacketTimes(end_of(container))
    packets = container.demux(video, *audio)
    seconds = 0.0
    while True:
        try:
            packet = next(packets, None)
        except av.FFmpegError as error:  # the demuxer cannot read on: flush what the decoder holds
            damage[video.index].unread = True
            damage[video.index].note(seconds, f"reading the file: {ffmpeg_reason(error)}")
            packet = None
            yield from _decoded(lambda: video.codec_context.decode(None), damage[video.index], seconds)
        if packet is None:
            return
        record = damage[packet.stream.index]
        own = packet_seconds(packet)
        if packet.size:
            record.packets += 1
        if packet.stream.index != video.index and not times.plausible(packet):
            record.bad_times += 1
            record.note(seconds, f'a packet timed at {own:.2f} s')  # where it is, not where it says
            continue
        seconds = own if own is not None else seconds
        if packet.size and packet.duration and packet.time_base:
            record.end = max(record.end or 0.0, seconds + float(packet.duration * packet.time_base))
        frames = _decoded(packet.decode, record, seconds)
        if packet.stream.index == video.index:
            yield from frames
        else:
            for _ in frames:
                pass


def _decoded(decode: Callable[[], List[av.frame.Frame]], record: StreamDamage, seconds: float) -> Iterator:
    """The frames `decode()` gives (a packet's, or a decoder's last), none where it fails; counted in `record`."""
    try:
        frames = decode()
    except av.FFmpegError as error:
        record.failed += 1
        record.note(seconds, ffmpeg_reason(error))
        return
    for frame in frames:
        if frame.is_corrupt:
            record.concealed += 1
            record.note(seconds, 'errors concealed by the decoder')
        yield frame


def stated_end(container, video, frame_rate: Fraction, others_end: Optional[float] = None
               ) -> Tuple[Optional[float], float]:
    """Where the header says stream `video` ends, in seconds (None if it does not say), and by how much
    less is no sign of damage: the stream's own duration (Matroska's DURATION tag is its end), within
    three quarters of a frame; else the file's, which its other streams may make longer. Where those
    were read (`others_end`: where they end) and reach that end, the file was read to its end and a
    shorter video is its own (None); unread, they may be a twentieth longer."""
    slack = 0.75 * float(1 / frame_rate)
    if video.duration and video.time_base:
        return float(((video.start_time or 0) + video.duration) * video.time_base), slack
    tagged = re.fullmatch(r'(\d+):(\d\d):(\d\d(?:\.\d+)?)', video.metadata.get('DURATION', ''))
    if tagged:
        hours, minutes, seconds = tagged.groups()
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds), slack
    end = end_of(container)
    if end is None:
        return None, 0.0
    if len(container.streams) == 1:
        return end, slack
    if others_end is not None:
        return (end, slack) if others_end < end - slack else (None, 0.0)
    return end, slack + 0.05 * end
