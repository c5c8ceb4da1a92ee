"""Host tasks and their steps, in portable SQL, written as they happen: the record a
restarted scheduler resumes from (see `sql_base` for the hooks it relies on)."""

from __future__ import annotations

from typing import Any

from maas_lib.errors import NotFound
from maas_lib.models import HostStatus, HostTaskState
from maas_lib.store.sql_base import SqlBase
from maas_lib.timeutil import utc_now


class SqlSteps(SqlBase):
    def start_step(self, task_id: int, step: str) -> int:
        with self._write():
            rows = self._exec(
                "INSERT INTO step_results (task_id, request_id, host, action, step, outcome, "
                "started, pool) SELECT id, request_id, host, action, ?, 'running', ?, pool "
                "FROM host_tasks WHERE id = ? RETURNING id",
                (step, utc_now(), task_id),
            ).fetchall()
        if len(rows) != 1:
            raise NotFound(f"unknown host task {task_id}")
        return rows[0][0]

    def end_step(
        self,
        step_id: int,
        outcome: str,
        duration_s: float,
        *,
        error_class: str | None = None,
        error: str | None = None,
        via: str | None = None,
    ) -> None:
        with self._write():
            self._exec(
                "UPDATE step_results SET outcome = ?, duration_s = ?, error_class = ?, "
                "error = ?, via = ?, finished = ? WHERE id = ?",
                (outcome, duration_s, error_class, error, via, utc_now(), step_id),
            )

    def discard_step(self, step_id: int) -> None:
        with self._write():
            self._exec("DELETE FROM step_results WHERE id = ?", (step_id,))

    def end_task(
        self,
        task_id: int,
        state: HostTaskState,
        *,
        error_class: str | None = None,
        reason: str | None = None,
        via: str | None = None,
        host_status: HostStatus | None = None,
        holder: str | None = None,
    ) -> None:
        now = utc_now()
        with self._write():
            row = self._exec(
                "SELECT t.request_id, t.host, r.claimed_by FROM host_tasks t "
                "JOIN requests r ON r.id = t.request_id WHERE t.id = ?"
                + self._for("FOR SHARE OF r"),
                (task_id,),
            ).fetchone()
            if row is None:
                raise NotFound(f"unknown host task {task_id}")
            request_id, host, claimed_by = row
            self._exec(
                "UPDATE host_tasks SET state = ?, error_class = ?, error = ?, via = ?, "
                "finished = ? WHERE id = ?",
                (str(state), error_class, reason, via, now, task_id),
            )
            if holder is not None and claimed_by != holder:
                return  # taken over: the host's state and lease are the new holder's
            self._exec(
                "UPDATE request_hosts SET state = ?, error_class = ?, reason = ?, finished = ? "
                "WHERE request_id = ? AND host = ?",
                (str(state), error_class, reason, now, request_id, host),
            )
            self._exec(
                "DELETE FROM host_leases WHERE host = ? AND request_id = ?", (host, request_id)
            )
            if host_status is not None:
                self._exec(
                    "UPDATE hosts SET status = ?, status_reason = ?, updated = ? WHERE name = ?",
                    (str(host_status), f"request {request_id}: {reason or state}", now, host),
                )
                self._event(
                    "host_status",
                    f"-> {host_status}" + (f": {reason}" if reason else ""),
                    request_id=request_id,
                    host=host,
                )

    def interrupt_task(self, task_id: int) -> None:
        with self._write():
            self._exec(
                "UPDATE host_tasks SET state = 'interrupted', finished = ? WHERE id = ?",
                (utc_now(), task_id),
            )

    def interrupt_open_steps(self, request_id: int) -> list[tuple[str, str]]:
        with self._write():
            rows = self._exec(
                "SELECT host, step FROM step_results WHERE request_id = ? AND outcome = 'running' "
                "ORDER BY id",
                (request_id,),
            ).fetchall()
            self._exec(
                "UPDATE step_results SET outcome = 'interrupted', finished = ? "
                "WHERE request_id = ? AND outcome = 'running'",
                (utc_now(), request_id),
            )
            self._exec(
                "UPDATE host_tasks SET state = 'interrupted', finished = ? "
                "WHERE request_id = ? AND state = ?",
                (utc_now(), request_id, str(HostTaskState.RUNNING)),
            )
        return [(h, s) for h, s in rows]

    def steps(self, request_id: int, host: str | None = None) -> list[dict[str, Any]]:
        sql = (
            "SELECT s.host, t.attempt, s.step, s.outcome, s.error_class, s.error, s.via, "
            "s.started, s.finished, s.duration_s FROM step_results s "
            "JOIN host_tasks t ON t.id = s.task_id WHERE s.request_id = ?"
        )
        params: list[Any] = [request_id]
        if host is not None:
            sql += " AND s.host = ?"
            params.append(host)
        return self._rows(sql + " ORDER BY s.id", params)
