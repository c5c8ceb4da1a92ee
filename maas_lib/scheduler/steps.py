"""Each lifecycle action as an ordered list of steps, and what every step does.

A step is one thing that can be timed and can fail on its own: a confirmed power change,
a boot-device change, waiting for an installer's report. The host runner records each
step's start before it runs and its end right after (see `maas_lib.scheduler.host`).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from maas_lib.bmc import BmcController, BmcTarget, BootDevice, PowerAction, PowerState
from maas_lib.bmc.base import BmcDriver, PowerReading
from maas_lib.classes import ErrorClass, StepOutcome
from maas_lib.errors import BmcTimeout, Interrupted, StepError
from maas_lib.models import Action, BmcProtocol, HostRecord, InstallReport, RequestOptions

if TYPE_CHECKING:
    from maas_lib.scheduler.installs import InstallWatcher
    from maas_lib.scheduler.settings import SchedulerSettings
    from maas_lib.store import Store


class _Guarded(BmcDriver):
    """A host's driver as one step sees it: once that step is abandoned (its timeout
    passed), its thread may finish the call in flight but can start no other, so a late
    command never reaches a host whose task has ended and whose lease is gone."""

    def __init__(self, inner: BmcDriver, abort: threading.Event):
        self.inner = inner
        self.abort = abort
        self.endpoint = inner.endpoint

    def __getattr__(self, name: str) -> Any:  # e.g. a fallback driver's `secondary`
        return getattr(self.inner, name)

    @property
    def via(self) -> str:
        return self.inner.via

    def _check(self) -> None:
        if self.abort.is_set():
            raise BmcTimeout("step abandoned after its timeout", via=self.inner.via)

    def power_state(self) -> PowerReading:
        self._check()
        return self.inner.power_state()

    def power(self, action: PowerAction) -> None:
        self._check()
        self.inner.power(action)

    def set_boot(self, device: BootDevice, *, persistent: bool = False) -> None:
        self._check()
        self.inner.set_boot(device, persistent=persistent)

    def insert_media(self, image_url: str) -> None:
        self._check()
        self.inner.insert_media(image_url)

    def eject_media(self) -> None:
        self._check()
        self.inner.eject_media()

    def identify(self, on: bool = True) -> None:
        self._check()
        self.inner.identify(on)


@dataclass
class HostContext:
    """What the steps of one host's task work with."""

    host: HostRecord
    request_id: int
    action: Action
    image: str | None
    options: RequestOptions
    controller: BmcController
    settings: SchedulerSettings
    installs: InstallWatcher
    store: Store
    stopping: Callable[[], bool]
    worker: str | None = None
    host_vars: dict[str, Any] = field(default_factory=dict)
    #: Bounds hook playbooks running at once across the worker.
    hook_slots: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(4))
    notes: dict[str, Any] = field(default_factory=dict)
    #: Set when the current step is abandoned; each step gets its own (`for_step`).
    abort: threading.Event = field(default_factory=threading.Event)
    #: Shared by every step of the task: the driver, built once.
    cache: dict[str, BmcDriver] = field(default_factory=dict)

    def for_step(self) -> HostContext:
        """This context with a fresh abort flag (notes and driver shared)."""
        return dataclasses.replace(self, abort=threading.Event())

    @property
    def target(self) -> BmcTarget:
        return BmcTarget.from_host(self.host)

    @property
    def driver(self) -> BmcDriver:
        if "driver" not in self.cache:
            self.cache["driver"] = self.controller.driver(self.target)
        return _Guarded(self.cache["driver"], self.abort)

    @property
    def via(self) -> str | None:
        return self.cache["driver"].via if "driver" in self.cache else None

    def earlier_report(self) -> InstallReport | None:
        """This request's install report for the host, if one came in already."""
        reports = [
            r for r in self.store.install_reports(self.host.name) if r.request_id == self.request_id
        ]
        return reports[-1] if reports else None

    @property
    def uses_virtual_media(self) -> bool:
        """Redfish hosts boot images from virtual media when an image URL is configured."""
        return self.settings.image_url is not None and self.host.bmc_protocol is BmcProtocol.REDFISH

    @property
    def install_image(self) -> str:
        """The image this task boots: the request's, or the configured wipe image."""
        if self.action is Action.REIMAGE:
            assert self.image is not None
            return self.image
        return self.image or self.settings.wipe_image


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[HostContext], None]
    timeout: Callable[[HostContext], float]
    #: A failure is recorded but the task goes on (e.g. a soft shutdown that timed out).
    optional: bool = False
    #: Run only when this says so (e.g. a hard power-off only after a failed soft one).
    when: Callable[[HostContext], bool] | None = None
    #: Talks to the BMC (its record names the path that acted: `via`).
    bmc: bool = True
    #: When a resumed task skips this step (it completed before the crash): restore
    #: what later steps need from it. Gets the outcome it had.
    on_skip: Callable[[HostContext, str], None] | None = None
    #: `when` reads only the request, the settings and the host, never what earlier
    #: steps left in `notes`: it can be decided before the task starts (the Ansible
    #: executor then leaves the step's task out of the run, see `skipped_steps`).
    static: bool = False


# -- timeouts ---------------------------------------------------------------------------


def _call_budget(ctx: HostContext) -> float:
    """Seconds a few BMC calls may take with their retries (fallback doubles each)."""
    s = ctx.settings.bmc
    return 4 * s.timeout * (s.retries + 1) + 5.0


def _power_budget(ctx: HostContext) -> float:
    return ctx.settings.bmc.power_timeout + _call_budget(ctx)


# -- what steps do ----------------------------------------------------------------------


def _power(action: PowerAction) -> Callable[[HostContext], None]:
    def run(ctx: HostContext) -> None:
        ctx.controller.set_power(ctx.driver, action, wait=True)

    return run


def _soft_off(ctx: HostContext) -> None:
    started = time.monotonic()
    c = ctx.controller
    if c.read_power(ctx.driver).state is PowerState.OFF:
        ctx.notes["off"] = True
        return
    c.call(ctx.driver, lambda d: d.power(PowerAction.SOFT), "soft power off")
    c.wait_power(ctx.driver, PowerState.OFF, started, timeout=ctx.settings.soft_timeout)
    ctx.notes["off"] = True


def _soft_off_skipped(ctx: HostContext, outcome: str) -> None:
    ctx.notes["off"] = outcome == StepOutcome.SUCCEEDED


def _install_target_skipped(ctx: HostContext, outcome: str) -> None:
    ctx.notes["install_mark"] = None  # the report may have come in while no one watched


def _wait_install_skipped(ctx: HostContext, outcome: str) -> None:
    ctx.notes["report"] = ctx.earlier_report()


def _set_install_target(ctx: HostContext) -> None:
    # Watch for the report *before* the target exists: an installer may be quick.
    ctx.notes["install_mark"] = ctx.installs.mark()
    ctx.store.set_install_target(ctx.host.name, ctx.install_image, ctx.request_id)


def _boot_image(ctx: HostContext) -> None:
    c = ctx.controller
    if ctx.uses_virtual_media:
        assert ctx.settings.image_url is not None
        url = ctx.settings.image_url.format(image=ctx.install_image)
        c.call(ctx.driver, lambda d: d.insert_media(url), "insert virtual media")
        c.call(ctx.driver, lambda d: d.set_boot(BootDevice.CD), "boot once from virtual media")
    else:
        c.call(ctx.driver, lambda d: d.set_boot(BootDevice.PXE), "boot once from network")


def _wait_install(ctx: HostContext) -> None:
    mark = ctx.notes.get("install_mark")
    report = ctx.earlier_report() if mark is None else None
    if report is None:
        report = ctx.installs.wait(
            ctx.host.name,
            ctx.request_id,
            after=ctx.installs.mark() if mark is None else mark,
            timeout=ctx.settings.install_timeout,
            stopping=ctx.stopping,
        )
    if report is None:
        raise StepError(
            ErrorClass.INSTALL_TIMEOUT,
            f"no install report for {ctx.install_image} within {ctx.settings.install_timeout:g}s",
        )
    ctx.notes["report"] = report
    if report.outcome != "succeeded":
        raise StepError(
            ErrorClass.INSTALL_FAILED, f"installer reported: {report.reason or 'failed'}"
        )


def _verify_image(ctx: HostContext) -> None:
    report: InstallReport | None = ctx.notes.get("report")
    if report is None:
        raise StepError(ErrorClass.INSTALL_FAILED, "no install report to verify")
    if report.image != ctx.install_image:
        raise StepError(
            ErrorClass.IMAGE_MISMATCH,
            f"host reports image {report.image}, requested {ctx.install_image}",
        )


def _eject(ctx: HostContext) -> None:
    ctx.controller.call(ctx.driver, lambda d: d.eject_media(), "eject virtual media")


def _hook(which: str) -> Callable[[HostContext], None]:
    def run(ctx: HostContext) -> None:
        from maas_lib.scheduler.hooks import run_hook  # ansible-runner: hooks only

        playbook = getattr(ctx.options, which)
        with ctx.hook_slots:
            result = run_hook(
                playbook,
                ctx.host.name,
                ctx.host_vars,
                timeout=ctx.settings.hook_timeout,
                extravars={
                    "maas_request_id": ctx.request_id,
                    "maas_action": str(ctx.action),
                    "maas_image": ctx.image,
                    "maas_hook": which.removesuffix("_hook"),
                },
                label=which.replace("_", "-"),
                cancel=ctx.stopping,
            )
        if result.status == "canceled":
            raise Interrupted(f"{which} canceled: the worker is stopping")
        if not result.ok:
            error_class = (
                ErrorClass.HOOK_TIMEOUT if result.status == "timeout" else ErrorClass.HOOK_FAILED
            )
            raise StepError(error_class, result.summary)

    return run


# -- the steps of each action -----------------------------------------------------------

POWER_ON = Step("power-on", _power(PowerAction.ON), _power_budget)
POWER_OFF = Step("power-off", _power(PowerAction.OFF), _power_budget)
SOFT_OFF = Step(
    "soft-off",
    _soft_off,
    lambda ctx: ctx.settings.soft_timeout + _call_budget(ctx),
    optional=True,
    on_skip=_soft_off_skipped,
)
HARD_OFF_AFTER_SOFT = Step(
    "power-off", _power(PowerAction.OFF), _power_budget, when=lambda ctx: not ctx.notes.get("off")
)
INSTALL_TARGET = Step(
    "set-install-target",
    _set_install_target,
    lambda ctx: 30.0,
    bmc=False,
    on_skip=_install_target_skipped,
)
BOOT_IMAGE = Step("boot-image", _boot_image, _call_budget)
WAIT_INSTALL = Step(
    "wait-install",
    _wait_install,
    lambda ctx: ctx.settings.install_timeout + 30.0,
    bmc=False,
    on_skip=_wait_install_skipped,
)
VERIFY_IMAGE = Step("verify-image", _verify_image, lambda ctx: 5.0, bmc=False)
EJECT_MEDIA = Step(
    "eject-media", _eject, _call_budget, when=lambda ctx: ctx.uses_virtual_media, static=True
)
PRE_HOOK = Step(
    "pre-hook",
    _hook("pre_hook"),
    lambda ctx: ctx.settings.hook_timeout + 30.0,
    when=lambda ctx: ctx.options.pre_hook is not None,
    bmc=False,
    static=True,
)
POST_HOOK = Step(
    "post-hook",
    _hook("post_hook"),
    lambda ctx: ctx.settings.hook_timeout + 30.0,
    when=lambda ctx: ctx.options.post_hook is not None,
    bmc=False,
    static=True,
)

# Boot the image: the boot device is set after the host is confirmed off and right before
# power-on, because IPMI BMCs forget a one-time boot flag after 60 seconds.
_INSTALL = [
    INSTALL_TARGET,
    POWER_OFF,
    BOOT_IMAGE,
    POWER_ON,
    WAIT_INSTALL,
    VERIFY_IMAGE,
    EJECT_MEDIA,
]

ACTION_STEPS: dict[Action, list[Step]] = {
    Action.POWER_ON: [POWER_ON],
    Action.POWER_OFF: [POWER_OFF],
    Action.POWER_CYCLE: [POWER_OFF, POWER_ON],
    Action.REBOOT: [SOFT_OFF, HARD_OFF_AFTER_SOFT, POWER_ON],
    Action.REIMAGE: _INSTALL,
    Action.WIPE: _INSTALL,
    Action.DECOMMISSION: [*_INSTALL, POWER_OFF],
}


def steps_for(action: Action) -> list[Step]:
    """The steps of `action`, between the request's optional pre- and post-hooks."""
    return [PRE_HOOK, *ACTION_STEPS[action], POST_HOOK]
