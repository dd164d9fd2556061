"""im_infra.clog: Context-aware structured JSON logging (service and trace_id on every line), on loguru."""

__all__: list[str] = []
