#!/usr/bin/env python3
"""Copy the book's JavaScript into its static files, so the built HTML needs no outside host.

What is vendored (into ``book/_static/vendor/``, which is gitignored):

* ``plotly.min.js`` from the *installed* plotly Python package (so the JS always matches the
  plotly that produced the figures); the chapters' figures are emitted without it by
  ``r1reward.chapters.plots``.
* MathJax 3 (``es5/`` without ``latest.js``, which would ask a CDN for the newest version): the
  fonts and the TeX extensions that MathJax loads lazily live next to ``tex-mml-chtml.js`` and are
  found relative to it.
* RequireJS and ``@jupyter-widgets/html-manager`` (``embed-amd.js`` and the fonts next to it):
  what myst-nb loads on pages that carry ipywidgets state.

The npm packages come from the npm registry (``npm install --prefix``) at pinned versions into
``_build/.npm`` (outside the static path, so Sphinx never copies node_modules). The script is
idempotent: a stamp file records what was copied, and a second run with the same versions and the
same plotly does nothing. ``--check`` only verifies that everything is in place.

Usage: ``python tools/vendor_assets.py [--dest book/_static/vendor] [--npm-prefix _build/.npm]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: npm packages and exact versions (bump deliberately; the browser test checks the result).
NPM_PACKAGES: dict[str, str] = {
    "mathjax": "3.2.2",
    "requirejs": "2.3.8",
    "@jupyter-widgets/html-manager": "1.0.15",
}

#: Files the built book refers to, relative to the vendor dir (checked after vendoring).
REQUIRED = (
    "plotly.min.js",
    "mathjax/tex-mml-chtml.js",
    "mathjax/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff",
    "mathjax/input/tex/extensions/ams.js",
    "require.js",
    "html-manager/embed-amd.js",
)

STAMP = "VENDORED.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _plotly_js() -> tuple[Path, str]:
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise SystemExit(
            f"vendor_assets: {path} is missing; the installed plotly has no plotly.min.js"
        )
    return path, plotly.__version__


def _npm_installed(prefix: Path) -> bool:
    for name, version in NPM_PACKAGES.items():
        pkg = prefix / "node_modules" / name / "package.json"
        if not pkg.is_file() or json.loads(pkg.read_text())["version"] != version:
            return False
    return True


def _npm_install(prefix: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(
            "vendor_assets: npm is not on PATH; install Node.js/npm (Debian: apt-get install npm) "
            "so MathJax and the ipywidgets manager can be served with the book"
        )
    prefix.mkdir(parents=True, exist_ok=True)
    specs = [f"{name}@{version}" for name, version in NPM_PACKAGES.items()]
    cmd = [
        npm,
        "install",
        "--prefix",
        str(prefix),
        "--no-audit",
        "--no-fund",
        "--ignore-scripts",
        "--no-save",
        *specs,
    ]
    print("vendor_assets:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _copy_tree(src: Path, dst: Path, *, skip: tuple[str, ...] = ()) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*skip))


def vendor(dest: Path, npm_prefix: Path) -> bool:
    """Put every asset in ``dest``; return True when something was (re)copied."""
    plotly_src, plotly_version = _plotly_js()
    wanted = {"plotly": plotly_version, "plotly_sha256": _sha256(plotly_src), **NPM_PACKAGES}
    stamp = dest / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted and not missing(dest):
        print(f"vendor_assets: {dest} is up to date")
        return False

    if not _npm_installed(npm_prefix):
        _npm_install(npm_prefix)
    modules = npm_prefix / "node_modules"

    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(plotly_src, dest / "plotly.min.js")
    # latest.js would fetch the newest MathJax from a CDN: never ship it.
    _copy_tree(modules / "mathjax" / "es5", dest / "mathjax", skip=("latest.js",))
    shutil.copy2(modules / "requirejs" / "require.js", dest / "require.js")
    _copy_tree(
        modules / "@jupyter-widgets" / "html-manager" / "dist",
        dest / "html-manager",
        skip=("*.map", "embed.js", "embed.js.LICENSE.txt", "libembed-amd.js"),
    )
    lost = missing(dest)
    if lost:
        raise SystemExit(f"vendor_assets: after copying, {dest} still lacks: {', '.join(lost)}")
    stamp.write_text(json.dumps(wanted, indent=1) + "\n")
    print(
        f"vendor_assets: vendored plotly.js {plotly_version}, "
        + ", ".join(f"{k} {v}" for k, v in NPM_PACKAGES.items())
        + f" into {dest}"
    )
    return True


def missing(dest: Path) -> list[str]:
    """The required files that are not in ``dest``."""
    return [rel for rel in REQUIRED if not (dest / rel).is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vendor_assets", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dest",
        type=Path,
        default=ROOT / "book" / "_static" / "vendor",
        help="static folder to fill (default: book/_static/vendor)",
    )
    parser.add_argument(
        "--npm-prefix",
        type=Path,
        default=ROOT / "_build" / ".npm",
        help="where npm installs the packages (default: _build/.npm)",
    )
    parser.add_argument(
        "--check", action="store_true", help="only check that the assets are present; exit 1 if not"
    )
    args = parser.parse_args(argv)
    if args.check:
        lost = missing(args.dest)
        for rel in lost:
            print(f"vendor_assets: missing {args.dest / rel}", file=sys.stderr)
        return 1 if lost else 0
    vendor(args.dest, args.npm_prefix)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
