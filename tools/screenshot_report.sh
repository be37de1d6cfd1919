#!/usr/bin/env bash
# Screenshot of a report's first screen as a reader sees it (1400x900, headless Chromium), for README.
#   tools/screenshot_report.sh [REPORT_HTML] [OUT_PNG]
# defaults (in this checkout): reports/example/index.html -> docs/img/report-first-screen.png
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
report="$(realpath -m "${1:-$repo/reports/example/index.html}")"
out="$(realpath -m "${2:-$repo/docs/img/report-first-screen.png}")"
[ -f "$report" ] || { echo "error: $report: no such report (build one with 'workbench report RUN --out DIR')" >&2; exit 2; }
command -v chromium >/dev/null || { echo "error: chromium not found (install Debian's 'chromium' package)" >&2; exit 2; }
mkdir -p "$(dirname "$out")"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,900 \
  --screenshot="$out" "file://$report" 2>/dev/null
echo "wrote $out"
