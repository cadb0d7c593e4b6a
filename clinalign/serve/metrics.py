"""Prometheus metrics of the guarded server, on a registry of its own (one per app).

Names are prefixed ``clinalign_``; where vLLM has a metric for the same thing, its name is used, so
that dashboards built for vLLM read this server too. Labels take values from fixed sets only (tier,
action, rule, red-flag category, PHI type, error kind): never text, never an id, never PHI.
Review figures come from the store at scrape time, since reviews happen in the web app's process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from clinalign import monitor
from clinalign.store import Interaction, Store

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)


class _FromStore:
    """Gauges read from the store when Prometheus scrapes: the review queue and override rates."""

    def __init__(self, store: Store):
        self.store = store

    def collect(self):
        with self.store.reading() as session:
            held = session.scalar(select(func.count()).where(Interaction.status == "held"))
            rates = monitor.override_rates(session)
        queue = GaugeMetricFamily("clinalign_review_queue_length", "Tier 2 answers waiting for a clinician.")
        queue.add_metric([], held)
        yield queue
        override = GaugeMetricFamily(
            "clinalign_override_rate", "Share of answers clinicians overrode, by tier.", labels=["tier"]
        )
        for tier, rate in rates.items():
            if rate["rate"] is not None:
                override.add_metric([str(tier)], rate["rate"])
        yield override


class Metrics:
    def __init__(self, store: Store):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "clinalign_requests", "Chat requests answered, by tier and action.", ["tier", "action"], registry=r
        )
        self.trips = Counter(
            "clinalign_guardrail_trips",
            "Guardrail checks that fired, by rule and category.",
            ["rule", "category"],
            registry=r,
        )
        self.escalations = Counter(
            "clinalign_escalations", "Requests escalated to emergency care (tier 3).", registry=r
        )
        self.errors = Counter("clinalign_errors", "Requests refused or failed, by kind.", ["kind"], registry=r)
        self.rail_seconds = Histogram(
            "clinalign_guardrail_seconds",
            "Time spent in the input and output rails.",
            ["rails"],
            registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
        )
        self.latency = Histogram(
            "vllm:e2e_request_latency_seconds", "End-to-end request latency.", registry=r, buckets=LATENCY_BUCKETS
        )
        self.first_token = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to the first released token (streaming).",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prompt tokens processed.", registry=r)
        self.generation_tokens = Counter("vllm:generation_tokens", "Tokens generated.", registry=r)
        r.register(_FromStore(store))

    def answered(self, tier: int, action: str, reasons: list[dict], escalate: bool) -> None:
        self.requests.labels(str(tier), action).inc()
        for reason in reasons:
            self.trips.labels(reason["rule"], reason.get("category", "")).inc()
        if escalate:
            self.escalations.inc()
