"""Failure classes and step outcomes: one vocabulary in the code, the README and the metrics.

`ErrorClass` and `StepOutcome` (maas_lib/classes.py) are the only source of the strings
stored in `error_class` / `outcome` and exported as Prometheus labels; these tests keep
the README's lists, the metric labels and the exception hierarchy in step with them.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

import maas_lib
from maas_lib.bmc import BmcController
from maas_lib.bmc.base import BmcEndpoint, BmcTarget
from maas_lib.classes import ErrorClass, StepOutcome, outcome_of
from maas_lib.errors import (
    BmcAuthError,
    BmcError,
    BmcPowerUnknown,
    BmcTimeout,
    BmcTlsError,
    BmcUnreachable,
    BmcUnsupported,
    CredentialError,
    InputError,
    Interrupted,
    MaasError,
    NotFound,
    StepError,
    StoreFailing,
    error_class_of,
)
from maas_lib.models import (
    Action,
    BatchPolicy,
    BmcProtocol,
    HostSpec,
    HostStatus,
    HostTaskState,
    RequestState,
)
from maas_lib.scheduler.single_step import StepFenced
from maas_lib.store import NewRequest, Store, open_store
from maas_lib.telemetry.metrics import FleetCollector

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def readme_section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_the_readme_failure_class_table_lists_every_error_class_once_with_a_meaning():
    rows = re.findall(r"^\| `([a-z_]+)` \| (.*) \|$", readme_section("Failure classes"), re.M)
    documented = [name for name, _ in rows]
    assert sorted(documented) == sorted(ErrorClass), "README table vs ErrorClass"
    assert len(documented) == len(set(documented))
    assert all(len(meaning.strip()) > 10 for _, meaning in rows), rows


def test_the_readme_names_every_step_outcome():
    steps = readme_section("The scheduler")
    sentence = steps[steps.index("A step's outcome is") :].split(":\n", 1)[0]
    assert sorted(re.findall(r"`([a-z]+)`", sentence)) == sorted(StepOutcome)


def test_every_class_the_readme_names_in_passing_is_an_error_class():
    """The scheduler's and BMC control's summaries name classes inline: each must be a
    real one, so a renamed class cannot linger in the prose."""
    for title in ("The scheduler", "BMC control"):
        text = readme_section(title)
        start = text.index("**Failure classes.**")
        summary = re.split(r"\.\s", text[start:], maxsplit=1)[0]  # its first sentence
        named = set(re.findall(r"`([a-z_]+)`", summary))
        assert named and named <= set(ErrorClass), (title, named - set(ErrorClass))


def _store_with_a_failure_of_every_class(path: Path) -> Store:
    """A real SQLite store, written as the scheduler writes it: one reboot whose hosts
    ended one per failure class, and three that succeeded."""
    store = open_store(path)
    classes = list(ErrorClass)
    names = [f"h{i:02d}" for i in range(len(classes) + 3)]
    store.upsert_hosts(
        [HostSpec(name=n, pool="p", bmc_address="10.0.0.1") for n in names], [], actor="t"
    )
    rid = store.create_request(
        NewRequest(
            action=Action.REBOOT,
            policy=BatchPolicy(),
            patterns=names,
            hosts=names,
            submitted_by="t",
            os_user="t",
        )
    )
    assert store.claim_request("w", ttl=60) == rid
    began = store.begin_hosts(rid, names, batch=0, action="reboot", holder="w", limits={})
    for name, task in began.started.items():
        index = names.index(name)
        if index < len(classes):
            store.end_task(task, HostTaskState.FAILED, error_class=classes[index], reason="x")
        else:
            store.end_task(task, HostTaskState.SUCCEEDED)
    return store


def test_metric_labels_that_carry_a_class_or_state_are_the_enums_values(tmp_path: Path):
    path = tmp_path / "maas.db"
    _store_with_a_failure_of_every_class(path).close()
    registry = CollectorRegistry(auto_describe=True)
    registry.register(FleetCollector(lambda: open_store(path)))
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    outcomes = families["maas_host_outcomes"].samples
    assert {s.labels["result"] for s in outcomes} == {
        HostTaskState.SUCCEEDED,
        HostTaskState.FAILED,
    }
    failed = {s.labels["error_class"] for s in outcomes if s.labels["result"] == "failed"}
    assert failed == set(ErrorClass)
    assert {s.labels["error_class"] for s in outcomes if s.labels["result"] != "failed"} == {""}
    assert {s.labels["status"] for s in families["maas_hosts"].samples} == set(HostStatus)
    assert {s.labels["state"] for s in families["maas_requests"].samples} == set(RequestState)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (BmcUnreachable("x"), ErrorClass.UNREACHABLE),
        (BmcAuthError("x"), ErrorClass.AUTH),
        (BmcTimeout("x"), ErrorClass.TIMEOUT),
        (BmcUnsupported("x"), ErrorClass.UNSUPPORTED),
        (BmcTlsError("x"), ErrorClass.TLS),
        (BmcPowerUnknown("x"), ErrorClass.POWER_UNKNOWN),
        (BmcError("x"), ErrorClass.BMC_ERROR),
        (CredentialError("x"), ErrorClass.CREDENTIAL),
        (StepError(ErrorClass.HOOK_TIMEOUT, "x"), ErrorClass.HOOK_TIMEOUT),
        (StepError("install_failed", "x"), ErrorClass.INSTALL_FAILED),  # type: ignore[arg-type]
        (StepFenced("x"), ErrorClass.FENCED),
        (NotFound("x"), ErrorClass.INTERNAL),
        (StoreFailing("x"), ErrorClass.INTERNAL),
        (KeyError("x"), ErrorClass.INTERNAL),
    ],
)
def test_one_mapping_from_exceptions_to_classes(exc: BaseException, expected: ErrorClass):
    assert error_class_of(exc) is expected


def test_a_step_error_with_a_class_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match="credentials"):
        StepError("credentials", "typo")  # type: ignore[arg-type]


def test_timeouts_are_the_classes_whose_step_outcome_is_timeout():
    timeouts = {c for c in ErrorClass if outcome_of(c) is StepOutcome.TIMEOUT}
    assert timeouts == {c for c in ErrorClass if c.endswith("timeout")}
    assert outcome_of(ErrorClass.AUTH) is StepOutcome.FAILED


def _library_modules():
    for info in pkgutil.walk_packages(maas_lib.__path__, "maas_lib."):
        if not info.name.endswith("__main__"):
            yield importlib.import_module(info.name)


def test_every_exception_the_library_defines_is_a_maas_error_with_a_known_class():
    """Private control-flow signals (a leading underscore, e.g. the simulator's HTTP
    replies) never leave their module and are not checked; nor are the HTTP service's own
    answers (starlette's HTTPException), which the app turns into its error shape and no
    library caller ever sees."""
    from starlette.exceptions import HTTPException  # test-only: the service's answers

    defined = {
        cls
        for module in _library_modules()
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, BaseException)
        and cls.__module__ == module.__name__
        and not cls.__name__.startswith("_")
        and not (cls.__module__.startswith("maas_lib.service.") and issubclass(cls, HTTPException))
    }
    assert {InputError, Interrupted, StepError, StepFenced} <= defined
    outside = sorted(c.__qualname__ for c in defined if not issubclass(c, MaasError))
    assert outside == []
    for cls in defined:
        assert cls.error_class is None or isinstance(cls.error_class, ErrorClass), cls


def _produced(node: ast.AST) -> list[ast.Constant]:
    """The string constants an expression may evaluate to (not those in its conditions)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node]
    if isinstance(node, ast.IfExp):
        return _produced(node.body) + _produced(node.orelse)
    if isinstance(node, ast.BoolOp):
        return [c for v in node.values for c in _produced(v)]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [c for e in node.elts for c in _produced(e)]
    return []


def _is_error_class(node: ast.AST) -> bool:
    return getattr(node, "attr", getattr(node, "id", None)) == "error_class"


def test_no_failure_class_is_spelled_as_a_string_literal():
    """Every class the library produces or compares is an `ErrorClass` member, so a new
    class cannot reach stored rows and metrics without being in the enum (and so in the
    README's table)."""
    found: set[str] = set()
    for path in sorted((ROOT / "maas_lib").rglob("*.py")):
        if path.name == "classes.py" or "sim" in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            literals: list[ast.Constant] = []
            if isinstance(node, ast.keyword) and node.arg == "error_class":
                literals = _produced(node.value)
            elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(_is_error_class(t) for t in targets):
                    literals = _produced(node.value)
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "TaskOutcome":
                literals = _produced(node.args[2]) if len(node.args) > 2 else []
            elif isinstance(node, ast.Compare | ast.BoolOp):
                sides = [node.left, *node.comparators] if isinstance(node, ast.Compare) else []
                sides += node.values if isinstance(node, ast.BoolOp) else []
                if any(_is_error_class(s) for s in sides):
                    literals = [c for s in sides for c in _produced(s)]
            found |= {f"{path.relative_to(ROOT)}:{c.lineno}: {c.value!r}" for c in literals}
    assert not found, "\n".join(sorted(found))


def test_a_direct_bmc_call_with_an_unresolvable_credential_is_class_credential(monkeypatch):
    """Was `auth` here but `credential` in the scheduler; no BMC is contacted."""
    for name in ("MAAS_CRED_GHOST_USERNAME", "MAAS_CRED_GHOST_PASSWORD", "MAAS_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    target = BmcTarget("h1", "ghost", BmcEndpoint(BmcProtocol.IPMI, "192.0.2.1"))
    result = BmcController().status(target)
    assert not result.ok
    assert result.error_class == ErrorClass.CREDENTIAL, result
    assert "MAAS_CRED_GHOST_USERNAME" in (result.error or "")
