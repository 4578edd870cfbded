"""The HTML report builder and the event display."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from fastreco.data.store import TRUTH_COLUMNS, EventBatch, write_shard
from fastreco.evaluate import display as D
from fastreco.evaluate.report import Report, format_number, markdown_to_html
from fastreco.geometry.ecal_barrel import EcalBarrel


def small_figure() -> Figure:
    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.plot([0, 1, 2], [1, 3, 2])
    return fig


def test_report_embeds_figures_and_tables(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {"classifier": ["BDT", "s1_s9 <cut>"], "auc": [0.9876543, 0.75], "R@90": [12.5, np.inf]}
    )
    report = Report("Test & report", subtitle="seeded")
    report.add_section("ROC").add_text("The **BDT** wins; see `metrics.json`.\n\n- one\n- two")
    report.add_figure(small_figure(), "a <small> figure")
    report.add_table(df, "Rejection")
    report.add_section("Raw").add_text("<p id='raw'>kept as is</p>")
    out = report.write(tmp_path / "sub" / "report.html")

    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert '<img src="data:image/png;base64,' in text
    payload = re.search(r'data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert payload is not None
    assert base64.b64decode(payload.group(1)).startswith(b"\x89PNG")
    # table values, formatted and escaped
    assert "<td>0.9877</td>" in text
    assert "<td>12.5</td>" in text
    assert "<td>∞</td>" in text
    assert "s1_s9 &lt;cut&gt;" in text
    assert "Figure 1. a &lt;small&gt; figure" in text
    assert "Table 1. Rejection" in text
    # markdown subset, raw html, contents, title escaping
    assert "<strong>BDT</strong>" in text
    assert "<code>metrics.json</code>" in text
    assert "<ul><li>one</li><li>two</li></ul>" in text
    assert "<p id='raw'>kept as is</p>" in text
    assert 'href="#s1-roc"' in text
    assert "<title>Test &amp; report</title>" in text
    # self-contained: no external resources
    assert "<script" not in text
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert not list(out.parent.glob("*.tmp"))


def test_report_table_formats() -> None:
    df = pd.DataFrame({"x": [0.123456, np.nan], "n": [3, 4], "pct": [0.5, 0.25]})
    html = (
        Report("t")
        .add_table(df, float_format="{:.2f}", formatters={"pct": lambda v: f"{100 * v:.0f} %"})
        .render()
    )
    assert "<td>0.12</td>" in html
    assert "<td>–</td>" in html
    assert "<td>3</td>" in html
    assert "<td>50 %</td>" in html


def test_report_figure_from_png_file(tmp_path: Path) -> None:
    png = tmp_path / "f.png"
    small_figure().savefig(png)
    html = Report("t").add_figure(png, "from file", width="50%").render()
    assert html.count("data:image/png;base64,") == 1
    assert 'style="width:50%"' in html
    with pytest.raises(ValueError, match="PNG"):
        Report("t").add_figure(b"not a png")


def test_helpers() -> None:
    assert format_number(float("nan")) == "–"
    assert format_number(np.float32(1.23456789)) == "1.235"
    assert format_number(np.int64(7)) == "7"
    assert markdown_to_html("a <b> *c*") == "<p>a &lt;b&gt; <em>c</em></p>"


# --------------------------------------------------------------------------------------------
# event display
# --------------------------------------------------------------------------------------------
def pi0_event(geo: EcalBarrel) -> EventBatch:
    """One pi0 at the phi = 0 seam whose photons hit two crystals on either side of it."""
    seed_ieta, seed_iphi = 100, 0
    seed = int(geo.cell_id(seed_ieta, seed_iphi))
    other = int(geo.cell_id(seed_ieta + 1, geo.n_phi - 2))  # two crystals below, across the seam
    cells = np.array([seed, other, int(geo.cell_id(seed_ieta, 1)), int(geo.cell_id(10, 200))])
    energy = np.array([20.0, 8.0, 1.5, 0.3], np.float32)
    n = len(cells)
    hits = {
        "cell": cells.astype(np.int32),
        "energy": energy,
        "time": np.zeros(n, np.float32),
        "deposit": energy.copy(),
        "truth_particle": np.array([1, 2, 1, -1], np.int32),
        "truth_fraction": np.ones(n, np.float32),
    }
    pos = geo.cell_position(np.array([seed, other]))
    truth = {name: np.zeros(3, dtype) for name, dtype in TRUTH_COLUMNS.items()}
    truth["pdg"][:] = [111, 22, 22]
    truth["energy"][:] = [30.0, 21.0, 9.0]
    truth["eta"][:] = [pos["eta"][0], pos["eta"][0], pos["eta"][1]]
    truth["phi"][:] = [0.0, pos["phi"][0], pos["phi"][1]]
    truth["parent"][:] = [-1, 0, 0]
    truth["reached_calo"][:] = [0, 1, 1]
    truth["impact_eta"][:] = [np.nan, pos["eta"][0], pos["eta"][1]]
    truth["impact_phi"][:] = [np.nan, pos["phi"][0], pos["phi"][1]]
    truth["conversion_radius"][:] = np.nan
    return EventBatch(
        offsets=np.array([0, n], np.int64),
        hits=hits,
        truth_offsets=np.array([0, 3], np.int64),
        truth=truth,
    )


def test_event_image_wraps_phi() -> None:
    geo = EcalBarrel()
    batch = pi0_event(geo)
    img = D.event_image(batch, geo, half_width=12)
    assert img.image.shape == (25, 25)
    assert (img.ieta0, img.iphi0) == (100, 0)
    w = 12
    assert img.image[w, w] == pytest.approx(20.0)
    assert img.image[w + 1, w - 2] == pytest.approx(8.0)  # across the phi seam
    assert img.image[w, w + 1] == pytest.approx(1.5)
    assert np.nansum(img.image) == pytest.approx(29.5)  # the far hit is outside the window
    # truth points at crystal centres land on integer offsets
    u, v = D._crystal_coordinates(
        geo,
        batch.truth["impact_eta"][1:].astype(float),
        batch.truth["impact_phi"][1:].astype(float),
        img.ieta0,
        img.iphi0,
    )
    np.testing.assert_allclose(u, [0, 1], atol=1e-3)
    np.testing.assert_allclose(v, [0, -2], atol=1e-3)


def test_event_display_and_report(tmp_path: Path) -> None:
    geo = EcalBarrel()
    batch = pi0_event(geo)
    attrs = {
        "detector": "ecal",
        "detector_params": geo.to_dict(),
        "generator": {"gun": "test"},
        "seed": 1,
        "shard_index": 0,
    }
    store = write_shard(tmp_path / "store" / "shard-00000.h5", batch, attrs)
    png = D.save_event_display(store.parent, 0, tmp_path / "display.png")
    assert png.read_bytes().startswith(b"\x89PNG")
    fig = D.event_display(batch, geo, 0, event_label="test")
    assert "pi0" in fig.get_suptitle()
    legend = fig.axes[0].get_legend()
    assert legend is not None
    labels = [t.get_text() for t in legend.get_texts()]
    assert any(s.startswith("gamma 21.00 GeV") for s in labels)
    assert any("pi0 direction" in s for s in labels)
    html = Report("displays").add_figure(png, "event 0").add_figure(fig).render()
    assert html.count("data:image/png;base64,") == 2
    with pytest.raises(Exception, match="out of range"):
        D.save_event_display(store.parent, 5, tmp_path / "x.png")


def test_particle_name() -> None:
    assert D.particle_name(22) == "gamma"
    assert D.particle_name(111) == "pi0"
    assert D.particle_name(-11) == "e+"
    assert D.particle_name(999999999) == "999999999"
