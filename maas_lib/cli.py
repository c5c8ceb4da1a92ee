"""`maasctl`: the command-line shell over `maas_lib.fleet`. No logic of its own."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from maas_lib import cli_access, cli_service
from maas_lib import cli_render as render
from maas_lib.enums import (
    MAX_POLICY_HOSTS,
    Action,
    BootDevice,
    OverlapMode,
    PowerAction,
    RequestState,
)
from maas_lib.errors import AccessDenied, AuthenticationError, InputError, MaasError
from maas_lib.output import emit_json

ACTIONS = [a.value for a in Action]


#: Commands that may run against the HTTPS API (`--api`): what `ApiFleet` offers.
REMOTE_COMMANDS = {
    "submit",
    "status",
    "list",
    "cancel",
    "inflight",
    "stats",
    "hosts list",
    "workers",
    "audit",
}


class _Ctx:
    def __init__(self, db: str | None, api: dict[str, Any] | None = None):
        self.db = db
        self.api = api  # --api's settings: commands go through the service, not a database
        self._fleet: Any = None

    def fleet(self, *, create: bool = False) -> Any:
        """The fleet at --db (only `hosts import` and `db init` may create its database),
        or with --api the service's (`ApiFleet`), for the commands that can use it."""
        if self._fleet is None and self.api is not None:
            ctx, names = click.get_current_context(), []
            while ctx.parent is not None:
                names.insert(0, ctx.info_name or "")
                ctx = ctx.parent
            command = " ".join(names)
            if command not in REMOTE_COMMANDS:
                raise InputError(f"{command} is not available with --api (use --db)")
            from maas_lib.service.client import open_api  # httpx: only with --api

            self._fleet = open_api(**self.api)
        if self._fleet is None:
            from maas_lib.fleet import open_fleet  # the library: not for --help

            self._fleet = open_fleet(self.db, create=create)
        return self._fleet

    def close(self) -> None:
        if self._fleet is not None:
            self._fleet.close()


pass_ctx = click.make_pass_decorator(_Ctx)


def _show(result: Any, as_json: bool, for_people: Callable[[Any], None]) -> None:
    """One JSON document on stdout under --json; otherwise `for_people` (`cli_render`)."""
    if as_json:
        emit_json(result)
    else:
        for_people(result)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    metavar="DB",
    help="Job-queue database: a path, sqlite:///path, or postgresql://user@host/db[?schema=S] "
    "[default: $MAAS_DB, else ~/.local/share/maas-lib/maas.db]",
)
@click.option(
    "--api",
    metavar="URL[,URL...]",
    envvar="MAAS_API_URL",
    help="Go through the maas-lib service at this https:// URL (several: fail over) instead "
    "of a database; token in $MAAS_API_TOKEN or --api-token-file [$MAAS_API_URL]",
)
@click.option(
    "--api-token-file",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="The API token: the file's first line [default: $MAAS_API_TOKEN].",
)
@click.option(
    "--ca-bundle",
    type=click.Path(dir_okay=False),
    envvar="MAAS_API_CA",
    metavar="PEM",
    help="CAs that verify the service's certificate [$MAAS_API_CA; default: the system's].",
)
@click.option(
    "--client-cert",
    type=click.Path(dir_okay=False),
    envvar="MAAS_API_CLIENT_CERT",
    metavar="PEM",
    help="Client certificate for a service that requires one; its key too unless "
    "--client-key [$MAAS_API_CLIENT_CERT].",
)
@click.option(
    "--client-key",
    type=click.Path(dir_okay=False),
    envvar="MAAS_API_CLIENT_KEY",
    metavar="PEM",
    help="The client certificate's key [$MAAS_API_CLIENT_KEY].",
)
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
@click.version_option(package_name="maas-lib", prog_name="maasctl")
@click.pass_context
def cli(
    ctx: click.Context,
    db: str | None,
    api: str | None,
    api_token_file: str | None,
    ca_bundle: str | None,
    client_cert: str | None,
    client_key: str | None,
    verbose: int,
) -> None:
    """Metal as a Service: batch lifecycle actions across a bare-metal fleet."""
    import logging  # not for --help, which ends before this runs (~6 ms)

    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="maasctl: %(levelname)s: %(message)s")
    # Client libraries narrate their retries at WARNING; results carry the outcome.
    for noisy in ("sushy", "pyghmi", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 1 else logging.ERROR)
    if api and db:  # a --db named here wins over $MAAS_API_URL, not over --api
        if ctx.get_parameter_source("api") is click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError("--db and --api: name one")
        api = None
    tls = {"ca": ca_bundle, "cert": client_cert, "key": client_key}
    remote = {"url": api, "token_file": api_token_file, **tls} if api else None
    ctx.obj = _Ctx(db, remote)
    ctx.call_on_close(ctx.obj.close)


def _span(model: Any, name: str) -> str:
    """A model field's range as the help shows it: `range 0..86400`, `range >0..3600`."""
    low, high, above = None, None, ""
    for m in model.model_fields[name].metadata:
        if getattr(m, "ge", None) is not None:
            low = m.ge
        if getattr(m, "gt", None) is not None:
            low, above = m.gt, ">"
        if getattr(m, "le", None) is not None:
            high = m.le
    return f"range {above}{low:g}..{high:g}"


def _model(name: str) -> Any:
    """A settings model by name, imported when an option needs it (not at start-up)."""
    # The models (pydantic) only when an option needs them, not at start-up.
    from maas_lib.bmc.control import BmcSettings
    from maas_lib.models import BatchPolicy
    from maas_lib.scheduler.settings import SchedulerSettings

    return {"bmc": BmcSettings, "run": SchedulerSettings, "policy": BatchPolicy}[name]


class _FieldOption(click.Option):
    """An option whose default and `{range}` in its help are a library model field's,
    read when the option is parsed or its help shown: `maasctl --help` and the commands
    without it import no model (pydantic) at all."""

    def __init__(
        self, *decls: Any, field: tuple[str, str], range_only: bool = False, **attrs: Any
    ) -> None:
        self.field = field
        self.range_only = range_only  # unset stays None: the library applies its default
        super().__init__(*decls, default=None, **attrs)

    def get_default(self, ctx: click.Context, call: bool = True) -> Any:
        value = super().get_default(ctx, call=call)
        if value is None and not self.range_only:  # the library's default, not the CLI's
            model, name = self.field
            value = _model(model).model_fields[name].default
        return value

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        if self.help and "{range}" in self.help:
            self.help = self.help.replace("{range}", _span(_model(self.field[0]), self.field[1]))
        return super().get_help_record(ctx)


# -- hosts ------------------------------------------------------------------------------


@cli.group()
def hosts() -> None:
    """Register and list hosts."""


@hosts.command("import")
@click.argument("inventory", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def hosts_import(c: _Ctx, inventory: tuple[str, ...], as_json: bool) -> None:
    """Upsert hosts from Ansible inventories (YAML, INI, directories, scripts)."""
    from maas_lib.inventory import load_inventory  # ansible-core: only this command

    hosts, pools = load_inventory(list(inventory))  # first: bad input creates no database
    _show(c.fleet(create=True).import_parsed(hosts, pools), as_json, render.import_result)


@hosts.command("list")
@click.option("--pool", help="Only hosts of this pool.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@pass_ctx
def hosts_list(c: _Ctx, pool: str | None, as_json: bool) -> None:
    """List registered hosts."""
    _show(c.fleet().hosts(pool), as_json, render.hosts)


@hosts.command("release")
@click.argument("host")
@click.option("--as", "as_", metavar="NAME", help="Who releases it (recorded).")
@pass_ctx
def hosts_release(c: _Ctx, host: str, as_: str | None) -> None:
    """Return a quarantined HOST to service after checking it."""
    c.fleet().release_host(host, actor=as_)
    click.echo(f"{host} released: active again")


# -- requests ---------------------------------------------------------------------------


@cli.command()
@click.argument("action", type=click.Choice(ACTIONS), metavar="ACTION")
@click.argument("patterns", nargs=-1, metavar="PATTERN...")
@click.option("--hosts-file", type=click.Path(dir_okay=False), help="Host names, one per line.")
@click.option(
    "--batch-size",
    metavar="N|N%",
    help=f"Hosts per batch, 1..{MAX_POLICY_HOSTS} or 1..100% [default: 10%].",
)
@click.option(
    "--max-failures",
    metavar="N|N%",
    help=f"Stop starting batches once failures exceed this, 0..{MAX_POLICY_HOSTS} or 0..100% "
    "[default: 5%].",
)
@click.option(
    "--max-unavailable",
    metavar="N|N%",
    help=f"Cap on each pool's hosts down at once, across all requests, 1..{MAX_POLICY_HOSTS} "
    "or 1..100%.",
)
@click.option(
    "--canary",
    type=int,
    metavar="N",
    cls=_FieldOption,
    field=("policy", "canary"),
    range_only=True,
    help="Hosts in a first, canary batch ({range}).",
)
@click.option(
    "--pause",
    type=float,
    metavar="SECONDS",
    cls=_FieldOption,
    field=("policy", "pause"),
    range_only=True,
    help="Wait between batches ({range}).",
)
@click.option("--image", metavar="NAME", help="Image to install (reimage, wipe).")
@click.option(
    "--on-overlap",
    type=click.Choice([m.value for m in OverlapMode]),
    help="A host held by an earlier request is dropped, or waits [default: drop].",
)
@click.option(
    "--pre-hook",
    type=click.Path(dir_okay=False),
    metavar="PLAYBOOK",
    help="Ansible playbook run for each host before its action (e.g. drain).",
)
@click.option(
    "--post-hook",
    type=click.Path(dir_okay=False),
    metavar="PLAYBOOK",
    help="Ansible playbook run for each host after its action (e.g. health check).",
)
@click.option("--as", "as_", metavar="NAME", help="Submitter to record (automation).")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the plan (batches, overlaps, budget waits as of now) without writing anything.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Then show live progress until the request ends (a scheduler must be running); "
    "exit 0 only if every host succeeded.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def submit(
    c: _Ctx,
    action: str,
    patterns: tuple[str, ...],
    hosts_file: str | None,
    batch_size: str | None,
    max_failures: str | None,
    max_unavailable: str | None,
    canary: int | None,
    pause: float | None,
    image: str | None,
    on_overlap: str | None,
    pre_hook: str | None,
    post_hook: str | None,
    as_: str | None,
    dry_run: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """Submit ACTION for hosts; it is accepted at once and run later by the scheduler.

    ACTION is one of power-on, power-off, power-cycle, reboot, reimage, wipe,
    decommission. PATTERNs are host names or shell-style globs ('web*', 'n00[0-4]*').
    """
    fleet = c.fleet()
    result = (fleet.plan if dry_run else fleet.submit)(
        action,
        patterns,
        hosts_file=hosts_file,
        image=image,
        submitted_by=as_,
        batch_size=batch_size,
        max_failures=max_failures,
        max_unavailable=max_unavailable,
        canary=canary,
        pause=pause,
        on_overlap=on_overlap,
        pre_hook=pre_hook,
        post_hook=post_hook,
    )
    if dry_run:
        _show(result, as_json, render.plan)
    else:
        _show(
            result,
            as_json,
            lambda r: click.echo(f"request {r.id} accepted: {action} of {r.hosts} hosts"),
        )
    if wait and not dry_run:
        render.watch(fleet, result.id, quiet=as_json)
        st = fleet.status(result.id)
        _watch_exit(True, st.counts, st.host_count)


@cli.command()
@click.argument("request_id", type=int, metavar="ID")
@click.option("--steps", "with_steps", is_flag=True, help="Also list every step with its times.")
@click.option("--host", metavar="HOST", help="Only this host's steps (implies --steps).")
@click.option(
    "--watch",
    is_flag=True,
    help="Show live progress until the request ends; exit 0 only if every host succeeded.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the request as JSON.")
@pass_ctx
def status(
    c: _Ctx, request_id: int, with_steps: bool, host: str | None, watch: bool, as_json: bool
) -> None:
    """Show one request: progress per batch, slowest hosts, failures by class, the state
    of each host, and (--steps) every step with its times."""
    fleet = c.fleet()
    if watch:
        render.watch(fleet, request_id, quiet=as_json)
    if as_json:
        data = fleet.request_info(request_id, steps=with_steps, host=host)
        emit_json(data)
        _watch_exit(watch, data["counts"], data["host_count"])
        return
    st = fleet.status(request_id)
    steps = fleet.steps(request_id, host) if (with_steps or host) else None
    # --watch has just drawn the progress
    render.request(st, steps, None if watch else fleet.summary(request_id))
    _watch_exit(watch, st.counts, st.host_count)


def _watch_exit(watch: bool, counts: dict[str, int], host_count: int) -> None:
    if watch and counts.get("succeeded", 0) != host_count:
        raise click.exceptions.Exit(1)


@cli.command("list")
@click.option(
    "--state",
    type=click.Choice([s.value for s in RequestState]),
    multiple=True,
    help="Only requests in this state (repeatable).",
)
@click.option("--limit", type=int, help="At most this many (newest first).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@pass_ctx
def list_requests(c: _Ctx, state: tuple[str, ...], limit: int | None, as_json: bool) -> None:
    """List requests, newest first."""
    _show(c.fleet().requests(list(state) or None, limit), as_json, render.requests)


@cli.group()
def db() -> None:
    """The job-queue database itself."""


@db.command("init")
@pass_ctx
def db_init(c: _Ctx) -> None:
    """Create the database (--db / $MAAS_DB) if it does not exist, and migrate it.

    Only this and `hosts import` create a database; every other command refuses a
    missing one, so a mistyped --db is an error rather than a new, unread queue."""
    fleet = c.fleet(create=True)
    click.echo(f"database {fleet.url} ready (schema version {fleet.schema_version()})")


@db.command("copy")
@click.option(
    "--to",
    "to",
    required=True,
    metavar="DB",
    help="The new, empty database: a path, sqlite:///path or postgresql://… URL.",
)
@click.option("--json", "as_json", is_flag=True, help="Print rows copied per table as JSON.")
@pass_ctx
def db_copy(c: _Ctx, to: str, as_json: bool) -> None:
    """Copy the whole database (--db / $MAAS_DB) into a new one, e.g. SQLite to PostgreSQL.

    Hosts keep their standing, requests their ids, steps and events; the copy is one
    transaction. Stop the schedulers and let running requests end first."""
    _show(c.fleet().copy_to(to), as_json, render.copied)


@cli.command("workers")
@click.option(
    "--claim-ttl",
    type=float,
    metavar="SECONDS",
    help="A worker whose heartbeat is older than this is shown as dead "
    "[default: the scheduler's claim TTL, 30].",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@pass_ctx
def list_workers(c: _Ctx, claim_ttl: float | None, as_json: bool) -> None:
    """List scheduler workers: heartbeat age, alive or dead, and what each holds.

    A dead worker's requests are resumed by another worker once its claims expire."""
    _show(c.fleet().workers(claim_ttl), as_json, render.workers)


@cli.command()
@click.argument("request_id", type=int, metavar="ID")
@click.option("--as", "as_", metavar="NAME", help="Who cancels (recorded).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def cancel(c: _Ctx, request_id: int, as_: str | None, as_json: bool) -> None:
    """Cancel a request: at once if not started; if running, no new host starts and the
    steps in flight finish."""
    state = c.fleet().cancel(request_id, actor=as_)
    if as_json:
        emit_json({"id": request_id, "state": state, "cancel_requested": True})
    else:
        render.cancelled(request_id, state)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@pass_ctx
def inflight(c: _Ctx, as_json: bool) -> None:
    """Hosts currently held by in-flight requests, fleet-wide."""
    _show(c.fleet().inflight(), as_json, render.leases)


@cli.command()
@click.argument("host")
@click.option("--image", required=True, metavar="NAME", help="The image that was installed.")
@click.option("--failed", metavar="REASON", help="The install failed, and why.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
def provisioned(c: _Ctx, host: str, image: str, failed: str | None, as_json: bool) -> None:
    """Install-completion path: an installer's last step reports HOST's outcome here."""
    report = c.fleet().report_install(host, image, failed)
    _show(report, as_json, lambda r: render.install_report(host, image, r))


# -- telemetry --------------------------------------------------------------------------


@cli.command()
@click.option(
    "--since", metavar="DURATION", help="Only the last 30m, 24h, 7d… (or since an ISO time)."
)
@click.option("--action", type=click.Choice(ACTIONS), help="Only this action.")
@click.option("--pool", metavar="POOL", help="Only hosts of this pool.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@pass_ctx
def stats(c: _Ctx, since: str | None, action: str | None, pool: str | None, as_json: bool) -> None:
    """Success rates, failure classes, step runtimes and queue waits, per action."""
    st = c.fleet().stats(since, action=action, pool=pool)
    _show(st, as_json, lambda s: render.stats(s, since, pool))


@cli.command()
@click.option(
    "--serve",
    metavar="HOST:PORT",
    help="Serve /metrics over HTTP until SIGTERM, instead of printing. ':9100' listens on "
    "127.0.0.1 only; name an address to bind wider (0.0.0.0:9100, [::]:9100).",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False),
    metavar="PEM",
    help="Serve HTTPS with this certificate (chain); its key too unless --tls-key.",
)
@click.option("--tls-key", type=click.Path(dir_okay=False), metavar="PEM", help="Its key.")
@click.option(
    "--auth-user",
    metavar="NAME",
    help="Require HTTP basic auth as NAME; the password is read from --auth-password-file "
    "or $MAAS_METRICS_PASSWORD (never from the command line).",
)
@click.option(
    "--auth-password-file",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="The basic-auth password: the file's first line.",
)
@pass_ctx
def metrics(
    c: _Ctx,
    serve: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    auth_user: str | None,
    auth_password_file: str | None,
) -> None:
    """Prometheus metrics of the fleet: host outcomes, step durations, in flight, workers."""
    # prometheus_client and the HTTP server: only this command.
    from maas_lib.telemetry.metrics import parse_listen
    from maas_lib.telemetry.metrics_http import server_security

    if serve is None and (tls_cert or tls_key or auth_user or auth_password_file):
        raise InputError("--tls-cert, --tls-key and --auth-* apply only with --serve")
    tls, auth = server_security(tls_cert, tls_key, auth_user, auth_password_file)
    if serve is None:
        sys.stdout.buffer.write(c.fleet().metrics())
        return
    host, port = parse_listen(serve)
    fleet = c.fleet()  # an unusable database is an error now, not on the first scrape
    scheme = "https" if tls else "http"
    fleet.serve_metrics(
        host,
        port,
        tls=tls,
        auth=auth,
        on_ready=lambda h, p: click.echo(f"serving {scheme}://{h}:{p}/metrics", err=True),
    )


@cli.command()
@click.option(
    "--html",
    "html_path",
    required=True,
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Write the report here (one self-contained HTML file).",
)
@click.option("--request", "request_id", type=int, metavar="ID", help="Only this request.")
@click.option("--since", metavar="DURATION", help="Only the last 24h, 7d… (or since an ISO time).")
@pass_ctx
def report(c: _Ctx, html_path: str, request_id: int | None, since: str | None) -> None:
    """An HTML report with plots: success rates over time, step durations, timelines."""
    path = c.fleet().write_report(html_path, request_id=request_id, since=since)
    click.echo(f"report written to {path}")


# -- the scheduler ----------------------------------------------------------------------


@cli.command("run")
@click.option(
    "--until-idle", is_flag=True, help="Exit once no request is accepted or running anywhere."
)
@click.option(
    "--concurrency",
    type=int,
    cls=_FieldOption,
    field=("bmc", "concurrency"),
    show_default=True,
    help="BMC calls in flight at once ({range}).",
)
@click.option(
    "--endpoint-concurrency",
    type=int,
    cls=_FieldOption,
    field=("bmc", "endpoint_concurrency"),
    show_default=True,
    help="BMC calls in flight at once to one BMC endpoint (address and port) ({range}).",
)
@click.option(
    "--timeout",
    type=float,
    cls=_FieldOption,
    field=("bmc", "timeout"),
    show_default=True,
    help="Seconds per BMC call ({range}).",
)
@click.option(
    "--power-timeout",
    type=float,
    cls=_FieldOption,
    field=("bmc", "power_timeout"),
    show_default=True,
    help="Seconds for a BMC to confirm a power change ({range}).",
)
@click.option(
    "--soft-timeout",
    type=float,
    cls=_FieldOption,
    field=("run", "soft_timeout"),
    show_default=True,
    help="Seconds a reboot waits for a soft shutdown before a hard one ({range}).",
)
@click.option(
    "--install-timeout",
    type=float,
    cls=_FieldOption,
    field=("run", "install_timeout"),
    show_default=True,
    help="Seconds to wait for an install-completion report ({range}).",
)
@click.option(
    "--claim-ttl",
    type=float,
    cls=_FieldOption,
    field=("run", "claim_ttl"),
    show_default=True,
    help="Seconds after a worker's last heartbeat before another resumes its requests ({range}).",
)
@click.option(
    "--max-requests",
    type=int,
    cls=_FieldOption,
    field=("run", "max_requests"),
    show_default=True,
    help="Requests run side by side ({range}).",
)
@click.option(
    "--image-url",
    metavar="TEMPLATE",
    envvar="MAAS_IMAGE_URL",
    help="Redfish virtual media URL, e.g. https://img.example/{image}.iso [$MAAS_IMAGE_URL]; "
    "unset: network boot.",
)
@click.option(
    "--poll",
    type=float,
    cls=_FieldOption,
    field=("run", "poll"),
    show_default=True,
    help="Seconds between polls ({range}).",
)
@click.option(
    "--executor",
    type=click.Choice(["native", "ansible"]),
    cls=_FieldOption,
    field=("run", "executor"),
    show_default=True,
    help="native: each host's steps in-process; ansible: each batch as the action's "
    "playbook (--limit to the batch), in one ansible process per request.",
)
@click.option(
    "--forks",
    type=int,
    cls=_FieldOption,
    field=("run", "forks"),
    show_default=True,
    help="Ansible forks per batch (--executor ansible) ({range}).",
)
@click.option(
    "--action-playbooks",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Use DIR/<action>.yml instead of the collection's maas_lib.fleet.<action> "
    "(--executor ansible).",
)
@click.option(
    "--allow-ansible-var",
    "--allow-ansible-vars",
    "allow_ansible_vars",
    multiple=True,
    metavar="NAME",
    help="Honour this ansible_* host var from the database in hooks and action playbooks "
    "(repeatable; e.g. ansible_host). By default the database sets none of them.",
)
@click.option(
    "--store-retry",
    "store_retry_s",
    type=float,
    cls=_FieldOption,
    field=("run", "store_retry_s"),
    show_default=True,
    help="Seconds to retry a failing database (disk full, I/O error, lock timeout, lost "
    "connection), starting no new host, before exiting 1 with the cause "
    "({range}).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON at the end.")
@pass_ctx
def run_scheduler(
    c: _Ctx,
    until_idle: bool,
    concurrency: int,
    endpoint_concurrency: int,
    timeout: float,
    power_timeout: float,
    soft_timeout: float,
    install_timeout: float,
    claim_ttl: float,
    max_requests: int,
    image_url: str | None,
    poll: float,
    executor: str,
    forks: int,
    action_playbooks: str | None,
    allow_ansible_vars: tuple[str, ...],
    store_retry_s: float,
    as_json: bool,
) -> None:
    """Run the scheduler: claim accepted requests and carry them out, batch by batch.

    Several `maasctl run` processes may share one database. SIGTERM or SIGINT finishes
    the steps in flight and leaves the rest for the next worker to resume.
    """
    worker = c.fleet().worker(
        concurrency=concurrency,
        endpoint_concurrency=endpoint_concurrency,
        timeout=timeout,
        power_timeout=power_timeout,
        soft_timeout=soft_timeout,
        install_timeout=install_timeout,
        claim_ttl=claim_ttl,
        max_requests=max_requests,
        image_url=image_url,
        poll=poll,
        executor=executor,
        forks=forks,
        action_playbooks=action_playbooks,
        allow_ansible_vars=list(allow_ansible_vars),
        store_retry_s=store_retry_s,
    )

    def on_signal(signum: int, _frame: Any) -> None:
        click.echo(f"maasctl: {signal.Signals(signum).name}: finishing steps in flight", err=True)
        worker.stop()
        # A second signal is not gentle.
        signal.signal(signum, signal.SIG_DFL)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    report = worker.run(until_idle=until_idle)
    _show(report, as_json, render.run_report)
    for err in report.errors:
        click.echo(f"maasctl: error: {err}", err=True)
    if report.errors:
        raise click.exceptions.Exit(1)


# -- direct BMC commands ----------------------------------------------------------------


@cli.group()
def bmc() -> None:
    """Talk to hosts' BMCs directly and synchronously (no queue)."""


class _BmcOption(_FieldOption):
    """A `bmc` option: its default read from `maas_lib.bmc.limits` (plain data), so that
    `bmc status` can run without loading pydantic (its range, in --help, as any option's)."""

    def get_default(self, ctx: click.Context, call: bool = True) -> Any:
        value = click.Option.get_default(self, ctx, call=call)
        if value is None:
            from maas_lib.bmc.limits import FIELDS  # BmcSettings' defaults, without pydantic

            value = FIELDS[self.field[1]].default
        return value


def _bmc_options(fn: Any) -> Any:
    options = [
        click.option(
            "--hosts-file", type=click.Path(dir_okay=False), help="Host names, one per line."
        ),
        click.option(
            "--concurrency",
            type=int,
            cls=_BmcOption,
            field=("bmc", "concurrency"),
            show_default=True,
            help="BMCs worked on at once.",
        ),
        click.option(
            "--timeout",
            type=float,
            cls=_BmcOption,
            field=("bmc", "timeout"),
            show_default=True,
            help="Seconds a BMC may take to answer one request; slower is `timeout`.",
        ),
        click.option(
            "--connect-timeout",
            type=float,
            cls=_BmcOption,
            field=("bmc", "connect_timeout"),
            show_default=True,
            help="Seconds to open a Redfish connection; a BMC not there is `unreachable`.",
        ),
        click.option(
            "--deadline",
            type=float,
            help="Seconds for one whole BMC operation (all its requests) "
            "[connect-timeout + 4 x timeout].",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print a JSON list."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _bmc_settings(
    concurrency: int,
    timeout: float,
    connect_timeout: float,
    deadline: float | None,
    wait_timeout: float | None = None,
) -> Any:
    # pydantic and the BMC layer: only the `bmc` commands.
    from pydantic import ValidationError

    from maas_lib.bmc import BmcSettings
    from maas_lib.validation import option_error

    fields: dict[str, Any] = {
        "concurrency": concurrency,
        "timeout": timeout,
        "connect_timeout": connect_timeout,
        "deadline": deadline,
    }
    if wait_timeout is not None:
        fields["power_timeout"] = wait_timeout
    try:
        return BmcSettings(**fields)
    except ValidationError as exc:
        raise option_error(exc, {"power_timeout": "wait_timeout"}) from None


def _bmc_report(results: list[Any], as_json: bool) -> None:
    _show(results, as_json, render.bmc_results)
    if any(not r.ok for r in results):
        raise click.exceptions.Exit(1)


@bmc.command("status")
@click.argument("patterns", nargs=-1, metavar="PATTERN...")
@_bmc_options
@pass_ctx
def bmc_status(
    c: _Ctx,
    patterns: tuple[str, ...],
    hosts_file: str | None,
    concurrency: int,
    timeout: float,
    connect_timeout: float,
    deadline: float | None,
    as_json: bool,
) -> None:
    """Read power state from each host's BMC. Exit 1 if any host failed."""
    results = None
    if c.api is None:
        # A lean start where it ends as Fleet.bmc_status would (else None: the fleet's).
        from maas_lib.bmc.limits import BmcValues
        from maas_lib.bmc.registered import status_of_registered

        values = BmcValues.checked(
            concurrency=concurrency,
            timeout=timeout,
            connect_timeout=connect_timeout,
            deadline=deadline,
        )
        results = status_of_registered(c.db, patterns, hosts_file=hosts_file, settings=values)
    if results is None:
        results = c.fleet().bmc_status(
            patterns,
            hosts_file=hosts_file,
            settings=_bmc_settings(concurrency, timeout, connect_timeout, deadline),
        )
    _bmc_report(results, as_json)


@bmc.command("power")
@click.argument("action", type=click.Choice([a.value for a in PowerAction]), metavar="ACTION")
@click.argument("patterns", nargs=-1, metavar="PATTERN...")
@click.option("--no-wait", is_flag=True, help="Return once the BMC accepted the request.")
@click.option(
    "--wait-timeout",
    type=float,
    cls=_FieldOption,
    field=("bmc", "power_timeout"),
    show_default=True,
    help="Seconds for a BMC to reach the requested state.",
)
@_bmc_options
@pass_ctx
def bmc_power(
    c: _Ctx,
    action: str,
    patterns: tuple[str, ...],
    no_wait: bool,
    wait_timeout: float,
    hosts_file: str | None,
    concurrency: int,
    timeout: float,
    connect_timeout: float,
    deadline: float | None,
    as_json: bool,
) -> None:
    """Power hosts on, off (hard), soft (OS shutdown) or cycle (off, then on).

    Waits until each BMC reports the target state unless --no-wait. Exit 1 if any failed.
    """
    results = c.fleet().bmc_power(
        action,
        patterns,
        wait=not no_wait,
        hosts_file=hosts_file,
        settings=_bmc_settings(concurrency, timeout, connect_timeout, deadline, wait_timeout),
    )
    _bmc_report(results, as_json)


@bmc.command("boot")
@click.argument("device", type=click.Choice([d.value for d in BootDevice]), metavar="DEVICE")
@click.argument("patterns", nargs=-1, metavar="PATTERN...")
@click.option("--persistent", is_flag=True, help="Every boot, not just the next one.")
@_bmc_options
@pass_ctx
def bmc_boot(
    c: _Ctx,
    device: str,
    patterns: tuple[str, ...],
    persistent: bool,
    hosts_file: str | None,
    concurrency: int,
    timeout: float,
    connect_timeout: float,
    deadline: float | None,
    as_json: bool,
) -> None:
    """Set the boot device (pxe, disk, cd, bios) for the next boot. Exit 1 if any failed."""
    results = c.fleet().bmc_boot(
        device,
        patterns,
        persistent=persistent,
        hosts_file=hosts_file,
        settings=_bmc_settings(concurrency, timeout, connect_timeout, deadline),
    )
    _bmc_report(results, as_json)


# -- fleet simulator --------------------------------------------------------------------


@cli.group()
def sim() -> None:
    """A simulated fleet (IPMI and Redfish BMCs, installer) to try maas-lib without hardware."""


def _sim_dir(directory: str | None) -> Any:
    from maas_lib.sim import default_sim_dir  # the simulator: only the `sim` commands

    return Path(directory) if directory else default_sim_dir()


_SIM_DIR_OPTION = click.option(
    "--dir",
    "directory",
    metavar="DIR",
    help="Where the simulator keeps its files [default: ~/.local/share/maas-lib/sim].",
)


@sim.command("up")
@click.option("--ipmi", type=int, default=10, show_default=True, help="IPMI hosts.")
@click.option("--redfish", type=int, default=0, show_default=True, help="Redfish hosts.")
@click.option(
    "--dual",
    type=int,
    default=0,
    show_default=True,
    help="Hosts with an IPMI BMC and a Redfish fallback.",
)
@click.option(
    "--ipmi-base-port",
    type=int,
    default=16230,
    show_default=True,
    help="UDP port of the first IPMI BMC (the rest follow).",
)
@click.option("--redfish-port", type=int, default=0, help="TCP port for Redfish [any free].")
@click.option("--http", "plain_http", is_flag=True, help="Redfish over plain HTTP, not HTTPS.")
@click.option("--power-delay", type=float, help="Seconds a power change takes [0.5].")
@click.option("--install-time", type=float, help="Seconds an install takes [5].")
@click.option("--install-failure-rate", type=float, help="Share of installs that fail [0].")
@click.option("--dead", type=int, help="Hosts (per protocol) whose BMC never answers.")
@click.option("--wrong-creds", type=int, help="Hosts (per protocol) given a wrong password.")
@click.option("--slow", type=int, help="Hosts (per protocol) with slow BMCs.")
@click.option("--flaky", type=int, help="Hosts (per protocol) whose BMC fails some calls.")
@click.option("--flaky-rate", type=float, help="Share of calls a flaky BMC fails [0.3].")
@click.option("--bad-install", type=int, help="Hosts (per protocol) whose installer always fails.")
@click.option("--seed", type=int, help="Random seed for failures [1].")
@click.option(
    "--redfish-profile",
    "redfish_profile",
    multiple=True,
    metavar="NAME[=COUNT]",
    help="Also serve COUNT [1] hosts behind a Redfish service that behaves like NAME "
    "(dmtf, ilo5, openbmc, cray-ex, or one behaviour such as power-absent); repeatable.",
)
@_SIM_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print what was started as JSON.")
@pass_ctx
def sim_up(
    c: _Ctx,
    directory: str | None,
    plain_http: bool,
    as_json: bool,
    redfish_profile: tuple[str, ...],
    **opts: Any,
) -> None:
    """Start a simulated fleet in the background and write its inventory and credentials."""
    # The simulator, and the store for its default database: only this command.
    from maas_lib.sim import sim_config, start
    from maas_lib.store import default_db_url

    config = sim_config(
        directory=_sim_dir(directory),
        db=c.db or default_db_url(),
        https=not plain_http,
        redfish_profile=list(redfish_profile),
        **opts,
    )
    _show(start(config), as_json, render.sim_started)


@sim.command("down")
@_SIM_DIR_OPTION
def sim_down(directory: str | None) -> None:
    """Stop the simulated fleet."""
    from maas_lib.sim import stop  # the simulator: only the `sim` commands

    d = _sim_dir(directory)
    click.echo("simulator stopped" if stop(d) else f"no simulator running in {d}")


@sim.command("status")
@_SIM_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def sim_status(directory: str | None, as_json: bool) -> None:
    """Each simulated machine's power, boot device and installer state."""
    from maas_lib.sim import state  # the simulator: only the `sim` commands

    _show(state(_sim_dir(directory)), as_json, render.sim_machines)


@cli.group()
def credentials() -> None:
    """Check credential names (secrets are never printed)."""


@credentials.command("check")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
def credentials_check(names: tuple[str, ...]) -> None:
    """Resolve credential NAMEs and say where each comes from."""
    from maas_lib.credentials import resolve_credential  # hashlib, socket, tomllib: ~20 ms

    for name in names:
        click.echo(str(resolve_credential(name)))


cli.add_command(cli_service.serve)  # the HTTPS API (maas_lib.service)
for _command in cli_access.COMMANDS:  # tokens, pools, audit: the API's access control
    cli.add_command(_command)


# -- entry point ------------------------------------------------------------------------


def _fail(message: str, code: int) -> int:
    click.echo(f"maasctl: error: {message}", err=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run maasctl; errors become one line on stderr and an exit code, never a traceback."""
    # maasctl uses no pydantic plugin: looking for them reads every installed package's
    # entry points when the first model is built (~6 ms a command). A value set stays.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        rv = cli.main(args=argv, prog_name="maasctl", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return 0
    except click.UsageError as exc:
        return _fail(exc.format_message().replace("\n", " "), 2)
    except click.ClickException as exc:
        return _fail(exc.format_message(), exc.exit_code)
    except click.exceptions.Abort:
        return _fail("aborted", 130)
    except InputError as exc:
        return _fail(str(exc), 2)
    except (AuthenticationError, AccessDenied) as exc:  # the service refused the token
        return _fail(str(exc), 3)
    except MaasError as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:
        if os.environ.get("MAAS_DEBUG"):
            raise
        return _fail(
            f"internal error: {type(exc).__name__}: {exc} (set MAAS_DEBUG=1 for a traceback)", 1
        )
    return rv if isinstance(rv, int) else 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
