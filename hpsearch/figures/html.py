"""The HTML pages hpsearch writes (``plots/interactive.html`` and the report), built one way: a self-contained
page whose plotly figures carry plotly.js inline once, so it opens without a server or a network."""

from __future__ import annotations

import html
from typing import Any

__all__ = ["escape", "page", "plotly_figures"]


def escape(text: str) -> str:
    return html.escape(text)


def page(title: str, body: str, *, style: str = "body { font-family: sans-serif }") -> str:
    """A whole page: ``body`` is HTML already (escape what goes into it)."""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{style}</style></head><body>{body}</body></html>")


def plotly_figures(figures: list[tuple[str, Any]], heading: str = "h2") -> str:
    """Each ``(title, plotly figure)`` under its heading; plotly.js with the first one only."""
    return "".join(f"<{heading}>{escape(title)}</{heading}>" + fig.to_html(full_html=False, include_plotlyjs=i == 0,
                                                                         default_height="480px")
                   for i, (title, fig) in enumerate(figures))
