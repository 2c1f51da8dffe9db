"""The book's offline plotly renderer and figure helpers (r1reward.chapters.plots), and the asset vendoring.

Fast, no browser, no network: what the renderer emits for a figure, that it never embeds or
links plotly.js, that hostile label text cannot end the script early, and that the vendoring
script reports missing files.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
import pytest

from r1reward.chapters import plots

ROOT = Path(__file__).resolve().parent.parent


def _bundle(fig: go.Figure) -> dict:
    plots.setup()
    return pio.renderers[plots.RENDERER_NAME].to_mimebundle(fig.to_dict())


def test_setup_selects_the_offline_renderer_and_template() -> None:
    plots.setup()
    assert pio.renderers.default == plots.RENDERER_NAME
    assert pio.templates.default == plots.TEMPLATE_NAME
    colorway = list(pio.templates[plots.TEMPLATE_NAME].layout.colorway)
    assert colorway[:2] == [plots.COLORS["reinforce_pp"], plots.COLORS["stable"]]


def test_bundle_has_html_without_plotly_js_and_the_plotly_mime() -> None:
    fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[4, 5, 6], name="curve"))
    bundle = _bundle(fig)
    assert set(bundle) == {"text/html", plots.PLOTLY_MIMETYPE}
    html = bundle["text/html"]
    # No copy of plotly.js (megabytes) and no reference to any outside host.
    assert len(html) < 50_000
    assert "cdn.plot.ly" not in html and not re.search(r"https?://", html)
    assert "Plotly.newPlot" in html and 'class="r1reward-plotly"' in html
    # The JSON inside the script is the figure.
    payload = json.loads(re.search(r"var fig = (\{.*?\});\n", html, re.S).group(1))
    assert payload["data"][0]["y"] == [4, 5, 6]
    assert payload["config"]["displaylogo"] is False
    assert bundle[plots.PLOTLY_MIMETYPE]["data"][0]["name"] == "curve"


def test_script_waits_for_plotly_and_reports_when_it_never_comes() -> None:
    html = plots.figure_html(go.Figure(), div_id="fig-under-test")
    assert "window.Plotly" in html and "setTimeout(draw" in html
    assert "console.error" in html and "fig-under-test" in html


def test_label_text_cannot_close_the_script_tag() -> None:
    fig = go.Figure(go.Scatter(x=[0], y=[0], name="</script><script>alert(1)</script>"))
    html = plots.figure_html(fig)
    body = html.split("<script", 1)[1]
    assert body.count("</script>") == 1  # only the real end tag
    payload = json.loads(re.search(r"var fig = (\{.*?\});\n", html, re.S).group(1))
    assert payload["data"][0]["name"] == "</script><script>alert(1)</script>"


def test_frames_are_kept_for_the_native_slider() -> None:
    steps = [(str(b), [go.Scatter(x=[0, 1], y=[0, -b])]) for b in (1, 2, 3)]
    fig = plots.slider_figure(steps, title="t", x_title="x", y_title="y", slider_prefix="b: ")
    assert [f.name for f in fig.frames] == ["1", "2", "3"]
    assert len(fig.layout.sliders[0].steps) == 3
    payload = json.loads(
        re.search(r"var fig = (\{.*?\});\n", plots.figure_html(fig), re.S).group(1)
    )
    assert len(payload["frames"]) == 3


def test_slider_figure_rejects_ragged_steps() -> None:
    with pytest.raises(ValueError, match="step '2' has 2 traces, expected 1"):
        plots.slider_figure(
            [("1", [go.Scatter()]), ("2", [go.Scatter(), go.Scatter()])],
            title="t",
            x_title="x",
            y_title="y",
            slider_prefix="",
        )
    with pytest.raises(ValueError, match="steps is empty"):
        plots.slider_figure([], title="t", x_title="x", y_title="y", slider_prefix="")


def test_finite_or_none_turns_overflow_into_gaps() -> None:
    import torch

    values = torch.tensor([1.0, float("inf"), float("nan"), -float("inf"), 2.5])
    assert plots.finite_or_none(values) == [1.0, None, None, None, 2.5]
    assert plots.finite_or_none([math.inf, 0]) == [None, 0.0]


def test_line_and_panel_figures_share_names_and_colours() -> None:
    plots.setup()
    fig = plots.line_figure(
        {"a": ([0, 1], [1, math.inf]), "b": ([0, 1], [2, 3])},
        title="t",
        x_title="x",
        y_title="y",
        colors={"a": "#000000"},
        log_y=True,
    )
    assert [t.name for t in fig.data] == ["a", "b"]
    assert fig.data[0].y == (1, None) and fig.data[0].line.color == "#000000"
    assert fig.layout.yaxis.type == "log"
    panels = plots.panel_figure(
        [("p1", {"a": ([0], [1]), "b": ([0], [2])}), ("p2", {"a": ([0], [3])})],
        title="t",
        x_title="x",
        colors={"a": "#111111"},
    )
    shown = [t.name for t in panels.data if t.showlegend]
    assert shown == ["a", "b"]  # "a" appears in both panels, once in the legend
    assert all(t.line.color == "#111111" for t in panels.data if t.name == "a")


def test_plotly_js_path_is_the_installed_bundle() -> None:
    path = plots.plotly_js_path()
    assert path.name == "plotly.min.js" and path.stat().st_size > 1_000_000


def test_vendor_check_reports_missing_files(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import vendor_assets
    finally:
        sys.path.remove(str(ROOT / "tools"))
    assert vendor_assets.main(["--check", "--dest", str(tmp_path)]) == 1
    assert set(vendor_assets.missing(tmp_path)) == set(vendor_assets.REQUIRED)
    for rel in vendor_assets.REQUIRED:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    assert vendor_assets.main(["--check", "--dest", str(tmp_path)]) == 0


def test_mimebundle_is_what_the_renderer_emits() -> None:
    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 2], name="in a widget"))
    bundle = plots.mimebundle(fig)
    assert set(bundle) == {"text/html", plots.PLOTLY_MIMETYPE}
    assert "Plotly.newPlot" in bundle["text/html"]
    assert bundle[plots.PLOTLY_MIMETYPE]["data"][0]["name"] == "in a widget"


def test_setup_shows_numpy_scalars_as_plain_numbers():
    """Glued numpy scalars must format as numbers: myst-nb parses text/plain back into a float."""
    import numpy as np
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        plots.setup()
        fmt = shell.display_formatter.formatters["text/plain"]
        assert fmt(np.float64(130.3)) == "130.3"
        assert float(fmt(np.float64("nan")).strip()) != float(fmt(np.float64("nan")).strip())
        assert fmt(np.int64(7)) == "7"
        assert fmt(np.bool_(True)) == "True"
    finally:
        InteractiveShell.clear_instance()
