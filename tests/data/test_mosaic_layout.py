"""The mosaic's layout can be asked for afterwards: which composed cell (piece of wall) each pixel
shows, so a bench can tell a crack that runs on from one that meets another photo's at its edge."""

import numpy as np
from PIL import Image

from pipeline.config import ClassSpec
from pipeline.data.mosaic import cell_index, compose_mosaic


def test_cell_index_is_the_layout_compose_mosaic_drew(tmp_path):
    """Two photos, one all crack and one without: every cell of the index is all crack or none in
    the truth raster, and both kinds are there."""
    import rasterio

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    for name, value in (("a", 255), ("b", 0)):
        Image.fromarray(rng.integers(60, 200, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{name}.png")
        Image.fromarray(np.full((48, 64), value, np.uint8)).save(tmp_path / "masks" / f"{name}.png")
    classes = [ClassSpec(name="background", values=[0]), ClassSpec(name="crack", values=[255])]
    out, truth = tmp_path / "m.tif", tmp_path / "t.tif"
    compose_mosaic(tmp_path / "images", tmp_path / "masks", out, truth, 300, 200, 0.001, "EPSG:32633", classes, seed=5)
    with rasterio.open(truth) as ds:
        labels = ds.read(1)
    index = cell_index(300, 200, 48, 64, 2, seed=5)
    assert index.shape == labels.shape and (index >= 0).all()
    kinds = set()
    for cell in np.unique(index):
        values = np.unique(labels[index == cell])
        assert len(values) == 1, f"cell {cell} shows two photos: {values}"
        kinds.add(int(values[0]))
    assert kinds == {0, 1}
