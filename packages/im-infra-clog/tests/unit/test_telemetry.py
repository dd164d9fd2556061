from __future__ import annotations

from importlib import metadata

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from im_infra.clog import telemetry


def test_meter_is_named_and_versioned_after_the_component(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    monkeypatch.setattr("opentelemetry.metrics.get_meter", provider.get_meter)
    m = telemetry.meter("clog")
    m.create_counter("im_infra.clog.test").add(2)
    data = reader.get_metrics_data()
    assert data is not None
    (scope,) = [sm for rm in data.resource_metrics for sm in rm.scope_metrics]
    assert scope.scope.name == "im_infra.clog"
    assert scope.scope.version == metadata.version("im-infra-clog")


def test_meter_without_distribution_metadata_has_no_version(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    monkeypatch.setattr("opentelemetry.metrics.get_meter", provider.get_meter)
    m = telemetry.meter("no-such-component")
    m.create_counter("x").add(1)
    data = reader.get_metrics_data()
    assert data is not None
    (scope,) = [sm for rm in data.resource_metrics for sm in rm.scope_metrics]
    assert scope.scope.name == "im_infra.no-such-component"
    assert not scope.scope.version


def test_closing_mixins_close_once_per_exit() -> None:
    import asyncio

    from im_infra.clog.lifecycle import AsyncClosing, Closing

    class Res(Closing):
        closed = 0

        def close(self) -> None:
            self.closed += 1

    class ARes(AsyncClosing):
        closed = 0

        async def close(self) -> None:
            self.closed += 1

    r = Res()
    with r as entered:
        assert entered is r
    assert r.closed == 1

    async def main() -> int:
        a = ARes()
        async with a as entered:
            assert entered is a
        return a.closed

    assert asyncio.run(main()) == 1
