"""The naming table (docs/naming.md), enforced where a test can.

The renames table is read from docs/naming.md: every ``done`` row is checked to still work and
warn until the version it goes away in, so the page and the code cannot disagree.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import pkgutil
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest
from packaging.version import Version

if TYPE_CHECKING:
    from .conftest import Package

REPO = Path(__file__).resolve().parents[2]
NAMING = REPO / "docs" / "naming.md"
SHORTS = sorted(
    p.parent.name.removeprefix("im-infra-") for p in REPO.glob("packages/*/pyproject.toml")
)

# Public modules that are separate namespaces, not re-exported from the package __init__.
SEPARATE = {"testing", "cli", "rpc", "deprecation", "factories", "lifecycle", "telemetry"}
# Public names not (yet) re-exported from their package __init__: docs/naming.md "Known gaps".
KNOWN_GAPS = {
    "coord.config": {"CONFIG_ROOT", "config_root"},
    "coord.registry": {"DEFAULT_REGISTRATION_TTL", "SERVICE_ROOT", "service_key"},
    "db.config": {"DB"},
    "db.outbox": {"DEFAULT_TABLE"},
    "mq.batch": {"check_batch_limits"},
    "mq.config": {"common_properties"},
    "mq.dead_letter": {"*"},
    "mq.membership": {"*"},
    "cache.config": {"LIVE_SECTIONS", "REDIS", "parse_duration"},
    "cache.features": {"LimitSpec"},
    "cache.local": {"*"},
    "cache.serializer": {"get_serializer"},
}
# A concept's one module name, and the spellings that drifted from it.
DRIFTED = {
    "factories": "factory",
    "interfaces": "protocols",
    "exceptions": "errors",
    "settings": "config",
    "fakes": "testing",
    "mocks": "testing",
}
# A parameter typed as coord's provider (not db's DBProvider).
COORD_PROVIDER = re.compile(r"(?<![A-Za-z])(?:_?coord\.)?(?:Provider|ProviderLike)\b")


@dataclass(frozen=True)
class Rename:
    package: str
    old: str  # the first cell, e.g. "`mq.KafkaAsyncProducer`", "module `im_infra.mq.factories`"
    new: str
    removed_in: str
    status: str


def renames() -> list[Rename]:
    text = NAMING.read_text(encoding="utf-8")
    table = text.split("## Renames", 1)[1]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] in ("package", "") or set(cells[0]) <= {"-"}:
            continue
        rows.append(Rename(*cells))
    assert rows, "docs/naming.md has no renames table"
    return rows


def _code(cell: str) -> str:
    found = re.search(r"`([^`]+)`", cell)
    assert found, f"no `name` in {cell!r}"
    return found.group(1)


def _dotted(name: str) -> tuple[str, str]:
    """``mq.aio.KafkaAsyncProducer`` -> (``im_infra.mq.aio``, ``KafkaAsyncProducer``)."""
    module, _, attr = name.rpartition(".")
    return f"im_infra.{module}", attr


def _public_modules(short: str) -> list[str]:
    pkg = importlib.import_module(f"im_infra.{short}")
    return [m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]


def _import_quietly(name: str) -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module(name)


DONE = [r for r in renames() if r.status == "done"]


def test_the_renames_table_is_well_formed() -> None:
    for row in renames():
        assert row.package in [*SHORTS, "examples"], row
        assert row.status in ("done", "pending"), row
        assert row.removed_in == "—" or Version(row.removed_in), row


@pytest.mark.parametrize("row", DONE, ids=lambda r: r.old)
def test_a_renamed_name_still_works_warns_and_goes_away_on_time(
    row: Rename, packages: list[Package]
) -> None:
    if row.package == "examples":
        _check_distribution_rename(row)
        return
    version = {p.short: p.version for p in packages}[row.package]
    if row.removed_in != "—":
        assert Version(version) < Version(row.removed_in), (
            f"{row.old} should have been removed in {row.removed_in} (package is {version})"
        )
    old = _code(row.old)
    if row.old.startswith("module"):
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=re.escape(old)):
            shim = importlib.import_module(old)
        new = importlib.import_module(_code(row.new))
        assert shim.__all__ and all(getattr(shim, n) is getattr(new, n) for n in shim.__all__)
    elif row.old.startswith("keyword"):
        func, keyword = re.fullmatch(r"(\w+)\((\w+)=\)", old).groups()  # type: ignore[union-attr]
        params = inspect.signature(
            getattr(_import_quietly(f"im_infra.{row.package}"), func)
        ).parameters
        assert keyword in params and "coord" in params, row
    elif old.endswith("()"):
        _check_method_rename(row)
    elif "." in old:
        module, attr = _dotted(old)
        with pytest.warns(DeprecationWarning, match=rf"{attr} is deprecated .*{row.removed_in}"):
            value = getattr(importlib.import_module(module), attr)
        new_module, new_attr = _dotted(_code(row.new))
        assert value is getattr(importlib.import_module(new_module), new_attr)
        assert attr not in getattr(importlib.import_module(module), "__all__", ())


def _check_method_rename(row: Rename) -> None:
    """``Protocol.old()`` -> ``Protocol.new()``: the Protocol (and its ``Async`` form) has the new
    method only; every public class implementing the new method keeps the old one, which warns
    and returns what the new one returns."""
    protocol, old = _code(row.old).removesuffix("()").split(".")
    new = _code(row.new).removesuffix("()").split(".")[1]
    pkg = _import_quietly(f"im_infra.{row.package}")
    for name in (protocol, f"Async{protocol}"):
        if hasattr(pkg, name):
            assert hasattr(getattr(pkg, name), new), f"{name} has no {new}()"
            assert not hasattr(getattr(pkg, name), old), f"{name} still lists {old}()"
    implementations = {
        cls
        for cls in _public_objects(row.package).values()
        if inspect.isclass(cls) and hasattr(cls, new) and not getattr(cls, "_is_protocol", False)
    }
    assert implementations, f"no public class implements {protocol}.{new}()"
    for cls in implementations:
        deprecated = getattr(cls, old, None)
        assert callable(deprecated), f"{cls.__name__}.{old}() is gone before {row.removed_in}"
        required = [
            p
            for p in list(inspect.signature(deprecated).parameters.values())[1:]
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        result = object()
        this = type("Self", (), {new: lambda _self, *_a, _r=result, **_k: _r})()
        with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated .*{row.removed_in}"):
            assert deprecated(this, *[None] * len(required)) is result, f"{cls.__name__}.{old}"


def _check_distribution_rename(row: Rename) -> None:
    """``distribution `a` installing `b``` -> one name: the distribution's commands run the module
    named like it, which is importable, and the old module is gone (no alias for the demo)."""
    distribution, module = re.findall(r"`([^`]+)`", row.old)
    wanted = distribution.replace("-", "_")
    commands = importlib.metadata.distribution(distribution).entry_points
    assert commands and all(c.value.startswith(f"{wanted}.") for c in commands), commands
    assert importlib.util.find_spec(wanted) is not None, f"{wanted} is not importable"
    assert importlib.util.find_spec(module) is None, f"{module} is still importable"


@pytest.mark.parametrize("short", SHORTS)
def test_each_package_ships_py_typed_and_an_errors_module(short: str) -> None:
    src = REPO / "packages" / f"im-infra-{short}" / "src" / "im_infra" / short
    assert (src / "py.typed").is_file()
    assert (src / "errors.py").is_file()


@pytest.mark.parametrize("short", SHORTS)
def test_one_module_name_per_concept(short: str) -> None:
    allowed = {_code(r.old) for r in renames() if r.old.startswith("module")}
    for name in _public_modules(short):
        if name in DRIFTED:
            assert f"im_infra.{short}.{name}" in allowed, (
                f"im_infra.{short}.{name}: the module for this concept is {DRIFTED[name]}.py "
                "(docs/naming.md), or list the rename there"
            )


@pytest.mark.parametrize("short", SHORTS)
def test_the_public_api_is_in_the_package_init(short: str) -> None:
    pkg = importlib.import_module(f"im_infra.{short}")
    exported = set(pkg.__all__)
    for name in pkg.__all__:
        getattr(pkg, name)  # every exported name resolves
    for module in _public_modules(short):
        if module in SEPARATE:
            continue
        gaps = KNOWN_GAPS.get(f"{short}.{module}", set())
        public = getattr(_import_quietly(f"im_infra.{short}.{module}"), "__all__", ())
        missing = {n for n in public if n not in exported} - gaps
        assert "*" in gaps or not missing, (
            f"im_infra.{short}.{module} exports {missing}, not im_infra.{short}"
        )


def _public_objects(short: str) -> dict[str, object]:
    found: dict[str, object] = {}
    for module in ["", *(f".{m}" for m in _public_modules(short))]:
        mod = _import_quietly(f"im_infra.{short}{module}")
        for name in getattr(mod, "__all__", ()):
            found[f"{short}{module}.{name}"] = getattr(mod, name)
    return found


@pytest.mark.parametrize("short", SHORTS)
def test_async_classes_are_named_async_x(short: str) -> None:
    wrong = [
        qualified
        for qualified, obj in _public_objects(short).items()
        if inspect.isclass(obj) and "Async" in obj.__name__ and not obj.__name__.startswith("Async")
    ]
    assert not wrong, f"the asyncio form of X is AsyncX (docs/naming.md): {wrong}"


@pytest.mark.parametrize("short", SHORTS)
def test_the_provider_keyword_is_coord(short: str) -> None:
    deprecated = {_code(r.old) for r in renames() if r.old.startswith("keyword")}
    for qualified, obj in _public_objects(short).items():
        if not inspect.isfunction(obj):
            continue
        for param in inspect.signature(obj).parameters.values():
            annotation = (
                param.annotation if isinstance(param.annotation, str) else repr(param.annotation)
            )
            named = param.name in ("provider", "coord_provider")
            if not (named or COORD_PROVIDER.search(annotation)) or param.name == "coord":
                continue
            if param.kind is param.VAR_KEYWORD:
                continue  # coord.pick_provider(coord, **deprecated): the helper for the rule
            if param.kind is param.POSITIONAL_OR_KEYWORD and param.name == "service":
                continue  # uid.from_coord(provider, service): the old positional form
            assert f"{obj.__name__}({param.name}=)" in deprecated, (
                f"{qualified}({param.name}=): the provider keyword is coord= (docs/naming.md)"
            )


def test_lock_errors_and_ttls_match_across_coord_and_cache() -> None:
    from im_infra import cache, coord

    for pkg in (coord, cache):
        assert "LockTimeout" in pkg.__all__ and "LockLost" in pkg.__all__
        assert issubclass(pkg.LockTimeout, TimeoutError)
        assert not issubclass(pkg.LockLost, TimeoutError)
    ttls: dict[str, Callable[..., Any]] = {
        "coord.EtcdLocker.acquire": coord.EtcdLocker.acquire,
        "coord.EtcdLocker.try_acquire": coord.EtcdLocker.try_acquire,
        "coord.EtcdLocker.acquire_async": coord.EtcdLocker.acquire_async,
        "coord.EtcdLocker.try_acquire_async": coord.EtcdLocker.try_acquire_async,
        "cache.Cache.lock": cache.Cache.lock,
        "cache.AsyncCache.lock": cache.AsyncCache.lock,
    }
    for name, method in ttls.items():
        annotation = str(inspect.signature(method).parameters["ttl"].annotation)
        assert "float" in annotation and "int" not in annotation, f"{name}(ttl: {annotation})"
