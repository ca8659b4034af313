"""Build the whole zoo's report and print how long it took and the largest pages (goals: under 60 s, every page
under 2 MB).

    .venv/bin/python benchmarks/report_build.py [OUT_DIR] [NAME|PATTERN ...]

Without OUT_DIR the site goes to a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

GOAL_SECONDS = 60
GOAL_PAGE_BYTES = 2 * 2**20


def main(argv: list[str]) -> int:
    start = time.perf_counter()
    from cnnzoo.report.site import build_report  # the imports (torch) count: `cnnzoo report` pays them too

    out, names = (argv[0], argv[1:] or None) if argv else (None, None)
    with tempfile.TemporaryDirectory(prefix="cnnzoo-report-") as tmp:
        site = build_report(out or tmp, names)
        total = time.perf_counter() - start
        sizes = sorted(((p.stat().st_size, p) for p in site.pages), reverse=True)
        root = site.index.parent
        print(f"{len(site.pages)} pages in {total:.1f} s ({site.seconds:.1f} s building, the rest importing); "
              f"goal under {GOAL_SECONDS} s: {'met' if total < GOAL_SECONDS else 'MISSED'}")
        print(f"largest pages (goal under {GOAL_PAGE_BYTES / 2**20:.0f} MiB each: "
              f"{'met' if sizes[0][0] < GOAL_PAGE_BYTES else 'MISSED'}):")
        for size, path in sizes[:5]:
            print(f"  {size / 2**20:6.2f} MiB  {Path(path).relative_to(root)}")
        print(f"all pages together {sum(s for s, _ in sizes) / 2**20:.1f} MiB")
    return 0 if total < GOAL_SECONDS and sizes[0][0] < GOAL_PAGE_BYTES else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
