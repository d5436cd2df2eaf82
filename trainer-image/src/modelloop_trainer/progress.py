"""Progress reporting for people, log collectors and Prometheus.

A person at a terminal gets a tqdm bar; a pod (stdout not a tty) gets one JSON object per
line, which log pipelines parse without regexes. With `--metrics-port`, gauges are served
for Prometheus from a registry of our own (created here, not at import time). Only rank 0
reports; other ranks stay quiet so that logs are not multiplied by the world size.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from prometheus_client import CollectorRegistry, Gauge, start_http_server
from tqdm import tqdm  # type: ignore[import-untyped]


class Progress:
    def __init__(
        self,
        *,
        command: str,
        enabled: bool = True,
        metrics_port: int | None = None,
        stream: TextIO | None = None,
        interactive: bool | None = None,
    ) -> None:
        self.command = command
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self._bar: Any = None
        self._gauges: dict[str, Gauge] = {}
        if enabled and metrics_port is not None:
            registry = CollectorRegistry()
            for name, doc in (
                ("step", "optimizer steps completed"),
                ("total_steps", "optimizer steps planned"),
                ("epoch", "current epoch (0-based)"),
                ("loss", "training loss (mean over the last logging interval)"),
                ("samples_per_second", "training throughput over the last logging interval"),
                ("learning_rate", "current learning rate"),
            ):
                self._gauges[name] = Gauge(f"modelloop_trainer_{name}", doc, registry=registry)
            start_http_server(metrics_port, registry=registry)

    def event(self, event: str, message: str = "", **fields: Any) -> None:
        """A milestone: loading, resuming, checkpointing, evaluating, finishing."""
        if not self.enabled:
            return
        if self.interactive:
            text = message or event
            if self._bar is not None:
                self._bar.write(text)
            else:
                print(text, file=sys.stderr, flush=True)
            return
        record = {"ts": round(time.time(), 3), "command": self.command, "event": event}
        if message:
            record["message"] = message
        record.update(fields)
        print(json.dumps(record, default=str), file=self.stream, flush=True)

    def start(self, total_steps: int, initial_step: int = 0) -> None:
        self._set("total_steps", total_steps)
        self._set("step", initial_step)
        if self.enabled and self.interactive:
            self._bar = tqdm(
                total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True
            )

    def step(
        self,
        *,
        step: int,
        epoch: int,
        loss: float,
        samples_per_second: float,
        learning_rate: float,
        log: bool,
    ) -> None:
        """Called after each optimizer step; `log` selects the steps that get a JSON line."""
        for name, value in (
            ("step", step),
            ("epoch", epoch),
            ("loss", loss),
            ("samples_per_second", samples_per_second),
            ("learning_rate", learning_rate),
        ):
            self._set(name, value)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix(loss=f"{loss:.4f}", sps=f"{samples_per_second:.1f}")
        elif log and not self.interactive:
            self.event(
                "step",
                step=step,
                epoch=epoch,
                loss=round(loss, 6),
                samples_per_second=round(samples_per_second, 2),
                learning_rate=learning_rate,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _set(self, name: str, value: float) -> None:
        gauge = self._gauges.get(name)
        if gauge is not None:
            gauge.set(value)
