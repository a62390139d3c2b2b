"""Render a self-contained HTML page (figures embedded as base64 PNG) from report sections."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jinja2


def b64(png: bytes) -> str:
    """PNG bytes as base64 text for a data: URI (the report is one self-contained file)."""
    return base64.b64encode(png).decode("ascii")


@dataclass
class Page:
    """What a report page shows; ``render`` turns it into HTML."""

    title: str
    subtitle: str
    overview: bytes
    has_defects: bool
    tables: list[tuple[str, str]] = field(default_factory=list)
    figures: list[tuple[str, bytes]] = field(default_factory=list)
    chips: list[tuple[int, bytes, str]] = field(default_factory=list)
    chips_title: str = "Largest and most severe defects"
    provenance: dict[str, Any] = field(default_factory=dict)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (css class "warning" or "note", text)
    job: dict[str, str] = field(default_factory=dict)  # the owner's job details, shown first

    def render(self) -> str:
        """The report page as HTML (Jinja template, escaped)."""
        template = jinja2.Environment(autoescape=True).from_string(
            resources.files("pipeline.report").joinpath("templates/report.html.j2").read_text()
        )
        return template.render(
            title=self.title,
            subtitle=self.subtitle,
            overview=b64(self.overview),
            has_defects=self.has_defects,
            tables=[{"title": t, "html": h} for t, h in self.tables],
            figures=[{"alt": alt, "png": b64(png)} for alt, png in self.figures],
            chips=[{"id": i, "png": b64(png), "caption": caption} for i, png, caption in self.chips],
            chips_title=self.chips_title,
            provenance=self.provenance,
            notes=[{"kind": kind, "text": text} for kind, text in self.notes],
            job=self.job,
        )
