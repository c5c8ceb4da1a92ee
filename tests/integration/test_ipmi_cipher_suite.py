"""A pinned RMCP+ cipher suite (`bmc_ipmi_cipher_suite`), against OpenIPMI's `ipmi_sim`
(suites 0-3 and 6, no SHA-256): pinned to 3, a login proposes suite 3 only — no refused
SHA-256 (suite 17) proposal first, one round trip less per BMC, as `ipmitool -C 3` and
ipmipower's cipher-suite-id do; pinned to 17, a BMC without it is refused, not silently
downgraded. The proposals are counted on the wire by a UDP relay between client and BMC."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from maas_lib.bmc import BmcController, BmcSettings
from maas_lib.bmc.base import BmcTarget
from maas_lib.bmc.sessions import close_all_sessions
from maas_lib.credentials import Credential
from maas_lib.errors import InputError
from maas_lib.inventory import load_inventory
from maas_lib.models import HostSpec
from maas_lib.sim.ipmisim import IpmiSim, IpmiSimOptions, ipmi_sim_path, running_ipmi_sims
from tests.conftest import patience

pytestmark = pytest.mark.skipif(
    not ipmi_sim_path(), reason="needs ipmi_sim (Debian package openipmi)"
)

OPTIONS = IpmiSimOptions()
GOOD = Credential("ipmisim", OPTIONS.username, OPTIONS.password, "test")
SETTINGS = BmcSettings(timeout=5, retries=0)
#: RMCP+ session header (IPMI 2.0 table 13-8): auth type 6, then the payload type; 0x10 is
#: an RMCP+ Open Session Request, whose 2nd to 4th algorithm payloads name the suite.
RMCP_PLUS, OPEN_SESSION_REQUEST = 0x06, 0x10


class CountingRelay:
    """A UDP relay in front of one BMC, recording the client's datagrams."""

    def __init__(self, bmc: tuple[str, int]):
        self.bmc = bmc
        self.sent: list[bytes] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.port = self.sock.getsockname()[1]
        self._client: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock, self.upstream], [], [], 0.1)
            for sock in ready:
                data, addr = sock.recvfrom(4096)
                if sock is self.sock:
                    self._client = addr
                    self.sent.append(data)
                    self.upstream.sendto(data, self.bmc)
                elif self._client is not None:
                    self.sock.sendto(data, self._client)

    def open_session_requests(self) -> list[bytes]:
        return [
            d
            for d in self.sent
            if len(d) > 5 and d[4] == RMCP_PLUS and d[5] == OPEN_SESSION_REQUEST
        ]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=patience(5))
        self.sock.close()
        self.upstream.close()


@pytest.fixture(scope="module")
def bmc() -> Iterator[IpmiSim]:
    with running_ipmi_sims(1, options=OPTIONS) as sims:
        yield sims[0]


@pytest.fixture
def relay(bmc: IpmiSim) -> Iterator[CountingRelay]:
    close_all_sessions()
    r = CountingRelay((bmc.host, bmc.port))
    yield r
    close_all_sessions()
    r.close()


def _status(relay: CountingRelay, **host_vars: object):
    spec = HostSpec(
        name="node-1",
        pool="p",
        bmc_address="127.0.0.1",
        bmc_port=relay.port,
        bmc_protocol="ipmi",
        bmc_credential="ipmisim",
        vars=host_vars,
    )
    controller = BmcController(SETTINGS, resolve=lambda _name: GOOD)
    result = controller.status(BmcTarget.from_host(spec))
    close_all_sessions()
    return result


def test_pinned_suite_3_logs_in_without_the_refused_sha256_proposal(relay):
    # Unpinned, pyghmi proposes SHA-256 (suite 17) first; ipmi_sim refuses it, then SHA-1.
    result = _status(relay)
    assert result.ok, result
    assert len(relay.open_session_requests()) == 2
    relay.sent.clear()
    result = _status(relay, bmc_ipmi_cipher_suite=3)
    assert result.ok and result.power in ("on", "off"), result
    # One proposal, for suite 3: RAKP-HMAC-SHA1 (authentication algorithm 1, in the first
    # of the request's three 8-byte algorithm records).
    (request,) = relay.open_session_requests()
    assert request[-24 + 4] == 1, request.hex()


def test_pinned_suite_17_is_refused_by_a_bmc_without_it_not_downgraded(relay):
    result = _status(relay, bmc_ipmi_cipher_suite="17")
    assert not result.ok and result.error_class == "unsupported", result
    assert len(relay.open_session_requests()) == 1


def test_an_unsupported_cipher_suite_stops_the_import(tmp_path: Path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  hosts:\n    node-1:\n      bmc_address: 10.0.0.1\n      bmc_ipmi_cipher_suite: 1\n"
    )
    with pytest.raises(InputError, match=r"host node-1: bmc_ipmi_cipher_suite: .*3, 17"):
        load_inventory([inventory])
    inventory.write_text(inventory.read_text().replace("suite: 1", "suite: '3'"))
    (host,), _ = load_inventory([inventory])
    assert BmcTarget.from_host(host).primary.ipmi_cipher_suite == 3
