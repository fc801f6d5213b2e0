"""Image files that are broken the way real ones are, for the tests of every script that reads images."""
import io
import struct
import zlib

from PIL import Image


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
