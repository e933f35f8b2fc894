"""The containers of one function (server layer): its input queue, the autoscaler and the
dispatch of inputs to warm containers.

One `Pool` per function and class-parameter set. Its loop wakes on every event (an input,
an output, a container ready or gone) and at least once a second, then:
1. hands queued inputs to ready containers with room (`max_inputs` x batch size);
2. starts containers up to ceil(load / per-container target) + `buffer_containers`,
   within [`min_containers`, `max_containers`];
3. stops containers idle for `scaledown_window_s` beyond `min_containers` (the runner
   runs `@exit` first), and single-use containers after their one input.
Timeouts end the container (the input gets `timeout`); failures and timeouts are retried
per the function's `Retries`; a container that dies takes its inputs to `terminated`
(retried likewise).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from typing import Any

from ._fn_calls import InputRef
from ._fn_runner import RunnerConn, RunnerGone

log = logging.getLogger("sbx.functions")
STOP_GRACE_S = 30.0
MAX_STARTING = 4          # containers of one pool booting at once
BACKOFF_S = (0.5, 8.0)    # after a refused create (quota): first and longest wait


class Pool:
    def __init__(self, svc: Any, fn: dict[str, Any], params_b64: str | None):
        self.svc = svc
        self.fn = fn
        self.spec = fn["spec"]
        self.params_b64 = params_b64
        self.queue: collections.deque[InputRef] = collections.deque()
        self.web_waiters: collections.deque[asyncio.Future] = collections.deque()
        self.containers: dict[str, RunnerConn] = {}
        self.starting = 0
        self.wake = asyncio.Event()
        self.closed = False
        self.draining = False            # superseded by a redeploy: finish, then go
        self.task: asyncio.Task | None = None
        self.tasks: set[asyncio.Task] = set()
        self.start_tasks: set[asyncio.Task] = set()
        self.init_error: str | None = None
        self.backoff_until = 0.0
        self.backoff_s = 0.0
        self.last_demand = time.monotonic()

    # ---- sizes -------------------------------------------------------------------------
    @property
    def per_container(self) -> int:
        return int(self.spec.get("max_inputs") or 1) * int(self.spec.get("batch_max_size") or 1)

    @property
    def target(self) -> int:
        return int(self.spec.get("target_inputs") or self.spec.get("max_inputs") or 1) * int(
            self.spec.get("batch_max_size") or 1)

    def running(self) -> int:
        return sum(c.load for c in self.containers.values())

    def desired(self) -> int:
        waiting = sum(1 for f in self.web_waiters if not f.done())
        load = len(self.queue) + waiting + self.running()
        want = math.ceil(load / self.target) if load else 0
        if load:
            want += int(self.spec.get("buffer_containers") or 0)
        if self.spec.get("single_use_containers"):
            want = load
        if not self.draining:
            want = max(want, int(self.spec.get("min_containers") or 0))
        cap = self.spec.get("max_containers") or self.svc.default_max_containers
        return min(want, int(cap))

    # ---- the loop ----------------------------------------------------------------------
    def start(self) -> None:
        self.task = asyncio.create_task(self._loop())

    def poke(self) -> None:
        self.wake.set()

    def submit(self, ref: InputRef) -> None:
        self.queue.append(ref)
        self.last_demand = time.monotonic()
        self.poke()

    async def _loop(self) -> None:
        while not self.closed:
            try:
                await self._step()
            except Exception:
                log.exception("function %s: scaler step failed", self.fn["name"])
            self.wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 1.0)

    async def _step(self) -> None:
        now = time.monotonic()
        self._dispatch(now)
        for c in list(self.containers.values()):  # single-use, done: always goes
            if c.retire and c.state == "ready" and c.load == 0:
                self._spawn(self._stop_container(c))
        active = [c for c in self.containers.values() if c.state == "ready" and not c.retire]
        room = MAX_STARTING - self.starting  # a boot storm slows every boot down
        if now >= self.backoff_until and not self.closed:
            for _ in range(min(room, max(0, self.desired() - len(active) - self.starting))):
                t = self._spawn(self._start_container())
                self.start_tasks.add(t)
                t.add_done_callback(self.start_tasks.discard)
        floor = 0 if self.draining else int(self.spec.get("min_containers") or 0)
        window = float(self.spec.get("scaledown_window_s") or 60)
        idle = sorted((c for c in active if c.load == 0), key=lambda c: c.idle_since)
        excess = len(active) - max(floor, self.desired())
        for c in idle:
            if excess <= 0:
                break
            if now - c.idle_since >= window or self.draining and not self.queue:
                excess -= 1
                self._spawn(self._stop_container(c))
        if (self.draining and not self.queue and not self.web_waiters and not self.containers
                and not self.starting):
            self.closed = True
            self.svc.pool_done(self)

    def _dispatch(self, now: float) -> None:
        waiting: list[InputRef] = []
        while self.queue:
            ref = self.queue.popleft()
            if ref.call.cancelled or ref.index in ref.call.finished:
                continue
            if ref.not_before > now:
                waiting.append(ref)
                continue
            target = max((c for c in self.containers.values() if c.free > 0),
                         key=lambda c: c.free, default=None)
            if target is None:
                waiting.append(ref)
                waiting.extend(self.queue)
                self.queue.clear()
                break
            self._spawn(self._send_input(target, ref))
            target.inflight[ref.key] = ref  # counted at once, so the loop sees the load
        self.queue.extend(waiting)
        while self.web_waiters:  # web requests: a container with room
            fut = self.web_waiters[0]
            if fut.done():
                self.web_waiters.popleft()
                continue
            target = max((c for c in self.containers.values() if c.free > 0),
                         key=lambda c: c.free, default=None)
            if target is None:
                break
            self.web_waiters.popleft()
            target.web_active += 1
            fut.set_result(target)

    async def web_acquire(self, timeout_s: float) -> RunnerConn:
        """A ready container with room for one more web request (one starts if needed)."""
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self.web_waiters.append(fut)
        self.last_demand = time.monotonic()
        self.poke()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.web_release(fut.result())
            else:
                fut.cancel()
            raise

    def web_release(self, conn: RunnerConn) -> None:
        conn.web_active = max(0, conn.web_active - 1)
        if conn.load == 0:
            conn.idle_since = time.monotonic()
        self.poke()

    def _spawn(self, coro: Any) -> asyncio.Task:
        t = asyncio.create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        return t

    # ---- containers --------------------------------------------------------------------
    async def _start_container(self) -> None:
        self.starting += 1
        conn: RunnerConn | None = None
        t0 = time.monotonic()
        try:
            sid = await self.svc.create_container(self.fn, self.params_b64)
            t_created = time.monotonic()
            conn = RunnerConn(sid, max_load=self.per_container)
            startup = float(self.spec.get("startup_timeout_s") or self.spec.get("timeout_s") or 300)
            deadline = time.monotonic() + startup
            await conn.connect(self.svc.open_port, deadline, lambda: self.svc.alive(sid))
            t_connected = time.monotonic()
            spec = {k: self.spec.get(k) for k in ("module", "qualname", "serialized_b64",
                                                  "is_class", "max_inputs", "batch_max_size",
                                                  "batch_wait_ms", "web")}
            spec["params_b64"] = self.params_b64
            spec["app_functions"] = self.svc.app_functions(self.fn["app_id"])
            spec["app_id"] = self.fn["app_id"]
            await conn.send({"t": "init", "spec": spec})
            header, _ = await asyncio.wait_for(conn.recv(), max(1.0, deadline - time.monotonic()))
            if header.get("t") != "ready":
                raise _InitFailed(header.get("traceback") or f"unexpected {header.get('t')!r}")
        except BaseException as e:
            self.starting -= 1
            detail = ""
            if conn is not None:
                conn.close()
                if isinstance(e, (RunnerGone, TimeoutError)):  # what the runner printed
                    with contextlib.suppress(Exception):
                        await asyncio.sleep(0.3)  # the manager copies the last output
                        detail = await self.svc.container_exit_detail(conn.sandbox_id)
                await asyncio.shield(self.svc.terminate(conn.sandbox_id))
            if isinstance(e, asyncio.CancelledError):
                raise
            if self._transient(e):
                return
            self._init_failed(e, detail)
            return
        self.starting -= 1
        log.info("function %s: container %s booted in %.0f ms, runner listening after %.0f ms, "
                 "ready after %.0f ms", self.fn["name"], conn.sandbox_id,
                 (t_created - t0) * 1000, (t_connected - t0) * 1000,
                 (time.monotonic() - t0) * 1000)
        self.init_error = None
        self.backoff_s = 0.0
        if self.closed:  # the pool closed while this one booted: it goes at once
            conn.close()
            await asyncio.shield(self.svc.terminate(conn.sandbox_id))
            return
        conn.state = "ready"
        conn.idle_since = time.monotonic()
        self.containers[conn.sandbox_id] = conn
        conn.read_task = asyncio.create_task(self._read(conn))
        self.svc.container_started(self, conn)
        self.poke()

    def _transient(self, e: BaseException) -> bool:
        """A create refused for now (too many sandboxes, creates per minute, every fitting
        GPU held): the inputs stay queued and the pool tries again after a growing wait."""
        from ...wire import errors as E

        if not isinstance(e, (E.QuotaExceededError, E.GpuBusyError)):
            return False
        self.backoff_s = min(BACKOFF_S[1], max(BACKOFF_S[0], self.backoff_s * 2))
        self.backoff_until = time.monotonic() + self.backoff_s
        log.info("function %s: %s; trying again in %.1fs", self.fn["name"], e, self.backoff_s)
        asyncio.get_running_loop().call_later(self.backoff_s, self.poke)
        return True

    def _init_failed(self, e: BaseException, detail: str = "") -> None:
        if isinstance(e, _InitFailed):
            msg = ("the function's container failed to start: its code raised while "
                   f"loading:\n{e}")
        elif isinstance(e, TimeoutError):
            msg = (f"the function's container did not become ready in time ({e}): raise "
                   "startup_timeout= or make the module import faster")
        else:
            msg = f"the function's container could not start: {getattr(e, 'message', None) or e}"
        msg += detail
        self.init_error = msg
        log.warning("function %s: %s", self.fn["name"], msg.splitlines()[0])
        # the waiting inputs fail now rather than loop on a container that cannot start
        while self.queue:
            ref = self.queue.popleft()
            self.svc.finish(ref, "init_failure", message=msg)
        while self.web_waiters:
            fut = self.web_waiters.popleft()
            if not fut.done():
                fut.set_exception(ContainerStartError(msg))
        self.poke()

    async def _read(self, conn: RunnerConn) -> None:
        try:
            while True:
                header, body = await conn.recv()
                kind = header.get("t")
                if kind == "out":
                    self._output(conn, header, body)
                elif kind == "item":
                    ref = conn.inflight.get(str(header.get("id")))
                    if ref is not None:
                        self.svc.item(ref, body)
                elif kind == "api":
                    conn.track(self._spawn(self._api(conn, header, body)))
                elif kind == "ws_open":
                    conn.track(self._spawn(self._stream(conn, header)))
                elif kind in ("asgi_out", "asgi_end"):
                    inbox = conn.asgi.get(int(header.get("rid", -1)))
                    if inbox is not None:
                        inbox.put_nowait((header, body))
                elif kind in ("ws_msg", "ws_close"):
                    inbox = conn.streams.get(int(header.get("wid", -1)))
                    if inbox is not None:
                        inbox.put_nowait((header, body))
                elif kind == "stopped":
                    break
        except RunnerGone:
            pass
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("function %s: reading container %s", self.fn["name"], conn.sandbox_id)
        await self._container_gone(conn, "the function's container exited")

    async def _api(self, conn: RunnerConn, header: dict[str, Any], body: bytes) -> None:
        status, ctype, data = await self.svc.relay_api(self.fn, header, body)
        with contextlib.suppress(RunnerGone):
            await conn.send({"t": "api_resp", "rid": header.get("rid"), "status": status,
                             "content_type": ctype}, data)

    async def _stream(self, conn: RunnerConn, header: dict[str, Any]) -> None:
        wid = int(header.get("wid", -1))
        inbox = conn.streams[wid] = asyncio.Queue()

        async def emit(frame: dict, data: bytes) -> None:
            await conn.send({**frame, "wid": wid}, data)
        try:
            await self.svc.relay_stream(self.fn, str(header.get("path", "")), inbox, emit)
        except RunnerGone:
            pass
        finally:
            conn.streams.pop(wid, None)

    def _output(self, conn: RunnerConn, header: dict[str, Any], body: bytes) -> None:
        key = str(header.get("id"))
        ref = conn.inflight.pop(key, None)
        timer = conn.timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if ref is None:
            return
        conn.served += 1
        if conn.load == 0:
            conn.idle_since = time.monotonic()
        if self.spec.get("single_use_containers"):
            conn.retire = True
        status = header.get("status")
        if status == "success":
            self.svc.finish(ref, "success", data=body)
        elif status == "cancelled":
            self.svc.finish(ref, "cancelled", message="the function call was cancelled")
        else:
            self._failed(ref, "failure", message=header.get("message"),
                         traceback=header.get("traceback"), data=body or None)
        self.poke()

    def _failed(self, ref: InputRef, status: str, **out: Any) -> None:
        retries = self.spec.get("retries")
        if retries and ref.attempt <= int(retries["max_retries"]) and not ref.call.cancelled:
            from ...wire import RetryPolicy

            delay = RetryPolicy(**retries).delay_s(ref.attempt)
            ref.not_before = time.monotonic() + delay
            log.info("function %s: input %s %s; retry %d in %.1fs", self.fn["name"], ref.key,
                     status, ref.attempt, delay)
            self.queue.append(ref)
            asyncio.get_running_loop().call_later(delay, self.poke)
        else:
            self.svc.finish(ref, status, **out)

    async def _send_input(self, conn: RunnerConn, ref: InputRef) -> None:
        old_key = ref.key
        ref.attempt += 1
        conn.inflight.pop(old_key, None)
        conn.inflight[ref.key] = ref
        conn.idle_since = time.monotonic()
        timeout = float(self.spec.get("timeout_s") or 300)
        loop = asyncio.get_running_loop()
        conn.timers[ref.key] = loop.call_later(timeout, self._timed_out, conn, ref.key)
        await self.svc.input_started(ref)
        try:
            await conn.send({"t": "input", "id": ref.key, "method": ref.call.method}, ref.args)
        except RunnerGone:
            pass  # the reader sees the container go and fails or retries its inputs

    def _timed_out(self, conn: RunnerConn, key: str) -> None:
        ref = conn.inflight.pop(key, None)
        conn.timers.pop(key, None)
        if ref is None:
            return
        timeout = self.spec.get("timeout_s") or 300
        self._failed(ref, "timeout", message=f"{self.fn['name']} ran past its timeout of "
                     f"{timeout:g}s: its container was stopped (raise timeout= if it needs "
                     "longer)")
        self._spawn(self._kill(conn, "an input timed out"))

    async def cancel_input(self, ref: InputRef, terminate: bool) -> None:
        for conn in list(self.containers.values()):
            if ref.key in conn.inflight:
                conn.inflight.pop(ref.key, None)
                timer = conn.timers.pop(ref.key, None)
                if timer is not None:
                    timer.cancel()
                if terminate:
                    await self._kill(conn, "its input was cancelled")
                else:
                    with contextlib.suppress(RunnerGone):
                        await conn.send({"t": "cancel", "id": ref.key})
        self.poke()

    async def _kill(self, conn: RunnerConn, why: str) -> None:
        await self._container_gone(conn, f"the function's container was stopped: {why}")

    async def _container_gone(self, conn: RunnerConn, why: str) -> None:
        if self.containers.pop(conn.sandbox_id, None) is None and conn.state == "dead":
            return
        conn.close()
        lost = list(conn.inflight.values())
        conn.inflight.clear()
        # shielded: a cancelled caller (the pool closing) must not leave the sandbox behind
        detail = await asyncio.shield(self._remove(conn, bool(lost)))
        for ref in lost:
            self._failed(ref, "terminated", message=f"{why}{detail}")
        self.poke()

    async def _remove(self, conn: RunnerConn, want_detail: bool) -> str:
        detail = await self.svc.container_exit_detail(conn.sandbox_id) if want_detail else ""
        await self.svc.terminate(conn.sandbox_id)
        self.svc.container_stopped(self, conn)
        return detail

    async def _stop_container(self, conn: RunnerConn) -> None:
        """Scale-down: `stop` lets the runner run @exit, then the sandbox goes."""
        conn.state = "stopping"
        try:
            await conn.send({"t": "stop"})
            if conn.read_task is not None:
                await asyncio.wait_for(asyncio.shield(conn.read_task), STOP_GRACE_S)
        except (RunnerGone, asyncio.TimeoutError):
            pass
        await self._container_gone(conn, "the function's container was stopped")

    async def close(self, why: str) -> None:
        """Stop everything: queued and running inputs end as cancelled."""
        self.closed = True
        if self.task is not None:
            self.task.cancel()
        booting = list(self.start_tasks)  # boots end first (each removes its sandbox)
        for t in booting:
            t.cancel()
        await asyncio.gather(*booting, return_exceptions=True)
        while self.queue:
            self.svc.finish(self.queue.popleft(), "cancelled", message=why)
        while self.web_waiters:
            fut = self.web_waiters.popleft()
            if not fut.done():
                fut.set_exception(ContainerStartError(why))
        for conn in list(self.containers.values()):
            for ref in list(conn.inflight.values()):
                self.svc.finish(ref, "cancelled", message=why)
            conn.inflight.clear()
        await asyncio.gather(*(self._stop_container(c) for c in list(self.containers.values())),
                             return_exceptions=True)
        rest = [t for t in self.tasks if t is not asyncio.current_task()]
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def stats(self) -> dict[str, int]:
        return {"containers": len(self.containers) + self.starting, "queued": len(self.queue),
                "running": self.running()}


class _InitFailed(Exception):
    pass


class ContainerStartError(Exception):
    """No container can serve: it failed to start (the message says why), or the pool
    closed."""
