"""Report stage: per-language MIRACL gap reports tied to the data audit.

Public: :func:`workbench.report.build.run_report`, :func:`workbench.report.build.run_compare`,
:func:`workbench.report.next_plan.propose_quotas`.
"""
