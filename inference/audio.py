"""The audio of a source video in the outputs: which tracks are kept and how (`track_problem`,
`copies`), `SourceAudio`, which writes them beside a VideoWriter's video, and `PacketTimes`, which
tells the packets whose times a damaged file garbled from the others.

A damaged track is never silently dropped or passed on: what `SourceAudio` leaves out (a track whose
header is damaged, packets with impossible times) and what it copies that does not decode is what
`VideoReader(check_audio=True)` finds and warns about, once, with the same rules.
"""
import math
import os
from fractions import Fraction
from typing import Dict, List, NamedTuple, Optional, Tuple

import av

from .cli import InputError

# Audio codecs that MP4 holds and players read, copied as they are. The others (PCM, Vorbis, ADPCM,
# DTS, ...) are re-encoded as AAC: FFmpeg puts some in MP4 (PCM as 'ipcm'), but few players read them.
MP4_AUDIO_CODECS = frozenset({'aac', 'mp3', 'ac3', 'eac3', 'alac', 'flac', 'opus'})
# Copied codecs whose decoder set-up MP4 stores from the source's (alac, dfLa, dOps boxes): without it
# the muxer refuses them. (AAC's is made from its ADTS headers where a source has none, as MPEG-TS.)
SET_UP_IN_EXTRADATA = frozenset({'alac', 'flac', 'opus'})
AAC_BIT_RATE_PER_CHANNEL = 96_000
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
AAC_LAYOUTS = {1: 'mono', 2: 'stereo', 3: '3.0', 4: '4.0', 5: '5.0', 6: '5.1', 7: '6.1', 8: '7.1'}
# A packet timed this far past the end of its file has a damaged time.
LATEST_PAST_END = 1.0


def open_media(path: str, **options):
    """`av.open` on a file: its absolute path after 'file:', so that a name with a colon ('take:1.mp4',
    a folder 'res:1') is read and written as a file, not taken for an FFmpeg protocol."""
    return av.open('file:' + os.path.abspath(path), **options)


def stream_label(stream) -> str:
    """'audio stream #1 (flac)': how messages name a stream of a file."""
    context = stream.codec_context
    return f"{stream.type} stream #{stream.index} ({context.name if context is not None else 'unknown codec'})"


def ffmpeg_reason(error: BaseException) -> str:
    """What FFmpeg says went wrong, without the file name or call it adds ('Invalid data found when
    processing input')."""
    return getattr(error, 'strerror', None) or str(error) or type(error).__name__


def track_problem(stream) -> Optional[str]:
    """Why an audio track cannot be kept (its header is damaged, or it is nothing FFmpeg reads), or None."""
    context = stream.codec_context
    if context is None or context.codec is None:
        return 'its codec is unknown'
    if not context.sample_rate or context.sample_rate <= 0:
        return 'its sample rate is unknown'
    if not context.channels:
        return 'its number of channels is unknown'
    if copies(stream) and context.name in SET_UP_IN_EXTRADATA and not context.extradata:
        return f'its {context.name} decoder set-up is missing'
    return None


def copies(stream) -> bool:
    """Whether a track is copied into MP4 as it is (else re-encoded as AAC)."""
    return stream.codec_context.codec.canonical_name in MP4_AUDIO_CODECS


def end_of(container) -> Optional[float]:
    """Where a file ends, in seconds, as its header says (None if it does not)."""
    if not container.duration:
        return None
    return (container.start_time or 0) / av.time_base + container.duration / av.time_base


class PacketTimes:
    """Tells the packets whose times cannot be right, as a muxer would refuse them: one not later than
    the packet before it in its stream (MP4 needs increasing decoding times), or far past the end of
    the file (`end`, seconds). `plausible(packet)` says so and remembers the packets it accepted."""

    def __init__(self, end: Optional[float]):
        self.end = end
        self._last: Dict[int, int] = {}

    def plausible(self, packet: av.Packet) -> bool:
        if packet.dts is None:
            return True  # the demuxer's final empty packet
        if self.end is not None and float(packet.dts * packet.time_base) > self.end + LATEST_PAST_END:
            return False
        if packet.pts is not None and packet.pts < packet.dts:
            return False
        last = self._last.get(packet.stream.index)
        if last is not None and packet.dts <= last:
            return False
        self._last[packet.stream.index] = packet.dts
        return True


class AudioTrack(NamedTuple):
    source: av.audio.stream.AudioStream
    rate: int    # the output's sample rate, in whose samples the MP4 muxer times the track
    copy: bool   # copied; else decoded and re-encoded as AAC


class SourceAudio:
    """The audio tracks of a media file, written beside a VideoWriter's video in time order.

    Every track is kept: copied where MP4 holds the codec and players read it (`MP4_AUDIO_CODECS`),
    else re-encoded as AAC (96 kb/s a channel, the same sample rate where AAC has it, else 48 kHz).
    Copied packets are timed in samples, and the padding that the source marks to be dropped at the
    end of a packet (Matroska's DiscardPadding, after Opus and MP3) is taken off its duration: the
    MP4 edit list then ends the track where the source's decoders stop.

    What a damaged file holds is not passed on where MP4 cannot take it: a track whose header is
    damaged (`track_problem`) is left out, and so are copied packets with impossible times
    (`PacketTimes`); packets of a re-encoded track that fail to decode are skipped. Copied packets are
    not decoded: damaged ones are copied as they are. (`VideoReader(check_audio=True)` reports all this.)

    Args:
        path: the media file; its video and other streams are ignored.
    Attributes:
        path; tracks: the `AudioTrack`s kept, in the source's order; rates: their output sample rates;
        left_out: [(stream label, why)] of the tracks left out; dropped: packets left out or skipped.
    """

    def __init__(self, path: str):
        self.path = path
        try:
            self.input = open_media(path)
        except (av.FFmpegError, OSError, ValueError) as error:  # ValueError: metadata that is not UTF-8
            raise InputError(f"{path}: cannot open it to read its audio ({ffmpeg_reason(error)})") from error
        self.tracks: List[AudioTrack] = []
        self.left_out: List[Tuple[str, str]] = []
        for stream in self.input.streams.audio:
            problem = track_problem(stream)
            if problem:
                self.left_out.append((stream_label(stream), problem))
                continue
            copy = copies(stream)
            rate = stream.sample_rate if copy or stream.sample_rate in AAC_RATES else 48000
            self.tracks.append(AudioTrack(stream, rate, copy))
        self.rates = [track.rate for track in self.tracks]
        self.dropped = 0
        self._times = PacketTimes(end_of(self.input))
        self._outputs: Dict[int, Tuple[AudioTrack, av.audio.stream.AudioStream]] = {}
        self._packets = self.input.demux(*[track.source for track in self.tracks]) if self.tracks else iter(())
        self._pending: Optional[av.Packet] = None
        self._next_sample: Dict[int, int] = {}

    def labels(self) -> List[str]:
        """How messages name the tracks kept ('audio stream #1 (flac)', ...)."""
        return [stream_label(track.source) for track in self.tracks]

    def add_to(self, container: av.container.OutputContainer) -> None:
        """Adds the tracks to `container`, before anything is written to it."""
        for track in self.tracks:
            if track.copy:
                stream = container.add_stream_from_template(track.source)
            else:
                stream = container.add_stream('aac', rate=track.rate)
                source = track.source.codec_context
                known = not source.layout.name.endswith('channels')  # '3 channels': an order nobody stated
                stream.layout = source.layout.name if known else AAC_LAYOUTS.get(source.channels, 'stereo')
                stream.bit_rate = AAC_BIT_RATE_PER_CHANNEL * stream.codec_context.channels
            self._outputs[track.source.index] = (track, stream)

    def mux_until(self, container: av.container.OutputContainer, seconds: Optional[Fraction]) -> None:
        """Writes the packets that start at or before `seconds` (all that are left for None)."""
        while True:
            if self._pending is None:
                self._pending = self._next_packet()
                if self._pending is None:
                    break
            packet = self._pending
            if seconds is not None and packet.pts is not None and packet.pts * packet.time_base > seconds:
                return
            self._pending = None
            track, stream = self._outputs[packet.stream.index]
            if track.copy and packet.dts is not None:  # not the demuxer's final empty packet
                packet = in_samples(packet, track.rate)
                packet.stream = stream  # the output's track: its index there is not the source's
                container.mux(packet)
            elif not track.copy:  # the final empty packet flushes the decoder
                try:
                    frames = packet.decode()
                except av.FFmpegError:  # damaged: what decodes is re-encoded
                    self.dropped += 1
                    continue
                for frame in frames:
                    container.mux(stream.encode(self._timed(frame, track)))
        if seconds is None:
            for track, stream in self._outputs.values():
                if not track.copy:
                    container.mux(stream.encode(None))

    def _next_packet(self) -> Optional[av.Packet]:
        """The next packet whose times are plausible; None at the end, or where the file cannot be
        read on (the audio then ends there, as the video does)."""
        while True:
            try:
                packet = next(self._packets, None)
            except av.FFmpegError:
                self.dropped += 1
                return None
            if packet is None or self._times.plausible(packet):
                return packet
            self.dropped += 1

    def _timed(self, frame: av.AudioFrame, track: AudioTrack) -> av.AudioFrame:
        """A decoded frame timed in samples at the output rate. Audio is continuous: a frame starts
        where the one before ended, unless its own time says otherwise by more than the source's unit
        (a gap), which in Matroska is a millisecond, too coarse to time samples by."""
        index = track.source.index
        expected = self._next_sample.get(index)
        if frame.pts is not None:
            own = round(frame.pts * frame.time_base * track.rate)
            tolerance = math.ceil(frame.time_base * track.rate)
            if expected is None or abs(own - expected) > tolerance:
                expected = own
        expected = expected or 0
        frame.pts, frame.time_base = expected, Fraction(1, track.rate)
        self._next_sample[index] = expected + round(frame.samples * Fraction(track.rate, frame.sample_rate))
        return frame

    def close(self) -> None:
        self.input.close()


def in_samples(packet: av.Packet, rate: int) -> av.Packet:
    """An audio packet timed in samples at `rate` (1 / rate), its duration less the padding that its
    container marks to be dropped at its end (skip-samples side data)."""
    unit = Fraction(1, rate)
    for name in ('pts', 'dts', 'duration'):
        value = getattr(packet, name)
        if value is not None:
            setattr(packet, name, round(value * packet.time_base / unit))
    if packet.duration and packet.has_sidedata('skip_samples'):
        discard = int.from_bytes(bytes(packet.get_sidedata('skip_samples'))[4:8], 'little')
        packet.duration = max(1, packet.duration - discard)
    packet.time_base = unit
    return packet
