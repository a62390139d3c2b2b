"""msaf-pipeline: drone orthomosaics of bridges -> georeferenced defect maps."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("msaf-pipeline")  # one place: pyproject.toml
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
