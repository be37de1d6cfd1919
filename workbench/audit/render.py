"""The audit page: ``index.html`` from the template ``workbench/templates/audit.html.j2``."""

from __future__ import annotations

from workbench.resources import package_path


def render_html(context: dict) -> str:
    """index.html from its context (every value HTML-escaped by the template engine)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(package_path("templates")), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined)
    return env.get_template("audit.html.j2").render(**context)
