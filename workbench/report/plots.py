"""Report plots: matplotlib charts as base64 PNG, drawn from exactly the numbers of the tables beside them."""

from __future__ import annotations

import base64
import io

import polars as pl

from workbench import conditions
from workbench.metrics import NDCG_AT_10, metric_label
from workbench.report.analysis import GROUPS, MEASURED_BM25, Analysis
from workbench.report.render import _lexical, other_measured, reference_columns, table_cell


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def miracl_chart_values(a: Analysis) -> dict[str, dict[str, dict[str, float]]]:
    """Panels of the MIRACL per-language chart, one per corpus variant: corpus -> series -> language -> value,
    exactly the numbers of the per-language table beside it (MIRACL rows only). Numbers on different
    corpora never share an axis: each corpus is its own labelled panel."""
    series = [a.focus] + other_measured(a) + reference_columns(a)
    bm25 = _lexical(a)
    panels: dict[str, dict[str, dict[str, float]]] = {}
    for name in series:
        system = bm25 if name == MEASURED_BM25 else name
        if system is None:
            continue
        for code in (f["code"] for f in a.languages):
            cell = table_cell(a.scores, system, code, NDCG_AT_10, {})
            if cell is not None:
                panels.setdefault(cell["corpus"], {}).setdefault(name, {})[code] = cell["value"]
    return panels


def miracl_plots(a: Analysis) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    codes = [f["code"] for f in a.languages]
    plots: dict[str, str] = {}
    # 1. per-language nDCG@10: focus beside the reference points, one panel per corpus variant (a subset's
    # numbers never stand beside full-corpus ones on one axis)
    panels = miracl_chart_values(a) or {"none": {}}
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 3.4 * len(panels)), squeeze=False)
    hatches = ["", "//", "..", "xx", "--", "++", "oo"]  # told apart by pattern as well as colour
    for ax, (corpus, chart) in zip(axes[:, 0], panels.items()):
        width = 0.8 / max(len(chart), 1)
        for i, (name, values) in enumerate(chart.items()):
            xs = [j + i * width for j, c in enumerate(codes) if c in values]
            ax.bar(xs, [values[c] for c in codes if c in values], width, label=name, hatch=hatches[i % len(hatches)],
                   edgecolor="black", linewidth=0.4)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(codes))], [f"{c}\n{f['tier']}" for c, f in zip(codes, a.languages)])
        ax.set_ylabel("nDCG@10 (%)")
        words = conditions.CORPUS_WORDS.get(corpus, "no MIRACL number")
        ax.set_title(f"MIRACL dev nDCG@10 per language on {words} only: comparable within this panel only "
                     "(missing bar = no number)", fontsize=9)
        if chart:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout(h_pad=2.5)
    plots["per_language"] = _png(fig)
    # 2. mean gap to the primary reference per group
    g = a.groups.filter((pl.col("metric") == NDCG_AT_10) & (pl.col("n_languages") > 0))
    systems = g["system"].unique(maintain_order=True).to_list()  # the systems of the group table beside it
    fig, ax = plt.subplots(figsize=(10, 3.6))
    width = 0.8 / max(len(systems), 1)
    for i, name in enumerate(systems):
        sub = {r["group"]: r["mean_gap"] for r in g.filter(pl.col("system") == name).iter_rows(named=True)}
        xs = [j + i * width for j, grp in enumerate(GROUPS) if grp in sub]
        ax.bar(xs, [sub[grp] for grp in GROUPS if grp in sub], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(GROUPS))], list(GROUPS))
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel(f"mean comparable gap to {a.primary or 'no comparable reference'}\n(points; >0 = behind)", fontsize=8)
    ax.set_title("nDCG@10 gap by language group" + ("" if systems else ": no comparable gap to draw"))
    if systems:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    plots["groups"] = _png(fig)
    # 3. gap against synthetic data volume and acceptance rate
    pts = a.data.filter(pl.col("primary_gap_ndcg_at_10").is_not_null() & pl.col("has_synthetic_data"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, column, xlabel in ((axes[0], "accepted", "accepted synthetic examples"),
                               (axes[1], "acceptance_rate", "acceptance rate (accepted / generated)")):
        if pts.height:
            ax.scatter(pts[column].to_list(), pts["primary_gap_ndcg_at_10"].to_list())
            for rec in pts.iter_rows(named=True):
                ax.annotate(rec["language"], (rec[column], rec["primary_gap_ndcg_at_10"]), fontsize=8)
        else:
            ax.text(0.5, 0.5, "no language has both a measured gap\nand synthetic data in the audit",
                    ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"nDCG@10 gap to {(a.primary or 'no comparable reference').split(' ')[0]}", fontsize=8)
    fig.suptitle(f"{a.focus}: gap against the synthetic data behind it")
    plots["gap_vs_data"] = _png(fig)
    return plots


def measured_plots(sections: list[dict]) -> dict[str, str]:
    """One chart per measured section, drawn from exactly that section's rows (same task, corpus and metric)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plots = {}
    hatches = ["", "//", "..", "xx", "\\\\", "--"]  # systems told apart by pattern too, not by colour alone
    for sec in sections:
        labels = [f"{r['language']}\n{r['dataset']}" if len({x['dataset'] for x in sec['rows'] if x['language'] == r['language']}) > 1
                  else r["language"] for r in sec["rows"]]
        fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(labels) * max(1, len(sec["systems"])) / 2 + 3), 3.4))
        width = 0.8 / max(len(sec["systems"]), 1)
        has_ci = any(c is not None and c["ci_low"] is not None for r in sec["rows"] for c in r["cells"])
        for i, system in enumerate(sec["systems"]):
            xs, ys, err_lo, err_hi = [], [], [], []
            for j, row in enumerate(sec["rows"]):
                cell = row["cells"][i]
                if cell is None:
                    continue
                xs.append(j + i * width)
                ys.append(cell["value"])
                err_lo.append(cell["value"] - cell["ci_low"] if cell["ci_low"] is not None else 0)
                err_hi.append(cell["ci_high"] - cell["value"] if cell["ci_high"] is not None else 0)
            ax.bar(xs, ys, width, label=system, hatch=hatches[i % len(hatches)], edgecolor="black", linewidth=0.5,
                   yerr=[err_lo, err_hi] if has_ci else None, capsize=2)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels, fontsize=8)
        ax.set_ylabel(f"{sec['metric_label']} (%)")
        ax.set_ylim(0, 100)  # every chart on the metric's whole scale, so bars compare across charts
        whiskers = "whiskers = 95% interval" if has_ci else "no per-query scores: no intervals"
        ax.set_title(f"{sec['label']} ({sec['corpus']}): {sec['metric_label']} measured here; {whiskers}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        plots[sec["id"]] = _png(fig)
    return plots


def shared_delta_limits(table: pl.DataFrame) -> tuple[float, float]:
    """One y range for every chart of a compare view (REPORT_COMPARE rows): every difference and its interval
    fits, 0 included, so panels are read on one scale and a small difference never fills its frame."""
    lows = [v for v in [*table["delta"].to_list(), *table["delta_ci_low"].to_list()] if v is not None]
    highs = [v for v in [*table["delta"].to_list(), *table["delta_ci_high"].to_list()] if v is not None]
    low, high = min([0.0, *lows]), max([0.0, *highs])
    pad = max(high - low, 1.0) * 0.08
    return low - pad, high + pad


def compare_plot(part: pl.DataFrame, task: str, metric: str, limits: tuple[float, float] | None = None) -> str:
    """Compare mode: B - A per language for one task and metric (rows of REPORT_COMPARE, in table order), with
    the interval of each difference as whiskers and its mark (the same ▲/▼/≈ as the table: significant after
    Holm or not); ``limits``: the y range shared by every chart of the page."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 0.5 * part.height + 2), 3))
    rows = part.to_dicts()
    marks = ["" if r["delta_ci_low"] is None else "\u2248" if not r["significant"] else
             ("\u25b2" if r["delta"] > 0 else "\u25bc") for r in rows]
    colors = ["#bbbbbb" if not r["significant"] else ("#1b7f3b" if r["delta"] > 0 else "#b00020") for r in rows]
    has_ci = any(r["delta_ci_low"] is not None for r in rows)
    err = [[r["delta"] - r["delta_ci_low"] if r["delta_ci_low"] is not None else 0 for r in rows],
           [r["delta_ci_high"] - r["delta"] if r["delta_ci_high"] is not None else 0 for r in rows]]
    xs = list(range(len(rows)))
    ax.bar(xs, [r["delta"] for r in rows], color=colors, edgecolor="black", linewidth=0.4,
           yerr=err if has_ci else None, capsize=3)
    ax.set_xticks(xs, [f"{r['language']} {m}" if has_ci else r["language"] for r, m in zip(rows, marks)])
    if limits is not None:
        ax.set_ylim(*limits)
    ax.axhline(0, color="black", linewidth=0.8)
    label = metric_label(metric)
    ax.set_ylabel(f"B - A, {label} (points)")
    whiskers = ("whiskers: interval at Holm's level; grey = not significant" if has_ci else
                "no per-query scores: no intervals, untested")
    ax.set_title(f"{task}: {label}; {whiskers}; same scale in every chart", fontsize=8)
    return _png(fig)
