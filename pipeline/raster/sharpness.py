"""How blurred is an image? The width of its edges, read from the image alone.

A crack a pixel or two wide disappears under a blur of about its own width, and nothing in the
crack map says so: a defocused or shaken photo in an orthomosaic simply shows fewer cracks. The
blur is measured at the image's strongest edges by comparing their gradient at two scales
(``SCALES_PX``): a step edge blurred by a Gaussian of sigma s has a gradient peak proportional to
1/sqrt(s^2 + k^2) when measured with a derivative-of-Gaussian of scale k, so the ratio of the two
peaks gives s whatever the edge's contrast (Zhuo & Sim, "Defocus map estimation from a single
image", Pattern Recognition 2011).

Sensor noise and JPEG add gradient of their own, most at pixel scale: the scales are kept above it
(1.5 and 3 px), and only edges well above the window's own noise (estimated as Immerkaer, "Fast
noise variance estimation", CVIU 1996) are read, so a defocused surface keeps a reading down to
faint edges while a plain one has none.

The answer is a *step-edge equivalent* sigma in pixels, the 75th percentile over the window's edges
(lines and close edges read narrower than steps). Measured (``tests/raster/test_sharpness.py``): on
blurred step edges it is within 0.1 px; on real crack photos defocused by a known sigma, noise and
JPEG, the median over photos reads 10-16 % under the total blur at 2, 3 and 5 px, while one sharp
window reads anywhere from 0 to ~2.4 px (a window's reading scatters; the report takes each cell's
median with its neighbours'). The report's limit is set on the estimate itself, where the crack map
fails (``bench/blur_robustness.py``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

SCALES_PX = (1.5, 3.0)  # derivative-of-Gaussian scales: fine and coarse (above JPEG's pixel-scale artefacts)
EDGE_SHARE = 0.02  # the strongest edges read: this share of the window's pixels (before thinning)
EDGE_PERCENTILE = 75  # of the edges' sigmas: lines and close edges read narrow, so not the median
MIN_EDGE_GRADIENT = 0.5  # grey levels per pixel at the coarse scale: never read a weaker edge
EDGE_OVER_NOISE = 4.0  # nor one within this many times the coarse gradient the window's own noise gives
NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)  # Immerkaer 1996: blind to ramps
MIN_EDGES = 12  # fewer edges than this: the window has too little texture to tell
MARGIN_PX = 9  # edges this close to the window's side or to nodata are not read (the filters see past them)
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


def _noise_sigma(image: np.ndarray, usable: np.ndarray) -> float:
    """The window's noise (grey levels, sigma) from a second difference that ramps and edges barely
    pass (Immerkaer 1996); texture adds a little, which only raises the floor on sharp windows."""
    response = np.abs(ndimage.convolve(image, NOISE_KERNEL, mode="reflect"))
    return float(math.sqrt(math.pi / 2) / 6 * response[usable].mean())


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
    noise = _noise_sigma(image, usable)
    coarse_noise = noise / (2 * math.sqrt(math.pi) * coarse_scale**2)  # white noise's gradient at that scale
    floor = max(MIN_EDGE_GRADIENT, EDGE_OVER_NOISE * coarse_noise)
    strong = coarse >= max(float(np.quantile(coarse[usable], 1 - EDGE_SHARE)), floor)
    edges = ridge & strong & usable
    if edges.sum() < MIN_EDGES:
        return math.nan
    ratio2 = (fine[edges].astype(np.float64) / coarse[edges]) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = (coarse_scale**2 - ratio2 * fine_scale**2) / (ratio2 - 1)
    variance = np.where(ratio2 > 1, np.minimum(variance, MAX_SIGMA_PX**2), MAX_SIGMA_PX**2)
    return float(np.sqrt(max(float(np.percentile(variance, EDGE_PERCENTILE)), 0.0)))
