"""The Ansible executor leaves a step's task out of a playbook run (--skip-tags) only
when the step's condition, decided before any step runs, holds for no host of the run:
no hooks asked for, no host booting from virtual media. A step the native executor would
run for any one host of the run stays in."""

from types import SimpleNamespace

from maas_lib.models import Action, HostSpec, RequestOptions
from maas_lib.scheduler.ansible_executor import skipped_steps
from maas_lib.scheduler.executor import Batch
from maas_lib.scheduler.settings import SchedulerSettings


def host(name, protocol="ipmi"):
    address = f"https://{name}.bmc.example" if protocol == "redfish" else f"10.0.0.{len(name)}"
    return HostSpec(name=name, pool="p", bmc_address=address, bmc_protocol=protocol)


def skipped(action, records, *, options=None, **settings):
    env = SimpleNamespace(
        controller=None,
        installs=None,
        store=None,
        worker="w",
        hook_slots=None,
        settings=SchedulerSettings(**settings),
    )
    batch = Batch(
        request_id=1,
        action=action,
        image="img",
        options=options or RequestOptions(),
        tasks={},
        records={r.name: r for r in records},
        done={},
        stopping=lambda: False,
        claim_lost=lambda: False,
    )
    return skipped_steps(env, batch, [r.name for r in records])


def test_no_hooks_and_no_virtual_media_leave_those_steps_out():
    assert skipped(Action.REIMAGE, [host("a"), host("b")]) == [
        "pre-hook",
        "eject-media",
        "post-hook",
    ]
    assert skipped(Action.REBOOT, [host("a")]) == ["pre-hook", "post-hook"]


def test_a_hook_asked_for_keeps_its_step():
    hooks = RequestOptions(pre_hook="/srv/pre.yml")
    assert skipped(Action.POWER_CYCLE, [host("a")], options=hooks) == ["post-hook"]


def test_one_redfish_host_booting_from_virtual_media_keeps_eject_for_the_run():
    url = "https://images.example/{image}.iso"
    records = [host("a"), host("rf", protocol="redfish")]
    assert "eject-media" not in skipped(Action.REIMAGE, records, image_url=url)
    # Without an image URL every host boots from the network: nothing to eject.
    assert "eject-media" in skipped(Action.REIMAGE, records)
    # An IPMI-only run with an image URL: no host uses virtual media.
    assert "eject-media" in skipped(Action.REIMAGE, [host("a")], image_url=url)
