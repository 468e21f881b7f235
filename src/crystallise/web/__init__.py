"""The web UI (`crystallise serve`, at /ui): what crystallise recorded and learned, and undo.

Server-rendered pages (Jinja2 templates and one small vanilla JS file in this package), so
nothing needs building to run it:

    app.py       create_web_app: login cookie (the org API keys), CSRF, HTML error pages
    pages.py     the pages: traces, items, versions (diff, verdict, revert), tasks, reports
    reports.py   bench report folders (result.json, curve.png) under the reports directory
    templates/   Jinja2 templates;   static/   app.css, app.js

See docs/web.md. Needs the `serve` extra: pip install 'crystallise[serve]'.
"""

from __future__ import annotations

from crystallise.web.app import create_web_app

__all__ = ["create_web_app"]
