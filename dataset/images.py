"""Image folders and video files as sequences of frames, for inference and validation."""
import os
from pathlib import Path

import cv2
from PIL import Image
from torch.utils.data import Dataset

from .files import IMAGE_EXTENSIONS, DataPathError, list_images
from .loading import DECODE_ERRORS, CorruptDataError, load_image


class ImagesDataset(Dataset):
    """All images below `root` (recursive, sorted by relative path), as PIL images in `mode`.

    filenames:      the absolute file names, in item order.
    relative_names: the same relative to `root` ('clip/0001.png'), to write outputs in the same layout.

    Inference must not silently drop or shift frames, so an unreadable image raises CorruptDataError
    naming it (the training data sets skip such files instead).
    """

    def __init__(self, root, mode: str = 'RGB', transforms=None):
        self.root = Path(root)
        files = list_images(self.root)
        if not files:
            raise DataPathError(f'Image folder {self.root} contains no images ({", ".join(IMAGE_EXTENSIONS)}).')
        self.filenames = [str(path) for path in files]
        self.relative_names = [path.relative_to(self.root).as_posix() for path in files]
        self.mode = mode
        self.transforms = transforms

    def __len__(self):
        return len(self.filenames)

    def __getitem__(self, index):
        try:
            img = load_image(self.filenames[index], self.mode)
        except DECODE_ERRORS as error:
            raise CorruptDataError(f'Cannot read image {self.filenames[index]}: {error}') from error
        return self.transforms(img) if self.transforms else img


class VideoDataset(Dataset):
    """The frames of a video file (OpenCV's FFmpeg reader), as PIL 'RGB' images.

    width, height, frame_rate, frame_count describe the video. Reading frames in order is fast;
    a jump seeks. The file is opened lazily in each process, so DataLoader workers can use it.
    Supports slices (`video[10:20]`) and `with VideoDataset(path) as video:`.
    """

    def __init__(self, path, transforms=None):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise DataPathError(f'Video file {self.path} does not exist.')
        self.transforms = transforms
        self._cap, self._pid, self._next = None, None, 0
        cap = self._capture()
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.frame_rate = cap.get(cv2.CAP_PROP_FPS)
        self.frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if self.frame_count <= 0 or self.width <= 0:
            raise DataPathError(f'Video file {self.path} cannot be read as a video (no frames found).')

    def _capture(self):
        # A capture opened in the parent process must not be shared with forked workers.
        if self._cap is None or self._pid != os.getpid():
            self._cap = cv2.VideoCapture(self.path)
            self._pid, self._next = os.getpid(), 0
            if not self._cap.isOpened():
                raise DataPathError(f'Video file {self.path} cannot be opened by OpenCV.')
        return self._cap

    def __len__(self):
        return self.frame_count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f'frame {index} out of range for {len(self)} frames of {self.path}')
        cap = self._capture()
        if index != self._next:
            cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
        if not ok:
            raise IndexError(f'frame {index} of {self.path} could not be decoded')
        self._next = index + 1
        img = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        return self.transforms(img) if self.transforms else img

    def close(self):
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):
        state = self.__dict__.copy()
        state['_cap'] = None  # cv2 captures cannot be pickled; reopened on first use
        return state
