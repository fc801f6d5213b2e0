"""Clean plates: does a plate look right for its source (`check_plate`), aligning it onto the source
for a camera that moved a little (`align_plate`), and a plate from frames before the subject entered
(`median_plate`). Images are (H, W, 3) uint8 RGB."""
from typing import NamedTuple, Optional, Sequence

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
    changed = changed_fraction(src, bgr)
    if changed < PLATE_SAME_FRACTION:
        return "the clean plate is nearly identical to the source: is the subject in view?"
    if changed > PLATE_DIFFERENT_FRACTION:
        return (f"the clean plate differs from the source in {changed:.0%} of the picture: is it from another "
                "scene, did the camera move (try --preprocess-alignment), or is it the replacement background?")
    return None


def changed_fraction(src: np.ndarray, bgr: np.ndarray) -> float:
    """The fraction of the picture where the plate differs from the source, 0 ~ 1 (see PLATE_CHANGE_LEVEL).

    Args:
        src, bgr: (H, W, 3) uint8, the same size.
    """
    height = max(1, round(src.shape[0] * PLATE_CHECK_WIDTH / src.shape[1]))
    small = [cv2.resize(x, (PLATE_CHECK_WIDTH, height), interpolation=cv2.INTER_AREA).astype(np.int16)
             for x in (src, bgr)]
    return float((np.abs(small[0] - small[1]).max(axis=2) > PLATE_CHANGE_LEVEL * 255).mean())


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
