"""The Python API: the same operations the CLI offers, as typed objects."""

import pytest

import maas_lib
from maas_lib import BatchPolicy, InputError, NotFound, RequestState


def test_open_fleet_import_submit_status_list_cancel(db_path, inventory):
    with maas_lib.open_fleet(f"sqlite:///{db_path}") as fleet:
        result = fleet.import_hosts([str(inventory)])
        assert isinstance(result, maas_lib.ImportResult) and result.added == 11
        assert {p.name for p in result.pools} == {"web", "db", "gpu"}
        assert len(fleet.hosts("web")) == 8

        req = fleet.submit(
            "power-cycle", ["web*"], batch_size="25%", canary=1, submitted_by="api-test"
        )
        assert req == maas_lib.SubmitResult(id=1, state="accepted", hosts=8)
        policy = BatchPolicy(batch_size="1", max_failures="0", pause=2)
        req2 = fleet.submit(maas_lib.Action.REIMAGE, ["db01"], image="rhel-9.4", policy=policy)

        st = fleet.status(req.id)
        assert isinstance(st, maas_lib.RequestStatus)
        assert st.submitted_by == "api-test" and st.policy.canary == 1
        assert str(st.policy.batch_size) == "25%"
        assert fleet.status(req2.id).policy == policy

        assert [r.id for r in fleet.requests()] == [2, 1]
        assert fleet.cancel(req.id) is RequestState.CANCELLED
        assert [r.id for r in fleet.requests(state="accepted")] == [2]
        assert [r.id for r in fleet.requests(state=["accepted", "cancelled"])] == [2, 1]
        kinds = [e.kind for e in fleet.events(req.id)]
        assert kinds == ["request_cancelled", "request_accepted"]
        assert fleet.inflight() == []


def test_api_errors_are_typed(fleet):
    with pytest.raises(NotFound):
        fleet.status(42)
    with pytest.raises(NotFound, match="unknown host a, b, c, d, e \\(and 2 more\\)"):
        fleet.submit("reboot", list("abcdefg"))
    with pytest.raises(InputError, match="unknown action"):
        fleet.submit("melt", ["web01"])
    with pytest.raises(InputError, match="--batch-size"):
        fleet.submit("reboot", ["web01"], batch_size="0%")
    with pytest.raises(InputError, match="unknown state"):
        fleet.requests(state="sleeping")
    assert fleet.requests() == []


def test_duplicate_and_overlapping_patterns_count_each_host_once(fleet):
    req = fleet.submit("reboot", ["web01", "web0*", "web01", "web0[1-2]"])
    assert req.hosts == 8
    assert [h.host for h in fleet.status(req.id).hosts][:2] == ["web01", "web02"]
