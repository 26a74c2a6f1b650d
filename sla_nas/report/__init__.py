"""The report: one offline HTML page of a run that a user would rather look at than read.

`build_report(run_dir)` writes ``report.html``: the best-so-far with the seed-noise band,
Pareto fronts, connectivity pictures, importances, learning curves, a sortable table, the
confirmation and, for a one-shot search, its supernet scores against standalone losses. Data
functions (no plotly) compute what each figure shows; figure functions turn that into plotly
figures; the page puts them together. `load_results` is the trials table.
"""

from __future__ import annotations

from ._report import (
    build_report,
    load_results,
    plot_connectivity,
    plot_history,
    plot_importances,
    plot_learning_curves,
    plot_marginal,
    plot_pareto,
)

__all__ = ["build_report", "load_results", "plot_history", "plot_pareto", "plot_connectivity",
           "plot_importances", "plot_marginal", "plot_learning_curves"]
