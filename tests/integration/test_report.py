"""The HTML report: built from a real scheduler run over in-process simulated machines,
checked as a self-contained document, and rendered by headless Chromium."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import maas_lib
from maas_lib.fleet import Fleet
from maas_lib.models import HostSpec
from maas_lib.sim.inproc import InProcessFleet
from maas_lib.sim.machine import MachineConfig
from maas_lib.telemetry.report import render_report, write_report
from tests.conftest import patience

#: Hosts whose credential has no environment variables: their first step fails.
BROKEN = {"rack-a-03", "rack-b-02"}
#: What a host name with markup in it would look like in a report.
MARKUP = '<b onclick="x">&amp;</b>'


def rack_hosts() -> list[HostSpec]:
    """Two pools, interleaved so some batches of 2 share a pool (one waits for the budget
    of 1 per pool) and some do not (both run at once)."""
    names = [
        "rack-a-01",
        "rack-a-02",
        "rack-b-01",
        "rack-a-03",
        "rack-b-02",
        "rack-b-03",
        "rack-a-04",
        "rack-b-04",
    ]
    return [
        HostSpec(
            name=name,
            pool=name[:6],
            bmc_address="127.0.0.1",
            bmc_port=7100 + i,
            bmc_credential="nocreds" if name in BROKEN else "lab",
        )
        for i, name in enumerate(names)
    ]


def run_fleet(fleet: Fleet, sim: InProcessFleet) -> None:
    fleet.run(driver_factory=sim.driver_factory, poll=0.05, poll_interval=0.01)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, int, int]]:
    """A fleet after two real requests: a power-cycle of 8 hosts in batches of 2 under a
    budget of 1 host per pool (2 hosts fail), then a power-on of 4 of them."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MAAS_CRED_LAB_USERNAME", "admin")
    mp.setenv("MAAS_CRED_LAB_PASSWORD", "secret")
    mp.delenv("MAAS_CRED_NOCREDS_USERNAME", raising=False)
    mp.delenv("MAAS_CRED_NOCREDS_PASSWORD", raising=False)
    sim = InProcessFleet(config=MachineConfig(power_delay=0.05, install_time=0.0), latency=0.01)
    hosts = rack_hosts()
    for h in hosts:
        sim.add_host(h, power="on")
    db = tmp_path_factory.mktemp("report") / "fleet.db"
    fleet = maas_lib.open_fleet(db)
    try:
        fleet.store.upsert_hosts(hosts, [], actor="test")
        cycle = fleet.submit(
            "power-cycle",
            [h.name for h in hosts],
            batch_size="2",
            max_unavailable="1",
            max_failures="100%",
        ).id
        run_fleet(fleet, sim)
        power_on = fleet.submit("power-on", ["rack-a-0[12]", "rack-b-0[13]"], batch_size="2").id
        run_fleet(fleet, sim)
        yield fleet, cycle, power_on
    finally:
        fleet.close()
        mp.undo()


class MarkupHosts:
    """The fleet seen through host names that carry markup (real names cannot), to show
    that every host name is escaped wherever the report puts it."""

    def __init__(self, fleet: Fleet):
        self._fleet = fleet

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fleet, name)

    @staticmethod
    def rename(host: str) -> str:
        return host + MARKUP

    def status(self, request_id: int) -> Any:
        st = self._fleet.status(request_id)
        hosts = [h.model_copy(update={"host": self.rename(h.host)}) for h in st.hosts]
        return st.model_copy(update={"hosts": hosts})

    def steps(self, request_id: int, host: str | None = None) -> list[dict[str, Any]]:
        return [{**s, "host": self.rename(s["host"])} for s in self._fleet.steps(request_id)]


def svgs(doc: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", doc, flags=re.S)


def legend_of(svg: str) -> str:
    """The SVG from the (figure) legend's group to the end: the legend is drawn last."""
    m = re.search(r'id="[^"]*legend_\d+"', svg)
    assert m, "figure has no legend"
    return svg[m.start() :]


def assert_self_contained(doc: str) -> None:
    assert doc.startswith("<!DOCTYPE html>")
    assert doc.count("<html") == 1 and doc.rstrip().endswith("</html>")
    for forbidden in ("<script", "<link", "<img", "<iframe", "<object", "<embed", "@import"):
        assert forbidden not in doc.lower(), forbidden
    # Nothing is fetched: the only URLs are XML namespace names on the inline SVGs.
    without_ns = re.sub(r'xmlns(:\w+)?="http://www\.w3\.org/[^"]*"', "", doc)
    assert not re.search(r"https?://", without_ns), re.findall(r".{40}https?://.{40}", without_ns)
    assert not re.search(r'\b(src|href)="(?!#)', doc)
    assert not re.search(r"url\((?!#)", doc)


def test_window_report_is_one_self_contained_document(ran: tuple[Fleet, int, int]) -> None:
    fleet, cycle, power_on = ran
    doc = render_report(fleet, since="1h")

    assert_self_contained(doc)
    figures = svgs(doc)
    assert len(figures) >= 3
    assert doc.count("<figure>") == len(figures)
    # Every element id is unique across the inline SVGs (they share one document).
    ids = re.findall(r'\bid="([^"]+)"', doc)
    assert len(ids) == len(set(ids))
    # The per-action table: both actions, the power-cycle's 6 of 8, the failures' class.
    assert "power-cycle" in doc and "power-on" in doc
    assert "75.0%" in doc and "credential" in doc
    # Success over time, step durations, then one timeline per started request.
    assert "Success rate per action" in figures[0]
    assert ">power-off<" in figures[1] and ">power-on<" in figures[1]
    timelines = [s for s in figures if "waiting (budget / overlap)" in s]
    assert len(timelines) == 2  # newest first
    assert f"Request {power_on}: power-on of 4 hosts" in timelines[0]
    assert f"Request {cycle}: power-cycle of 8 hosts" in timelines[1]


def test_an_empty_window_reports_no_plots(ran: tuple[Fleet, int, int]) -> None:
    fleet, *_ = ran
    doc = render_report(fleet, since="2999-01-01")

    assert_self_contained(doc)
    assert "<svg" not in doc
    assert "No host task ended in this window." in doc
    assert "No request in this window" in doc


def test_a_large_request_shows_a_sample_of_every_batch(ran: tuple[Fleet, int, int]) -> None:
    fleet, cycle, _ = ran
    doc = render_report(fleet, request_id=cycle, max_hosts=4)

    timeline = svgs(doc)[-1]
    assert "Showing 4 of 8 hosts that ran" in doc
    ticks = re.findall(r">(rack-[ab]-0\d)<", timeline)
    assert len(ticks) == 4
    assert set(ticks) >= BROKEN  # failed hosts are never sampled away
    for b in range(4):
        assert f">batch {b} (1 of 2)<" in timeline


def test_request_report_has_the_timeline_with_batches_and_waits(
    ran: tuple[Fleet, int, int],
) -> None:
    fleet, cycle, _ = ran
    doc = render_report(MarkupHosts(fleet), request_id=cycle)  # type: ignore[arg-type]

    assert_self_contained(doc)
    figures = svgs(doc)
    assert len(figures) >= 3
    timeline = figures[-1]
    legend = legend_of(timeline)
    for name in ("power-off", "power-on", "waiting (budget / overlap)", "failed step"):
        assert f">{name}<" in legend, name
    # rack-a-02 waited for rack-a-01 (same pool, budget 1): a labelled grey bar.
    assert ">waiting<" in timeline
    # 4 batches of 2, each labelled; the failed hosts are in the failure table.
    for b in range(4):
        assert f">batch {b}" in timeline
    assert "Failed hosts (2)" in doc
    # Host names are escaped everywhere: in the HTML tables and in the SVG text.
    assert "<b onclick" not in doc
    escaped = html.escape(MARKUP, quote=False)
    for host in BROKEN:
        assert f"{html.escape(host)}{html.escape(MARKUP)}" in doc  # the failure table
        assert f"{host}{escaped}" in timeline  # a tick label


def test_unknown_request_and_bad_since_are_refused(ran: tuple[Fleet, int, int]) -> None:
    fleet, *_ = ran
    with pytest.raises(maas_lib.NotFound):
        render_report(fleet, request_id=9999)
    with pytest.raises(maas_lib.InputError, match="--since"):
        render_report(fleet, since="yesterday-ish")
    with pytest.raises(maas_lib.InputError):
        render_report(fleet, request_id=1, since="1h")


def find_chromium() -> str | None:
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(ran: tuple[Fleet, int, int], tmp_path: Path) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    from matplotlib.image import imread

    fleet, cycle, _ = ran
    report = write_report(fleet, tmp_path / "report.html", request_id=cycle)
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1400,3000",
            report.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=patience(120),
    )
    assert shot.exists(), (proc.returncode, proc.stderr[-2000:])
    pixels = imread(shot)
    assert pixels.shape[0] >= 3000 and pixels.shape[1] >= 1400
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05  # not a blank page
    # The plots' colours are on screen: step bars (power-off blue) and failed-step red.
    blue = ((abs(rgb[..., 0] - 0x1F / 255) < 0.03) & (abs(rgb[..., 2] - 0xB4 / 255) < 0.03)).sum()
    assert blue > 500
