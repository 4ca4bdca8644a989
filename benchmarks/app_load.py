"""Dashboard under load: N sessions at once through a real Bokeh/Panel server (localhost only).

    python benchmarks/app_load.py [--sessions 8] [--steps 10] [--browser] [--prior tiny] [--out DIR]

The server runs in this process (``pn.serve(..., threaded=True)``, warmed up like ``panel serve --warm``),
so the sessions' server-side states can be watched.  Clients speak the Bokeh websocket protocol as a browser does
(connect, pull the document, say "document ready", read every update) without rendering; ``--browser`` makes one of them a headless Chromium
page.  Measured:

* time to Ready of one session alone, and of each of N sessions opened at once (request → case in place);
* a variable switch on a live session (server time of the switch);
* Run: seconds to the first x̂0 and per run alone; then N runs queued at once (behind a job that holds the
  queue until the next step is done): they must start in submission order; one queued run is stopped and
  one client disconnects (a closed tab) — both must leave the queue, and every other run must finish (no
  request lost);
* resident memory of the server process: idle, after 1 session, after N sessions.

Writes ``app_load.json`` and ``app_load.md`` (command, machine, date) to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["LoadServer", "run_load", "rss_mb"]


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux ``/proc``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) / 1024.0
    return float("nan")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoadServer:
    """The dashboard served in this process on a free localhost port (tests and this benchmark)."""

    def __init__(self, warm: bool = True) -> None:
        import panel as pn

        from zssd_app.app import SESSIONS, create_app

        self.sessions = SESSIONS
        if warm:  # as `panel serve --warm`: the prior, catalog and default case are cached before anyone comes
            create_app()
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/app"
        self.server = pn.serve({"app": create_app}, port=self.port, address="127.0.0.1", threaded=True, show=False,
                               websocket_origin=[f"127.0.0.1:{self.port}"], check_unused_sessions_milliseconds=250,
                               unused_session_lifetime_milliseconds=500, title="ZSSD Explorer")
        deadline = time.monotonic() + 60
        while not getattr(self.server, "_started", True) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)

    def stop(self) -> None:
        try:
            self.server.stop()
        except Exception:  # noqa: BLE001 - shutting down
            pass

    def call(self, sid: str, fn, timeout: float = 30.0):
        """Run ``fn(state)`` on the session's event loop (with its document lock) and return its result."""
        state, doc, _ = self.sessions[sid]
        done, box = threading.Event(), {}

        def cb():
            try:
                box["value"] = fn(state)
            except BaseException as e:  # noqa: BLE001 - handed back to the caller
                box["error"] = e
            finally:
                done.set()
        doc.add_next_tick_callback(cb)
        if not done.wait(timeout):
            raise TimeoutError(f"session {sid}: the event loop did not run the call within {timeout} s")
        if "error" in box:
            raise box["error"]
        return box.get("value")


def _is_ready(state) -> bool:
    return state.case is not None and state._pending is None and state.status_text.startswith("Ready")


class HeadlessClient:
    """A browser-less client of the dashboard: the Bokeh websocket protocol as a browser speaks it (connect,
    pull the document, then read every update the server sends) without rendering anything.

    Bokeh's own ``pull_session`` client never says "document ready": the server then keeps callbacks of
    the session pending (measured: Bokeh's expiration-block count stays above zero) and the session never
    expires after a disconnect.  This client says it once the document arrives, as BokehJS does.
    """

    def __init__(self, url: str, timeout: float = 180.0, session_id: str | None = None) -> None:
        from bokeh.util.token import generate_jwt_token, generate_session_id

        self.id = session_id or generate_session_id()
        self._token = generate_jwt_token(self.id)
        self._ws_url = url.replace("http://", "ws://").rstrip("/") + "/ws"
        self.messages = 0
        self._loop = None
        self._socket = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="zssd-load-client")
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"no connection to {url} within {timeout} s")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        import asyncio

        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        from bokeh.client.websocket import WebSocketClientConnectionWrapper
        from bokeh.protocol import Protocol
        from tornado.websocket import websocket_connect

        try:
            sock = await websocket_connect(self._ws_url, subprotocols=["bokeh", self._token],
                                           max_message_size=512 * 1024 * 1024)
            self._socket = sock
            for _ in range(3):  # the server's ACK (header, metadata, content) says it is ready to listen
                if await sock.read_message() is None:
                    raise ConnectionError("the server closed the websocket before its ACK")
            await Protocol().create("PULL-DOC-REQ").send(WebSocketClientConnectionWrapper(sock))
        except BaseException as e:  # noqa: BLE001 - handed to the opening thread
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        ready_sent = False
        while True:
            msg = await sock.read_message()
            if msg is None:
                return
            self.messages += 1
            if not ready_sent and isinstance(msg, str) and '"PULL-DOC-REPLY"' in msg:
                # as BokehJS does once the page is rendered: Panel runs its on-load work on this event
                await _document_ready().send(WebSocketClientConnectionWrapper(sock))
                ready_sent = True

    def close(self) -> None:
        """Disconnect (a closed tab); returns at once, the server notices within its session-check interval."""
        if self._loop is not None and self._socket is not None:
            self._loop.call_soon_threadsafe(self._socket.close)


def _document_ready():
    """The PATCH-DOC message a browser sends when the document has been rendered (``document_ready``)."""
    from bokeh.document import Document
    from bokeh.document.events import MessageSentEvent
    from bokeh.events import DocumentReady
    from bokeh.protocol import Protocol

    return Protocol().create("PATCH-DOC", [MessageSentEvent(Document(), "bokeh_event", DocumentReady())])


def maps_rendered(srv: LoadServer, sid: str) -> bool:
    """Whether the session's maps have been rendered into its document (they load just after the page)."""
    entry = srv.sessions.get(sid)
    return entry is not None and bool(entry[2].zssd_views["maps"]._pane._models)


def open_client(srv: LoadServer, timeout: float = 120.0, session_id: str | None = None
                ) -> tuple[HeadlessClient, str, float]:
    """A browser-less client session; returns ``(client, session id, seconds to Ready)``."""
    t0 = time.perf_counter()
    client = HeadlessClient(srv.url, session_id=session_id)
    sid = client.id
    while sid not in srv.sessions or not _is_ready(srv.sessions[sid][0]):
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"session {sid} not Ready after {timeout} s")
        time.sleep(0.02)
    return client, sid, time.perf_counter() - t0


def open_browser_page(srv: LoadServer, browser, timeout: float = 120.0, others: set[str] = frozenset()
                      ) -> tuple[object, str, float]:
    """A headless Chromium page; returns ``(page, session id, seconds to Ready)`` (Ready as the page shows it).

    ``others``: ids of sessions other clients open meanwhile (the page's session is the new one not among them).
    """
    before = set(srv.sessions)
    t0 = time.perf_counter()
    page = browser.new_page()
    page.goto(srv.url)
    page.locator(".zssd-status").get_by_text("Ready").first.wait_for(timeout=timeout * 1000)
    secs = time.perf_counter() - t0
    _wait(lambda: len(set(srv.sessions) - before - set(others)) == 1, 30, "the page's server session")
    sid = next(iter(set(srv.sessions) - before - set(others)))
    return page, sid, secs


def _wait(pred, timeout: float, what) -> None:
    """Poll ``pred`` until true; ``TimeoutError(what)`` (``what`` may be a callable giving the message)."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(what() if callable(what) else what)
        time.sleep(0.05)


def run_load(n_sessions: int = 8, steps: int = 10, browser=None, region: str | None = None,
             stop_index: int | None = None, close_index: int | None = None) -> dict:
    """Open ``n_sessions`` at once, queue one run each, stop one, close one; return the measurements.

    ``browser``: a Playwright browser for one of the sessions (None: all browser-less).  ``region``: a
    region for every session's runs (default: the default case's).  The last-but-one session stops its
    queued run and the last one disconnects, unless ``stop_index``/``close_index`` say otherwise.
    """
    out: dict = {"sessions": n_sessions, "steps": steps, "browser": browser is not None}
    rss0 = rss_mb()
    srv = LoadServer()
    rss_warm = rss_mb()
    try:
        # ---- one session alone
        t0 = time.perf_counter()
        c1, sid1, ready1 = open_client(srv)
        out["ready_alone_s"] = ready1
        _wait(lambda: maps_rendered(srv, sid1), 120, "the lone session's maps")
        out["maps_alone_s"] = time.perf_counter() - t0
        rss1 = rss_mb()
        for v in ("t2m", "wind", "msl"):
            t0 = time.perf_counter()
            srv.call(sid1, lambda s, v=v: setattr(s, "variable", v))
            srv.call(sid1, lambda s: None)  # queued behind the plot updates the switch scheduled: they are done
            out.setdefault("variable_switch_s", []).append(time.perf_counter() - t0)
        if region:
            srv.call(sid1, lambda s: setattr(s, "region_text", region))
            _wait(lambda: _is_ready(srv.sessions[sid1][0]), 120, "region change")
        srv.call(sid1, lambda s: s.param.update(steps=steps))
        t_run = time.perf_counter()
        srv.call(sid1, lambda s: s.run())
        st1 = srv.sessions[sid1][0]
        _wait(lambda: st1.live is not None, 300, "first x̂0 of the lone run")
        out["first_x0_alone_s"] = time.perf_counter() - t_run
        _wait(lambda: st1.status == "done", 600, "the lone run")
        out["run_alone_s"] = st1.job.finished - st1.job.started
        c1.close()
        _wait(lambda: sid1 not in srv.sessions, 30, "closing the first session")

        # ---- n sessions at once
        opened: list[tuple[object, str, float, str]] = []
        n_clients = n_sessions - (1 if browser is not None else 0)
        from bokeh.util.token import generate_session_id

        ids = [generate_session_id() for _ in range(n_clients)]
        t_open = time.perf_counter()
        with ThreadPoolExecutor(max_workers=n_clients) as ex:
            futs = [ex.submit(open_client, srv, 120.0, i) for i in ids]
            page = None
            if browser is not None:
                page, sid_b, t_b = open_browser_page(srv, browser, others=set(ids))
                opened.append((page, sid_b, t_b, "browser"))
            for f in futs:
                cl, sid, t = f.result()
                opened.append((cl, sid, t, "client"))
        out["ready_concurrent_s"] = sorted(t for _, _, t, _ in opened)
        _wait(lambda: all(maps_rendered(srv, sid) for _, sid, _, _ in opened), 300, "the sessions' maps")
        out["maps_concurrent_last_s"] = time.perf_counter() - t_open
        out["ready_kinds"] = [k for _, _, _, k in opened]
        rss_n = rss_mb()
        out["rss_mb"] = {"before_server": rss0, "server_warm": rss_warm, "one_session": rss1,
                         f"{n_sessions}_sessions": rss_n}
        out["rss_per_extra_session_mb"] = (rss_n - rss1) / max(n_sessions - 1, 1)

        # ---- n runs queued at once, in a known order, behind a job that holds the queue until one queued
        # run has been stopped and one client closed (so both are surely still waiting when that happens)
        from zssd_app.runner import RunJob, get_queue

        gate = threading.Event()
        blocker = get_queue().submit(RunJob(lambda job: gate.wait(120), label="hold the queue"))
        order = []
        for _, sid, _, _ in opened:
            if region:
                srv.call(sid, lambda s: setattr(s, "region_text", region))
        for _, sid, _, _ in opened:
            _wait(lambda sid=sid: _is_ready(srv.sessions[sid][0]), 120,
                  lambda sid=sid: f"region change of session {sid}: {srv.sessions[sid][0].status_text!r}")
            srv.call(sid, lambda s: s.param.update(steps=steps))
            t_sub = time.perf_counter()
            srv.call(sid, lambda s: s.run())
            job = srv.sessions[sid][0].job
            assert job is not None, f"session {sid}: the run was not queued"
            order.append((sid, job, t_sub))
        stop_i = n_sessions - 2 if stop_index is None else stop_index
        close_i = n_sessions - 1 if close_index is None else close_index
        srv.call(order[stop_i][0], lambda s: s.stop())  # a queued run stopped
        closer = opened[close_i][0]
        closer.close()  # a closed tab (or a dropped client) frees its place
        jobs = [j for _, j, _ in order]
        _wait(lambda: jobs[close_i].finished_flag, 30, "the closed client's run leaving the queue")
        gate.set()
        blocker.wait(30)
        _wait(lambda: all(j.finished_flag for j in jobs), 60 + 60 * steps * n_sessions, "the queued runs")
        started = [(i, j.started) for i, j in enumerate(jobs) if j.started is not None]
        out["queue_order_kept"] = [i for i, _ in sorted(started, key=lambda x: x[1])] == [i for i, _ in started]
        out["statuses"] = [j.status for j in jobs]
        out["stopped_left_queue"] = jobs[stop_i].status == "cancelled" and jobs[stop_i].started is None
        out["closed_left_queue"] = jobs[close_i].status == "cancelled"
        others = [j for i, j in enumerate(jobs) if i not in (stop_i, close_i)]
        out["all_other_runs_done"] = all(j.status == "done" for j in others)
        out["run_queued_total_s"] = [j.finished - t_sub_ for (_, j, t_sub_) in order if j.finished is not None
                                     and j.status == "done"]
        out["run_queued_run_s"] = [j.finished - j.started for j in others if j.started is not None]
        for cl, _, _, kind in opened:
            if cl is not closer:
                cl.close()
        if browser is not None and page is not None:
            page.close()
    finally:
        srv.stop()
    return out


def _markdown(r: dict, payload: dict) -> str:
    from benchmarks._common import md_header

    rc = r["ready_concurrent_s"]
    lines = [
        "# Dashboard under load",
        "",
        md_header(payload).rstrip(),
        "",
        f"Prior `{r['prior']}`; {r['sessions']} sessions ({'one headless Chromium page, the rest' if r['browser'] else 'all'} "
        "browser-less websocket clients); server in this process, warmed up as `panel serve --warm`; "
        f"load average when it ended: {r['loadavg']}.",
        "",
        "| Measure | Value | Target |",
        "|---|---|---|",
        f"| One session alone: request → Ready | {r['ready_alone_s']:.2f} s | ≤ 3 s |",
        f"| One session alone: request → maps rendered | {r['maps_alone_s']:.2f} s | |",
        f"| {r['sessions']} sessions at once: Ready, slowest / median | {max(rc):.2f} s / {sorted(rc)[len(rc) // 2]:.2f} s "
        "| ≤ 10 s each |",
        f"| {r['sessions']} sessions at once: all maps rendered | {r['maps_concurrent_last_s']:.2f} s | |",
        f"| Variable switch (server time), median of 3 | {sorted(r['variable_switch_s'])[1]:.2f} s | ≤ 0.5 s |",
        f"| Run → first x̂0 (alone) | {r['first_x0_alone_s']:.2f} s | ≤ 2 s |",
        f"| One run of {r['steps']} steps, alone | {r['run_alone_s']:.2f} s | |",
        f"| Runs with {r['sessions']} queued: run time (median) | "
        f"{sorted(r['run_queued_run_s'])[len(r['run_queued_run_s']) // 2]:.2f} s | |",
        f"| Runs with {r['sessions']} queued: submit → done (last) | {max(r['run_queued_total_s']):.1f} s | |",
        f"| Queue order kept / stopped run left / closed client left / all others done | "
        f"{r['queue_order_kept']} / {r['stopped_left_queue']} / {r['closed_left_queue']} / {r['all_other_runs_done']} "
        "| all True |",
        f"| RSS: warm server / 1 session / {r['sessions']} sessions | "
        + " / ".join(f"{v:.0f} MB" for k, v in r["rss_mb"].items() if k != "before_server") + " | |",
        f"| RSS growth per extra idle session | {r['rss_per_extra_session_mb']:.0f} MB | ≤ 150 MB |",
        "",
        f"Ready times of the {r['sessions']} concurrent sessions (s): "
        + ", ".join(f"{t:.2f}" for t in rc) + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--prior", default="", help="'tiny' for the untrained network (default: the shipped prior)")
    p.add_argument("--browser", action="store_true", help="make one session a headless Chromium page")
    p.add_argument("--region", default=None, help="region S,N,W,E for the runs (default: the default case's)")
    p.add_argument("--out", default="", help="results folder (default: benchmarks/results)")
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if a.prior:
        os.environ["ZSSD_PRIOR"] = a.prior
    from benchmarks._common import header, write

    pw = br = None
    if a.browser:
        from playwright.sync_api import sync_playwright

        pw = sync_playwright().start()
        br = pw.chromium.launch(executable_path=os.environ.get("ZSSD_CHROMIUM", "/usr/bin/chromium"),
                                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
    try:
        r = run_load(a.sessions, a.steps, browser=br, region=a.region)
    finally:
        if br is not None:
            br.close()
            pw.stop()
    r["prior"] = a.prior or "shipped default"
    r["loadavg"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    payload = {**header(), "results": r}
    md = _markdown(r, payload)
    if a.out:
        import benchmarks._common as common

        common.RESULTS = Path(a.out)
    write("app_load", payload, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
