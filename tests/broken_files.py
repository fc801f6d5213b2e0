"""Files that are broken the way real ones are, for the tests of every script that reads them: images
cut short or claiming a huge size, and seeded mutations of any file (`mutations`: truncations, flipped
bits, swapped blocks, zeroed headers, empty files), as a bad copy, download or disk leaves them."""
import io
import random
import struct
import zlib
from typing import List, Optional, Sequence, Tuple

from PIL import Image

MUTATIONS = ('truncated', 'flipped', 'swapped', 'zeroed header', 'empty')


def corrupt_jpeg(path, like):
    """A JPEG of the (H, W, 3) uint8 image `like` whose header is valid but whose data stops half-way."""
    Image.fromarray(like).save(path, format='JPEG', quality=90)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def png_claiming(path, width, height):
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's header)."""
    buffer = io.BytesIO()
    Image.new('L', (1, 1)).save(buffer, format='PNG')
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack('>II', width, height)  # IHDR width and height
    data[29:33] = struct.pack('>I', zlib.crc32(bytes(data[12:29])))  # the chunk's CRC over its type and data
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))


def flip_bits(data: bytes, count: int, rng: random.Random, spans: Optional[Sequence[Tuple[int, int]]] = None) -> bytes:
    """`data` with `count` bits flipped, each in a byte drawn from `spans` ([(start, end)], by size;
    default the whole file)."""
    spans = spans or [(0, len(data))]
    sizes = [end - start for start, end in spans]
    damaged = bytearray(data)
    for _ in range(count):
        start, end = rng.choices(spans, weights=sizes)[0]
        damaged[rng.randrange(start, end)] ^= 1 << rng.randrange(8)
    return bytes(damaged)


def swap_blocks(data: bytes, first: int, second: int, size: int) -> bytes:
    """`data` with the `size` bytes at `first` and at `second` (not overlapping) swapped."""
    first, second = sorted((first, second))
    assert first + size <= second, 'the blocks overlap'
    return (data[:first] + data[second:second + size] + data[first + size:second] + data[first:first + size]
            + data[second + size:])


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    """`data` damaged in one of the ways of `MUTATIONS`, drawn from `rng`."""
    if kind == 'truncated':
        return data[:rng.randrange(1, len(data))]
    if kind == 'flipped':
        return flip_bits(data, 10, rng)
    if kind == 'swapped':
        size = rng.randrange(16, max(17, min(4096, len(data) // 4)))
        first = rng.randrange(0, len(data) - 2 * size)
        return swap_blocks(data, first, rng.randrange(first + size, len(data) - size + 1), size)
    if kind == 'zeroed header':
        size = min(len(data), rng.choice((4, 16, 64, 512)))
        return bytes(size) + data[size:]
    if kind == 'empty':
        return b''
    raise ValueError(f'unknown mutation {kind!r}')


def mutations(data: bytes, count: int, seed: int, kinds: Sequence[str] = MUTATIONS) -> List[Tuple[str, bytes]]:
    """`count` seeded mutations of `data`: [(label, damaged bytes)], each kind in turn ('flipped 3', ...)."""
    rng = random.Random(seed)
    return [(f'{kinds[i % len(kinds)]} {i}', mutate(data, kinds[i % len(kinds)], rng)) for i in range(count)]


def _vint(data: bytes, position: int, marker: bool = False) -> Tuple[int, int]:
    """An EBML variable-length integer at `position`: (value, position after it); `marker` keeps the
    length marker, as element IDs are written."""
    first, length = data[position], 1
    while length < 8 and not first & (0x80 >> (length - 1)):
        length += 1
    value = first if marker else first & (0xFF >> length)
    for byte in data[position + 1:position + length]:
        value = value << 8 | byte
    return value, position + length


MATROSKA_CONTAINERS = (0x18538067, 0x1F43B675, 0xA0)  # Segment, Cluster, BlockGroup
MATROSKA_BLOCKS = (0xA3, 0xA1)                         # SimpleBlock, Block


def matroska_blocks(data: bytes) -> List[Tuple[int, int, int]]:
    """[(track number, start, end)] of the (Simple)Blocks of a Matroska / WebM file, in file order:
    `start` is where the block's data begins (its track number; then a 2-byte time relative to its
    cluster, a flags byte and the frame), `end` where it ends. The element's ID and size come just
    before `start`."""
    blocks = []

    def walk(start: int, end: int) -> None:
        position = start
        while position < end:
            element, inside = _vint(data, position, marker=True)
            size, inside = _vint(data, inside)
            if element in MATROSKA_CONTAINERS:
                walk(inside, min(end, inside + size))
            elif element in MATROSKA_BLOCKS:
                blocks.append((_vint(data, inside)[0], inside, inside + size))
            position = inside + size

    walk(0, len(data))
    return blocks
