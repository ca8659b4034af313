"""`cnnzoo report`: its flags and its printing; the work is `cnnzoo.report.site.build_report`."""

from __future__ import annotations

EPILOG = """examples:
  cnnzoo report --out report
  cnnzoo report --out report 'vgg*' resnet18 resnet50

Without names the site holds the whole zoo. It opens from file:// with no network (no CDN, no library): open
DIR/index.html in a browser. index.html has the complexity chart (hover a bubble for its figures, click it for
its page; filters by family and dataset, top-1 or top-5), the comparison table (click a header to sort) and the
lecture's claims with their verdicts; models/NAME.html a model's card, diagram, per-layer table with roll-up
levels, receptive field, activation memory and training recipe; families/FAMILY.html the variants side by side."""


def arguments(p) -> None:
    p.epilog = EPILOG
    p.add_argument("names", nargs="*", metavar="NAME|PATTERN",
                   help="registered model names or fnmatch patterns (quote them: 'resnet*'); default: every model")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write the site into (made if missing)")


def run(args) -> int:
    from cnnzoo.report.site import build_report
    from cnnzoo.words import plural

    site = build_report(args.out, args.names or None)
    page, size = site.largest
    print(f"wrote {plural(len(site.pages), 'page')} to {args.out} in {site.seconds:.1f} s; open {site.index} "
          f"(largest page {page.relative_to(site.index.parent)}, {size / 2**20:.2f} MiB)")
    return 0
