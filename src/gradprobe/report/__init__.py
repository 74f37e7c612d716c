"""Reports: terminal tables, static figures and self-contained HTML, all read from the store.

* :mod:`~gradprobe.report.data`, :mod:`~gradprobe.report.theory_data`: stored runs ->
  tidy frames (the only place numbers are pulled or computed);
* :mod:`~gradprobe.report.content`: figure specs, tables, sections (what a report holds);
* :mod:`~gradprobe.report.build`: which figures for which runs (the demo study,
  :mod:`gradprobe.app.study`, composes the same helpers);
* :mod:`~gradprobe.report.plotly_figures`, :mod:`~gradprobe.report.html`: interactive charts
  in one offline HTML file; :mod:`~gradprobe.report.figures`: matplotlib, PNG/SVG;
* :mod:`~gradprobe.report.theory_figures`: :func:`plot_phase_diagram`,
  :func:`plot_comparison` (what :mod:`gradprobe.theory` computed, drawn);
* :mod:`~gradprobe.report.tables`: rich tables for the terminal;
* :mod:`~gradprobe.report.api`: :func:`~gradprobe.report.api.make_report`, what
  ``gradprobe report`` calls.

Docs: docs/report.md.
"""

from gradprobe.report.theory_figures import plot_comparison, plot_phase_diagram

__all__ = ["plot_comparison", "plot_phase_diagram"]
