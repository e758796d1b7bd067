"""``dukd report``: one HTML page showing what distillation did (curves, teacher agreement, crops,
results, configuration) for one or several run directories.

Modules: :mod:`~dukd_cli.report.runs` (reading run directories), :mod:`~dukd_cli.report.measure`
(evaluating the finished runs), :mod:`~dukd_cli.report.paper` (the paper's Table 2),
:mod:`~dukd_cli.report.figures` (matplotlib, the ``dukd[report]`` extra), :mod:`~dukd_cli.report.html`
(the page) and :mod:`~dukd_cli.report.build` (all of it: :func:`make_report`).
"""

from dukd_cli.report.build import ReportResult, make_report

__all__ = ["ReportResult", "make_report"]
