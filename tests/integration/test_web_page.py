"""The web page the API serves at `/`, in headless Chromium (Debian's chromium and
chromedriver) driven through selenium: against a real uvicorn over TLS on loopback, whose
CA — generated for the test — the browser trusts through an NSS database of its own (no
certificate error is ignored), on a fleet of in-process simulated hosts run by a real
scheduler worker in this process.

Each view is also photographed; the screenshots are checked where the DOM cannot tell
whether anything was drawn (size, not blank, a state badge's colour)."""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import maas_lib
from maas_lib.models import HostSpec
from maas_lib.sim.inproc import InProcessFleet
from maas_lib.sim.machine import MachineConfig
from tests.apiserver import Service, running_service
from tests.conftest import patience

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1280, 900)

#: The scheduler's settings: quick polls, BMC timeouts that a loaded machine still meets.
RUN = {
    "poll": 0.05,
    "poll_interval": 0.05,
    "timeout": patience(2.0),
    "retries": 0,
    "power_timeout": patience(20.0),
    "claim_ttl": 30.0,
}
#: How long a slow host's power changes take (the in-flight view must catch it held).
SLOW_POWER_S = patience(3.0)

#: Markup as data: were any of it parsed, an <img> would appear, a handler would set
#: window.__xss, or an alert would open.
HOSTILE_HOST = '<img src=x onerror="window.__xss=1;alert(1)">'
HOSTILE_SUBMITTER = "<script>window.__xss=2;alert(2)</script>"
HOSTILE_DETAIL = "power-off: <b>BMC</b> said <img src=x onerror=alert(3)> &amp; left"


def _missing_browser() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} not installed (Debian package {package}; scripts/browser.sh)"
    if shutil.which("certutil") is None:
        return "certutil not installed (Debian package libnss3-tools; scripts/browser.sh)"
    try:
        import selenium  # noqa: F401  (the test extra)
    except ImportError:
        return "selenium not installed (pip install -e .[test])"
    return None


@dataclass
class Site:
    service: Service
    db: Path
    admin: str  # an admin token's secret
    sim: InProcessFleet

    @property
    def url(self) -> str:
        return self.service.url

    def submit(self, patterns: list[str], **fields: Any) -> int:
        """A request submitted through the API (as another client would)."""
        with self.service.client(self.admin) as http:
            res = http.post(
                "/api/v1/requests",
                json={"action": "power-cycle", "patterns": patterns, **fields},
            )
        assert res.status_code == 202, res.text
        return int(res.json()["id"])

    def requests(self) -> list[dict[str, Any]]:
        with self.service.client(self.admin) as http:
            res = http.get("/api/v1/requests")
        assert res.status_code == 200, res.text
        return res.json()

    def wait_ended(self, request_id: int) -> str:
        with maas_lib.open_fleet(self.db) as fleet:
            view = fleet.wait(request_id, timeout=patience(60), interval=0.1)
        assert view.ended, view
        return view.state

    def fleet(self) -> maas_lib.Fleet:
        return maas_lib.open_fleet(self.db)


def _hosts() -> list[HostSpec]:
    def host(name: str, pool: str, system: str) -> HostSpec:
        return HostSpec(
            name=name,
            pool=pool,
            bmc_address="127.0.0.1",
            bmc_port=6230,
            bmc_system=system,
            bmc_credential="lab",
        )

    web = [host(f"web{i:02d}", "web", f"sys-web{i:02d}") for i in range(1, 11)]
    # dead01's BMC answers nothing (no simulated machine behind its system id).
    return [*web, host("slow01", "slow", "sys-slow01"), host("dead01", "web", "sys-dead01")]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("web")
    db = directory / "fleet.db"
    hosts = _hosts()
    sim = InProcessFleet(config=MachineConfig(power_delay=0.1, install_time=0.0))
    for h in hosts:
        if h.name != "dead01":
            machine = sim.add_host(h)
            if h.name == "slow01":
                machine.config = MachineConfig(power_delay=SLOW_POWER_S, install_time=0.0)
    with maas_lib.open_fleet(db) as fleet:
        fleet.import_parsed(hosts, [])
        admin = fleet.create_token("web-admin", "admin").secret
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAAS_CRED_LAB_USERNAME", "admin")
        mp.setenv("MAAS_CRED_LAB_PASSWORD", "simulated")
        with maas_lib.open_fleet(db) as fleet:
            worker = fleet.worker(driver_factory=sim.driver_factory, alerts=[], **RUN)
            thread = threading.Thread(target=worker.run, name="scheduler", daemon=True)
            thread.start()
            try:
                with running_service(db, directory, progress_poll_s=0.1) as service:
                    yield Site(service=service, db=db, admin=admin, sim=sim)
            finally:
                worker.stop()
                thread.join(patience(60))


@pytest.fixture(scope="module")
def driver(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium trusting the test's CA (and only the system's CAs besides)."""
    reason = _missing_browser()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    home = tmp_path_factory.mktemp("chromium-home")
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    for args in (
        ["-N", "--empty-password"],
        ["-A", "-t", "C,,", "-n", "maas-lib test CA", "-i", str(site.service.certs["ca"])],
    ):
        subprocess.run(["certutil", "-d", f"sql:{nssdb}", *args], check=True, timeout=60)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # requests sent
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container: chromium's sandbox needs user namespaces
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--force-device-scale-factor=1",
        f"--user-data-dir={home / 'profile'}",
    ):
        options.add_argument(arg)
    service = DriverService(CHROMEDRIVER, env={**os.environ, "HOME": str(home)})
    browser = webdriver.Chrome(service=service, options=options)
    browser.set_page_load_timeout(patience(30))
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def page(driver: Any, site: Site) -> Any:
    """The page freshly loaded, signed out."""
    driver.get(f"{site.url}/")
    driver.execute_script("sessionStorage.clear(); localStorage.clear();")
    driver.refresh()
    driver.get_log("browser")  # what earlier tests' pages logged
    _wait(driver, lambda d: d.find_element("id", "view-signin").is_displayed())
    return driver


# -- helpers -----------------------------------------------------------------------------


def _wait(
    driver: Any,
    condition: Callable[[Any], Any],
    seconds: float = 20,
    state: Callable[[], Any] | None = None,
) -> Any:
    """`condition(driver)` once it is true, within `seconds` (scaled); else a failure
    saying what `state()` (default: the page's notice and visible view) was."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, patience(seconds), poll_frequency=0.05).until(condition)
    except TimeoutException:
        shown = state() if state else driver.execute_script(_SHOWN_JS)
        raise AssertionError(f"not within {patience(seconds):g} s; the page: {shown}") from None


_SHOWN_JS = """
return {notice: document.getElementById("notice").textContent,
        signin: document.getElementById("signin-error").textContent,
        view: Array.from(document.querySelectorAll(".view")).filter((v) => !v.hidden)
                .map((v) => v.id), hash: location.hash};
"""


def _by_id(driver: Any, element_id: str) -> Any:
    return driver.find_element("id", element_id)


def _sign_in(driver: Any, secret: str) -> None:
    _by_id(driver, "token").send_keys(secret)
    _by_id(driver, "signin-button").click()
    _wait(driver, lambda d: _by_id(d, "bar").is_displayed() and _by_id(d, "whoami").text)


def _go(driver: Any, hash_: str, view: str) -> None:
    driver.execute_script("location.hash = arguments[0]", hash_)
    _wait(driver, lambda d: _by_id(d, view).is_displayed())


def _screenshot(driver: Any, directory: Path, name: str):
    """The viewport as a PNG in `directory` (kept with the test's files): asserted to be
    the viewport's size and not blank; the image, for closer looks."""
    from PIL import Image

    png = driver.get_screenshot_as_png()
    (directory / f"{name}.png").write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    viewport = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    assert list(image.size) == viewport and image.size[0] == WINDOW[0], (image.size, viewport)
    colours = image.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 20, f"{name}: a blank page ({colours})"
    return image


#: Every row of a table at one instant (the page re-renders rows as data comes in, so
#: a row is read whole, in the page, rather than cell by cell through the driver).
_ROWS_JS = """
const [table] = arguments;
return Array.from(document.querySelectorAll(`#${table} tbody tr`), (tr) => ({
  data: {...tr.dataset},
  cells: Array.from(tr.cells, (td) => td.textContent),
  bars: Array.from(tr.querySelectorAll(".batch-bar[data-batch]"),
                   (b) => [Number(b.dataset.ended), Number(b.dataset.hosts)]),
  labels: Array.from(tr.querySelectorAll(".batch-label"), (l) => l.textContent),
}));
"""

#: Where on the screen (viewport pixels) a row, or an element in it, is drawn.
_RECT_JS = """
const [table, key, value, css] = arguments;
const row = Array.from(document.querySelectorAll(`#${table} tbody tr`))
  .find((tr) => tr.dataset[key] === value);
const el = row && (css ? row.querySelector(css) : row);
if (!el) return null;
el.scrollIntoView({block: "center"});
const r = el.getBoundingClientRect();
return [r.left, r.top, r.right, r.bottom];
"""


def _rows(driver: Any, table: str) -> list[dict[str, Any]]:
    return driver.execute_script(_ROWS_JS, table)


def _row(driver: Any, table: str, key: str, value: str) -> dict[str, Any] | None:
    return next((r for r in _rows(driver, table) if r["data"].get(key) == value), None)


def _drawn(driver: Any, directory: Path, name: str, table: str, key: str, value: str, css=""):
    """A screenshot (see `_screenshot`) and the part of it where the row of `table`
    whose data-`key` is `value` (or the element `css` in that row) is drawn."""
    rect = driver.execute_script(_RECT_JS, table, key, value, css)
    assert rect is not None, (table, key, value, css)
    image = _screenshot(driver, directory, name)
    box = tuple(int(v) for v in rect)
    assert box[2] <= image.size[0] and box[3] <= image.size[1], ("off screen", box)
    return image.crop(box)


def _colours(region: Any) -> list[tuple[int, int, int]]:
    return [colour for _, colour in region.getcolors(maxcolors=1 << 16)]


def _has_colour(region: Any, rgb: tuple[int, int, int], tolerance: int = 12) -> bool:
    return any(
        all(abs(c - w) <= tolerance for c, w in zip(colour, rgb, strict=True))
        for colour in _colours(region)
    )


def _requests_sent(driver: Any) -> list[dict[str, Any]]:
    """The HTTP requests the browser sent since the last call (Chromium's DevTools
    Network events, with the headers the page set)."""
    import json

    sent = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            request = message["params"]["request"]
            sent.append({"url": request["url"], "headers": request.get("headers", {})})
        elif message["method"] == "Network.requestWillBeSentExtraInfo":
            # The headers as sent on the wire, cookies included: no URL, its own entry.
            sent.append({"url": "", "headers": message["params"].get("headers", {})})
    return sent


def _header(request: dict[str, Any], name: str) -> str | None:
    return next((v for k, v in request["headers"].items() if k.lower() == name), None)


def _assert_quiet_console(driver: Any) -> None:
    """Nothing went wrong in the page: no script error, no CSP or Trusted Types violation,
    no failed load (the browser's console since the page fixture loaded it)."""
    problems = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert problems == []


#: app.css's state badge backgrounds.
GREEN = (0xD8, 0xF0, 0xDF)
RED = (0xF8, 0xDC, 0xD9)


# -- the page's own response ---------------------------------------------------------------


def test_the_page_is_served_with_headers_that_confine_it(site: Site) -> None:
    with site.service.client() as http:
        for path, kind in (("/", "text/html"), ("/web/app.js", "text/javascript")):
            res = http.get(path)
            assert res.status_code == 200 and res.headers["content-type"].startswith(kind)
            csp = {
                d.strip().split(" ", 1)[0]: d.strip()
                for d in res.headers["content-security-policy"].split(";")
            }
            assert csp["default-src"] == "default-src 'self'"
            assert csp["script-src"] == "script-src 'self'"  # no inline script, no eval
            assert csp["style-src"] == "style-src 'self'"  # no inline style
            assert csp["frame-ancestors"] == "frame-ancestors 'none'"
            assert csp["form-action"] == "form-action 'none'"
            assert csp["require-trusted-types-for"] == "require-trusted-types-for 'script'"
            assert res.headers["x-content-type-options"] == "nosniff"
            assert res.headers["referrer-policy"] == "no-referrer"
            assert res.headers["cache-control"] == "no-store"
            assert "set-cookie" not in res.headers
        html = http.get("/").text
    # Nothing inline for the CSP to refuse: every script and style sheet is a file.
    assert "<script>" not in html and "<style" not in html and " style=" not in html
    assert 'src="/web/app.js"' in html and 'href="/web/app.css"' in html


# -- the browser ---------------------------------------------------------------------------


def test_sign_in_then_the_list_follows_a_request_to_its_end(
    page: Any, site: Site, tmp_path: Path
) -> None:
    token_field = _by_id(page, "token")
    assert token_field.get_attribute("type") == "password"
    assert token_field.get_attribute("name") in (None, "")  # never a form field to send
    _screenshot(page, tmp_path, "signin")

    _sign_in(page, site.admin)
    assert _by_id(page, "whoami").text == "token:web-admin (admin)"
    # Two batches of two, then slow01 alone, which takes seconds: the list shows it run.
    rid = site.submit(["web0[1-4]", "slow01"], batch_size="2", pause=patience(0.5))
    row = _wait(page, lambda d: _row(d, "requests-table", "id", str(rid)))
    assert row["cells"][1:5] == ["power-cycle", row["data"]["state"], "token:web-admin", "5"]

    seen: list[list[list[int]]] = []

    def ended(d: Any) -> bool:
        row = _row(d, "requests-table", "id", str(rid))
        if row is None:
            return False
        if row["bars"] and (not seen or seen[-1] != row["bars"]):
            seen.append(row["bars"])
        return row["data"]["state"] == "succeeded" and row["bars"] == [[2, 2], [2, 2], [1, 1]]

    _wait(page, ended, 60, lambda: (seen, _row(page, "requests-table", "id", str(rid))))
    # Bars only come from the progress stream (the list has no batches); it was watched
    # live: some batch was seen unfinished before all three were.
    assert any(sum(e for e, _ in bars) < 5 for bars in seen[:-1]), seen
    row = _row(page, "requests-table", "id", str(rid))
    assert row["labels"] == ["batch 0: 2/2", "batch 1: 2/2", "batch 2: 1/1"]
    assert row["cells"][2] == "succeeded"
    badge = _drawn(page, tmp_path, "list", "requests-table", "id", str(rid), ".state")
    assert _has_colour(badge, GREEN)  # the succeeded badge, drawn as app.css has it
    _assert_quiet_console(page)


def test_one_request_shows_its_hosts_states_and_failure_classes(
    page: Any, site: Site, tmp_path: Path
) -> None:
    rid = site.submit(["web07", "web08", "dead01"], batch_size="3", max_failures="1")
    assert site.wait_ended(rid) == "partial"
    _sign_in(page, site.admin)
    _go(page, f"#/requests/{rid}", "view-request")
    _wait(page, lambda d: len(_rows(d, "req-hosts")) == 3)
    assert _by_id(page, "req-id").text == f"#{rid}"
    assert _by_id(page, "req-state").text == "partial"
    hosts = {r["data"]["host"]: r["cells"] for r in _rows(page, "req-hosts")}
    assert hosts["web07"][:4] == ["web07", "0", "succeeded", ""]
    assert hosts["web08"][:4] == ["web08", "0", "succeeded", ""]
    assert hosts["dead01"][:4] == ["dead01", "0", "failed", "unreachable"]
    assert "sys-dead01" in hosts["dead01"][4]  # the BMC error's detail
    failures = _rows(page, "req-failures")
    assert [f["cells"][:2] for f in failures] == [["unreachable", "dead01"]]
    assert "sys-dead01" in failures[0]["cells"][2]
    assert "2 succeeded, 1 failed" in _by_id(page, "req-batches").text
    assert not _by_id(page, "req-cancel").is_displayed()  # it has ended
    _screenshot(page, tmp_path, "request")
    failed = _drawn(page, tmp_path, "request-hosts", "req-hosts", "host", "dead01", ".state")
    assert _has_colour(failed, RED) and not _has_colour(failed, GREEN)
    ok = _drawn(page, tmp_path, "request-hosts", "req-hosts", "host", "web08", ".state")
    assert _has_colour(ok, GREEN) and not _has_colour(ok, RED)
    _assert_quiet_console(page)


def test_the_fleet_in_flight_shows_held_hosts_and_workers(
    page: Any, site: Site, tmp_path: Path
) -> None:
    rid = site.submit(["slow01"])
    _sign_in(page, site.admin)
    _go(page, "#/inflight", "view-inflight")
    row = _wait(page, lambda d: _row(d, "inflight-table", "host", "slow01"))
    assert row["cells"][:4] == ["slow01", f"#{rid}", "power-cycle", "slow"]
    workers = _rows(page, "workers-table")
    assert len(workers) == 1 and workers[0]["cells"][1:4:2] == ["yes", f"#{rid}"]
    region = _drawn(page, tmp_path, "inflight", "inflight-table", "host", "slow01")
    assert len(_colours(region)) > 5  # its text was drawn
    assert site.wait_ended(rid) == "succeeded"
    _wait(page, lambda d: _row(d, "inflight-table", "host", "slow01") is None)
    assert _by_id(page, "inflight-empty").is_displayed()
    _assert_quiet_console(page)


def test_cancel_from_the_request_view_starts_no_further_host(page: Any, site: Site) -> None:
    rid = site.submit(["slow01", "web03"], batch_size="1")  # slow01 first, alone
    _sign_in(page, site.admin)
    _go(page, f"#/requests/{rid}", "view-request")
    _wait(page, lambda d: _by_id(d, "req-cancel").is_displayed())
    _by_id(page, "req-cancel").click()
    alert = _wait(page, lambda d: d.switch_to.alert)
    assert alert.text == f"Cancel request #{rid}?"
    alert.accept()
    _wait(page, lambda d: "cancel requested" in _by_id(d, "notice").text)
    assert site.wait_ended(rid) == "cancelled"
    # The stream brings the end: web03 never started, and there is nothing left to cancel.
    _wait(page, lambda d: _by_id(d, "req-state").text == "cancelled")
    hosts = {r["data"]["host"]: r["cells"][2] for r in _rows(page, "req-hosts")}
    assert hosts["web03"] == "cancelled"
    assert not _by_id(page, "req-cancel").is_displayed()


def test_markup_in_host_names_submitters_and_bmc_errors_is_shown_as_text(
    page: Any, site: Site, tmp_path: Path
) -> None:
    rid = site.submit(["web09", "dead01"], batch_size="2", max_failures="1")
    assert site.wait_ended(rid) == "partial"
    # Data the API's validation would refuse (a store written by hand, an older
    # version), and the BMC's own words: the page must show it all as text.
    with sqlite3.connect(site.db) as db:
        db.execute("UPDATE requests SET submitted_by = ? WHERE id = ?", (HOSTILE_SUBMITTER, rid))
        for table in ("request_hosts", "host_tasks", "step_results"):
            db.execute(
                f"UPDATE {table} SET host = ? WHERE request_id = ? AND host = 'web09'",
                (HOSTILE_HOST, rid),
            )
        db.execute(
            "UPDATE request_hosts SET reason = ? WHERE request_id = ? AND host = 'dead01'",
            (HOSTILE_DETAIL, rid),
        )
    _sign_in(page, site.admin)
    row = _wait(page, lambda d: _row(d, "requests-table", "id", str(rid)))
    assert row["cells"][3] == HOSTILE_SUBMITTER
    assert (
        len(
            _colours(
                _drawn(
                    page, tmp_path, "hostile-list", "requests-table", "id", str(rid), "td.submitter"
                )
            )
        )
        > 5
    )
    _go(page, f"#/requests/{rid}", "view-request")
    row = _wait(page, lambda d: _row(d, "req-hosts", "host", HOSTILE_HOST))
    assert row["cells"][0] == HOSTILE_HOST
    assert _row(page, "req-hosts", "host", "dead01")["cells"][4] == HOSTILE_DETAIL
    meta = page.find_element("css selector", '#req-meta dd[data-field="Submitted by"]')
    assert meta.text == HOSTILE_SUBMITTER
    cell = _drawn(page, tmp_path, "hostile-request", "req-hosts", "host", HOSTILE_HOST, "td")
    assert len(_colours(cell)) > 5  # the name was drawn, as text
    # None of it became an element, ran, or opened a dialog.
    assert page.find_elements("css selector", "main img, main b, main script") == []
    assert page.execute_script("return window.__xss") is None
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        page.switch_to.alert.text  # noqa: B018  (reading it is the check)
    # And the browser itself refuses a string as markup on this page (Trusted Types).
    refused = page.execute_script(
        "try { document.body.insertAdjacentHTML('beforeend', '<i>x</i>'); return null }"
        " catch (e) { return e.name }"
    )
    assert refused == "TypeError"


def test_submit_is_enabled_only_after_a_dry_run_preview_and_creates_one_request(
    page: Any, site: Site, tmp_path: Path
) -> None:
    _sign_in(page, site.admin)
    _go(page, "#/submit", "view-submit")
    before = [r["id"] for r in site.requests()]
    submit = _by_id(page, "submit-button")
    _by_id(page, "f-patterns").send_keys("web10\nweb05")
    _by_id(page, "f-batch-size").send_keys("1")
    assert not submit.is_enabled()
    _by_id(page, "preview-button").click()
    _wait(page, lambda d: _by_id(d, "preview").is_displayed() and submit.is_enabled())
    assert [b["cells"][:2] for b in _rows(page, "preview-batches")] == [
        ["0", "web10"],  # in the order the patterns name them
        ["1", "web05"],
    ]
    assert "2 hosts in 2 batches" in _by_id(page, "preview-summary").text
    _screenshot(page, tmp_path, "preview")
    assert [r["id"] for r in site.requests()] == before  # a preview writes nothing

    # Changing the form after its preview takes Submit away until a new preview.
    _by_id(page, "f-batch-size").send_keys("0")  # "10": one batch of both
    assert not submit.is_enabled() and not _by_id(page, "preview").is_displayed()
    _by_id(page, "preview-button").click()
    _wait(page, lambda d: submit.is_enabled())
    assert len(_rows(page, "preview-batches")) == 1
    # Two clicks, one request.
    page.execute_script("arguments[0].click(); arguments[0].click();", submit)
    _wait(page, lambda d: d.execute_script("return location.hash").startswith("#/requests/"))
    rid = int(page.execute_script("return location.hash").rsplit("/", 1)[1])
    _wait(page, lambda d: _by_id(d, "req-id").text == f"#{rid}")
    _screenshot(page, tmp_path, "submitted")
    site.wait_ended(rid)
    new = [r for r in site.requests() if r["id"] not in before]
    assert [r["id"] for r in new] == [rid]
    assert new[0]["host_count"] == 2 and new[0]["submitted_by"] == "token:web-admin"
    with site.fleet() as fleet:
        status = fleet.status(rid)
    assert status.patterns == ["web10", "web05"] and str(status.policy.batch_size) == "10"
    _assert_quiet_console(page)


def test_a_refused_preview_shows_the_servers_reason_and_keeps_submit_off(
    page: Any, site: Site, tmp_path: Path
) -> None:
    with site.fleet() as fleet:
        operator = fleet.create_token("web-operator", "operator", teams=["web-team"]).secret
        fleet.grant_pool("web-team", "web")
    _sign_in(page, operator)
    _go(page, "#/submit", "view-submit")
    _by_id(page, "f-patterns").send_keys("web02 slow01")  # slow: a pool it does not own
    _by_id(page, "preview-button").click()
    _wait(page, lambda d: _by_id(d, "submit-error").text)
    refusal = _by_id(page, "submit-error").text
    assert "pool slow" in refusal and "pool web" not in refusal, refusal  # the server's words
    assert not _by_id(page, "submit-button").is_enabled()
    assert not _by_id(page, "preview").is_displayed()
    _screenshot(page, tmp_path, "refused-preview")
    # Its own pool's host: previewed, and then it may submit.
    _by_id(page, "f-patterns").clear()
    _by_id(page, "f-patterns").send_keys("web02")
    _by_id(page, "preview-button").click()
    _wait(page, lambda d: _by_id(d, "submit-button").is_enabled())
    assert _by_id(page, "submit-error").text == ""


def test_the_token_is_never_in_a_url_web_storage_cookie_or_the_page(page: Any, site: Site) -> None:
    page.get_log("performance")  # what earlier tests' pages sent
    _sign_in(page, site.admin)
    for hash_, view in (
        ("#/requests", "view-requests"),
        ("#/inflight", "view-inflight"),
        ("#/submit", "view-submit"),
    ):
        _go(page, hash_, view)
    rid = site.submit(["slow01"])  # slow: the request view follows its progress stream
    _go(page, f"#/requests/{rid}", "view-request")
    _wait(page, lambda d: _rows(d, "req-hosts"))
    sent: list[dict[str, Any]] = []

    def streamed(d: Any) -> bool:
        sent.extend(_requests_sent(d))
        progress = f"/api/v1/requests/{rid}/progress"
        return any(urlsplit(r["url"]).path == progress for r in sent)

    _wait(page, streamed)
    # Every request the browser sent (files, API calls, the stream): no token in a URL,
    # no cookie; the API calls carry it in their Authorization header only.
    assert not [r["url"] for r in sent if site.admin in r["url"]]
    assert not [r for r in sent if "cookie" in {k.lower() for k in r["headers"]}]
    api_calls = [r for r in sent if "/api/v1/" in r["url"]]
    paths = {urlsplit(r["url"]).path for r in api_calls}
    every_view = {"whoami", "requests", "inflight", "workers", f"requests/{rid}/progress"}
    assert {f"/api/v1/{p}" for p in every_view} <= paths, paths
    assert all(_header(r, "authorization") == f"Bearer {site.admin}" for r in api_calls)
    assert site.admin not in page.current_url
    assert page.get_cookies() == []
    assert page.execute_script("return localStorage.length") == 0
    assert site.admin not in page.page_source
    assert site.admin not in page.execute_script("return document.documentElement.outerHTML")
    # Kept in this tab's sessionStorage only, and gone once signed out.
    assert site.admin in page.execute_script("return Object.values(sessionStorage)")
    _by_id(page, "signout").click()
    _wait(page, lambda d: _by_id(d, "view-signin").is_displayed())
    assert page.execute_script("return sessionStorage.length") == 0
    assert not _by_id(page, "bar").is_displayed()
    site.wait_ended(rid)


def test_a_refused_token_shows_the_sign_in_again(page: Any, site: Site, tmp_path: Path) -> None:
    _by_id(page, "token").send_keys("maas_" + "x" * 43)  # well formed, unknown
    _by_id(page, "signin-button").click()
    _wait(page, lambda d: _by_id(d, "signin-error").text)
    assert _by_id(page, "signin-error").text == "That token was not accepted."
    assert page.execute_script("return sessionStorage.length") == 0
    _screenshot(page, tmp_path, "refused")

    with site.fleet() as fleet:
        created = fleet.create_token("web-revoked", "viewer")
    _sign_in(page, created.secret)
    _wait(page, lambda d: _by_id(d, "view-requests").is_displayed())
    with site.fleet() as fleet:
        fleet.revoke_token("web-revoked")
    # The list's next refresh is answered 401: the page forgets the token.
    _wait(page, lambda d: _by_id(d, "view-signin").is_displayed())
    assert "401" in _by_id(page, "signin-error").text
    assert page.execute_script("return sessionStorage.length") == 0
    assert not _by_id(page, "bar").is_displayed()
    _screenshot(page, tmp_path, "signed-out")
