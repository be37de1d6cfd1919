"""The filter stage: language-ID ensemble, script check, rules per task family, dedup.

Public entry point: :func:`workbench.filter.stage.run_filter`.
"""
