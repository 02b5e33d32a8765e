"""The Export page: the comparison table of `deqlab export`, as LaTeX, Markdown or CSV, to copy or download."""

from __future__ import annotations

import streamlit as st

from compare_sections import objectives
from deqlab.report import figures as figs
from deqlab.report import tables as export
from deqlab.report import views as dd
from deqlab.results import column_name, value_name


def page_export(trials, summary, specs, everything):
    """`everything`: all trials' summary, so the group choices stay put while filters narrow `summary`."""
    st.header("Export")
    if summary.empty:
        st.info("No trials match the filters.")
        return
    rows = trials.merge(summary[["study", "trial_id"]], on=["study", "trial_id"])  # the filtered trials' epochs
    groups = [g for g in export.group_candidates(everything)
              if everything[export.resolve_column(everything, g)].nunique(dropna=False) > 1] or ["study"]
    default_by = [g for g in groups if g.endswith(("init", "solver"))] or groups[:1]
    metrics = [m for m in dd.numeric_metrics(summary)]
    wanted = [*objectives(specs), *dd.EXPORT_METRICS]
    default_metrics = [m for m in dict.fromkeys(wanted) if m in metrics] or metrics[:1]
    c1, c2 = st.columns(2)
    by = c1.multiselect("group by", groups, default=default_by, key="exp_by", format_func=column_name)
    chosen = c2.multiselect("metrics", metrics, default=default_metrics, key="exp_metrics", format_func=figs.axis_title)
    baseline, ratio_of = None, None
    if by:
        b1, b2, b3 = st.columns(3)
        base_col = b1.selectbox("baseline column", ["(none)", *by], key="exp_base_col", format_func=column_name)
        if base_col != "(none)":
            col = export.resolve_column(summary, base_col)
            values = sorted(summary[col].astype(str).unique(), key=dd.sort_key)
            baseline = {base_col: b2.selectbox("baseline value", values, key="exp_base_value",
                                               format_func=lambda v: value_name(base_col, v))}
            times = [i for i, m in enumerate(chosen) if m.endswith("_time_s")]
            ratio_of = b3.selectbox("ratio of", chosen, index=times[0] if times else 0,
                                    key="exp_ratio_of", format_func=figs.axis_title) if chosen else None
    fmt = st.radio("format", export.FORMATS, horizontal=True, key="exp_fmt")
    latex = {}
    if fmt == "latex":
        l1, l2, l3 = st.columns([3, 1, 1])
        latex = dict(caption=l1.text_input("caption", key="exp_caption"), label=l2.text_input("label", key="exp_label"),
                     tabular_only=l3.checkbox("tabular only", key="exp_tabular"))
        st.caption("Preamble: \\usepackage{booktabs} \\usepackage{siunitx}. Group a continuous parameter in "
                   "bins by writing it as tol:4 in `deqlab export --by`.")
    if not by or not chosen:
        st.info("Choose at least one column to group by and one metric.")
        return
    try:
        table = export.aggregate(rows, by, chosen, baseline=baseline, ratio_metric=ratio_of, modes=objectives(specs))
    except ValueError as exc:
        st.warning(dd.as_text(exc))
        return
    for warning in table.warnings:
        st.warning(dd.as_text(warning))
    texts = {f: export.render(table, f, **(latex if f == "latex" else {})) for f in export.FORMATS}
    st.code(texts[fmt], language={"latex": "latex", "markdown": "markdown", "csv": "text"}[fmt])
    if fmt == "markdown":
        with st.expander("preview"):
            st.markdown(texts["markdown"])
    cols = st.columns(3)
    for c, f, ext, mime in zip(cols, export.FORMATS, ("tex", "md", "csv"), ("text/x-tex", "text/markdown", "text/csv")):
        c.download_button(f"Download {f}", texts[f], file_name=f"comparison.{ext}", mime=mime, key=f"dl_{f}")
