"""The audit page's charts, as base64 PNG to embed: acceptance by language, reject reasons stacked
per language, the LID confusion heat map (matplotlib, no display needed)."""

from __future__ import annotations

import base64
import io


def _png(figure) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plots(rows: list[dict], details: dict[str, dict], confusion: dict[str, dict[str, int]]) -> dict[str, str]:
    """The three charts by name (``acceptance``, ``reasons``, ``confusion``), base64 PNG each."""
    from matplotlib.figure import Figure

    charts = {}
    ordered = sorted(rows, key=lambda r: -r["acceptance_rate"])
    width = max(6.0, 0.28 * len(rows) + 2)
    fig = Figure(figsize=(width, 3.6))
    ax = fig.add_subplot()
    ax.bar([r["language"] for r in ordered], [100 * r["acceptance_rate"] for r in ordered], color="#3b7dd8")
    ax.set_ylabel("accepted (% of generated ok)")
    ax.set_ylim(0, 100)
    ax.set_title("Acceptance by language")
    ax.tick_params(axis="x", labelrotation=90, labelsize=8)
    charts["acceptance"] = _png(fig)

    reasons = sorted({r for d in details.values() for r in d["rejects_by_reason"]})
    fig = Figure(figsize=(width, 3.8))
    ax = fig.add_subplot()
    bottom = [0] * len(ordered)
    cmap = __import__("matplotlib").colormaps["tab20"]
    for index, reason in enumerate(reasons):
        values = [details[r["language"]]["rejects_by_reason"].get(reason, 0) for r in ordered]
        ax.bar([r["language"] for r in ordered], values, bottom=bottom, label=reason, color=cmap(index % 20))
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("rejected rows with reason")
    ax.set_title("Reject reasons (a row may have several)")
    ax.tick_params(axis="x", labelrotation=90, labelsize=8)
    if reasons:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    charts["reasons"] = _png(fig)

    expected = sorted(confusion)
    seen = sorted({s for row in confusion.values() for s in row})
    fig = Figure(figsize=(max(4.0, 0.3 * len(seen) + 2), max(3.0, 0.3 * len(expected) + 1.5)))
    ax = fig.add_subplot()
    if expected and seen:
        import math

        counts = [[confusion[e].get(s, 0) for s in seen] for e in expected]
        # log scale: the diagonal (correct) dwarfs the confusions otherwise
        image = ax.imshow([[math.log10(1 + c) for c in row] for row in counts], cmap="magma_r", aspect="auto")
        fig.colorbar(image, ax=ax, label="log10(1 + rows)")
        ax.set_xticks(range(len(seen)), seen, rotation=90, fontsize=7)
        ax.set_yticks(range(len(expected)), expected, fontsize=7)
        if len(seen) * len(expected) <= 400:
            for i, row in enumerate(counts):
                for j, count in enumerate(row):
                    if count:
                        dark = math.log10(1 + count) > 0.6 * math.log10(1 + max(map(max, counts)))
                        ax.text(j, i, str(count), ha="center", va="center", fontsize=6,
                                color="white" if dark else "black")
    else:
        ax.text(0.5, 0.5, "no LID verdicts", ha="center", va="center")
    ax.set_xlabel("language the LID ensemble saw (main field)")
    ax.set_ylabel("expected language")
    ax.set_title("LID confusion")
    charts["confusion"] = _png(fig)
    return charts
