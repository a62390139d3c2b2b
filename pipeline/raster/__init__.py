"""Raster I/O: the global tile grid, blocks with halos, validated reading and COG writing."""
