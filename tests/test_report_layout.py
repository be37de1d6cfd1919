"""The report as a researcher meets it, checked in headless Chromium at 1400x900: the first screen holds
the run's main measured result with its intervals, no table is cut off (every table fits the page or
scrolls in its own wrapper), a metric that cannot discriminate is folded with a note, metric names are
written one way, and the compare view carries the same intervals and marks as the report.

Inputs are real: three BM25 systems (bm25s + pytrec_eval) on the repository's XQuAD subsets
(examples/data/xquad: 60 paragraphs per language, so Recall@100 counts every paragraph) with per-query
scores, MTEB-published MiniLM MIRACL rows (labelled as copied) for the wide per-language tables, and the
fixture audit summary.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from html import unescape
from pathlib import Path

import polars as pl
import pytest

from workbench import conditions
from workbench.config import ReportSection
from workbench.report.stage import build_report, run_compare

import report_inputs as ri

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "data"
LANGUAGES = ["de", "en", "hi", "th"]
WIDTH, HEIGHT = 1400, 900

# Injected before </body> of a copy of the page: measures the first screen as it loads (details as the
# page opens them), then opens every <details> and lists each table that is wider than the page without a
# horizontally scrolling wrapper, or whose wrapper is itself wider than the page.
LAYOUT_PROBE = """<script>
window.addEventListener("load", function () {
  var out = {width: window.innerWidth, height: window.innerHeight, main: null, cut: []};
  var main = document.getElementById("main-result");
  if (main) {
    var rows = main.querySelectorAll("tbody tr"), box = main.getBoundingClientRect();
    out.main = {top: box.top + window.scrollY, bottom: box.bottom + window.scrollY, rows: rows.length,
                first_row_bottom: rows.length ? rows[0].getBoundingClientRect().bottom + window.scrollY : null,
                first_row: rows.length ? rows[0].innerText : ""};
  }
  document.querySelectorAll("details").forEach(function (d) { d.open = true; });
  var page = document.documentElement.clientWidth;
  document.querySelectorAll("table").forEach(function (t, i) {
    var scroller = null;
    for (var e = t.parentElement; e && e !== document.body; e = e.parentElement) {
      var o = getComputedStyle(e).overflowX;
      if (o === "auto" || o === "scroll") { scroller = e; break; }
    }
    var name = t.id || ("table " + i), box = t.getBoundingClientRect();
    if (scroller) {
      if (scroller.getBoundingClientRect().right > page + 1) out.cut.push(name + ": its scrolling wrapper is wider than the page");
    } else if (box.right > page + 1 || t.scrollWidth > t.parentElement.clientWidth + 1) {
      out.cut.push(name + ": " + Math.round(box.width) + " px wide without a scrolling wrapper");
    }
  });
  out.tables = document.querySelectorAll("table").length;
  out.page_width = document.documentElement.scrollWidth;
  document.body.setAttribute("data-layout", JSON.stringify(out));
});
</script>"""


def _chromium() -> str:
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        pytest.skip("/usr/bin/chromium is not installed here (CI installs Debian chromium for this test)")
    return chromium


def dom_at_1400(page: Path, probe: bool = False) -> str:
    """The DOM after load in headless Chromium with a 1400x900 window (with the layout probe run first)."""
    chromium = _chromium()
    with tempfile.TemporaryDirectory() as tmp:
        if probe:  # a copy beside the original, so its relative links still resolve
            html = page.read_text(encoding="utf-8")
            copy = page.with_name(f".probe-{page.name}")
            copy.write_text(html.replace("</body>", LAYOUT_PROBE + "</body>"), encoding="utf-8")
            page = copy
        try:
            done = subprocess.run(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}", f"--user-data-dir={tmp}", "--dump-dom",
                 page.as_uri()], capture_output=True, text=True, timeout=120)
        finally:
            if probe:
                page.unlink()
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def layout(page: Path) -> dict:
    dom = dom_at_1400(page, probe=True)
    found = re.search(r'data-layout="([^"]*)"', dom)
    assert found, "the layout probe did not run"
    return json.loads(unescape(found.group(1)))


def visible_text(dom: str) -> str:
    """Text a reader sees: no tags, attributes, scripts or styles."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", dom)))


def layout_problems(got: dict) -> list[str]:
    """What breaks the two rules: the main result on the first screen, and no table cut off."""
    problems = list(got["cut"])
    view = min(HEIGHT, got["height"])  # the visible height (the window less Chromium's own bars)
    if got["main"] is None:
        problems.append("no main result table (#main-result)")
    elif got["main"]["first_row_bottom"] is None or got["main"]["first_row_bottom"] > view:
        problems.append(f"the main result's first row ends at {got['main']['first_row_bottom']} px, below the first "
                        f"screen ({view} px)")
    if got["page_width"] > got["width"]:
        problems.append(f"the page scrolls sideways: {got['page_width']} px wide in a {got['width']} px window")
    return problems


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("layout")
    eval_dir = folder / "eval"
    eval_dir.mkdir()
    subset = {"corpus": conditions.SUBSET, "revision": "examples/data/xquad"}
    parts = [ri.xquad_measured(EXAMPLES, LANGUAGES, "bm25-first-150-chars", doc_chars=150, **subset),
             ri.xquad_measured(EXAMPLES, LANGUAGES, "bm25-k1-0.6", k1=0.6, **subset),
             ri.xquad_measured(EXAMPLES, LANGUAGES, "bm25", **subset)]
    pl.concat([r for r, _ in parts]).write_parquet(eval_dir / "results.parquet")
    pl.concat([q for _, q in parts]).write_parquet(eval_dir / "per_query.parquet")
    minilm = ri.mteb_results(REPO / "reports", folder / "minilm.parquet", "sentence-transformers/all-MiniLM-L6-v2",
                             "minilm (MTEB copy)")
    out = folder / "report"
    build_report(out, [eval_dir / "results.parquet", minilm], audit=ri.audit_summary(folder / "audit.parquet"),
                 config=ReportSection(focus="bm25", title="Layout check"))
    compare_dir = folder / "compare"
    run_compare(f"{eval_dir / 'results.parquet'}@bm25-first-150-chars", f"{eval_dir / 'results.parquet'}@bm25",
                compare_dir)
    return out, compare_dir


def test_first_screen_holds_the_main_result_with_intervals_and_no_table_is_cut(built):
    out, _ = built
    got = layout(out / "index.html")
    assert got["width"] == WIDTH and got["tables"] >= 10
    assert not layout_problems(got), layout_problems(got)
    # the whole main result is on the first screen here: 4 languages, one row each
    assert got["main"]["rows"] == len(LANGUAGES) and got["main"]["bottom"] <= min(HEIGHT, got["height"])
    # its numbers are the measured table's, each with its interval, and the difference carries its mark
    measured = pl.read_parquet(out / "measured.parquet").filter(
        (pl.col("language") == "de") & (pl.col("metric") == "ndcg_at_10") & (pl.col("system") == "bm25")).row(0, named=True)
    first = got["main"]["first_row"]
    assert first.startswith("XQuAD") and "nDCG@10" in first and "de German" in first
    assert f"{measured['value']:.1f} [{measured['ci_low']:.1f}, {measured['ci_high']:.1f}]" in first
    pair = pl.read_parquet(out / "comparisons.parquet").filter(
        (pl.col("language") == "de") & (pl.col("metric") == "ndcg_at_10") & (pl.col("system_b") == "bm25")
        & (pl.col("system_a") == "bm25-first-150-chars")).row(0, named=True)
    assert f"\u25b2 {pair['delta']:+.1f} [{pair['ci_low']:+.1f}, {pair['ci_high']:+.1f}]" in first


def test_the_checks_fail_on_a_cut_table_and_a_buried_result(tmp_path):
    """The layout rules catch what they are for: a wide table without a wrapper, and a main result
    pushed below the first screen."""
    page = tmp_path / "bad.html"
    page.write_text('<html><body><div style="height:1200px">methods first</div>'
                    '<table id="main-result"><tbody><tr><td>42.0 [40.0, 44.0]</td></tr></tbody></table>'
                    '<table id="wide-table" style="width:2600px"><tr><td>wide</td></tr></table>'
                    '<div class="wide" style="overflow-x:auto"><table id="scrolls" style="width:2600px"><tr><td>ok</td>'
                    '</tr></table></div></body></html>', encoding="utf-8")
    problems = layout_problems(layout(page))
    assert any(p.startswith("wide-table:") for p in problems)
    assert not any(p.startswith("scrolls:") for p in problems)  # a table in a scrolling wrapper is fine
    assert any("below the first screen" in p for p in problems)
    assert any("scrolls sideways" in p for p in problems)


def test_a_metric_at_its_ceiling_is_folded_with_a_note_and_names_are_written_one_way(built):
    out, compare_dir = built
    measured = pl.read_parquet(out / "measured.parquet")
    recall = measured.filter(pl.col("metric") == "recall_at_100")
    assert (recall["value"] == 100.0).all() and (recall["n_docs"] == 60).all()  # 60 paragraphs: trivially 100
    assert (measured.filter(pl.col("metric") == "ndcg_at_10")["value"] < 100.0).all()
    dom = dom_at_1400(out / "index.html")
    section = re.search(r'<details class="section ceiling"[^>]*><summary><h3 id="measured-XQuADRetrieval-subset-'
                        r'recall_at_100">', dom)
    assert section and " open" not in section.group(0)  # folded
    assert "Recall@100 cannot tell these systems apart on any dataset here: the corpus has 60 passages" in dom
    ndcg = re.search(r'<details class="section"[^>]*><summary><h3 id="measured-XQuADRetrieval-subset-ndcg_at_10">', dom)
    assert ndcg and "open" in ndcg.group(0)  # what discriminates stays open
    compare = dom_at_1400(compare_dir / "compare.html")
    assert re.search(r'<details class="section ceiling" id="section-XQuADRetrieval-recall_at_100">', compare)
    for text in (visible_text(dom), visible_text(compare), (out / "summary.md").read_text(encoding="utf-8"),
                 (compare_dir / "compare.md").read_text(encoding="utf-8")):
        assert not re.findall(r"\b(?:ndcg|recall|mrr|map|precision)_at_\d+", text)
        assert "nDCG@10" in text and "Recall@100" in text
    assert set(pl.read_csv(out / "measured.csv")["metric"]) == {"ndcg_at_10", "recall_at_100"}  # tables keep the keys


def test_compare_view_carries_the_reports_intervals_and_marks(built):
    out, compare_dir = built
    got = layout(compare_dir / "compare.html")
    assert not got["cut"] and got["page_width"] <= got["width"]
    table = pl.read_parquet(compare_dir / "compare.parquet")
    assert table.height == 2 * len(LANGUAGES) and table["delta_ci_low"].null_count() == 0
    report = pl.read_parquet(out / "comparisons.parquet").filter(
        (pl.col("system_a") == "bm25-first-150-chars") & (pl.col("system_b") == "bm25"))
    measured = pl.read_parquet(out / "measured.parquet")
    dom = dom_at_1400(compare_dir / "compare.html")
    rows = re.findall(r'<tr class="lang-row[^"]*" data-language="(\w+)">(.*?)</tr>', dom, flags=re.S)
    section = dom[dom.index('id="compare-XQuADRetrieval-ndcg_at_10"'):]
    section = section[: section.index("</table>")]
    assert len(rows) == 2 * len(LANGUAGES)
    for language in LANGUAGES:
        # the same interval and mark as the report's paired test of the same two systems
        same = report.filter((pl.col("language") == language) & (pl.col("metric") == "ndcg_at_10")).row(0, named=True)
        mark = "\u2248" if not same["significant"] else ("\u25b2" if same["delta"] > 0 else "\u25bc")
        assert f"{mark} {same['delta']:+.1f} [{same['ci_low']:+.1f}, {same['ci_high']:+.1f}]" in unescape(section)
        for system in ("bm25-first-150-chars", "bm25"):
            value = measured.filter((pl.col("language") == language) & (pl.col("metric") == "ndcg_at_10")
                                    & (pl.col("system") == system)).row(0, named=True)
            assert f"{value['value']:.1f} [{value['ci_low']:.1f}, {value['ci_high']:.1f}]" in visible_text(section)
    # every difference cell says its mark and interval, never a bare delta
    for _, cells in rows:
        assert re.search(r'[\u25b2\u25bc\u2248] [+-]\d+\.\d \[[+-]\d+\.\d, [+-]\d+\.\d\]', unescape(cells))
