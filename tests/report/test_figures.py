"""Report figures: a map is drawn when it is saved, not once per layer plotted on it."""

import geopandas as gpd
import shapely
from matplotlib.figure import Figure

from pipeline.report import figures


def test_a_map_of_many_layers_is_drawn_only_when_saved(monkeypatch):
    """geopandas asks the canvas for a redraw after every layer; on the report's canvas that costs
    nothing, and saving draws twice (the tight bounding box, then the picture) whatever the layers."""
    draws = []
    real_draw = Figure.draw
    monkeypatch.setattr(Figure, "draw", lambda fig, renderer: draws.append(fig) or real_draw(fig, renderer))
    squares = [shapely.box(i, 0, i + 0.5, 0.5) for i in range(6)]
    frame = gpd.GeoDataFrame({"class": ["crack", "spall", "joint"] * 2}, geometry=squares, crs="EPSG:32633")
    colours = {"crack": "#ff0000", "spall": "#0000ff", "joint": "#00ff00"}
    png = figures.overview_map(
        None,
        (0.0, -1.0, 6.0, 1.5),
        frame,
        "class",
        colours,
        1.0,
        "map",
        surveyed=shapely.box(0, -1, 6, 1.5),
        lines=gpd.GeoSeries([shapely.LineString([(0, 0), (6, 0.2)])]),
        outlines=[figures.MapLabel("pier 1", shapely.box(0, -1, 3, 1.5))],
    )
    assert png.startswith(b"\x89PNG") and len(draws) == 2
