"""Telemetry: stats over the step records, Prometheus metrics, the HTML report, alerts."""
