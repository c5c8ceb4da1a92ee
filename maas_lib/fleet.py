"""The library operations behind every front end: the CLI, the Ansible modules and
`import maas_lib` all call these, so validation and semantics live here once."""

from __future__ import annotations

import getpass
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    from maas_lib.bmc import BmcResult, BmcSettings
    from maas_lib.scheduler import RunReport, SchedulerSettings, Worker
    from maas_lib.scheduler.single_step import SingleStepResult
    from maas_lib.telemetry.alerts import AlertSettings
    from maas_lib.telemetry.metrics_http import BasicAuth, TlsFiles
    from maas_lib.telemetry.models import OutcomePoint, Stats, StepHistogram, WorkerInfo
    from maas_lib.telemetry.progress import RequestView

from maas_lib.access import tokens
from maas_lib.access.models import (
    AuditEntry,
    AuditRecord,
    Outcome,
    PoolGrant,
    Role,
    TokenCreated,
    TokenInfo,
)
from maas_lib.access.principal import Principal
from maas_lib.errors import InputError, NotFound
from maas_lib.models import (
    IMAGE_ACTIONS,
    Action,
    BatchPolicy,
    HostRecord,
    HostSpec,
    HostStatus,
    ImportResult,
    InstallReport,
    Lease,
    PoolSpec,
    RequestOptions,
    RequestState,
    RequestStatus,
    RequestSummary,
    SubmitResult,
)
from maas_lib.patterns import (  # noqa: F401 - read_hosts_file: for maas_lib.fleet's callers
    host_patterns,
    read_hosts_file,
    resolve_patterns,
)
from maas_lib.planner import admit, plan_batches, pool_limits_for, resolve_overlaps
from maas_lib.serialize import to_jsonable
from maas_lib.store import Event, NewRequest, Store, open_store
from maas_lib.store.base import Authorize, IdempotencyKey
from maas_lib.store.copy import copy_store
from maas_lib.timeutil import parse_since
from maas_lib.validation import option_error, wait_seconds

#: An image name: `/`-separated parts, each starting with a letter or digit (so no `.`,
#: `..` or empty part: the name goes into `--image-url`'s path), at most 255 characters.
_IMAGE_RE = re.compile(
    r"^(?=.{1,255}$)[A-Za-z0-9][A-Za-z0-9._:+-]*(?:/[A-Za-z0-9][A-Za-z0-9._:+-]*)*$", re.ASCII
)
_ACTOR_RE = re.compile(r"^[^\s\x00-\x1f]{1,128}$")


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def parse_action(action: str | Action) -> Action:
    try:
        return Action(action)
    except ValueError:
        choices = ", ".join(a.value for a in Action)
        raise InputError(f"unknown action {action!r} (choose from {choices})") from None


def parse_policy(policy: BatchPolicy | dict[str, Any] | None = None, **fields: Any) -> BatchPolicy:
    """Validate a batch policy; errors name the option as the CLI spells it."""
    if isinstance(policy, BatchPolicy) and not fields:
        return policy
    data = policy.model_dump() if isinstance(policy, BatchPolicy) else dict(policy or {})
    data.update({k: v for k, v in fields.items() if v is not None})
    try:
        return BatchPolicy.model_validate(data)
    except ValidationError as exc:
        raise option_error(exc) from None


def parse_scheduler_settings(
    settings: SchedulerSettings | dict[str, Any] | None = None, **fields: Any
) -> SchedulerSettings:
    """Validate scheduler settings; BMC ones may be given flat (`timeout=5`)."""
    # The BMC and scheduler layers load for a run, not for every command.
    from maas_lib.bmc import BmcSettings
    from maas_lib.scheduler import SchedulerSettings

    if isinstance(settings, SchedulerSettings) and not fields:
        return settings
    data = (
        settings.model_dump() if isinstance(settings, SchedulerSettings) else dict(settings or {})
    )
    bmc = dict(data.pop("bmc", None) or {})
    for key, value in fields.items():
        if value is None:
            continue
        if key in BmcSettings.model_fields:
            bmc[key] = value
        else:
            data[key] = value
    try:
        return SchedulerSettings.model_validate({**data, "bmc": BmcSettings.model_validate(bmc)})
    except ValidationError as exc:
        raise option_error(exc, {"power_timeout": "power_timeout"}) from None


def _hook_path(option: str, path: str | Path | None) -> str | None:
    """A hook playbook, checked now and kept as an absolute path (workers run elsewhere)."""
    if path is None:
        return None
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise InputError(f"--{option}: playbook {path} not found")
    return str(p)


class Fleet:
    """A fleet backed by one job-queue store."""

    def __init__(self, store: Store):
        self.store = store

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    # -- hosts ----------------------------------------------------------------------------

    def import_hosts(self, sources: Sequence[str], *, actor: str | None = None) -> ImportResult:
        """Parse Ansible inventories and upsert their hosts and pools (all or nothing)."""
        from maas_lib.inventory import load_inventory  # ansible-core: only imports pay

        hosts, pools = load_inventory(sources)
        return self.import_parsed(hosts, pools, actor=actor)

    def import_parsed(
        self, hosts: list[HostSpec], pools: list[PoolSpec], *, actor: str | None = None
    ) -> ImportResult:
        """Upsert hosts and pools `load_inventory` parsed (parse first, then open a store
        that may not exist yet: bad input then creates no database)."""
        added, updated = self.store.upsert_hosts(hosts, pools, actor=actor or os_user())
        return ImportResult(added=added, updated=updated, hosts=len(hosts), pools=pools)

    @property
    def url(self) -> str:
        """The store's URL, as safe to show as its log lines (no password)."""
        return self.store.url

    def schema_version(self) -> int:
        """The store's schema version (`maasctl db init`)."""
        return self.store.schema_version()

    def hosts(self, pool: str | None = None) -> list[HostRecord]:
        return self.store.list_hosts(pool)

    def pools(self) -> list[PoolSpec]:
        """Registered pools and their standing disruption budgets."""
        return self.store.list_pools()

    _patterns = staticmethod(host_patterns)

    def _resolve(self, patterns: list[str]) -> tuple[list[str], dict[str, HostStatus]]:
        """Host names for patterns, in pattern order, or NotFound naming what matched nothing."""
        return resolve_patterns(patterns, self.store.match_hosts)

    def resolve_hosts(
        self, patterns: Iterable[str] = (), *, hosts_file: str | Path | None = None
    ) -> list[HostRecord]:
        """Registered hosts matching names/globs (any standing), in pattern order."""
        hosts, _ = self._resolve(self._patterns(patterns, hosts_file))
        return self.store.get_hosts(hosts)

    def release_host(self, name: str, *, actor: str | None = None) -> HostRecord:
        """Return a quarantined host to service (an SRE checked it, e.g. it was wiped)."""
        host = self.store.get_host(name)
        if host.status is HostStatus.DECOMMISSIONED:
            raise InputError(f"host {name} is decommissioned and cannot be released")
        if host.status is not HostStatus.QUARANTINED:
            raise InputError(f"host {name} is {host.status}, not quarantined")
        self.store.set_host_status(name, HostStatus.ACTIVE, None, actor=actor or os_user())
        return self.store.get_host(name)

    # -- requests -------------------------------------------------------------------------

    def _new_request(
        self,
        action: str | Action,
        patterns: Iterable[str],
        hosts_file: str | Path | None,
        policy: BatchPolicy | dict[str, Any] | None,
        image: str | None,
        submitted_by: str | None,
        policy_fields: dict[str, Any],
    ) -> NewRequest:
        """Validate a submission completely, writing nothing."""
        options = RequestOptions(
            pre_hook=_hook_path("pre-hook", policy_fields.pop("pre_hook", None)),
            post_hook=_hook_path("post-hook", policy_fields.pop("post_hook", None)),
        )
        act = parse_action(action)
        pats = self._patterns(patterns, hosts_file)
        pol = parse_policy(policy, **policy_fields)
        if act is Action.REIMAGE and not image:
            raise InputError("reimage needs --image NAME")
        if image is not None:
            if act not in IMAGE_ACTIONS:
                raise InputError(f"--image does not apply to {act} (only reimage and wipe)")
            if not _IMAGE_RE.match(image):
                raise InputError(
                    "--image: not a valid image name (parts of letters, digits and ._:+- "
                    "joined by '/', each starting with a letter or digit; at most 255 "
                    f"characters; got {image[:80]!r})"
                )
        who = submitted_by or os_user()
        if not _ACTOR_RE.match(who):
            raise InputError(f"--as: not a valid name (got {who!r})")

        hosts, status = self._resolve(pats)
        refused = [n for n in hosts if status[n] is not HostStatus.ACTIVE]
        if refused:
            first = refused[0]
            raise InputError(
                f"host {first} is {status[first]} and cannot be submitted"
                + (f" ({len(refused) - 1} more hosts likewise)" if len(refused) > 1 else "")
            )
        if pol.canary > len(hosts):
            raise InputError(f"--canary {pol.canary} exceeds the request's {len(hosts)} hosts")
        return NewRequest(
            action=act,
            policy=pol,
            patterns=pats,
            hosts=hosts,
            submitted_by=who,
            os_user=os_user(),
            image=image,
            options=options,
        )

    def submit(
        self,
        action: str | Action,
        patterns: Iterable[str] = (),
        *,
        hosts_file: str | Path | None = None,
        policy: BatchPolicy | dict[str, Any] | None = None,
        image: str | None = None,
        submitted_by: str | None = None,
        **policy_fields: Any,
    ) -> SubmitResult:
        """Accept a request at once: validate, write it in one transaction, return its id.

        Overlaps with in-flight requests are *not* computed here; the scheduler resolves
        them later in acceptance order, so acceptance costs O(hosts) and takes no locks
        beyond one short write transaction. `pre_hook`/`post_hook` name playbooks run for
        each host before and after its action.
        """
        request = self._new_request(
            action, patterns, hosts_file, policy, image, submitted_by, policy_fields
        )
        request_id = self.store.create_request(request)
        return SubmitResult(id=request_id, state=RequestState.ACCEPTED, hosts=len(request.hosts))

    def plan(
        self,
        action: str | Action,
        patterns: Iterable[str] = (),
        *,
        hosts_file: str | Path | None = None,
        policy: BatchPolicy | dict[str, Any] | None = None,
        image: str | None = None,
        submitted_by: str | None = None,
        **policy_fields: Any,
    ) -> dict[str, Any]:
        """What a submission would do if it started now (`submit --dry-run`); writes nothing.

        Overlaps are as of now (every in-flight request is older than this one); budget
        waits assume each batch starts with the fleet as it is now.
        """
        return self.plan_request(
            self._new_request(
                action, patterns, hosts_file, policy, image, submitted_by, policy_fields
            )
        )

    def plan_request(self, request: NewRequest) -> dict[str, Any]:
        """`plan` of a submission `validate_submission` checked."""
        pol = request.policy
        overlaps = resolve_overlaps(
            -1, request.hosts, self.store.blockers(request.hosts), pol.on_overlap
        )
        pool_of = {h.name: h.pool for h in self.store.list_hosts()}
        limits = pool_limits_for(pool_of, self.store.list_pools(), pol.max_unavailable)
        down: dict[str, int] = {}
        for lease in self.store.inflight():
            down[lease.pool] = down.get(lease.pool, 0) + 1
        # A share is of every host the request will run, waiting ones included.
        total = len(overlaps.free) + len(overlaps.waiting)
        batches = []
        for i, batch in enumerate(plan_batches(overlaps.free, pol, total)):
            _, wait = admit(batch, pool_of, down, limits)
            batches.append(
                {
                    "batch": i,
                    "canary": bool(pol.canary) and i == 0,
                    "hosts": batch,
                    "budget_waits": wait,
                }
            )
        return {
            "dry_run": True,
            "action": str(request.action),
            "hosts": len(request.hosts),
            "policy": pol.model_dump(mode="json"),
            "dropped": overlaps.dropped,
            "waiting": overlaps.waiting,
            "pool_limits": limits.limits,
            "pool_down_now": down,
            "batches": batches,
        }

    # -- direct BMC commands (synchronous, no queue) ----------------------------------------

    def bmc_status(
        self,
        patterns: Iterable[str] = (),
        *,
        hosts_file: str | Path | None = None,
        settings: BmcSettings | None = None,
    ) -> list[BmcResult]:
        """Read each host's power state from its BMC."""
        from maas_lib.bmc import run_bmc  # BMC calls only

        return run_bmc(
            self.resolve_hosts(patterns, hosts_file=hosts_file), "status", settings=settings
        )

    def bmc_power(
        self,
        action: str,
        patterns: Iterable[str] = (),
        *,
        wait: bool = True,
        hosts_file: str | Path | None = None,
        settings: BmcSettings | None = None,
    ) -> list[BmcResult]:
        """Power hosts on/off/soft/cycle; with `wait`, until each BMC confirms the state."""
        from maas_lib.bmc import PowerAction, parse_choice, run_bmc  # BMC calls only

        act = parse_choice(PowerAction, action, "power action")
        return run_bmc(
            self.resolve_hosts(patterns, hosts_file=hosts_file),
            "power",
            action=act,
            wait=wait,
            settings=settings,
        )

    def bmc_boot(
        self,
        device: str,
        patterns: Iterable[str] = (),
        *,
        persistent: bool = False,
        hosts_file: str | Path | None = None,
        settings: BmcSettings | None = None,
    ) -> list[BmcResult]:
        """Set the boot device for the next boot (or every boot with `persistent`)."""
        from maas_lib.bmc import BootDevice, parse_choice, run_bmc  # BMC calls only

        dev = parse_choice(BootDevice, device, "boot device")
        return run_bmc(
            self.resolve_hosts(patterns, hosts_file=hosts_file),
            "boot",
            device=dev,
            persistent=persistent,
            settings=settings,
        )

    # -- install-completion path ----------------------------------------------------------

    def expect_install(self, host: str, image: str, request_id: int | None = None) -> None:
        """Tell the provisioning side which image `host` installs on its next network boot."""
        self.store.get_host(host)
        if not _IMAGE_RE.match(image):
            raise InputError(f"--image: not a valid image name (got {image!r})")
        self.store.set_install_target(host, image, request_id)

    def install_target(self, host: str) -> str | None:
        """The image `host` should install from the network now, if any (what PXE serves)."""
        target = self.store.install_target(host)
        return None if target is None else target[0]

    def report_install(self, host: str, image: str, failed: str | None = None) -> InstallReport:
        """The install-completion path: an installer's last step reports its outcome here."""
        self.store.get_host(host)  # NotFound for an unknown host
        if not _IMAGE_RE.match(image):
            raise InputError(f"--image: not a valid image name (got {image!r})")
        if failed is not None and not failed.strip():
            raise InputError("--failed needs a reason")
        return self.store.add_install_report(host, image, failed)

    def install_reports(self, host: str | None = None, after_id: int = 0) -> list[InstallReport]:
        return self.store.install_reports(host, after_id)

    def status(self, request_id: int) -> RequestStatus:
        return self.store.get_request(request_id)

    def steps(self, request_id: int, host: str | None = None) -> list[dict[str, Any]]:
        """Every recorded step of a request (or of one of its hosts), oldest first."""
        self.store.get_request(request_id)  # NotFound for an unknown id
        return self.store.steps(request_id, host)

    def request_info(
        self, request_id: int, *, steps: bool = False, host: str | None = None
    ) -> dict[str, Any]:
        """One request as JSON-ready data, the document `maasctl status ID --json` prints
        and the `request_info` module returns: the `status` fields, then (with `steps`, or
        `host` for one host's) `steps`, then `summary`."""
        from maas_lib.telemetry.progress import request_view  # rich views: not for submit

        st = self.status(request_id)
        every = self.store.steps(request_id, None)
        data = to_jsonable(st)
        if steps or host:
            data["steps"] = to_jsonable(every if host is None else self.steps(request_id, host))
        data["summary"] = to_jsonable(request_view(st, every))
        return data

    # -- telemetry ------------------------------------------------------------------------

    def stats(
        self,
        since: str | None = None,
        *,
        action: str | Action | None = None,
        pool: str | None = None,
    ) -> Stats:
        """Success rates, failure classes, step runtimes and queue waits per action (since
        a duration ago like `24h`, or an ISO time), and the fleet now."""
        from maas_lib.scheduler.steps import steps_for  # the scheduler: not for submit

        act = None if action is None else parse_action(action)
        try:
            start = None if since is None else parse_since(since)
        except ValueError as exc:
            raise InputError(f"--since: {exc}") from None
        result = self.store.stats(start, None if act is None else str(act), pool)
        for a in result.actions:
            order = {s.name: i for i, s in enumerate(steps_for(Action(a.action)))}
            a.steps.sort(key=lambda s: (order.get(s.step, len(order)), s.step))
        return result

    def outcome_series(
        self, since: str | None, bucket_s: int, *, action: str | Action | None = None
    ) -> list[OutcomePoint]:
        """Hosts' task outcomes per action per `bucket_s`-second bucket since the ISO time
        `since` (None: all history), oldest first (the report's success-rate plot)."""
        act = None if action is None else str(parse_action(action))
        return self.store.outcome_series(since, bucket_s, act)

    def step_histograms(self, since: str | None, buckets: Sequence[float]) -> list[StepHistogram]:
        """Step durations per (action, step) in cumulative buckets with these upper bounds
        (seconds), since the ISO time `since` (None: all history)."""
        return self.store.step_histograms(since, buckets)

    def write_report(
        self,
        path: str | Path,
        *,
        request_id: int | None = None,
        since: str | None = None,
        **options: Any,
    ) -> Path:
        """Write the HTML report (`maasctl report --html`) of one request, or of the window
        `since` a duration ago or an ISO time (default: all history), to `path` atomically;
        `options` as for `maas_lib.telemetry.report.render_report`."""
        from maas_lib.telemetry.report import write_report  # matplotlib: reports only

        return write_report(self, path, request_id=request_id, since=since, **options)

    def metrics(self) -> bytes:
        """One scrape of the fleet's Prometheus metrics, in the text exposition format
        (`maasctl metrics`; see `maas_lib.telemetry.metrics`)."""
        from maas_lib.telemetry.metrics import render  # prometheus_client: metrics only

        return render(self._store_opener())

    def serve_metrics(
        self,
        host: str,
        port: int,
        *,
        tls: TlsFiles | None = None,
        auth: BasicAuth | None = None,
        stop: threading.Event | None = None,
        on_ready: Callable[[str, int], None] | None = None,
    ) -> None:
        """Serve ``GET /metrics`` until `stop` is set (or SIGTERM/SIGINT in the main
        thread); blocks (`maasctl metrics --serve`). Each scrape reads the store afresh,
        on a connection of its own."""
        from maas_lib.telemetry.metrics import serve  # prometheus_client: metrics only

        serve(self._store_opener(), host, port, stop=stop, on_ready=on_ready, tls=tls, auth=auth)

    def _store_opener(self) -> Callable[[], Store]:
        """Opens this fleet's store again: for threads that must not share its connection."""
        url = self.store.child_url()
        return lambda: open_store(url, create=False)

    def summary(self, request_id: int) -> RequestView:
        """One request at a glance: progress per batch, slowest hosts, failures by class."""
        from maas_lib.telemetry.progress import request_view  # not for submit

        st = self.status(request_id)
        return request_view(st, self.store.steps(request_id, None))

    def wait(
        self, request_id: int, *, timeout: float | None = None, interval: float = 1.0
    ) -> RequestView:
        """Block until the request ends (a scheduler must be running) or `timeout` seconds,
        (0, 86400]."""
        if timeout is not None:
            wait_seconds(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        view = self.summary(request_id)
        while not view.ended and (deadline is None or time.monotonic() < deadline):
            time.sleep(interval)
            view = self.summary(request_id)
        return view

    # -- the scheduler --------------------------------------------------------------------

    def worker(
        self,
        settings: SchedulerSettings | dict[str, Any] | None = None,
        *,
        worker_id: str | None = None,
        alerts: AlertSettings | Iterable[str] | None = None,
        **fields: Any,
    ) -> Worker:
        """A scheduler worker on this fleet's store (`maasctl run`); call `.run()`.

        `alerts`: webhook URLs (or `AlertSettings`) that get a JSON event when a request
        ends failed or partial or passes its failure threshold; `[]` sends none; None (the
        default) takes them from ``MAAS_ALERT_WEBHOOK``, as `maasctl run` does."""
        # The scheduler (BMC drivers, executors, alerts) loads for a run only.
        from maas_lib.scheduler import Worker
        from maas_lib.telemetry.alerts import alert_settings

        driver_factory = fields.pop("driver_factory", None)
        if alerts is not None:
            alerts = alert_settings(alerts) or []  # bad URLs fail now, writing nothing
        return Worker(
            self.store,
            parse_scheduler_settings(settings, **fields),
            worker=worker_id,
            driver_factory=driver_factory,
            alerts=alerts,
        )

    def run(
        self,
        *,
        until_idle: bool = True,
        settings: SchedulerSettings | dict[str, Any] | None = None,
        alerts: AlertSettings | Iterable[str] | None = None,
        **fields: Any,
    ) -> RunReport:
        """Run the scheduler in this process; by default until no request is in flight.
        `alerts` as for `worker`."""
        return self.worker(settings, alerts=alerts, **fields).run(until_idle=until_idle)

    def copy_to(self, url: str) -> dict[str, int]:
        """Copy this fleet's whole store (hosts and their standing, requests, steps,
        events, install reports) into the new, empty store at `url` (`maasctl db copy`):
        how to move from SQLite to PostgreSQL. Returns rows copied per table."""
        if url == self.store.url or url == self.store.child_url():
            raise InputError("--to names the database being copied")
        target = open_store(url)
        try:
            return copy_store(self.store, target)  # type: ignore[arg-type]
        finally:
            target.close()

    def workers(self, ttl: float | None = None) -> list[WorkerInfo]:
        """Scheduler workers (`maasctl workers`): heartbeat age, `alive` if that is within
        `ttl` (default: the claim TTL), the running requests each holds, hosts leased."""
        if ttl is None:
            from maas_lib.scheduler import SchedulerSettings  # the scheduler: not for submit

            ttl = SchedulerSettings.model_fields["claim_ttl"].default
        if not ttl > 0:
            raise InputError(f"--claim-ttl must be positive (got {ttl})")
        return self.store.list_workers(ttl)

    def run_step(
        self,
        request_id: int,
        host: str,
        step: str,
        *,
        nth: int = 1,
        settings: SchedulerSettings | dict[str, Any] | None = None,
        install_mark: int | None = None,
        done: dict[str, list[str]] | None = None,
        notes: dict[str, Any] | None = None,
        worker: str | None = None,
    ) -> SingleStepResult:
        """Run one step of a running request's action for one of its hosts, recording
        nothing (the Ansible executor's `maas_lib.fleet.step` tasks; see
        `maas_lib.scheduler.single_step`)."""
        from maas_lib.scheduler.single_step import run_single_step  # executor tasks only

        return run_single_step(
            self.store,
            host,
            request_id,
            step,
            nth=nth,
            settings=parse_scheduler_settings(settings),
            install_mark=install_mark,
            done=done,
            notes=notes,
            worker=worker,
        )

    def requests(
        self,
        state: str | RequestState | Sequence[str | RequestState] | None = None,
        limit: int | None = None,
    ) -> list[RequestSummary]:
        """Requests, newest first, optionally only those in the given state(s)."""
        if limit is not None and limit < 1:
            raise InputError(f"--limit must be at least 1 (got {limit})")
        states = None
        if state is not None:
            raw = [state] if isinstance(state, str | RequestState) else list(state)
            try:
                states = [RequestState(s) for s in raw]
            except ValueError:
                choices = ", ".join(s.value for s in RequestState)
                raise InputError(f"unknown state {raw!r} (choose from {choices})") from None
        return self.store.list_requests(states, limit)

    def cancel(self, request_id: int, *, actor: str | None = None) -> RequestState:
        """Cancel an accepted request now; a running one starts no new host."""
        return self.store.cancel_request(request_id, actor=actor or os_user())

    def inflight(self) -> list[Lease]:
        """Hosts currently held by in-flight requests, fleet-wide."""
        return self.store.inflight()

    def events(self, request_id: int | None = None, limit: int = 100) -> list[Event]:
        if request_id is not None:
            self.store.get_request(request_id)  # NotFound for an unknown id
        return self.store.events(request_id, limit)

    # -- access control: API tokens, pool owners, the audit log (docs/service.md) ---------
    # `maas_lib.access.GuardedFleet` applies the policy in front of these and of the
    # calls above; `actor` (None: `local:<OS user>`) is the audit log's principal.

    def validate_submission(
        self,
        action: str | Action,
        patterns: Iterable[str] = (),
        *,
        hosts_file: str | Path | None = None,
        policy: BatchPolicy | dict[str, Any] | None = None,
        image: str | None = None,
        submitted_by: str | None = None,
        **policy_fields: Any,
    ) -> NewRequest:
        """Check a submission completely, as `submit` does, writing nothing."""
        return self._new_request(
            action, patterns, hosts_file, policy, image, submitted_by, policy_fields
        )

    def accept(
        self,
        request: NewRequest,
        *,
        idempotency: IdempotencyKey | None = None,
        authorize: Authorize | None = None,
    ) -> tuple[SubmitResult, bool]:
        """Write a checked submission with its audit record (and idempotency key) in one
        transaction: (the answer, whether it was written now). A key used before answers
        the first request again (False); with another body, `IdempotencyConflict`.
        `authorize(host_pools, grants)` decides on what the store holds before that
        transaction, which commits only if no host's pool and no grant changed since
        (else `authorize` decides again); an exception it raises writes nothing."""
        request_id, created = self.store.create_request_once(
            request, idempotency, authorize=authorize
        )
        hosts = len(request.hosts) if created else self.store.get_request(request_id).host_count
        return SubmitResult(id=request_id, state=RequestState.ACCEPTED, hosts=hosts), created

    def idempotent_request(self, principal: str, key: str) -> tuple[int, str] | None:
        """(request id, body hash) a principal's idempotency key stands for, if used."""
        return self.store.idempotent_request(principal, key)

    def host_pools(self, hosts: Sequence[str]) -> dict[str, str]:
        """Each registered host's pool."""
        return self.store.host_pools(hosts)

    def host_pools_and_grants(self, hosts: Sequence[str]) -> tuple[dict[str, str], list[PoolGrant]]:
        """Each registered host's pool, and those pools' grants, read together."""
        return self.store.host_pools_and_grants(hosts)

    def request_pools(self, request_id: int) -> tuple[str, list[str]]:
        """(who submitted the request, the pools of its hosts)."""
        return self.store.request_pools(request_id)

    def create_token(
        self,
        name: str,
        role: Role | str,
        *,
        teams: Iterable[str] = (),
        expires: str | None = None,
        actor: str | None = None,
    ) -> TokenCreated:
        """A new API token (`maasctl tokens create`): the answer holds its secret, shown
        this once; the store keeps its SHA-256. `expires`: `30d`, `12h`, `2w` or
        `YYYY-MM-DD` (default 90 days, at most 3650)."""
        return tokens.create_token(
            self.store, name, role, teams=teams, expires=expires, actor=_actor(actor)
        )

    def tokens(self) -> list[TokenInfo]:
        """Every API token by name, never a secret or a hash (`maasctl tokens list`)."""
        return tokens.list_tokens(self.store)

    def revoke_token(self, name: str, *, actor: str | None = None) -> TokenInfo:
        """Revoke an API token now (`maasctl tokens revoke`)."""
        return tokens.revoke_token(self.store, name, actor=_actor(actor))

    def authenticate_token(self, secret: str) -> Principal:
        """The principal an API token's secret stands for, or `AuthenticationError`."""
        return tokens.verify_token(self.store, secret)

    def grant_pool(
        self, team: str, pool: str, *, destructive: bool = False, actor: str | None = None
    ) -> PoolGrant:
        """Team `team` owns `pool` (`maasctl pools grant`); `destructive`: it may also
        wipe and decommission its hosts. A registered pool only."""
        try:
            grant = PoolGrant(team=team, pool=pool, destructive=destructive)
        except ValidationError as exc:
            raise option_error(exc) from None
        self.store.grant_pool(grant, actor=_actor(actor))
        return grant

    def revoke_pool(self, team: str, pool: str, *, actor: str | None = None) -> None:
        """Take team `team`'s ownership of `pool` away (`maasctl pools revoke`)."""
        self.store.revoke_pool(team, pool, actor=_actor(actor))

    def pool_owners(self, pools: Sequence[str] | None = None) -> list[PoolGrant]:
        """Ownership grants, by pool then team (`maasctl pools owners`)."""
        return self.store.pool_grants(pools)

    def record_audit(self, entry: AuditEntry) -> int:
        """Append an audit record (a refusal, or a change made through another call)."""
        return self.store.add_audit(entry)

    def audit(
        self,
        *,
        principal: str | None = None,
        decision: Outcome | str | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Audit records, newest first (`maasctl audit`): of one principal, of one
        decision (`allowed`, `refused`), at most `limit` (1..10000)."""
        if not 1 <= limit <= 10_000:
            raise InputError(f"--limit must be between 1 and 10000 (got {limit})")
        try:
            outcome = None if decision is None else Outcome(decision)
        except ValueError:
            raise InputError(
                f"--decision: expected allowed or refused (got {str(decision)[:40]!r})"
            ) from None
        return self.store.audit(principal=principal, decision=outcome, limit=limit)


def _actor(actor: str | None) -> str:
    """The audit log's principal for a call made with direct database access."""
    return actor or f"local:{os_user()}"


def open_fleet(url: str | Path | None = None, *, create: bool = True) -> Fleet:
    """Open the fleet whose job-queue store is at `url` (path, sqlite:///…, or the default).

    `create=False` refuses a SQLite database that does not exist yet (`StoreUnusable`, an
    `InputError`) instead of creating an empty one: what `maasctl` does for every command
    but `hosts import` and `db init`, so a mistyped path is not a new, unread queue."""
    return Fleet(open_store(url, create=create))


__all__ = ["Fleet", "NotFound", "open_fleet"]
