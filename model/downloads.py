"""Checkpoints by URL: `local_checkpoint(location)` gives a local file for a path or an https:// URL.

    from model.downloads import local_checkpoint
    path = local_checkpoint('https://example.org/weights/refine.pth#sha256=9f2c...')

A URL is downloaded once into torch.hub's cache (`torch.hub.get_dir()/checkpoints`, which honours
$TORCH_HOME) and verified against its sha256: the one given in the URL as `#sha256=<hex>`, else the one
known for the file's name (`model.checkpoint.KNOWN_SHA256`). An unverified file is never used: a URL with no known sha256
is refused, saying how to give it. The download goes to a temporary name beside its place and is moved
there only once its sha256 matches (`torch.hub.download_url_to_file`), so a failed, cut or wrong
download leaves nothing in the cache. The file is then loaded as any other (with weights_only=True).
"""
import hashlib
import os
import urllib.error
import urllib.parse
from typing import Optional, Tuple

import torch

from .checkpoint import KNOWN_SHA256

__all__ = ['local_checkpoint', 'is_url', 'DownloadError']


class DownloadError(ValueError):
    """A checkpoint URL that cannot give a verified file (a one-line message naming the URL)."""


def is_url(location: str) -> bool:
    return urllib.parse.urlsplit(location).scheme in ('http', 'https')


def split_sha256(url: str) -> Tuple[str, Optional[str]]:
    """The URL without its '#sha256=<hex>' fragment, and the hex (None without one)."""
    address, _, fragment = url.partition('#')
    if not fragment:
        return url, None
    key, _, value = fragment.partition('=')
    value = value.lower()
    if key != 'sha256' or len(value) != 64 or any(c not in '0123456789abcdef' for c in value):
        raise DownloadError(f"{url}: expected '#sha256=' and the file's 64 hexadecimal digits at the end of the URL")
    return address, value


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        for block in iter(lambda: file.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def cache_path(url: str) -> str:
    name = os.path.basename(urllib.parse.urlsplit(url).path) or 'checkpoint.pth'
    return os.path.join(torch.hub.get_dir(), 'checkpoints', name)


def local_checkpoint(location: str, progress: bool = False) -> str:
    """`location` itself when it is not a URL; else the verified file in the cache, downloaded if needed."""
    if not is_url(location):
        return location
    url, expected = split_sha256(location)
    path = cache_path(url)
    expected = expected or KNOWN_SHA256.get(os.path.basename(path))
    if expected is None:
        raise DownloadError(f"{url}: no sha256 is known for {os.path.basename(path)}; add the file's sha256 to the URL "
                            "as #sha256=<hex> (sha256sum FILE prints it) so that the download can be verified")
    if os.path.exists(path):
        found = file_sha256(path)
        if found != expected:
            raise DownloadError(f"{url}: the cached {path} has sha256 {found}, not {expected}: delete it to "
                                "download again")
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, path, hash_prefix=expected, progress=progress)
    except urllib.error.HTTPError as error:
        raise DownloadError(f"{url}: the server answered HTTP {error.code} {error.reason}; nothing was cached") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, 'reason', error)
        raise DownloadError(f"{url}: cannot download ({reason}); without a network, download it elsewhere and put it "
                            f"at {path}, or pass the local file") from None
    except RuntimeError as error:  # torch.hub's sha256 check
        if 'invalid hash value' not in str(error):
            raise
        raise DownloadError(f"{url}: the download did not match sha256 {expected} (cut short, or another file); "
                            "nothing was cached") from None
    return path
