"""Applications built on the library: the demo study and the README's figures.

* :mod:`~gradprobe.app.demo`: ``gradprobe demo`` / ``make demo``, the study of causes and
  remedies on digits, run through the sweep engine;
* :mod:`~gradprobe.app.study`: that study's report layout, composed from the figure kinds
  of :mod:`gradprobe.report.build`;
* :mod:`~gradprobe.app.readme_figures`: ``make figures``, three of the study's figures as PNGs.

Nothing in the library imports this package (tests/test_imports.py checks the layering).
"""
