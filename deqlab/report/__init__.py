"""Reports over results: comparison tables and the dashboard's data and figures.

    tables   aggregate, ComparisonTable, final_epochs, resolve_column, objective_modes (`deqlab export`)
    render   a ComparisonTable as Markdown or CSV; latex: as a booktabs/siunitx table; ratio: the baseline ratio
    views    the dashboard's data shaping (study directories, filters, Pareto front, timelines, depth PCA)
    figures  the dashboard's plotly figures (one colour per value, axes in the catalogue's units)

Imports deqlab.results only (never the study or the training loop); metric labels, units and directions
come from deqlab.results.schema.
"""
