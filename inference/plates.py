"""Clean plates: does a plate look right for its source (`check_plate`), and does it go on matching a
clip's frames (`PlateWatch`), aligning it onto the source for a camera that moved a little
(`align_plate`), and a plate from frames before the subject entered (`median_plate`). Images are
(H, W, 3) uint8 RGB."""
from fractions import Fraction
from typing import NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np


# A pixel counts as changed when one of its channels differs by more than this (0 ~ 1), compared
# on copies shrunk to PLATE_CHECK_WIDTH, which averages away noise and compression.
PLATE_CHANGE_LEVEL = 0.1
PLATE_CHECK_WIDTH = 160
PLATE_SAME_FRACTION = 0.002       # fewer changed pixels than this: no subject in view
PLATE_DIFFERENT_FRACTION = 0.75   # more: not the same scene


def check_plate(src: np.ndarray, bgr: np.ndarray) -> Optional[str]:
    """Why a clean plate looks wrong for its source, or None when it looks right.

    The plate should equal the source except where the subject is. A plate nearly identical to the
    source means no subject in view; one that differs almost everywhere is from another scene, was
    shot after the camera moved, or is the replacement background given by mistake.

    Args:
        src, bgr: (H, W, 3) uint8, the same size.
    """
    return plate_problem(changed_fraction(src, bgr))


def plate_problem(changed: float) -> Optional[str]:
    """What a changed fraction (see `changed_fraction`) of the picture says about a plate, or None."""
    if changed < PLATE_SAME_FRACTION:
        return "the clean plate is nearly identical to the source: is the subject in view?"
    if changed > PLATE_DIFFERENT_FRACTION:
        return (f"the clean plate differs from the source in {changed:.0%} of the picture: is it from another "
                "scene, did the camera move (try --preprocess-alignment), or is it the replacement background?")
    return None


def shrink(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 shrunk to PLATE_CHECK_WIDTH wide (area averaging, aspect kept)."""
    height = max(1, round(image.shape[0] * PLATE_CHECK_WIDTH / image.shape[1]))
    return cv2.resize(image, (PLATE_CHECK_WIDTH, height), interpolation=cv2.INTER_AREA)


def changed_fraction(src: np.ndarray, bgr: np.ndarray) -> float:
    """The fraction of the picture where the plate differs from the source, 0 ~ 1 (see PLATE_CHANGE_LEVEL).

    Args:
        src, bgr: (H, W, 3) uint8, the same size.
    """
    small = [shrink(x).astype(np.int16) for x in (src, bgr)]
    return float((np.abs(small[0] - small[1]).max(axis=2) > PLATE_CHANGE_LEVEL * 255).mean())


# A clip's plate is checked on a frame every PLATE_WATCH_SECONDS of the clip. Frames darker than
# PLATE_DARK_LEVEL on average (a fade from black, the lights off) or whose brightness varies by less
# than PLATE_FLAT_LEVEL (standard deviation: a title card, a flash, a featureless wall) say nothing
# about the scene behind the subject and are not judged; the check moves to the next such frame.
PLATE_WATCH_SECONDS = 2.0
PLATE_DARK_LEVEL = 16 / 255
PLATE_FLAT_LEVEL = 3 / 255
# The background moved against the plate by more than this share of the picture's width: a pan. Found
# by phase correlation (the background outweighs the subject, who is not in the plate), trusted where
# its peak is at least PLATE_SHIFT_RESPONSE (another scene gives ~0.1, the same one 0.4 ~ 0.7).
PLATE_SHIFT_LIMIT = 0.0125
PLATE_SHIFT_RESPONSE = 0.2


class PlateMatch(NamedTuple):
    changed: float               # the fraction of the picture where they differ (see changed_fraction)
    shift: Tuple[float, float]   # (dx, dy), source pixels: how far the background moved against the plate
    width: int                   # of the source


def compare_plate(src: np.ndarray, bgr: np.ndarray) -> Optional[PlateMatch]:
    """How a frame and its plate match, the plate's brightness first matched to the frame's (one gain,
    the median ratio of their brightness, which the subject does not move: a fade or the camera's
    exposure is not another scene); None when the frame is too dark or too uniform to judge.

    Args:
        src, bgr: (H, W, 3) uint8, the same size.
    """
    src_small, bgr_small = (shrink(x).astype(np.float32) for x in (src, bgr))
    luma, plate_luma = src_small.mean(axis=2), bgr_small.mean(axis=2)
    if luma.mean() < PLATE_DARK_LEVEL * 255 or luma.std() < PLATE_FLAT_LEVEL * 255:
        return None
    lit = plate_luma > PLATE_DARK_LEVEL * 255
    gain = float(np.clip(np.median(luma[lit] / plate_luma[lit]), 0.1, 10)) if lit.any() else 1.0
    matched = np.clip(bgr_small * gain, 0, 255)
    changed = float((np.abs(src_small - matched).max(axis=2) > PLATE_CHANGE_LEVEL * 255).mean())
    window = cv2.createHanningWindow((luma.shape[1], luma.shape[0]), cv2.CV_32F)
    (dx, dy), response = cv2.phaseCorrelate(plate_luma, luma, window)
    scale = src.shape[1] / PLATE_CHECK_WIDTH
    shift = (dx * scale, dy * scale) if response >= PLATE_SHIFT_RESPONSE else (0.0, 0.0)
    return PlateMatch(changed, shift, src.shape[1])


def moved(match: PlateMatch) -> bool:
    return float(np.hypot(*match.shift)) > PLATE_SHIFT_LIMIT * match.width


class PlateWatch:
    """Checks a clip's clean plate through the clip, not against its first frame only.

    `check(index, src, bgr)` is called for every frame and judges one every PLATE_WATCH_SECONDS
    (frames too dark or too uniform are skipped, see `compare_plate`): the first judged frame as
    `check_plate` does (no subject in view, another scene) and for a shifted plate; every later one for
    drift, a plate that stops matching the background (a pan, a camera that moved, a cut to another
    scene). It returns one warning naming the frame, at most once per clip, else None.

    Args:
        frame_rate: the clip's frames per second.
        first: check the first judged frame (not when the plate was made from the clip's first frames).
    """

    def __init__(self, frame_rate=30, first: bool = True, seconds: float = PLATE_WATCH_SECONDS):
        self.rate = Fraction(frame_rate) if frame_rate else Fraction(30)
        self.interval = max(1, round(float(self.rate) * seconds))
        self.first, self.next, self.judged, self.done = first, 0, None, False

    def when(self, index: int) -> str:
        return f"frame {index} ({float(index / self.rate):.1f} s)"

    def check(self, index: int, src: np.ndarray, bgr: np.ndarray) -> Optional[str]:
        """src, bgr: (H, W, 3) uint8, frame `index` (from 0) of the clip and its plate."""
        if self.done or index < self.next:
            return None
        self.next = index + self.interval
        match = compare_plate(src, bgr)
        if match is None:  # too dark or too uniform: the next frame due is judged instead
            return None
        previous, self.judged = self.judged, index
        problem = None
        if previous is None and self.first:
            problem = plate_problem(match.changed)
            if problem is None and moved(match):
                problem = (f"the source is shifted by {match.shift[0]:+.0f}, {match.shift[1]:+.0f} pixels from the "
                           "clean plate: did the camera move after the plate was shot (try --preprocess-alignment)?")
        elif previous is not None and moved(match):
            problem = (f"the clean plate no longer matches the source: the picture moved by {match.shift[0]:+.0f}, "
                       f"{match.shift[1]:+.0f} pixels against it (it matched at frame {previous}): a camera pan or "
                       "move? (try --preprocess-alignment)")
        elif previous is not None and match.changed > PLATE_DIFFERENT_FRACTION:
            problem = (f"the clean plate no longer matches the source: they differ in {match.changed:.0%} of the "
                       f"picture (it matched at frame {previous}): does the clip cut to another scene?")
        self.done = problem is not None
        return f"{self.when(index)}: {problem}" if problem else None


ALIGN_MIN_MATCHES = 12     # fewer matched ORB features (or RANSAC inliers) than this: no alignment
ALIGN_MAX_FEATURES = 4000
ALIGN_FAST_THRESHOLD = 5   # ORB's corner contrast threshold; OpenCV's 20 finds few corners in plain rooms
ALIGN_MAX_SHIFT = 0.1      # a plate corner may move by at most this fraction of the picture's diagonal


class Alignment(NamedTuple):
    plate: np.ndarray                  # (H, W, 3) uint8: the plate seen from the source's camera, or as given
    homography: Optional[np.ndarray]   # (3, 3) from plate to source pixels; None when alignment failed
    failure: Optional[str]             # why the plate was left as given


def align_plate(src: np.ndarray, bgr: np.ndarray, min_matches: int = ALIGN_MIN_MATCHES) -> Alignment:
    """Warps the clean plate onto the source with a homography (ORB features, RANSAC), for a camera
    that moved a little between the two shots.

    Where the warped plate does not reach, the source's own pixels are used (read as background), as
    the original did. When too few features match or no plausible homography is found, the plate is
    returned unchanged with the reason, instead of failing.

    Args:
        src, bgr: (H, W, 3) uint8 RGB.
    """
    orb = cv2.ORB_create(nfeatures=ALIGN_MAX_FEATURES, fastThreshold=ALIGN_FAST_THRESHOLD)
    keys_src, desc_src = orb.detectAndCompute(cv2.cvtColor(src, cv2.COLOR_RGB2GRAY), None)
    keys_bgr, desc_bgr = orb.detectAndCompute(cv2.cvtColor(bgr, cv2.COLOR_RGB2GRAY), None)
    if desc_src is None or desc_bgr is None or min(len(keys_src), len(keys_bgr)) < min_matches:
        found = min(len(keys_src), len(keys_bgr))
        return Alignment(bgr, None, f"only {found} features found (needs {min_matches}): is the plate featureless?")
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(desc_bgr, desc_src)
    if len(matches) < min_matches:
        return Alignment(bgr, None, f"only {len(matches)} features matched (needs {min_matches})")
    points_bgr = np.float32([keys_bgr[m.queryIdx].pt for m in matches])
    points_src = np.float32([keys_src[m.trainIdx].pt for m in matches])
    homography, inliers = cv2.findHomography(points_bgr, points_src, cv2.RANSAC, 3.0)
    if homography is None or inliers is None or int(inliers.sum()) < min_matches:
        found = 0 if inliers is None else int(inliers.sum())
        return Alignment(bgr, None, f"no homography found ({found} consistent matches, needs {min_matches})")
    # Keypoints found on the coarser pyramid levels are placed to a pixel or two only: refit on the
    # consistent matches of the finest level where there are enough of them.
    finest = inliers.ravel().astype(bool) & np.array(
        [keys_bgr[m.queryIdx].octave == 0 and keys_src[m.trainIdx].octave == 0 for m in matches])
    if finest.sum() >= min_matches:
        refined, _ = cv2.findHomography(points_bgr[finest], points_src[finest], cv2.LMEDS)
        homography = homography if refined is None else refined
    height, width = src.shape[:2]
    corners = np.float32([[0, 0], [width, 0], [0, height], [width, height]])[None]
    if not np.isfinite(homography).all() or np.abs(cv2.perspectiveTransform(corners, homography) - corners).max() \
            > ALIGN_MAX_SHIFT * np.hypot(width, height):
        return Alignment(bgr, None, f"the homography found moves the plate by more than {ALIGN_MAX_SHIFT:.0%} of "
                                    "the picture: not a camera that moved a little")

    plate = cv2.warpPerspective(bgr, homography, (width, height), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
    covered = cv2.warpPerspective(np.full(bgr.shape[:2], 255, np.uint8), homography, (width, height),
                                  flags=cv2.INTER_NEAREST) == 255
    plate = np.where(covered[:, :, None], plate, src)
    # Features on a textured subject can agree on a wrong homography: keep it only if it helps.
    if changed_fraction(src, plate) >= changed_fraction(src, bgr):
        return Alignment(bgr, None, "the aligned plate matches the source no better than the plate as given")
    return Alignment(plate, homography, None)


def median_plate(frames: Sequence[np.ndarray]) -> np.ndarray:
    """A clean plate from frames before the subject enters: their per-pixel median, (H, W, 3) uint8."""
    if len(frames) == 1:
        return frames[0]
    return np.median(np.stack(frames), axis=0).round().astype(np.uint8)
