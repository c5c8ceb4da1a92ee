"""How `maasctl` shows results to people: one function per kind of result, each printing
what a command got from `Fleet` (tables and progress through rich, on stdout). The
commands themselves (`maas_lib.cli`) parse options, call `Fleet` and pick JSON or this.

Imported by `maas_lib.cli` at start-up: nothing heavy at module level (rich and the
telemetry modules load when something is printed)."""

from __future__ import annotations

from typing import Any

import click

from maas_lib.output import emit_renderable, emit_table, format_counts


def import_result(result: Any) -> None:
    click.echo(
        f"imported {result.hosts} hosts ({result.added} added, {result.updated} updated) "
        f"in {len(result.pools)} pools"
    )


def hosts(records: list[Any]) -> None:
    emit_table(
        None,
        ["host", "pool", "rack", "bmc", "address", "credential", "status"],
        [
            [r.name, r.pool, r.rack, r.bmc_protocol, r.bmc_address, r.bmc_credential, r.status]
            for r in records
        ],
    )


def plan(plan: dict[str, Any]) -> None:
    """`submit --dry-run`: what would be dropped, what waits, and the batches."""
    click.echo(f"dry run: {plan['action']} of {plan['hosts']} hosts, nothing written")
    for host, holder in {**plan["dropped"], **plan["waiting"]}.items():
        verb = "dropped" if host in plan["dropped"] else "waits"
        click.echo(f"  {host}: {verb}, held by request {holder}")
    for b in plan["batches"]:
        label = "canary" if b["canary"] else f"batch {b['batch']}"
        waits = f" (budget waits: {', '.join(b['budget_waits'])})" if b["budget_waits"] else ""
        click.echo(f"  {label}: {', '.join(b['hosts'])}{waits}")


def request(st: Any, steps: list[dict[str, Any]] | None, summary: Any | None) -> None:
    """`status ID`: the request, its progress (`summary`, unless --watch drew it), each
    host, and (`steps`) every step with its times."""
    p = st.policy
    click.echo(
        f"request {st.id}: {st.action} {st.state}"
        + (" (cancel requested)" if st.cancel_requested and st.state != "cancelled" else "")
        + (f": {st.reason}" if st.reason else "")
    )
    click.echo(
        f"  submitted by {st.submitted_by} at {st.created}"
        + (f", image {st.image}" if st.image else "")
    )
    if st.started:
        click.echo(
            f"  started {st.started}"
            + (f", finished {st.finished}" if st.finished else "")
            + (f", worker {st.claimed_by}" if st.claimed_by else "")
        )
    click.echo(
        f"  policy: batch {p.batch_size}, max failures {p.max_failures}, "
        f"max unavailable {p.max_unavailable or 'pool default'}, canary {p.canary}, "
        f"pause {p.pause:g}s, on overlap {p.on_overlap}"
    )
    for which in ("pre_hook", "post_hook"):
        if getattr(st.options, which):
            click.echo(f"  {which.replace('_', '-')}: {getattr(st.options, which)}")
    click.echo(f"  hosts: {st.host_count} ({format_counts(st.counts)})")
    if summary is not None:
        from maas_lib.telemetry.progress import render  # rich: only when drawn

        emit_renderable(render(summary))
    emit_table(
        None,
        ["host", "state", "batch", "error class", "reason"],
        [[h.host, h.state, h.batch, h.error_class, h.reason] for h in st.hosts],
    )
    if steps is not None:
        click.echo("")
        emit_table(
            None,
            ["host", "try", "step", "outcome", "started (UTC)", "seconds", "via", "error"],
            [
                [
                    x["host"],
                    x["attempt"],
                    x["step"],
                    x["outcome"],
                    x["started"][11:23],  # time of day (UTC); the date is the request's
                    None if x["duration_s"] is None else f"{x['duration_s']:.2f}",
                    x["via"],
                    x["error_class"] and f"{x['error_class']}: {x['error']}",
                ]
                for x in steps
            ],
        )


def watch(fleet: Any, request_id: int, *, quiet: bool = False) -> None:
    """Live progress on stderr until the request ends (stdout stays for the result)."""
    # rich and the progress view load only for a --watch.
    from rich.console import Console

    from maas_lib.telemetry.progress import polled, show_live

    fleet.status(request_id)  # NotFound before drawing anything
    # The service pushes each change (`ApiFleet.follow`); a database is polled.
    follow = getattr(fleet, "follow", None)
    views = follow(request_id) if follow else polled(fleet, request_id)
    show_live(views, console=Console(stderr=True, quiet=quiet))


def requests(rows: list[Any]) -> None:
    emit_table(
        None,
        ["id", "action", "state", "hosts", "progress", "submitted by", "created"],
        [
            [
                r.id,
                r.action,
                r.state + (" (cancelling)" if r.cancel_requested and r.state == "running" else ""),
                r.host_count,
                format_counts(r.counts),
                r.submitted_by,
                r.created,
            ]
            for r in rows
        ],
    )


def copied(counts: dict[str, int]) -> None:
    for table, n in counts.items():
        click.echo(f"{table}: {n}")


def workers(rows: list[Any]) -> None:
    emit_table(
        None,
        ["worker", "host", "pid", "heartbeat age", "state", "requests", "hosts leased"],
        [
            [
                w.id,
                w.hostname,
                w.pid,
                f"{w.heartbeat_age_s:.1f}s",
                "alive" if w.alive else "dead",
                ", ".join(map(str, w.requests)) or "-",
                w.hosts_leased,
            ]
            for w in rows
        ],
    )


def cancelled(request_id: int, state: str) -> None:
    if state == "cancelled":
        click.echo(f"request {request_id} cancelled")
    else:
        click.echo(f"request {request_id} is {state}: no new host starts; steps in flight finish")


def leases(leases: list[Any]) -> None:
    emit_table(
        None,
        ["host", "request", "action", "pool", "holder", "since"],
        [[x.host, x.request_id, x.action, x.pool, x.holder, x.acquired] for x in leases],
    )


def install_report(host: str, image: str, report: Any) -> None:
    click.echo(
        f"{host}: install of {image} {report.outcome}"
        + (f" (request {report.request_id})" if report.request_id else "")
    )


def _secs(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}s" if value < 100 else f"{value:.0f}s"


def _rate(rate: float | None) -> str:
    return "" if rate is None else f"{100 * rate:.1f}%"


def _classes(classes: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(classes.items(), key=lambda kv: -kv[1]))


def stats(st: Any, since: str | None, pool: str | None) -> None:
    """`stats`: the fleet now, then per action its rates, queue wait, steps and breakdowns."""
    f = st.fleet
    by_status = ", ".join(f"{n} {k}" for k, n in sorted(f.hosts_by_status.items()))
    by_state = ", ".join(f"{n} {k}" for k, n in sorted(f.requests_by_state.items()))
    click.echo(
        f"fleet: {f.hosts} hosts ({by_status}), {f.hosts_in_flight} in flight; "
        f"requests: {by_state or 'none'}"
    )
    for w in f.workers[:5]:
        click.echo(f"  worker {w.id}: last heartbeat {w.heartbeat_age_s:.0f}s ago")
    scope = ", ".join(x for x in (since and f"since {since}", pool and f"pool {pool}") if x)
    for a in st.actions:
        click.echo("")
        click.echo(
            f"{a.action}{f' ({scope})' if scope else ''}: {a.requests} requests, {a.hosts} hosts "
            f"ended, {_rate(a.success_rate) or 'n/a'} succeeded"
            + (f"; failures: {_classes(a.failures_by_class)}" if a.failures_by_class else "")
        )
        q = a.queue_wait
        if q.count:
            click.echo(
                f"  queue wait (accepted → first step): p50 {_secs(q.p50_s)}, "
                f"p95 {_secs(q.p95_s)}, max {_secs(q.max_s)} over {q.count} requests"
            )
        emit_table(
            None,
            ["step", "count", "not ok", "p50", "p95", "max"],
            [
                [x.step, x.count, x.failed, _secs(x.p50_s), _secs(x.p95_s), _secs(x.max_s)]
                for x in a.steps
            ],
        )
        rows = [
            [
                dim.removeprefix("by_"),
                b.value,
                b.hosts,
                _rate(b.success_rate),
                _classes(b.failures_by_class),
            ]
            for dim in ("by_pool", "by_hw_model", "by_bmc_vendor")
            for b in getattr(a, dim)
        ]
        if rows:
            emit_table(None, ["by", "value", "hosts", "succeeded", "failures"], rows)


def run_report(report: Any) -> None:
    """What `maasctl run` did: each request it finished or let go."""
    for rid, state in sorted(report.finished.items()):
        click.echo(f"request {rid}: {state}")
    for rid in report.let_go:
        click.echo(f"request {rid}: left for another worker")


def bmc_results(results: list[Any]) -> None:
    """`bmc status|power|boot`: a row per host, then a count on stderr."""
    emit_table(
        None,
        ["host", "power", "result", "via", "seconds", "error"],
        [
            [
                r.host,
                r.power if r.power_raw is None else f"{r.power} ({r.power_raw})",
                "ok" if r.ok else r.error_class,
                r.via,
                f"{r.elapsed_s:.2f}",
                r.error,
            ]
            for r in results
        ],
    )
    failed = sum(not r.ok for r in results)
    click.echo(f"{len(results) - failed} ok, {failed} failed", err=True)


def sim_started(info: dict[str, Any]) -> None:
    click.echo(
        f"simulator running (pid {info['pid']}): {info['hosts']} hosts"
        + (f", Redfish at {info['redfish_url']}" if info["redfish_url"] else "")
        + (
            f", {len(set(info['redfish_profiles'].values()))} Redfish profile BMCs (http)"
            if info.get("redfish_profiles")
            else ""
        )
    )
    click.echo(f"  source {info['credentials_env']}")
    click.echo(f"  maasctl hosts import {info['inventory']}")
    click.echo("  maasctl bmc status 'sim-*'")


def sim_machines(machines: list[dict[str, Any]]) -> None:
    emit_table(
        None,
        ["host", "power", "boot", "os", "image", "installs", "fault"],
        [
            [
                m["host"],
                m["power"],
                m["boot_target"],
                m["os"],
                m["installed_image"],
                m["installs"],
                m["fault"],
            ]
            for m in machines
        ],
    )
