"""SSD-style photometric distortion as a detectron2 Augmentation (image only, labels untouched)."""

import cv2
import numpy as np
from detectron2.data.transforms import Augmentation, Transform

COLOR_FORMATS = ("RGB", "BGR")


class PhotometricDistortTransform(Transform):
    """Brightness, contrast, saturation and hue changes with fixed (already sampled) parameters.

    A parameter of None skips that step. Contrast is applied before or after the HSV steps, as in
    SSD. Each step works on uint8 values (clipped), so results do not depend on float rounding.
    """

    def __init__(
        self,
        img_format: str,
        brightness_delta: float | None = None,
        contrast_alpha: float | None = None,
        contrast_first: bool = True,
        saturation_alpha: float | None = None,
        hue_delta: int | None = None,
    ):
        if img_format not in COLOR_FORMATS:
            raise ValueError(f"Photometric distortion needs an RGB or BGR image, not {img_format}")
        super().__init__()
        self._set_attributes(locals())

    @staticmethod
    def _clip(x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 uint8 image, got {img.dtype} {img.shape}")
        out = img
        if self.brightness_delta is not None:
            out = self._clip(out.astype(np.float32) + self.brightness_delta)
        if self.contrast_first and self.contrast_alpha is not None:
            out = self._clip(out.astype(np.float32) * self.contrast_alpha)
        if self.saturation_alpha is not None or self.hue_delta is not None:
            to_hsv, from_hsv = (
                (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB)
                if self.img_format == "RGB"
                else (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR)
            )
            hsv = cv2.cvtColor(np.ascontiguousarray(out), to_hsv)
            if self.saturation_alpha is not None:
                hsv[..., 1] = self._clip(hsv[..., 1].astype(np.float32) * self.saturation_alpha)
            if self.hue_delta is not None:  # OpenCV's 8-bit hue runs over 0..179
                hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + self.hue_delta) % 180).astype(
                    np.uint8
                )
            out = cv2.cvtColor(hsv, from_hsv)
        if not self.contrast_first and self.contrast_alpha is not None:
            out = self._clip(out.astype(np.float32) * self.contrast_alpha)
        return out

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation


class ColorAugSSD(Augmentation):
    """Each distortion is applied with probability `prob`, with SSD's default ranges."""

    def __init__(
        self,
        img_format: str,
        brightness_delta: float = 32,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
        prob: float = 0.5,
    ):
        if img_format not in COLOR_FORMATS:
            raise ValueError(
                f"INPUT.COLOR_AUG_SSD needs INPUT.FORMAT RGB or BGR, not {img_format!r}"
            )
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        # detectron2 seeds numpy's global generator in every data-loader worker (seed_all_rng),
        # so sampling from it keeps runs reproducible with SEED.
        u = np.random.uniform(size=9)  # noqa: NPY002
        apply = u[:4] < self.prob

        def between(lo, hi, x):
            return float(lo + (hi - lo) * x)

        hue = int(np.floor(between(-self.hue_delta, self.hue_delta + 1, u[8])))
        return PhotometricDistortTransform(
            self.img_format,
            brightness_delta=(
                between(-self.brightness_delta, self.brightness_delta, u[5]) if apply[0] else None
            ),
            contrast_alpha=between(*self.contrast_range, u[6]) if apply[1] else None,
            contrast_first=bool(u[4] < 0.5),
            saturation_alpha=between(*self.saturation_range, u[7]) if apply[2] else None,
            hue_delta=min(hue, self.hue_delta) if apply[3] else None,
        )
