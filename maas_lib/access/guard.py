"""`GuardedFleet`: the Fleet calls the API offers, each behind the policy, for one
authenticated principal.

Every method resolves what it needs through `Fleet` (hosts to pools, a request's
submitter and pools, the pools' grants), asks `policy`, and on a refusal writes the audit
record and raises `AccessDenied` — having written nothing else. Every mutating call that
goes through is audited too (a submission in the same transaction as the request). The
submitter and the actor recorded are always the principal's name, never a caller's
choice, and server-side paths (`hosts_file`, `pre_hook`, `post_hook`) are never accepted:
a hook is a playbook the server would run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from maas_lib.access import policy as rules
from maas_lib.access.models import AuditEntry, AuditRecord, Outcome, PoolGrant
from maas_lib.access.principal import Principal
from maas_lib.errors import AccessDenied, IdempotencyConflict, InputError
from maas_lib.models import (
    Action,
    BatchPolicy,
    HostRecord,
    Lease,
    RequestState,
    RequestSummary,
    SubmitResult,
)
from maas_lib.store.base import IdempotencyKey

if TYPE_CHECKING:
    from maas_lib.fleet import Fleet
    from maas_lib.store.base import NewRequest
    from maas_lib.telemetry.models import Stats, WorkerInfo

#: Submission arguments that name files or playbooks on the server.
SERVER_PATHS = ("hosts_file", "pre_hook", "post_hook")
#: Names only the server sets: the principal's name, the server's OS user.
CALLER_NAMES = ("submitted_by", "actor", "os_user")
#: An `Idempotency-Key`: 1 to 200 printable ASCII characters.
MAX_KEY_CHARS = 200
#: How many patterns an audit record keeps.
_AUDIT_PATTERNS = 20


def body_hash(
    action: str | Action,
    patterns: Sequence[str],
    image: str | None,
    policy_doc: BatchPolicy | dict[str, Any] | None,
    policy_fields: dict[str, Any],
) -> str:
    """The SHA-256 of a submission as given (canonical JSON): what an idempotency key is
    bound to."""
    pol = policy_doc.model_dump(mode="json") if isinstance(policy_doc, BatchPolicy) else policy_doc
    doc = {
        "action": str(action),
        "patterns": list(patterns),
        "image": image,
        "policy": {**(pol or {}), **{k: v for k, v in policy_fields.items() if v is not None}},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def check_idempotency_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY_CHARS or not all(" " <= c <= "~" for c in key):
        raise InputError(
            f"Idempotency-Key: 1 to {MAX_KEY_CHARS} printable ASCII characters "
            f"(got {len(key)} characters)"
        )
    return key


def stored_key(key: str) -> str:
    """What the store keeps of an `Idempotency-Key`: its SHA-256, so that a client that
    sends a secret as its key (its own token, say) leaves no secret in the database."""
    return "sha256:" + hashlib.sha256(check_idempotency_key(key).encode()).hexdigest()


class GuardedFleet:
    """`Fleet`'s API calls for `principal`, each authorized and audited."""

    def __init__(self, fleet: Fleet, principal: Principal):
        self.fleet = fleet
        self.principal = principal

    # -- decisions and the audit log ------------------------------------------------------

    def _audit(
        self,
        verb: str,
        outcome: Outcome,
        *,
        target: str | None = None,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        extra = {"via": self.principal.via}
        if self.principal.cert:
            extra["client_cert"] = self.principal.cert
        self.fleet.record_audit(
            AuditEntry(
                principal=self.principal.name,
                verb=verb,
                target=target,
                decision=outcome,
                reason=reason,
                detail={**(detail or {}), **extra},
            )
        )

    def _enforce(
        self,
        decision: rules.Decision,
        verb: str,
        *,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Raise `AccessDenied` (audited) if `decision` refuses."""
        if not decision.allowed:
            pools = {"pools": list(decision.pools)} if decision.pools else {}
            self._audit(
                verb,
                Outcome.REFUSED,
                target=target,
                reason=decision.reason,
                detail={**(detail or {}), **pools},
            )
            decision.check()

    def _refuse_server_paths(self, verb: str, fields: dict[str, Any]) -> None:
        """Server-side paths, and names only the server may set, are refused (audited)."""
        given = [k for k in SERVER_PATHS if fields.get(k) is not None]
        chosen = [k for k in CALLER_NAMES if k in fields]
        if given or chosen:
            reason = (
                f"{', '.join(given)}: server-side paths are not accepted over the API"
                if given
                else f"{', '.join(chosen)}: the submitter is the authenticated principal"
            )
            self._audit(verb, Outcome.REFUSED, reason=reason)
            raise AccessDenied(reason)

    def _validated(
        self,
        action: str | Action,
        patterns: Iterable[str],
        image: str | None,
        policy_doc: BatchPolicy | dict[str, Any] | None,
        policy_fields: dict[str, Any],
    ) -> NewRequest:
        """A submission checked as Fleet checks it, submitted by this principal."""
        return self.fleet.validate_submission(
            action,
            patterns,
            policy=policy_doc,
            image=image,
            submitted_by=self.principal.name,
            **policy_fields,
        )

    def _decide(self, verb: str, request: NewRequest) -> rules.Decision:
        """May the principal `verb` this checked submission, with the hosts' pools and
        the pools' grants as the store holds them now?"""
        return self._decide_on(verb, request, *self.fleet.host_pools_and_grants(request.hosts))

    def _decide_on(
        self, verb: str, request: NewRequest, hosts: dict[str, str], grants: list[PoolGrant]
    ) -> rules.Decision:
        """May the principal `verb` this checked submission, its hosts being in the pools
        `hosts` says, with `grants`?"""
        pools = sorted(set(hosts.values()))
        if len(hosts) != len(request.hosts):  # a host gone since: it has no pool to own
            missing = sorted(set(request.hosts) - set(hosts))
            return rules.Decision(False, f"host {missing[0]} is no longer registered")
        return rules.may_submit(self.principal, request.action, pools, grants, verb=verb)

    @staticmethod
    def _about(request: NewRequest) -> dict[str, Any]:
        return {
            "action": str(request.action),
            "hosts": len(request.hosts),
            "patterns": request.patterns[:_AUDIT_PATTERNS],
        }

    # -- who am I -------------------------------------------------------------------------

    def whoami(self) -> Principal:
        return self.principal

    # -- submissions ----------------------------------------------------------------------

    def submit(
        self,
        action: str | Action,
        patterns: Iterable[str] = (),
        *,
        image: str | None = None,
        policy: BatchPolicy | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        **policy_fields: Any,
    ) -> SubmitResult:
        """Accept a request as the principal (operator: every host in a pool one of its
        teams owns; wipe and decommission need the destructive grant). With
        `idempotency_key`, a retry answers the first request again, and the same key
        with another submission is `IdempotencyConflict`."""
        self._refuse_server_paths("submit", policy_fields)
        self._enforce(rules.may_act(self.principal, "submit"), "submit")
        pats = list(patterns)
        key = None
        if idempotency_key is not None:
            digest = body_hash(action, pats, image, policy, policy_fields)
            key = IdempotencyKey(self.principal.name, stored_key(idempotency_key), digest)
            replay = self._replay(key)
            if replay is not None:
                return replay
        request = self._validated(action, pats, image, policy, policy_fields)

        def authorize(hosts: dict[str, str], grants: list[PoolGrant]) -> None:
            # On the hosts' pools and grants the store read just before its write; the
            # write commits only if none changed since (the store's access version),
            # else this decides again on what the store holds then.
            self._decide_on("submit", request, hosts, grants).check()

        try:
            result, _ = self.fleet.accept(request, idempotency=key, authorize=authorize)
        except AccessDenied as exc:
            pools = {"pools": list(exc.pools)} if exc.pools else {}
            self._audit(
                "submit",
                Outcome.REFUSED,
                reason=exc.reason,
                detail={**self._about(request), **pools},
            )
            raise
        return result

    def _replay(self, key: IdempotencyKey) -> SubmitResult | None:
        """The first answer to a key already used (nothing is checked or written again),
        or None if the key is new."""
        found = self.fleet.idempotent_request(key.principal, key.key)
        if found is None:
            return None
        request_id, digest = found
        if digest != key.body_hash:
            reason = (
                f"Idempotency-Key was used before for a different submission (request {request_id})"
            )
            self._audit("submit", Outcome.REFUSED, target=f"request:{request_id}", reason=reason)
            raise IdempotencyConflict(reason)
        hosts = self.fleet.status(request_id).host_count
        return SubmitResult(id=request_id, state=RequestState.ACCEPTED, hosts=hosts)

    def plan(
        self,
        action: str | Action,
        patterns: Iterable[str] = (),
        *,
        image: str | None = None,
        policy: BatchPolicy | dict[str, Any] | None = None,
        **policy_fields: Any,
    ) -> dict[str, Any]:
        """A dry run of `submit`, under the same rules; writes nothing but a refusal."""
        self._refuse_server_paths("plan", policy_fields)
        self._enforce(rules.may_act(self.principal, "plan"), "plan")
        request = self._validated(action, list(patterns), image, policy, policy_fields)
        self._enforce(self._decide("plan", request), "plan", detail=self._about(request))
        return self.fleet.plan_request(request)

    def cancel(self, request_id: int) -> RequestState:
        """Cancel a request: its own, or one touching a pool one of its teams owns."""
        target = f"request:{request_id}"
        self._enforce(rules.may_act(self.principal, "cancel"), "cancel", target=target)
        submitted_by, pools = self.fleet.request_pools(request_id)
        decision = rules.may_cancel(
            self.principal, submitted_by, pools, self.fleet.pool_owners(pools)
        )
        self._enforce(decision, "cancel", target=target, detail={"submitted_by": submitted_by})
        state = self.fleet.cancel(request_id, actor=self.principal.name)
        self._audit(
            "cancel",
            Outcome.ALLOWED,
            target=target,
            reason=decision.reason,
            detail={"submitted_by": submitted_by, "state": str(state)},
        )
        return state

    # -- reads (every role) ---------------------------------------------------------------

    def requests(
        self,
        state: str | RequestState | Sequence[str | RequestState] | None = None,
        limit: int | None = None,
    ) -> list[RequestSummary]:
        return self.fleet.requests(state, limit)

    def request_info(
        self, request_id: int, *, steps: bool = False, host: str | None = None
    ) -> dict[str, Any]:
        return self.fleet.request_info(request_id, steps=steps, host=host)

    def inflight(self) -> list[Lease]:
        return self.fleet.inflight()

    def hosts(self, pool: str | None = None) -> list[HostRecord]:
        return self.fleet.hosts(pool)

    def stats(
        self, since: str | None = None, *, action: str | None = None, pool: str | None = None
    ) -> Stats:
        return self.fleet.stats(since, action=action, pool=pool)

    def workers(self) -> list[WorkerInfo]:
        return self.fleet.workers()

    # -- admin ----------------------------------------------------------------------------

    def audit(
        self,
        *,
        principal: str | None = None,
        decision: Outcome | str | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """The audit log, newest first (admin)."""
        self._enforce(rules.may_admin(self.principal, "the audit log"), "audit")
        return self.fleet.audit(principal=principal, decision=decision, limit=limit)
