"""Plotly figures shared by the chapters, and the renderer that keeps the book offline.

The rendered book must load nothing from an outside host. Plotly's stock renderers either embed
the whole of plotly.js in every output (megabytes per figure) or load it from a CDN. The renderer
registered here, ``"r1reward"``, emits for every figure:

* ``text/html``: a ``<div>`` and a small script that waits until ``window.Plotly`` exists and then
  calls ``Plotly.newPlot`` with the figure (data, layout, frames, config). plotly.js itself is
  *not* included: the book build copies ``plotly.min.js`` from the installed ``plotly`` package
  into its static files and loads it on every page (see ``tools/vendor_assets.py`` and
  ``html_js_files`` in ``_config.yml``). The script works whether it runs before or after
  plotly.js has loaded, and reports on the console when plotly.js never arrives.
* ``application/vnd.plotly.v1+json``: the figure itself, which JupyterLab, Notebook 7 and VS Code
  render natively, so the notebooks stay interactive for readers who run them in Jupyter.

Call :func:`setup` once in the first cell of a chapter. The helpers below give every chapter the
same template and the same colour for the same concept (Reinforce++ is always red,
StableReinforce always blue, ...).
"""

from __future__ import annotations

import html
import json
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.io._base_renderers import MimetypeRenderer

from r1reward.profile import quiet_libraries

RENDERER_NAME = "r1reward"
TEMPLATE_NAME = "r1reward"
PLOTLY_MIMETYPE = "application/vnd.plotly.v1+json"

#: One colour per concept, used by every chapter.
COLORS: dict[str, str] = {
    "reinforce_pp": "#d62728",  # Reinforce++: the unstable baseline
    "stable": "#1f77b4",  # StableReinforce: the paper's fix
    "grpo": "#2ca02c",  # GRPO, for comparison
    "sft": "#ff7f0e",  # cold-start SFT
    "scalar": "#8c564b",  # scalar (Bradley-Terry) reward model
    "paper": "#9467bd",  # numbers quoted from the paper
    "neutral": "#7f7f7f",  # reference lines, thresholds
    "float32": "#17becf",
    "bfloat16": "#e377c2",
    "float16": "#bcbd22",
}

#: Plotly config shared by all figures: no "edit in Chart Studio" link, no plotly logo, resizes
#: with the page.
DEFAULT_CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True, "showLink": False}

#: How long the embedded script waits for plotly.js before it reports an error (milliseconds).
_WAIT_MS = 30_000
_POLL_MS = 25


def _template() -> go.layout.Template:
    """The book's template: ``plotly_white`` with the book's colourway and a readable font."""
    base = pio.templates["plotly_white"]
    template = go.layout.Template(base)
    template.layout.colorway = [
        COLORS["reinforce_pp"],
        COLORS["stable"],
        COLORS["grpo"],
        COLORS["sft"],
        COLORS["scalar"],
        COLORS["paper"],
        COLORS["neutral"],
    ]
    template.layout.font = {"family": "Helvetica, Arial, sans-serif", "size": 14}
    template.layout.margin = {"l": 70, "r": 30, "t": 80, "b": 60}
    template.layout.title = {"x": 0.0, "xref": "paper", "xanchor": "left", "font": {"size": 16}}
    template.layout.hovermode = "closest"
    template.layout.legend = {"bgcolor": "rgba(255,255,255,0.7)"}
    return template


def figure_html(
    fig: go.Figure | Mapping[str, Any],
    *,
    div_id: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> str:
    """HTML for one figure *without* plotly.js: a div plus a script that draws it when it can.

    ``fig`` may be a ``go.Figure`` or its dict (``data``, ``layout``, optional ``frames``).
    The JSON is escaped so that no ``</script>`` inside a label can end the script early.
    """
    fig_dict = fig.to_dict() if isinstance(fig, go.Figure) else dict(fig)
    div_id = div_id or f"r1reward-fig-{uuid.uuid4().hex[:12]}"
    payload = {
        "data": fig_dict.get("data", []),
        "layout": fig_dict.get("layout", {}),
        "frames": fig_dict.get("frames", []),
        "config": {**DEFAULT_CONFIG, **dict(config or {})},
    }
    # pio.to_json knows numpy arrays, dates, etc.; "<" only occurs inside JSON strings, where
    # the \u003c escape is equivalent and keeps "</script>" out of the page.
    text = pio.to_json(payload, validate=False).replace("<", "\\u003c")
    height = payload["layout"].get("height") or 450
    safe_id = html.escape(div_id, quote=True)
    return f"""<div id="{safe_id}" class="r1reward-plotly" style="width:100%;height:{int(height)}px;"></div>
<script type="text/javascript">
(function () {{
  var id = {json.dumps(div_id)};
  var fig = {text};
  var waited = 0;
  function draw() {{
    var el = document.getElementById(id);
    if (window.Plotly && el) {{
      var done = window.Plotly.newPlot(el, fig);
      if (done && done.catch) {{
        done.catch(function (err) {{ console.error("r1reward.chapters.plots: figure " + id + ": " + err); }});
      }}
      return;
    }}
    waited += {_POLL_MS};
    if (waited > {_WAIT_MS}) {{
      console.error("r1reward.chapters.plots: plotly.js is not loaded; figure " + id + " was not drawn");
      return;
    }}
    setTimeout(draw, {_POLL_MS});
  }}
  draw();
}})();
</script>"""


class OfflineRenderer(MimetypeRenderer):
    """Plotly renderer for the offline book: ``text/html`` without plotly.js + the plotly mime.

    Registered under the name ``"r1reward"`` by :func:`setup`.
    """

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config = dict(config or {})

    def to_mimebundle(self, fig_dict: dict[str, Any]) -> dict[str, Any]:
        """Return ``{"text/html": ..., "application/vnd.plotly.v1+json": ...}`` for one figure."""
        plotly_json = json.loads(pio.to_json(fig_dict, validate=False, remove_uids=False))
        if self.config:
            plotly_json["config"] = {**DEFAULT_CONFIG, **self.config}
        return {
            "text/html": figure_html(fig_dict, config=self.config),
            PLOTLY_MIMETYPE: plotly_json,
        }


def mimebundle(fig: go.Figure) -> dict[str, Any]:
    """The offline renderer's mime bundle for ``fig``, e.g. for an ``ipywidgets.Output``.

    ``Output.append_display_data(fig)`` would not work for a plotly figure: IPython calls the
    figure's ``_ipython_display_``, which shows it in the cell instead of the widget. Use
    ``out.outputs = ({"output_type": "display_data", "metadata": {}, "data": mimebundle(fig)},)``.
    """
    return OfflineRenderer().to_mimebundle(fig.to_dict())


def setup(renderer: str = RENDERER_NAME) -> None:
    """Register and select the book's template and the offline renderer (idempotent).

    Call once at the top of a chapter: ``from r1reward import plots; plots.setup()``.
    ``renderer`` may name any plotly renderer (e.g. ``"browser"``) to override the default.
    """
    pio.templates[TEMPLATE_NAME] = _template()
    pio.templates.default = TEMPLATE_NAME
    pio.renderers[RENDERER_NAME] = OfflineRenderer()
    pio.renderers.default = renderer
    _plain_numpy_scalars()
    # a chapter loads the tiny model dozens of times: transformers' per-load "Loading weights"
    # bar would fill the page with identical progress bars
    quiet_libraries()


def _plain_numpy_scalars() -> None:
    """Show numpy scalars as plain numbers (``0.5``, not ``np.float64(0.5)``) in notebooks.

    numpy 2 changed the repr of its scalars, and myst-nb's ``{glue:text}`name:.1f``` parses the
    glued value's text/plain output back into a float: a glued ``np.float64`` then fails to
    format (a warning, fatal under ``-W``). Registering the plain repr fixes every chapter's glue
    at once. Outside IPython this does nothing.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the book extra
        return
    shell = get_ipython()
    if shell is None:
        return
    import numpy as np

    plain = shell.display_formatter.formatters["text/plain"]
    # concrete types too: IPython registers its own printer for np.float64, which would win
    kinds = {t for t in np.sctypeDict.values() if issubclass(t, (np.floating, np.integer))}
    for kind in kinds | {np.floating, np.integer}:
        cast = float if issubclass(kind, np.floating) else int
        plain.for_type(kind, lambda x, p, cycle, cast=cast: p.text(repr(cast(x))))
    plain.for_type(np.bool_, lambda x, p, cycle: p.text(repr(bool(x))))


def plotly_js_path() -> Path:
    """Path of ``plotly.min.js`` inside the installed plotly package (what the book serves)."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: plotly.min.js is missing from the installed plotly package; "
            "reinstall plotly (pip install --force-reinstall plotly)"
        )
    return path


# ---------------------------------------------------------------------------------------------
# Figure helpers used by the chapters
# ---------------------------------------------------------------------------------------------


def figure(
    title: str,
    x_title: str,
    y_title: str,
    *,
    height: int = 450,
    log_x: bool = False,
    log_y: bool = False,
    **layout: Any,
) -> go.Figure:
    """An empty figure with the book's template, axis titles and height."""
    fig = go.Figure()
    fig.update_layout(
        template=TEMPLATE_NAME if TEMPLATE_NAME in pio.templates else "plotly_white",
        title={"text": title},
        xaxis_title=x_title,
        yaxis_title=y_title,
        height=height,
        **layout,
    )
    if log_x:
        fig.update_xaxes(type="log")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def hline(
    fig: go.Figure,
    y: float,
    text: str,
    *,
    color: str = COLORS["neutral"],
    position: str = "top left",
) -> go.Figure:
    """Add a dashed horizontal reference line with a label (threshold, paper value, ...)."""
    fig.add_hline(
        y=y,
        line_dash="dash",
        line_color=color,
        annotation_text=text,
        annotation_position=position,
        annotation_font_color=color,
    )
    return fig


def vline(
    fig: go.Figure,
    x: float,
    text: str,
    *,
    color: str = COLORS["neutral"],
    position: str = "top right",
) -> go.Figure:
    """Add a dashed vertical reference line with a label."""
    fig.add_vline(
        x=x,
        line_dash="dash",
        line_color=color,
        annotation_text=text,
        annotation_position=position,
        annotation_font_color=color,
    )
    return fig


Series = tuple[Any, Any]
"""``(x, y)`` of one line: tensors, arrays or sequences of numbers."""


def line_figure(
    series: Mapping[str, Series],
    *,
    title: str,
    x_title: str,
    y_title: str,
    colors: Mapping[str, str] | None = None,
    widths: Mapping[str, float] | None = None,
    mode: str = "lines",
    log_y: bool = False,
    height: int = 450,
) -> go.Figure:
    """One line per entry of ``series`` (legend name -> ``(x, y)``); NaN/inf become gaps.

    ``colors`` and ``widths`` map legend names to a colour / line width (missing names use the
    template's colourway / width 2).
    """
    fig = figure(title, x_title, y_title, height=height, log_y=log_y)
    for name, (x, y) in series.items():
        fig.add_scatter(
            x=finite_or_none(x),
            y=finite_or_none(y),
            mode=mode,
            name=name,
            line_color=(colors or {}).get(name),
            line_width=(widths or {}).get(name, 2),
        )
    return fig


def panel_figure(
    panels: Sequence[tuple[str, Mapping[str, Series]]],
    *,
    title: str,
    x_title: str,
    colors: Mapping[str, str] | None = None,
    log_y: Sequence[bool] | None = None,
    height: int = 450,
    mode: str = "lines",
) -> go.Figure:
    """Panels side by side (``(panel title, series)`` each) sharing one legend and colours.

    A name that appears in several panels gets the same colour everywhere and one legend entry.
    """
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[t for t, _ in panels])
    seen: set[str] = set()
    for col, (_, series) in enumerate(panels, start=1):
        for name, (x, y) in series.items():
            fig.add_scatter(
                x=finite_or_none(x),
                y=finite_or_none(y),
                mode=mode,
                name=name,
                legendgroup=name,
                showlegend=name not in seen,
                line_color=(colors or {}).get(name),
                row=1,
                col=col,
            )
            seen.add(name)
        if log_y and log_y[col - 1]:
            fig.update_yaxes(type="log", row=1, col=col)
    fig.update_xaxes(title_text=x_title)
    fig.update_layout(
        template=TEMPLATE_NAME if TEMPLATE_NAME in pio.templates else "plotly_white",
        title={"text": title},
        height=height,
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def slider_figure(
    steps: Sequence[tuple[str, Sequence[go.BaseTraceType]]],
    *,
    title: str,
    x_title: str,
    y_title: str,
    slider_prefix: str,
    active: int = 0,
    height: int = 520,
    **layout: Any,
) -> go.Figure:
    """A figure whose traces change with a plotly-native slider (works in a static web page).

    ``steps`` is a list of ``(label, traces)``; every step must have the same number of traces.
    The figure shows ``steps[active]`` first; moving the slider restyles the traces in the
    browser, with no Python kernel. (An ipywidgets slider needs a kernel to recompute; in the
    static book only the state saved at build time is shown.)
    """
    if not steps:
        raise ValueError("slider_figure: steps is empty; expected at least one (label, traces)")
    n_traces = len(steps[0][1])
    for label, traces in steps:
        if len(traces) != n_traces:
            raise ValueError(
                f"slider_figure: step {label!r} has {len(traces)} traces, expected {n_traces} "
                "(every step must have the same number of traces)"
            )
    fig = figure(title, x_title, y_title, height=height, **layout)
    for trace in steps[active][1]:
        fig.add_trace(trace)
    fig.frames = [go.Frame(name=str(label), data=list(traces)) for label, traces in steps]
    slider_steps = [
        {
            "label": str(label),
            "method": "animate",
            "args": [
                [str(label)],
                {
                    "mode": "immediate",
                    "frame": {"duration": 0, "redraw": True},
                    "transition": {"duration": 0},
                },
            ],
        }
        for label, _ in steps
    ]
    fig.update_layout(
        sliders=[
            {
                "active": active,
                "currentvalue": {"prefix": slider_prefix},
                "pad": {"t": 50},
                "steps": slider_steps,
            }
        ]
    )
    return fig


def finite_or_none(values: Any) -> list[float | None]:
    """``values`` (tensor, array or sequence) as a list with NaN/inf replaced by None.

    Plotly cannot place an infinite point; None leaves a visible gap in a line instead, which is
    how the chapters show where a computation overflowed.
    """
    if hasattr(values, "tolist"):
        values = values.tolist()
    out: list[float | None] = []
    for v in values:
        f = float(v)
        out.append(f if f == f and f not in (float("inf"), float("-inf")) else None)
    return out


# --------------------------------------------------------------------------------------------
# The collapse lab (chapter 8): accuracy against learning rate, the collapse map
# --------------------------------------------------------------------------------------------

#: A colour for each lab variant.
VARIANT_COLORS: dict[str, str] = {
    "reinforce++": COLORS["reinforce_pp"],
    "stable-reinforce": COLORS["stable"],
    "no-preclip": COLORS["bfloat16"],
    "no-filter": COLORS["float16"],
    "no-consistency": COLORS["float32"],
    "grpo": COLORS["grpo"],
}


def lab_lr_figure(
    rows: Sequence[Mapping[str, Any]],
    *,
    metric: str = "heldout_accuracy",
    title: str = "Held-out accuracy against learning rate",
    y_title: str = "held-out accuracy (%)",
    references: Mapping[str, float] = {},
) -> go.Figure:
    """One line per variant through the mean over seeds at each learning rate (log x), each seed
    as a marker, in the shape of Wortsman et al.'s LR-vs-loss curves; ``references`` are dashed
    horizontal lines (e.g. the cold-start model, chance), in the metric's units (0-1)."""
    fig = figure(title, "learning rate", y_title, log_x=True, height=460)
    by: dict[str, dict[float, list[float]]] = {}
    for r in rows:
        by.setdefault(str(r["variant"]), {}).setdefault(float(r["lr"]), []).append(float(r[metric]))
    for variant, per in by.items():
        color = VARIANT_COLORS.get(variant, COLORS["neutral"])
        lrs = sorted(per)
        means = [sum(per[lr]) / len(per[lr]) for lr in lrs]
        fig.add_scatter(
            x=lrs,
            y=[100 * m for m in means],
            mode="lines",
            name=variant,
            line_color=color,
            legendgroup=variant,
        )
        xs = [lr for lr in lrs for _ in per[lr]]
        ys = [100 * v for lr in lrs for v in per[lr]]
        fig.add_scatter(
            x=xs,
            y=ys,
            mode="markers",
            name=f"{variant} (seeds)",
            marker_color=color,
            marker_size=7,
            opacity=0.6,
            legendgroup=variant,
            showlegend=False,
        )
    for text, value in references.items():
        hline(fig, 100 * value, text)
    lrs = sorted({float(r["lr"]) for r in rows})
    fig.update_xaxes(tickvals=lrs, ticktext=[f"{lr:.0e}" for lr in lrs])
    return fig


def collapse_map(
    rows: Sequence[Mapping[str, Any]], *, steps: int, title: str = "Collapse map: step of collapse"
) -> go.Figure:
    """Variant x learning rate, coloured by the earliest step at which a seed collapsed (no
    collapse: the run length, pale); each cell says how many seeds collapsed."""
    variants = list(dict.fromkeys(str(r["variant"]) for r in rows))
    lrs = sorted({float(r["lr"]) for r in rows})
    z, text = [], []
    for v in variants:
        zrow, trow = [], []
        for lr in lrs:
            cell = [r for r in rows if r["variant"] == v and float(r["lr"]) == lr]
            hit = [int(r["collapse_step"]) for r in cell if r["collapsed"]]
            zrow.append(min(hit) if hit else None)
            trow.append(f"{len(hit)}/{len(cell)}" + (f"<br>step {min(hit)}" if hit else ""))
        z.append(zrow)
        text.append(trow)
    fig = figure(title, "learning rate", "variant", height=120 + 45 * len(variants))
    fig.add_heatmap(
        x=[f"{lr:.0e}" for lr in lrs],
        y=variants,
        z=z,
        text=text,
        texttemplate="%{text}",
        zmin=1,
        zmax=steps,
        colorscale="Reds_r",
        colorbar_title="step",
        hoverongaps=False,
        xgap=2,
        ygap=2,
    )
    fig.update_xaxes(type="category")
    fig.update_yaxes(autorange="reversed")
    return fig
