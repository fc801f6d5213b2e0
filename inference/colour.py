"""How YUV video maps to RGB colours: `Colour` (matrix, primaries, transfer, range as FFmpeg numbers
them), and `output_colour`, what the outputs of a source are tagged and encoded with."""
from typing import NamedTuple, Tuple


class Colour(NamedTuple):
    """How a video's YUV samples map to colours, in FFmpeg's codes (AVCOL_*), which ffprobe prints by
    name as color_space, color_primaries, color_transfer and color_range: e.g. 1 'bt709', 6
    'smpte170m' (BT.601); range 1 'tv' (limited, 16 ~ 235) or 2 'pc' (full). 2 (range: 0) means
    the file does not say."""
    matrix: int
    primaries: int
    transfer: int
    range: int


UNTAGGED = Colour(2, 2, 2, 0)
# What players assume for untagged video: BT.709 for HD, BT.601 for SD, limited range.
HD_COLOUR = Colour(1, 1, 1, 1)
SD_COLOUR = Colour(6, 6, 6, 1)
# The matrices FFmpeg converts RGB to, by FFmpeg's code, as swscale's codes (SWS_CS_*).
SWSCALE_MATRICES = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9}
UNSTATED = (0, 2, 3)  # reserved, unspecified, reserved


def is_hd(size: Tuple[int, int]) -> bool:
    """Whether players read an untagged video of size (W, H) as BT.709: wider than 1279 or taller
    than 576 pixels (mpv's and the browsers' rule); smaller ones as BT.601."""
    return size[0] >= 1280 or size[1] > 576


def output_colour(source: Colour, size: Tuple[int, int]) -> Colour:
    """The colour description to encode outputs of size (W, H) with: the source's, with what players
    assume for that size (`is_hd`) where it says nothing, and limited range unless it says full.

    The RGB frames are the source's colours as FFmpeg decodes them, so outputs tagged like a tagged
    source show like it. An untagged source was decoded as FFmpeg does, with BT.601: an untagged SD
    source keeps exactly its colours (players read both as BT.601); the outputs of an untagged HD
    source are tagged BT.709, as players read HD, and show the colours FFmpeg decoded.
    """
    default = HD_COLOUR if is_hd(size) else SD_COLOUR
    return Colour(source.matrix if source.matrix in SWSCALE_MATRICES else default.matrix,
                  default.primaries if source.primaries in UNSTATED else source.primaries,
                  default.transfer if source.transfer in UNSTATED else source.transfer,
                  source.range if source.range in (1, 2) else default.range)
