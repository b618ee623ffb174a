"""The daemon: wires config -> supervisors -> writer -> buffer -> dispatchers -> sinks.

Lifecycle: open the buffer, start sinks and sources, notify systemd READY,
then every second refresh the buffer stats (metrics, status file, the status
page's tick: one status computed for both) and ping the watchdog. SIGHUP
reloads the config (an invalid one keeps the old config running and says
why); SIGTERM/SIGINT stop gracefully: sources first, then a final flush of
the writer, then the sinks. Nothing committed is ever lost
across a reload or a stop: it stays in the buffer for the next dispatcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from gateway import __version__, loop_errors, scheduling
from gateway.aio import cancel_and_wait
from gateway.buffer import AsyncBuffer
from gateway.clock import clock_synchronized
from gateway.config import Config, ConfigError, load_config
from gateway.dispatch import SinkDispatcher
from gateway.downsample import Downsampler, DownsampleState
from gateway.fleet.health import config_digest
from gateway.fleet.identity import Identity, load_identity
from gateway.liveness import Liveness
from gateway.metrics import Metrics
from gateway.routing_catalogue import build_routes
from gateway.sdnotify import Notifier
from gateway.sink import Sink
from gateway.supervisor import SourceSupervisor
from gateway.web.history import SeriesHistory
from gateway.web.server import WebServer, start_web
from gateway.writer import BufferWriter

if TYPE_CHECKING:
    from gateway.fleet.agent import FleetAgent

log = logging.getLogger("gateway.daemon")

STATUS_FILE = "status.json"
STATUS_EVERY_S = 1.0
SHUTDOWN_DRAIN_S = 3.0


GC_THRESHOLDS = (10_000, 10, 10)  # Python's default is (700, 10, 10)


def tune_gc() -> None:
    """Fewer cyclic-GC passes for a daemon that allocates frames all day (``gateway run`` calls it).

    What is alive after start-up (modules, the config, profiles) is frozen out of
    the collector's scans (``gc.freeze``), and the first generation is collected
    every 10,000 allocations instead of 700. Frames, tuples and dicts are freed
    by reference counting anyway; the cycles the collector is for are rare here.
    Measured with bench/bench_load.py (3 interleaved runs): 7.4 -> 6.7 us of CPU
    per value at 100 x 100 and 3.7 -> 3.4 at 100 x 500, RSS unchanged; the GC
    had taken ~3.5 % of the daemon's CPU at 100 x 500 (125 passes, 145 ms in 20 s).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics | None = None,
        notifier: Notifier | None = None,
        serve_metrics: bool = True,
        serve_web: bool | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.notifier = notifier or Notifier()
        self.serve_metrics = serve_metrics
        self.serve_web = serve_metrics if serve_web is None else serve_web  # tests that serve no metrics: no page
        self.history = SeriesHistory(step_s=config.base.web.history_step)  # the status page's recent values
        self.web: WebServer | None = None
        self.buffer: AsyncBuffer | None = None
        self.writer: BufferWriter | None = None
        self.supervisors: dict[str, SourceSupervisor] = {}
        self.dispatchers: dict[str, SinkDispatcher] = {}
        self._source_tasks: dict[str, asyncio.Task[None]] = {}
        self._sink_tasks: dict[str, asyncio.Task[None]] = {}
        self._writer_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self.started_ns = time.time_ns()
        self.ready = asyncio.Event()
        self.clock_check: Callable[[], bool | None] = clock_synchronized
        self.clock_synchronized: bool | None = None
        self.liveness = Liveness(stall_after_s=config.base.gateway.stall_timeout)
        self.stalled: str | None = None  # why data has stopped moving (then the watchdog is not fed)
        self.reloads = {"ok": 0, "invalid": 0}  # in the status: a reload's outcome is observable
        self._clock_known = True  # so that "unknown" at the first check is logged once
        # Fleet (gateway/fleet/, docs/fleet.md): who this gateway is, and its status to the control post.
        self.identity: Identity | None = None
        self.fleet: FleetAgent | None = None  # imported only with a [fleet] section: aiomqtt costs memory
        self._phase_before: float | None = None

    # --- public control -----------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload_requested.set()

    @property
    def state_dir(self) -> Path:
        return self.config.base.gateway.state_dir

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop_errors.install(loop)  # a stale MQTT socket after a freeze is not a traceback (gateway/loop_errors.py)
        installed: list[signal.Signals] = []
        for sig, handler in ((signal.SIGTERM, self.request_stop), (signal.SIGINT, self.request_stop),
                             (signal.SIGHUP, self.request_reload)):  # fmt: skip
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, handler)
                installed.append(sig)
        try:
            await self._start()
            self.notifier.ready(f"{len(self.supervisors)} sources, {len(self.dispatchers)} sinks")
            self.ready.set()
            log.info(
                "gateway %s (site %s) running: %d sources, sinks %s, buffer %s",
                self.config.gateway_name,
                self.config.site,
                len(self.supervisors),
                ", ".join(self.dispatchers) or "none",
                self.config.buffer_path,
            )
            await self._main_loop()
        finally:
            self.notifier.stopping()
            await self._shutdown()
            for sig in installed:
                loop.remove_signal_handler(sig)

    # --- start / stop -------------------------------------------------------

    async def _start(self) -> None:
        cfg = self.config.base
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._start_identity()
        self.metrics.info.labels(__version__, self.config.site, self.config.gateway_name).set(1)
        if self.serve_metrics and cfg.metrics.enabled:
            try:
                self.metrics.serve(cfg.metrics.listen)
            except OSError as exc:
                log.error("cannot serve metrics on %s: %s; running without them", cfg.metrics.listen, exc)
        self.buffer = await AsyncBuffer.open(
            self.config.buffer_path, max_bytes=cfg.buffer.max_bytes, overflow=cfg.buffer.overflow, sync=cfg.buffer.sync
        )
        self.writer = BufferWriter(
            self.buffer,
            flush_interval_s=cfg.buffer.flush_interval,
            flush_max_readings=cfg.buffer.flush_max_readings,
            metrics=self.metrics,
            on_commit=self._committed,
            on_commit_failed=self.liveness.commit_failed,  # is data still moving? (gateway/liveness.py)
        )
        self._writer_task = asyncio.create_task(self.writer.run(), name="buffer-writer")
        await self._start_sinks()
        self._start_sources()
        if self.serve_web:
            self.web = await start_web(config=self.config, status=self.status, history=self.history,
                                       metrics=self.metrics)  # fmt: skip
        self._start_fleet()

    # --- fleet: identity, poll phase, status to the control post (docs/fleet.md) -------------

    def _start_identity(self) -> None:
        self.identity = load_identity(self.state_dir)
        phase = self.config.base.gateway.poll_phase
        self._phase_before = scheduling.set_phase(self.identity.phase() if phase == "auto" else phase)

    def _start_fleet(self) -> None:
        settings = self.config.base.fleet
        if settings is None or self.identity is None or self.writer is None:
            return
        from gateway.fleet.agent import FleetAgent

        self.fleet = FleetAgent(
            settings,
            site=self.config.site,
            name=self.config.gateway_name,
            identity=self.identity,
            config_digest=config_digest(self.config.path),
            metrics=self.metrics,
        )
        writer = self.writer
        self.fleet.start(self.status, lambda readings: writer.emit(readings, wait_commit=False))

    async def _stop_fleet(self) -> None:
        try:
            if self.fleet is not None:
                await self.fleet.stop(self.status())
        finally:
            if self._phase_before is not None:
                scheduling.set_phase(self._phase_before)  # the process may run another daemon (tests, demo)
                self._phase_before = None

    async def _start_sinks(self) -> None:
        assert self.buffer is not None
        names = [s.config.sink_name for s in self.config.sinks if s.config.enabled]
        removed = await self.buffer.set_sinks(names)
        for name in removed:
            log.warning("sink %s is no longer configured: its pending readings will not be sent to it", name)
        routes = build_routes(self.config)
        for loaded in self.config.sinks:
            if not loaded.config.enabled:
                continue
            sink: Sink = loaded.sink_class(
                loaded.config, site=self.config.site, gateway=self.config.gateway_name, state_dir=self.state_dir
            )
            downsampler = None
            if loaded.config.downsample is not None:
                state = DownsampleState(self.state_dir / f"downsample-{quote(sink.name, safe='')}.json")
                downsampler = Downsampler(loaded.config.downsample, state)
            dispatcher = SinkDispatcher(
                sink, self.buffer, metrics=self.metrics, route=routes[sink.name], downsampler=downsampler
            )
            self.dispatchers[sink.name] = dispatcher
            self._sink_tasks[sink.name] = asyncio.create_task(dispatcher.run(), name=f"sink:{sink.name}")

    def _start_sources(self) -> None:
        assert self.writer is not None
        for loaded in self.config.sources:
            if not loaded.config.enabled:
                continue
            supervisor = SourceSupervisor(
                loaded,
                site=self.config.site,
                gateway=self.config.gateway_name,
                state_dir=str(self.state_dir),
                writer=self.writer,
                metrics=self.metrics,
            )
            self.supervisors[loaded.config.name] = supervisor
            if self.serve_web and self.config.base.web.enabled:  # no page, no hot-path hook and no history
                supervisor.normaliser.observer = self.history.observer(loaded.config.name)
            self._source_tasks[loaded.config.name] = asyncio.create_task(
                supervisor.run(), name=f"source:{loaded.config.name}"
            )

    async def _stop_sources(self) -> None:
        await _cancel_all(self._source_tasks)
        self.supervisors.clear()

    async def _stop_sinks(self) -> None:
        await _cancel_all(self._sink_tasks)
        self.dispatchers.clear()

    async def _shutdown(self) -> None:
        await self._stop_fleet()  # says "stopped" first: a slow drain below must not read as a crash
        await self._stop_sources()
        if self._writer_task is not None:
            self._writer_task.cancel()  # the writer flushes its queue on cancellation
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
        await self._drain_for(SHUTDOWN_DRAIN_S)
        await self._stop_sinks()
        if self.buffer is not None:
            with contextlib.suppress(Exception):
                self.metrics.buffer_collector.stats = await self.buffer.stats()
                await self._write_status()
            await self.buffer.close()
            self.buffer = None
        if self.web is not None:
            await self.web.close()
            self.web = None
        log.info("gateway stopped")

    async def _drain_for(self, seconds: float) -> None:
        """On a clean stop, give healthy sinks a moment to take what was just committed."""
        if self.buffer is None:
            return
        deadline = time.monotonic() + seconds
        self._notify_sinks()
        while time.monotonic() < deadline:
            try:
                stats = await self.buffer.stats()
            except Exception:
                return
            pending = [
                n
                for n, s in stats.sinks.items()
                if s.pending
                and n in self.dispatchers
                and not self.dispatchers[n].failing
                # A downsampling sink holds the raw readings of its open windows: never drained.
                and self.dispatchers[n].downsampler is None
            ]
            if not pending:
                return
            await asyncio.sleep(0.05)

    def _committed(self) -> None:
        self.liveness.committed()
        self._notify_sinks()

    def _notify_sinks(self) -> None:
        for dispatcher in list(self.dispatchers.values()):  # a reload may swap them meanwhile
            dispatcher.notify()

    # --- main loop: status, watchdog, reload ----------------------------------

    async def _main_loop(self) -> None:
        watchdog_every = self.notifier.watchdog_interval_s()
        last_watchdog = 0.0
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STATUS_EVERY_S):
                    await self._wait_event()
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                await self.reload()
            self._check_clock()
            self._check_liveness()
            assert self.buffer is not None
            try:
                # Also proves that the loop and the buffer thread are alive, so the
                # watchdog ping below is earned, not sent by a wedged process.
                async with asyncio.timeout(30):
                    self.metrics.buffer_collector.stats = await self.buffer.stats()
                await self._publish_status()
            except Exception:
                log.exception("cannot read buffer stats")
                continue
            if self.stalled is not None:
                continue  # data has stopped moving: let systemd's watchdog restart us
            if watchdog_every is not None and time.monotonic() - last_watchdog >= watchdog_every:
                self.notifier.watchdog()
                last_watchdog = time.monotonic()

    def _check_liveness(self) -> None:
        stalled = self.liveness.stuck(
            writer_task=self._writer_task, sink_tasks=self._sink_tasks, dispatchers=self.dispatchers
        )
        if stalled is not None and self.stalled is None:
            log.error(
                "data has stopped moving: %s; no longer feeding the systemd watchdog, so systemd restarts the "
                "gateway (gateway.stall_timeout = %g s)",
                stalled,
                self.liveness.stall_after_s,
            )
        elif stalled is None and self.stalled is not None:
            log.warning("data is moving again; feeding the watchdog again")
        self.stalled = stalled

    def _check_clock(self) -> None:
        synced = self.clock_check()
        # -1 says "cannot tell" (e.g. adjtimex refused by a sandbox and no timesyncd marker): an
        # absent sample would look like a healthy gateway to an alert on == 0.
        self.metrics.clock_synchronized.set(-1 if synced is None else 1 if synced else 0)
        if synced is False and self.clock_synchronized is not False:
            log.warning(
                "the system clock is not synchronised (no NTP yet?): readings are timestamped with it and may be "
                "wrong until it is. Check 'timedatectl' and the uplink; the gateway keeps running"
            )
        elif synced is None and self._clock_known:
            log.warning(
                "cannot tell whether the system clock is synchronised (adjtimex refused, e.g. by ProtectClock, "
                "and no /run/systemd/timesync/synchronized): status and gateway_clock_synchronized say unknown (-1)"
            )
        elif synced and self.clock_synchronized is False:
            log.warning("the system clock is synchronised again")
        elif synced is not None and not self._clock_known:
            log.warning("the clock check answers again: synchronised=%s", synced)
        self._clock_known = synced is not None
        self.clock_synchronized = synced

    async def _wait_event(self) -> None:
        stop = asyncio.create_task(self._stop.wait())
        reload = asyncio.create_task(self._reload_requested.wait())
        try:
            await asyncio.wait({stop, reload}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            reload.cancel()

    async def reload(self) -> bool:
        """Reload the config file. Returns False (and keeps the old config) if it is invalid."""
        path = self.config.path
        if path is None:
            log.warning("reload requested but the config did not come from a file; nothing to reload")
            return False
        self.notifier.reloading()
        self.notifier.watchdog()  # a reload stops and starts every sink: start it with a fresh watchdog period
        try:
            new = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            self.metrics.config_reloads.labels("invalid").inc()
            self.reloads["invalid"] += 1
            log.error("new config is invalid; KEEPING THE OLD CONFIG RUNNING. Fix these and reload again:\n%s", exc)
            self.notifier.ready("reload failed: invalid config, old config kept")
            return False
        old = self.config.base
        for what, before, after in (
            ("buffer", old.buffer, new.base.buffer),
            ("metrics", old.metrics, new.base.metrics),
            ("web", old.web, new.base.web),
            ("gateway.state_dir", old.gateway.state_dir, new.base.gateway.state_dir),
            ("gateway.name", old.gateway.name, new.base.gateway.name),
            ("gateway.poll_phase", old.gateway.poll_phase, new.base.gateway.poll_phase),
            ("fleet", old.fleet, new.base.fleet),
        ):
            if before != after:
                log.warning("%s settings changed: they take effect at the next restart, not on reload", what)
        # Keep the running buffer and metrics settings; swap sources and sinks.
        merged = new.base.model_copy(
            update={"buffer": old.buffer, "metrics": old.metrics, "web": old.web, "fleet": old.fleet,
                    "gateway": new.base.gateway.model_copy(update={"state_dir": old.gateway.state_dir,
                                                                   "name": old.gateway.name,
                                                                   "poll_phase": old.gateway.poll_phase})}
        )  # fmt: skip
        await self._stop_sources()
        for name in {s.config.name for s in self.config.sources} - {s.config.name for s in new.sources}:
            self.history.forget_source(name)
        assert self.writer is not None
        await self.writer.flush()
        await self._stop_sinks()
        self.config = Config(path=new.path, base=merged, sources=new.sources, sinks=new.sinks)
        await self._start_sinks()
        self._start_sources()
        self.metrics.config_reloads.labels("ok").inc()
        self.reloads["ok"] += 1
        log.info("config reloaded: %d sources, sinks %s", len(self.supervisors), ", ".join(self.dispatchers))
        self.notifier.ready(f"reloaded: {len(self.supervisors)} sources, {len(self.dispatchers)} sinks")
        return True

    def status(self) -> dict[str, Any]:
        stats = self.metrics.buffer_collector.stats
        return {
            "version": __version__,
            "pid": os.getpid(),
            "site": self.config.site,
            "gateway": self.config.gateway_name,
            "config": str(self.config.path) if self.config.path else None,
            "started_ns": self.started_ns,
            "identity": self.identity.id if self.identity else None,
            "poll_phase": round(scheduling.phase(), 4),
            "fleet": self.fleet.summary() if self.fleet is not None else None,
            "clock_synchronized": "unknown" if self.clock_synchronized is None else self.clock_synchronized,
            "updated_ns": time.time_ns(),
            "stalled": self.stalled,
            "reloads": dict(self.reloads),
            "sources": {name: s.status() for name, s in self.supervisors.items()},
            "sinks": {name: d.status() for name, d in self.dispatchers.items()},
            "buffer": asdict(stats) if stats is not None else None,
            "writer": (
                {"pending_commit": self.writer.pending, "commit_failed": self.writer.commit_failed_total}
                if self.writer is not None
                else None
            ),
        }

    async def _publish_status(self) -> None:
        """The status of this second, computed once: the status page's tick and status.json share it."""
        status = self.status()
        if self.web is not None:
            self.web.tick(status)  # before any await: the page never waits for the file
        await self._write_status(status)

    async def _write_status(self, status: dict[str, Any] | None = None) -> None:
        # Compact: with indent json uses its pure-Python encoder, 5-14 % of the daemon at 100 sources.
        text = json.dumps(self.status() if status is None else status, separators=(",", ":"), default=str)
        await asyncio.to_thread(_atomic_write, self.state_dir / STATUS_FILE, text)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


async def _cancel_all(tasks: dict[str, asyncio.Task[None]]) -> None:
    errors = await cancel_and_wait(tasks, logger=log)
    for name, exc in errors.items():
        log.error("task %s ended with an error", name, exc_info=exc)
    tasks.clear()
