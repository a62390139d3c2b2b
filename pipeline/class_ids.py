"""The reserved class-id values, named once.

Class ids are bytes. 255 means "no class here" wherever a class raster appears: a pixel left out
of training labels, losses and metrics; outside the footprint in mask.tif and in truth rasters.
(A *mask value* of 255 in a data set's own label images is something else: CrackForest's crack,
mapped to a class id through the set's ``values``.)
"""

NO_CLASS = 255  # ignored in labels and metrics; nodata in mask.tif and truth rasters
UNMAPPED = 254  # a label value no class claims: found while loading a data set, never stored
