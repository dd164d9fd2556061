"""Renamed public names (docs/naming.md) still work for one minor version, with a warning."""

import importlib

import pytest

from im_infra import cache, coord


@pytest.mark.parametrize(
    ("old", "new"), [("LockAcquireTimeout", "LockTimeout"), ("LockNotOwned", "LockLost")]
)
@pytest.mark.parametrize("module", ["im_infra.cache", "im_infra.cache.errors"])
def test_old_lock_error_names_are_deprecated_aliases(module: str, old: str, new: str) -> None:
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated .*0\.2\.0.*use {new}"):
        alias = getattr(mod, old)
    assert alias is getattr(cache, new)
    assert old not in cache.__all__


def test_lock_errors_have_coords_names_and_bases() -> None:
    assert issubclass(cache.LockTimeout, TimeoutError) and issubclass(
        coord.LockTimeout, TimeoutError
    )
    assert issubclass(cache.LockLost, cache.LockError)
    with pytest.warns(DeprecationWarning, match="LockAcquireTimeout"):
        old: type[BaseException] = getattr(cache, "LockAcquireTimeout")  # noqa: B009
    with pytest.raises(old):  # an old ``except`` clause still catches the new error
        raise cache.LockTimeout("x")
