"""Shared fixtures of the monitoring tests: the catalogue of metrics the apps export."""

from __future__ import annotations

import importlib
import re

import pytest

# Every module that defines Prometheus metrics (core's request and job metrics, then each service's own).
METRIC_MODULES = ("mlstack_core.metrics", "serving.metrics", "etl.services", "training.metrics")
SUFFIXES = {
    "counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",), "summary": ("_sum", "_count"),
}
# Label lists of aggregations and vector matching: label names, not metrics.
_LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


@pytest.fixture(scope="session")
def exported_series() -> set[str]:
    """Names of every series the apps export (counters with _total, histograms with _bucket/_sum/_count)."""
    from prometheus_client.metrics import MetricWrapperBase

    names: set[str] = set()
    for module_name in METRIC_MODULES:
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                for family in value.describe():
                    names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


@pytest.fixture(scope="session")
def metric_names_in():
    """A function giving the metric names a PromQL expression reads (strings, matchers, label lists removed)."""

    def names(expr: str) -> set[str]:
        text = re.sub(r'"[^"]*"', '""', expr)
        text = re.sub(r"\{[^}]*\}", "", text)
        text = re.sub(r"\[[^\]]*\]", "", text)
        text = _LABEL_LISTS.sub("", text)
        tokens = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()", text))
        # Every metric of this stack has an underscore in its name; Prometheus's own "up" is the exception.
        return {t for t in tokens if "_" in t and t not in {"group_left", "group_right"}} | ({"up"} & tokens)

    return names
