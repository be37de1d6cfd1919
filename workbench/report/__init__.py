"""Report stage: per-language MIRACL gap reports tied to the data audit.

Public: :func:`workbench.report.stage.run_report` (over a run), :func:`workbench.report.stage.build_report` (from
tables by path), :func:`workbench.report.stage.run_compare`,
:func:`workbench.report.next_plan.propose_quotas`.

Modules: ``stage`` the stage entry (``run_report``, its body ``write_report``, ``build_report``); ``inputs`` reads and checks the results and
audit tables; ``analysis`` scores, gaps, groups, the data table and the verdict; ``measured`` the
run's own measurements (intervals, paired tests, training cards); ``render`` the template context,
the templates and the tidy tables; ``plots`` the charts; ``compare`` compare mode;
``references`` the published reference points; ``next_plan`` quotas for the next plan.
Imports go one way: stage -> compare -> plots -> render -> analysis, measured -> references;
``inputs`` imports none of them.
"""

STAGE = "report"
