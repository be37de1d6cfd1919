"""Audit stage: per-language statistics of generation and filtering, as tables, JSON and HTML.

Public: :func:`run_audit` (the stage over a run; its body :func:`write_audit`), and the numbers
other stages reuse, :func:`distinct_n` and :func:`family_generation_stats`.

Modules: ``stage`` the stage (reads the run's tables, writes ``audit/``); ``stats`` the numbers
(per language, per tier, the examples shown, the review records); ``plots`` the charts; ``render``
the HTML page. Imports go one way: stage -> stats, plots, render.
"""

from workbench.audit.stage import run_audit, write_audit
from workbench.audit.stats import distinct_n, family_generation_stats

__all__ = ["distinct_n", "family_generation_stats", "run_audit", "write_audit"]
