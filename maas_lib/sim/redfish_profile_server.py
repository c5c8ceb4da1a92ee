"""The HTTP side of a Redfish profile service: a threaded server on loopback whose answers
follow a `Profile` (see redfish_profiles.py), with every request kept in its record.

    with serve(PROFILES["ilo5"]) as bmc:
        ... bmc.url, bmc.state.record.resets, bmc.state.open_sessions ...

By hand: `python -m maas_lib.sim.redfish_profile_server ilo5 --set power_state=absent`
serves one until interrupted and prints an inventory line for it.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from maas_lib.sim.redfish_profiles import (
    PROFILE_NAMES,
    Profile,
    RedfishState,
    SimSystem,
    profile_named,
)

ROOT = "/redfish/v1"
SESSIONS = f"{ROOT}/SessionService/Sessions"
MONITORS = f"{ROOT}/TaskService/TaskMonitors"


def _error(code: str, message: str) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "@Message.ExtendedInfo": [
                {"MessageId": code, "Message": message, "Severity": "Warning"}
            ],
        }
    }


class _Reply(Exception):
    """Raised by a route to answer at once."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        self.status, self.body, self.headers = status, body, headers or {}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read the record
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing ---------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        st = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path.rstrip("/") or "/"
        entry = {"method": method, "path": path, "auth": self._auth_kind(), "at": time.monotonic()}
        with st.lock:
            st.record.requests.append(entry)
        if st.profile.hang:
            st.stopping.wait()  # accepted, never answered
            return
        if st.profile.latency:
            time.sleep(st.profile.latency)
        try:
            body = json.loads(raw) if raw else None
            if method != "GET" and path != SESSIONS:  # never keep a login's password
                entry["body"] = body
            self._route(method, path, body)
        except _Reply as reply:
            entry["status"] = reply.status
            self._send(reply.status, reply.body, reply.headers)
        except ValueError:
            entry["status"] = 400
            self._send(400, _error("Base.1.8.MalformedJSON", "The request body is not JSON."))

    def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("OData-Version", "4.0")
        self.end_headers()
        self.wfile.write(data)

    def _auth_kind(self) -> str | None:
        if self.headers.get("X-Auth-Token"):
            return "session"
        if (self.headers.get("Authorization") or "").startswith("Basic "):
            return "basic"
        return None

    def _require_auth(self) -> str | None:
        """The session id the request came with (None for Basic), or a 401."""
        st = self.server.state
        token = self.headers.get("X-Auth-Token")
        if token:
            with st.lock:
                if token in st.sessions:
                    return st.sessions[token]
            raise _Reply(401, _error("Base.1.8.NoValidSession", "No valid session."))
        basic = self.headers.get("Authorization") or ""
        if basic.startswith("Basic ") and st.profile.basic_auth:
            try:
                user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
            except ValueError:
                user, password = "", ""
            if user == st.username and hmac.compare_digest(password.encode(), st.password.encode()):
                return None
        raise _Reply(401, _error("Base.1.8.InsufficientPrivilege", "Authentication required."))

    # -- routes -----------------------------------------------------------------------------

    def _route(self, method: str, path: str, body: Any) -> None:
        st = self.server.state
        if path in ("/redfish", ROOT):
            raise _Reply(200, {"v1": f"{ROOT}/"} if path == "/redfish" else self._service_root())
        if method == "POST" and path == SESSIONS and st.profile.sessions:
            self._login(body)
        self._require_auth()
        parts = path[len(ROOT) + 1 :].split("/") if path.startswith(ROOT + "/") else []
        if parts[:1] == ["Systems"] and len(parts) >= 2:
            with st.lock:
                busy = st.busy_left > 0
                st.busy_left -= 1 if busy else 0
            if busy:
                headers = {"Retry-After": st.profile.retry_after} if st.profile.retry_after else {}
                raise _Reply(
                    st.profile.busy_status,
                    _error("Base.1.8.ServiceTemporarilyUnavailable", "Busy, try later."),
                    headers,
                )
        if parts[:2] == ["SessionService", "Sessions"] and len(parts) == 3 and method == "DELETE":
            with st.lock:
                for token, sid in list(st.sessions.items()):
                    if sid == parts[2]:
                        del st.sessions[token]
                        raise _Reply(204)
            raise _Reply(404, _error("Base.1.8.ResourceMissingAtURI", "No such session."))
        if parts == ["SessionService"]:
            raise _Reply(
                200,
                {
                    "@odata.id": f"{ROOT}/SessionService",
                    "Id": "SessionService",
                    "ServiceEnabled": st.profile.sessions,
                    "Sessions": {"@odata.id": SESSIONS},
                },
            )
        if parts == ["Systems"] and method == "GET":
            members = [{"@odata.id": f"{ROOT}/Systems/{s}"} for s in st.systems]
            raise _Reply(
                200,
                {
                    "@odata.id": f"{ROOT}/Systems",
                    "Name": "Computer System Collection",
                    "Members": members,
                    "Members@odata.count": len(members),
                },
            )
        if parts[:1] == ["Systems"] and len(parts) >= 2 and parts[1] in st.systems:
            self._system(method, st.systems[parts[1]], parts[2:], body)
        if parts[:2] == ["TaskService", "TaskMonitors"] and len(parts) == 3 and method == "GET":
            self._task_monitor(parts[2])
        raise _Reply(404, _error("Base.1.8.ResourceMissingAtURI", f"{path} not found."))

    def _service_root(self) -> dict[str, Any]:
        root: dict[str, Any] = {
            "@odata.id": f"{ROOT}/",
            "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
            "Id": "RootService",
            "Name": "Root Service",
            "RedfishVersion": "1.15.0",
            "Product": f"maas-lib {self.server.state.profile.name} profile",
            "Systems": {"@odata.id": f"{ROOT}/Systems"},
            "Chassis": {"@odata.id": f"{ROOT}/Chassis"},
        }
        if self.server.state.profile.sessions:
            root["SessionService"] = {"@odata.id": f"{ROOT}/SessionService"}
            root["Links"] = {"Sessions": {"@odata.id": SESSIONS}}
        return root

    def _login(self, body: Any) -> None:
        st = self.server.state
        ok = (
            isinstance(body, dict)
            and body.get("UserName") == st.username
            and hmac.compare_digest(str(body.get("Password", "")).encode(), st.password.encode())
        )
        if not ok:
            raise _Reply(401, _error("Base.1.8.InvalidCredentials", "Login failed."))
        with st.lock:
            if (
                st.profile.session_limit is not None
                and len(st.sessions) >= st.profile.session_limit
            ):
                raise _Reply(
                    503,
                    _error("Base.1.8.SessionLimitExceeded", "Too many sessions."),
                    {"Retry-After": "1"},
                )
            sid = st.next_id()
            token = secrets.token_hex(16)
            st.sessions[token] = sid
            st.record.sessions_created += 1
            st.record.tokens.append(token)
        uri = f"{SESSIONS}/{sid}"
        raise _Reply(
            201,
            {"@odata.id": uri, "Id": sid, "UserName": st.username},
            {"X-Auth-Token": token, "Location": uri},
        )

    # -- ComputerSystem ---------------------------------------------------------------------

    def _etag(self, machine: SimSystem) -> str:
        tag = f'"{machine.generation}"'
        return "W/" + tag if self.server.state.profile.weak_etag else tag

    def _system_doc(self, machine: SimSystem) -> dict[str, Any]:
        p = self.server.state.profile
        uri = f"{ROOT}/Systems/{machine.ident}"
        machine.settle()
        doc: dict[str, Any] = {
            "@odata.id": uri,
            "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
            "Id": machine.ident,
            "Name": machine.ident,
            "SystemType": "Physical",
        }
        if p.power_state == "real":
            shown = machine.power
            if p.transitional and machine.pending:
                shown = "PoweringOn" if machine.pending[0] == "On" else "PoweringOff"
            doc["PowerState"] = shown
        elif p.power_state == "null":
            doc["PowerState"] = None
        elif p.power_state != "absent":
            doc["PowerState"] = p.power_state
        if p.boot:
            boot: dict[str, Any] = {
                "BootSourceOverrideTarget": machine.boot_target,
                "BootSourceOverrideEnabled": machine.boot_enabled,
                "BootSourceOverrideEnabled@Redfish.AllowableValues": [
                    "Disabled",
                    "Once",
                    "Continuous",
                ],
            }
            if p.boot_targets is not None:
                boot["BootSourceOverrideTarget@Redfish.AllowableValues"] = list(p.boot_targets)
            doc["Boot"] = boot
        reset: dict[str, Any] = {
            "target": (p.reset_target_base or "") + f"{uri}/Actions/ComputerSystem.Reset"
        }
        if p.reset_action_info:
            reset["@Redfish.ActionInfo"] = f"{uri}/ResetActionInfo"
        else:
            reset["ResetType@Redfish.AllowableValues"] = list(p.reset_types)
        doc["Actions"] = {"#ComputerSystem.Reset": reset}
        if p.virtual_media:
            doc["VirtualMedia"] = {"@odata.id": f"{uri}/VirtualMedia"}
        if p.if_match and not p.etag_header:
            doc["@odata.etag"] = self._etag(machine)
        return doc

    def _system(self, method: str, machine: SimSystem, rest: list[str], body: Any) -> None:
        st = self.server.state
        p = st.profile
        uri = f"{ROOT}/Systems/{machine.ident}"
        with st.lock:
            if not rest and method == "GET":
                headers = {"ETag": self._etag(machine)} if p.etag_header else {}
                raise _Reply(200, self._system_doc(machine), headers)
            if not rest and method == "PATCH":
                self._patch(machine, body)
            if rest == ["ResetActionInfo"] and p.reset_action_info and method == "GET":
                raise _Reply(
                    200,
                    {
                        "@odata.id": f"{uri}/ResetActionInfo",
                        "@odata.type": "#ActionInfo.v1_1_2.ActionInfo",
                        "Id": "ResetActionInfo",
                        "Name": "Reset Action Info",
                        "Parameters": [
                            {
                                "Name": "ResetType",
                                "Required": True,
                                "DataType": "String",
                                "AllowableValues": list(p.reset_types),
                            }
                        ],
                    },
                )
            if rest == ["Actions", "ComputerSystem.Reset"] and method == "POST":
                self._reset(machine, body)
            if rest and rest[0] == "VirtualMedia" and p.virtual_media:
                self._media(method, machine, rest[1:], body)

    def _patch(self, machine: SimSystem, body: Any) -> None:
        st = self.server.state
        p = st.profile
        if_match = self.headers.get("If-Match")
        st.record.patches.append((machine.ident, body, if_match))
        if p.etag_stale_once:
            # The resource changes under the client once, between its GET and this PATCH.
            st.profile = p.but(etag_stale_once=False)
            machine.generation += 1
        if p.if_match:
            if not if_match:
                raise _Reply(428, _error("Base.1.8.PreconditionRequired", "If-Match required."))
            if if_match not in (self._etag(machine), "*"):
                raise _Reply(412, _error("Base.1.8.PreconditionFailed", "ETag mismatch."))
        boot = body.get("Boot") if isinstance(body, dict) else None
        if not p.boot or not isinstance(boot, dict):
            raise _Reply(400, _error("Base.1.8.PropertyUnknown", "Boot is not supported."))
        target = boot.get("BootSourceOverrideTarget", machine.boot_target)
        if p.boot_targets is not None and target not in p.boot_targets:
            raise _Reply(400, _error("Base.1.8.PropertyValueNotInList", f"{target} refused."))
        machine.boot_target = target
        machine.boot_enabled = boot.get("BootSourceOverrideEnabled", "Once")
        machine.generation += 1
        raise _Reply(204)

    def _reset(self, machine: SimSystem, body: Any) -> None:
        st = self.server.state
        p = st.profile
        kind = body.get("ResetType") if isinstance(body, dict) else None
        if kind not in p.reset_types:
            raise _Reply(
                400, _error("Base.1.8.ActionParameterNotSupported", f"ResetType {kind} refused.")
            )
        machine.settle()
        heading = machine.heading()
        wrong = (
            (kind in ("On", "ForceOn") and heading == "On")
            or (kind in ("ForceOff", "GracefulShutdown", "Off") and heading == "Off")
            or (kind in ("ForceRestart", "GracefulRestart") and heading == "Off")
        )
        if wrong and p.wrong_state_400:
            raise _Reply(
                400, _error(p.wrong_state_message, f"{kind} does not fit the power state.")
            )
        if p.tasks:
            self._start_task(lambda: self._apply_reset(machine, kind))
        self._apply_reset(machine, kind)
        raise _Reply(204)

    def _apply_reset(self, machine: SimSystem, kind: str) -> None:
        self.server.state.record.resets.append((machine.ident, kind))
        if kind in ("On", "ForceOn"):
            machine.request("On")
        elif kind in ("ForceOff", "GracefulShutdown", "Off"):
            machine.request("Off")
        elif kind in ("ForceRestart", "GracefulRestart", "PowerCycle") and machine.power == "On":
            machine.restarts += 1

    # -- tasks and virtual media ------------------------------------------------------------

    def _start_task(self, apply: Any) -> None:
        st = self.server.state
        tid = st.next_id()
        st.tasks[tid] = {"due": time.monotonic() + st.profile.task_time, "apply": apply}
        raise _Reply(
            202,
            {"@odata.id": f"{ROOT}/TaskService/Tasks/{tid}", "Id": tid, "TaskState": "Running"},
            {"Location": f"{MONITORS}/{tid}"},
        )

    def _task_monitor(self, tid: str) -> None:
        st = self.server.state
        with st.lock:
            task = st.tasks.get(tid)
            if task is None:
                raise _Reply(404, _error("Base.1.8.ResourceMissingAtURI", "No such task."))
            doc = {"@odata.id": f"{ROOT}/TaskService/Tasks/{tid}", "Id": tid}
            if time.monotonic() < task["due"]:
                raise _Reply(202, doc | {"TaskState": "Running"}, {"Location": f"{MONITORS}/{tid}"})
            if st.profile.task_failure:
                message = {"MessageId": "Base.1.8.GeneralError", "Message": st.profile.task_failure}
                raise _Reply(
                    200,
                    doc
                    | {"TaskState": "Exception", "TaskStatus": "Critical", "Messages": [message]},
                )
            raise _Reply(200, doc | {"TaskState": "Completed", "TaskStatus": "OK"})

    def _media(self, method: str, machine: SimSystem, rest: list[str], body: Any) -> None:
        st = self.server.state
        uri = f"{ROOT}/Systems/{machine.ident}/VirtualMedia"
        if not rest and method == "GET":
            raise _Reply(
                200,
                {
                    "@odata.id": uri,
                    "Name": "Virtual Media",
                    "Members": [{"@odata.id": f"{uri}/CD1"}],
                    "Members@odata.count": 1,
                },
            )
        if rest == ["CD1"] and method == "GET":
            raise _Reply(
                200,
                {
                    "@odata.id": f"{uri}/CD1",
                    "@odata.type": "#VirtualMedia.v1_6_0.VirtualMedia",
                    "Id": "CD1",
                    "Name": "Virtual CD",
                    "MediaTypes": ["CD", "DVD"],
                    "Image": machine.media_image,
                    "Inserted": machine.media_image is not None,
                    "WriteProtected": True,
                    "Actions": {
                        "#VirtualMedia.InsertMedia": {
                            "target": f"{uri}/CD1/Actions/VirtualMedia.InsertMedia"
                        },
                        "#VirtualMedia.EjectMedia": {
                            "target": f"{uri}/CD1/Actions/VirtualMedia.EjectMedia"
                        },
                    },
                },
            )
        if rest[:2] == ["CD1", "Actions"] and method == "POST" and len(rest) == 3:
            image = body.get("Image") if isinstance(body, dict) else None

            def apply() -> None:
                machine.media_image = image if rest[2] == "VirtualMedia.InsertMedia" else None

            if st.profile.tasks:
                self._start_task(apply)
            apply()
            raise _Reply(204)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    state: RedfishState


class RedfishService:
    """A running profile service: `url`, `state` (machines, sessions, record), `stop()`."""

    def __init__(self, profile: Profile, username: str, password: str) -> None:
        self.state = RedfishState(profile, username, password)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        # Tasks complete on their own clock, whether or not anyone polls their monitor.
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        st = self.state
        while not st.stopping.wait(0.05):
            with st.lock:
                for task in st.tasks.values():
                    apply = task.get("apply")
                    if apply and time.monotonic() >= task["due"]:
                        task["apply"] = None
                        if not st.profile.task_failure:
                            apply()

    @property
    def record(self) -> Any:
        return self.state.record

    def system_url(self, ident: str | None = None) -> str:
        return f"{ROOT}/Systems/{ident or next(iter(self.state.systems))}"

    def stop(self) -> None:
        self.state.stopping.set()
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def serve(
    profile: Profile, *, username: str = "admin", password: str = "profile-pass-0"
) -> Iterator[RedfishService]:
    service = RedfishService(profile, username, password)
    try:
        yield service
    finally:
        service.stop()


def _value(text: str) -> Any:
    """A --set value: JSON when it parses (numbers, true, null, lists), else the string."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return tuple(value) if isinstance(value, list) else value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve one Redfish profile on loopback.")
    parser.add_argument("profile", choices=[*PROFILE_NAMES, "custom"])
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default="profile-pass-0")
    args = parser.parse_args(argv)
    profile = Profile() if args.profile == "custom" else profile_named(args.profile)
    changes = dict(item.partition("=")[::2] for item in args.set)
    profile = profile.but(**{k: _value(v) for k, v in changes.items()})
    with serve(profile, username=args.username, password=args.password) as bmc:
        print(f"{profile.name}: {bmc.url} systems {', '.join(bmc.state.systems)}", flush=True)
        print(f"  host: {{bmc_address: '{bmc.url}', bmc_system: '{bmc.system_url()}'}}")
        with suppress(KeyboardInterrupt):
            bmc.state.stopping.wait()


if __name__ == "__main__":
    main()
