"""How blurred is an image? The width of its edges, read from the image alone.

A crack a pixel or two wide disappears under a blur of about its own width, and nothing in the
crack map says so: a defocused or shaken photo in an orthomosaic simply shows fewer cracks. The
blur is measured at the image's strongest edges by comparing their gradient at two scales
(``SCALES_PX``): a step edge blurred by a Gaussian of sigma s has a gradient peak proportional to
1/sqrt(s^2 + k^2) when measured with a derivative-of-Gaussian of scale k, so the ratio of the two
peaks gives s whatever the edge's contrast (Zhuo & Sim, "Defocus map estimation from a single
image", Pattern Recognition 2011).

The answer is a *step-edge equivalent* sigma in pixels. Real texture holds lines and close edges
as well as steps, which read narrower, so on real photos the estimate runs below the true blur
(measured on crack photos blurred by a known sigma: ~0.1 px low when sharp, 0.4-0.8 px low at
3 px; ``tests/raster/test_sharpness.py``); the report's limit is set on the estimate itself, where
the crack map fails (``bench/blur_robustness.py``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

SCALES_PX = (1.0, 2.0)  # derivative-of-Gaussian scales: fine and coarse
EDGE_SHARE = 0.02  # the strongest edges read: this share of the window's pixels (before thinning)
EDGE_PERCENTILE = 75  # of the edges' sigmas: lines and close edges read narrow, so not the median
MIN_EDGE_GRADIENT = 1.5  # grey levels per pixel at the coarse scale: a weaker edge is noise
MIN_EDGES = 12  # fewer edges than this: the window has too little texture to tell
MARGIN_PX = 6  # edges this close to the window's side or to nodata are not read (the filters see past them)
MAX_SIGMA_PX = 8.0  # an edge whose scales cannot tell its width apart reads as this


def _across_maximum(magnitude: np.ndarray, along_y: np.ndarray, along_x: np.ndarray) -> np.ndarray:
    """Where the gradient magnitude peaks across the edge (not below either neighbour along the
    gradient's direction, taken to the nearest of four): the centre line of every edge, however
    faint or blurred, rather than isolated maxima."""
    angle = np.mod(np.degrees(np.arctan2(along_y, along_x)), 180.0)
    sector = np.rint(angle / 45.0).astype(np.int8) % 4  # 0: across x, 1: diagonal, 2: across y, 3: anti-diagonal
    padded = np.pad(magnitude, 1, mode="edge")
    height, width = magnitude.shape
    peak = np.zeros(magnitude.shape, bool)
    for index, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        before = padded[1 - dy : 1 - dy + height, 1 - dx : 1 - dx + width]
        after = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        peak |= (sector == index) & (magnitude >= before) & (magnitude >= after)
    return peak


def blur_sigma_px(grey: np.ndarray, valid: np.ndarray | None = None) -> float:
    """The blur of a greyscale window (step-edge equivalent Gaussian sigma, px), or NaN where it
    holds too little texture to tell (a plain surface, a deep shadow)."""
    image = np.asarray(grey, np.float32)
    if min(image.shape) <= 2 * MARGIN_PX:
        return math.nan
    usable = np.ones(image.shape, bool) if valid is None else np.asarray(valid, bool)
    if not usable.all():
        filled = image[usable].mean() if usable.any() else 0.0
        image = np.where(usable, image, filled)  # nodata's own edge is not the camera's
        usable = ndimage.binary_erosion(usable, iterations=MARGIN_PX)
    usable[:MARGIN_PX], usable[-MARGIN_PX:], usable[:, :MARGIN_PX], usable[:, -MARGIN_PX:] = False, False, False, False
    if usable.sum() < MIN_EDGES / EDGE_SHARE:
        return math.nan
    fine_scale, coarse_scale = SCALES_PX
    fine = ndimage.gaussian_gradient_magnitude(image, fine_scale)
    along_y = ndimage.gaussian_filter(image, coarse_scale, order=(1, 0))
    along_x = ndimage.gaussian_filter(image, coarse_scale, order=(0, 1))
    coarse = np.hypot(along_y, along_x)
    ridge = _across_maximum(coarse, along_y, along_x)  # each edge read at its centre line
    strong = coarse >= max(float(np.quantile(coarse[usable], 1 - EDGE_SHARE)), MIN_EDGE_GRADIENT)
    edges = ridge & strong & usable
    if edges.sum() < MIN_EDGES:
        return math.nan
    ratio2 = (fine[edges].astype(np.float64) / coarse[edges]) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = (coarse_scale**2 - ratio2 * fine_scale**2) / (ratio2 - 1)
    variance = np.where(ratio2 > 1, np.minimum(variance, MAX_SIGMA_PX**2), MAX_SIGMA_PX**2)
    return float(np.sqrt(max(float(np.percentile(variance, EDGE_PERCENTILE)), 0.0)))
