"""GIS defect reports: vectorised defects, measurements in real units, tables, HTML, change tracking."""
