"""Run by Debian's python3 (python3-qgis): open survey outputs with QGIS's own API, headless, and
render a map. Prints what QGIS made of each layer as JSON; writes the map as PNG.

Usage: python3 qgis_render.py ORTHO MASK GPKG OUT.png
"""

import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (
    QgsApplication,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsRasterLayer,
    QgsVectorDataProvider,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtXml import QDomDocument


def _renderer_info(layer) -> dict:
    renderer = layer.renderer()
    categorized = renderer.type() == "categorizedSymbol"
    return {
        "renderer": renderer.type(),
        "field": renderer.classAttribute() if categorized else None,
        "categories": {c.value(): c.symbol().color().name() for c in renderer.categories()} if categorized else {},
    }


def _database_style(gpkg: str, layer_name: str, style_name: str) -> dict | None:
    """A layer opened afresh with one of its styles in the GeoPackage loaded (None: no such style)."""
    layer = QgsVectorLayer(f"{gpkg}|layername={layer_name}", f"{layer_name} by {style_name}", "ogr")
    _, ids, names, _, _ = layer.listStylesInDatabase()
    if style_name not in names:
        return None
    style, _ = layer.getStyleFromDatabase(ids[list(names).index(style_name)])
    document = QDomDocument()
    document.setContent(style)
    layer.importNamedStyle(document)
    return _renderer_info(layer)


def main() -> None:
    ortho_path, mask_path, gpkg, out = sys.argv[1:5]
    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], False)
    app.initQgis()
    ortho = QgsRasterLayer(ortho_path, "orthomosaic")
    mask = QgsRasterLayer(mask_path, "mask")
    defects = QgsVectorLayer(f"{gpkg}|layername=defects", "defects", "ogr")
    lines = QgsVectorLayer(f"{gpkg}|layername=crack_centerlines", "centrelines", "ogr")
    info = {
        "valid": {layer.name(): layer.isValid() for layer in (ortho, mask, defects, lines)},
        "features": defects.featureCount(),
    }
    renderer = defects.renderer()
    info["defects_renderer"] = renderer.type()
    if renderer.type() == "categorizedSymbol":
        info["defects_field"] = renderer.classAttribute()
        info["defects_categories"] = {c.value(): c.symbol().color().name() for c in renderer.categories()}
    # the other styles, listed and loaded as QGIS's Load Style > From Database does: defects by crack
    # type, condition cells by sharpness
    _, _, names, _, _ = defects.listStylesInDatabase()
    info["defects_styles"] = list(names)
    info["type_style"] = _database_style(gpkg, "defects", "crack type")
    info["sharpness_style"] = _database_style(gpkg, "condition_cells", "sharpness")
    # the inspector's review: a drop-down on each defect and two empty layers to draw in
    review = defects.fields().indexOf("review")
    setup = defects.editorWidgetSetup(review)
    info["review_widget"] = setup.type()
    info["review_values"] = [next(iter(entry)) for entry in setup.config().get("map", [])]
    info["review_default"] = defects.defaultValueDefinition(review).expression()
    for name in ("missed_cracks", "reviewed_area"):
        layer = QgsVectorLayer(f"{gpkg}|layername={name}", name, "ogr")
        info[name] = {
            "valid": layer.isValid(),
            "features": layer.featureCount(),
            "geometry": QgsWkbTypes.displayString(layer.wkbType()),
            "crs": layer.crs().authid(),
            "editable": bool(layer.dataProvider().capabilities() & QgsVectorDataProvider.AddFeatures),
            "colour": layer.renderer().symbol().color().name(),
        }
    cracks = QgsVectorLayer(f"{gpkg}|layername=cracks", "cracks", "ogr")
    info["cracks"] = {
        "valid": cracks.isValid(),
        "features": cracks.featureCount(),
        "geometry": QgsWkbTypes.displayString(cracks.wkbType()),
        **_renderer_info(cracks),
    }
    cells = QgsVectorLayer(f"{gpkg}|layername=condition_cells", "condition", "ogr")
    info["condition"] = {"valid": cells.isValid(), "features": cells.featureCount(), **_renderer_info(cells)}
    info["lines_renderer"] = lines.renderer().type()
    single = lines.renderer().type() == "singleSymbol"
    info["lines_colour"] = lines.renderer().symbol().color().name() if single else None
    mask_renderer = mask.renderer()
    info["mask_renderer"] = mask_renderer.type()
    if mask_renderer.type() == "paletted":
        info["mask_classes"] = {
            str(c.value): [c.label, c.color.name(), c.color.alpha()] for c in mask_renderer.classes()
        }
    settings = QgsMapSettings()
    settings.setLayers([lines, defects, mask, ortho])  # top first
    settings.setDestinationCrs(defects.crs())
    settings.setExtent(ortho.extent())
    settings.setOutputSize(QSize(900, 700))
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    saved = job.renderedImage().save(out, "PNG")
    print(json.dumps(info | {"saved": saved}), flush=True)
    # PyQGIS can crash while tearing down layers and the application at exit; the work is done
    os._exit(0 if saved else 1)


if __name__ == "__main__":
    main()
