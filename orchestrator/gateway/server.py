"""The HTTP front: OpenAI-compatible routes proxied to engines, status, metrics, load/unload.

Starlette routes the gateway's own pages; the proxied routes are plain ASGI callables so a
request can be cancelled the moment its client goes away (before and while the engine
answers), and so that a streamed answer is passed on chunk by chunk as it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from orchestrator.gateway import metrics
from orchestrator.gateway.pool import GatewayError, Pool

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PROXIED = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/infill",
    "/tokenize",
    "/detokenize",
    "/rerank",
    "/v1/rerank",
)
PASSED_HEADERS = {"content-type", "cache-control", "content-length"}
_TPS = re.compile(rb'"predicted_per_second"\s*:\s*([0-9.eE+-]+)')


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """OpenAI's error shape."""
    kind = "invalid_request_error" if status < 500 and status != 429 else "server_error"
    if status == 429:
        kind = "rate_limit_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def error_response(exc: GatewayError) -> JSONResponse:
    """A JSON error, with Retry-After when there is one."""
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return JSONResponse(error_body(exc.status, exc.code, exc.message), exc.status, headers)


class Proxy:
    """Forwards one OpenAI-style request to the instance serving its ``model``."""

    def __init__(self, pool: Pool, session: Callable[[], aiohttp.ClientSession]) -> None:
        """Requests go through ``session()`` (created on the server's loop)."""
        self.pool = pool
        self.session = session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the body, pick the model, then serve it unless the client goes away."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            model, payload = self._model(bytes(body))
        except GatewayError as exc:
            self.pool.count("-", exc.status)
            await error_response(exc)(scope, receive, send)
            return
        work = asyncio.ensure_future(self._serve(scope, send, model, bytes(body), payload))
        gone = asyncio.ensure_future(receive())
        try:
            done, _ = await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # the drain grace is over (uvicorn cancels what still runs): the work answers
            # 503 if it has not answered yet, rather than uvicorn's bare 500
            gone.cancel()
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            if self.pool.draining:
                return  # answered (or cut off mid-answer): nothing for uvicorn to log
            raise
        if work in done:
            gone.cancel()
            work.result()
            return
        work.cancel()  # the client went away: closing the upstream request stops the engine
        await asyncio.gather(work, return_exceptions=True)

    def _model(self, body: bytes) -> tuple[str, dict[str, Any]]:
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            raise GatewayError(400, "invalid_json", "the request body is not JSON") from None
        if not isinstance(payload, dict):
            raise GatewayError(400, "invalid_json", "the request body is not a JSON object")
        requested = payload.get("model")
        if not requested:
            if len(self.pool.served) == 1:
                return next(iter(self.pool.served)), payload
            raise GatewayError(
                400,
                "model_required",
                f"name a model (served: {', '.join(sorted(self.pool.routes))})",
            )
        name = self.pool.route(str(requested))
        if name is None:
            raise GatewayError(
                404,
                "model_not_found",
                f"The model {requested!r} does not exist here "
                f"(served: {', '.join(sorted(self.pool.routes))})",
            )
        return name, payload

    async def _serve(
        self, scope: Scope, send: Send, model: str, body: bytes, payload: dict[str, Any]
    ) -> None:
        try:
            lease = await self.pool.acquire(model)
        except GatewayError as exc:
            self.pool.count(model, exc.status)
            await _send_response(send, error_response(exc))
            return
        except asyncio.CancelledError:
            if self.pool.draining:
                self.pool.count(model, 503)
                await _send_response(send, error_response(_cut_off(model, "waited")))
            raise
        status = 0
        started = False
        tail = b""
        try:
            if lease.upstream_model and payload.get("model") != lease.upstream_model:
                body = json.dumps({**payload, "model": lease.upstream_model}).encode()
            headers = {"Content-Type": "application/json"}
            if lease.api_key:
                headers["Authorization"] = f"Bearer {lease.api_key}"
            url = lease.endpoint + scope["path"]
            async with self.session().request(
                scope["method"], url, data=body, headers=headers, timeout=_NO_TIMEOUT
            ) as upstream:
                status = upstream.status
                out_headers = [
                    (k.lower().encode(), v.encode())
                    for k, v in upstream.headers.items()
                    if k.lower() in PASSED_HEADERS
                ]
                await send(
                    {"type": "http.response.start", "status": status, "headers": out_headers}
                )
                started = True
                async for chunk in upstream.content.iter_any():
                    tail = (tail + chunk)[-4096:]
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (aiohttp.ClientError, OSError) as exc:
            died = await self.pool.engine_failed(lease)
            status = 502
            if not started:
                why = "the engine exited during the request" if died else f"engine error: {exc}"
                err = GatewayError(502, "engine_died" if died else "upstream_error", why)
                await _send_response(send, error_response(err))
        except asyncio.CancelledError:
            if self.pool.draining and not started:
                status = 503
                await _send_response(send, error_response(_cut_off(model, "ran")))
            raise
        finally:
            match = _TPS.findall(tail)
            tps = float(match[-1]) if match else None
            self.pool.release(lease, status=status or 499, tps=tps)


def _cut_off(model: str, how: str) -> GatewayError:
    return GatewayError(
        503,
        "shutting_down",
        f"{model}: the gateway is shutting down; the request {how} past its drain grace",
    )


_NO_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)
UPSTREAM_KEEPALIVE_S = 4.0
"""Idle engine connections are reused for this long only. llama-server (cpp-httplib) and
vLLM (uvicorn) close theirs after 5 s idle; reusing one as the engine closes it would fail
a request that never reached the engine."""


async def _send_response(send: Send, response: Response) -> None:
    async def no_receive() -> Message:
        return {"type": "http.disconnect"}

    await response({"type": "http"}, no_receive, send)


class Front:
    """Proxied requests go straight to the proxy; everything else to Starlette.

    The proxied routes are the hot path: Starlette's router and its two exception
    middlewares cost about as much per request as the rest of the proxying in Python.
    """

    def __init__(self, proxy: Proxy, app: Starlette) -> None:
        """Dispatch to ``proxy`` or ``app``."""
        self.proxy = proxy
        self.app = app
        self.proxied = frozenset(PROXIED)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One ASGI call."""
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.proxied:
            await self.proxy(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def build_app(
    pool: Pool,
    *,
    on_startup: Callable[[], Awaitable[None]],
    on_shutdown: Callable[[], Awaitable[None]],
) -> Front:
    """The gateway's ASGI application."""
    holder: dict[str, aiohttp.ClientSession] = {}

    def session() -> aiohttp.ClientSession:
        if "s" not in holder:
            connector = aiohttp.TCPConnector(
                limit=0, ttl_dns_cache=None, keepalive_timeout=UPSTREAM_KEEPALIVE_S
            )
            holder["s"] = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return holder["s"]

    proxy = Proxy(pool, session)

    async def models(request: Request) -> Response:
        created = int(pool.started_at)
        data = []
        for alias, name in sorted(pool.routes.items()):
            run = pool.scheduler.models[name]
            data.append(
                {
                    "id": alias,
                    "object": "model",
                    "created": created,
                    "owned_by": "orch",
                    "profile": name,
                    "state": run.state,
                }
            )
        return JSONResponse({"object": "list", "data": data})

    async def status_json(request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(pool.status))

    async def status_page(request: Request) -> Response:
        return HTMLResponse(render_page(await asyncio.to_thread(pool.status)))

    async def metrics_page(request: Request) -> Response:
        engines = await metrics.engine_metrics(pool, session())
        text = metrics.render(pool, engines)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    def _named(request: Request) -> str:
        name = pool.route(request.path_params["model"])
        if name is None:
            raise GatewayError(
                404, "model_not_found", f"no served model {request.path_params['model']!r}"
            )
        return name

    async def load(request: Request) -> Response:
        try:
            name = _named(request)
        except GatewayError as exc:
            return error_response(exc)
        pool.scheduler.want(name)
        pool.poke()
        return JSONResponse({"model": name, "state": pool.scheduler.models[name].state}, 202)

    async def unload(request: Request) -> Response:
        try:
            name = _named(request)
        except GatewayError as exc:
            return error_response(exc)
        pool.scheduler.unwant(name)
        pool.poke()
        return JSONResponse({"model": name, "state": pool.scheduler.models[name].state}, 202)

    async def own_health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await on_startup()
        try:
            yield
        finally:
            await on_shutdown()
            if "s" in holder:
                await holder["s"].close()

    routes = [
        Route("/", status_page),
        Route("/orch/status", status_json),
        Route("/orch/load/{model:path}", load, methods=["POST"]),
        Route("/orch/unload/{model:path}", unload, methods=["POST"]),
        Route("/metrics", metrics_page),
        Route("/health", own_health),
        Route("/v1/models", models),
        *[Route(path, proxy, methods=["POST"]) for path in PROXIED],
    ]
    return Front(proxy, Starlette(routes=routes, lifespan=lifespan))


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    if n >= 10 * 2**20:
        return f"{n / 2**20:.0f} MiB"
    if n >= 2**20:
        return f"{n / 2**20:.1f} MiB"
    return f"{n / 2**10:.0f} KiB"


def _memory_cell(m: dict[str, Any]) -> str:
    """Per device: in use against the part of the plan it compares with, and what comes later."""
    lines = []
    for device, row in sorted(m["memory"].items()):
        used = row["in_use"]
        text = f"<b>{html.escape(device)}</b> {_size(used)} / {_size(row['planned_now'])}"
        later = [f"{html.escape(k)} {_size(n)}" for k, n in row["later"].items() if n]
        if later:
            text += f'<br><small class="dim">later: {", ".join(later)}</small>'
        lines.append(text)
    return "<br>".join(lines) or "-"


def _progress_cell(p: dict[str, Any]) -> str:
    eta = f" · ETA {p['eta_s']:.0f} s" if p["eta_s"] is not None else ""
    rate = f" · {_size(int(p['rate_bytes_s']))}/s" if p["rate_bytes_s"] else ""
    return (
        f'<br><progress max="1" value="{p["fraction"]}"></progress> '
        f'<span class="pct">{p["fraction"] * 100:.0f}%</span>'
        f"<br><small>{_size(p['loaded_bytes'])} of {_size(p['total_bytes'])} read"
        f"{rate}{eta}</small>"
    )


def render_page(status: dict[str, Any]) -> str:
    """The status page: one row per served model."""
    rows = []
    for m in status["models"]:
        progress = ""
        if m["state"] == "loading" and m["progress"]:
            progress = _progress_cell(m["progress"])
        tps = f"{m['last_tok_s']:.1f}" if m["last_tok_s"] else "-"
        note = html.escape(m["error"] or m["waiting_for"] or "")
        extra = [html.escape(a) for a in m["aliases"]]
        if m["priority"]:
            extra.append(f"priority {m['priority']}")
        if m["placement"]:
            extra.append(html.escape(m["placement"]))
        pin = ' <span class="pin">pinned</span>' if m["pinned"] else ""
        rows.append(
            f'<tr data-model="{html.escape(m["name"])}" data-state="{m["state"]}">'
            f"<td><b>{html.escape(m['name'])}</b>{pin}<br><small>{', '.join(extra)}</small></td>"
            f'<td><span class="state s-{m["state"]}">{m["state"]}</span>{progress}</td>'
            f"<td>{_memory_cell(m)}</td>"
            f'<td class="num">{m["in_flight"]} / {m["slots"]}</td>'
            f'<td class="num">{m["queued"]}</td><td class="num">{tps}</td>'
            f'<td><small class="note">{note}</small></td></tr>'
        )
    external = "".join(
        f"<li><b>{html.escape(e['name'])}</b> ({html.escape(e['why'])}): "
        + ", ".join(f"{html.escape(d)} {_size(n)}" for d, n in sorted(e["memory_planned"].items()))
        + "</li>"
        for e in status["external"]
    )
    if external:
        external = f"<p>Also holding memory, never stopped by this gateway:</p><ul>{external}</ul>"
    return PAGE.format(
        rows="\n".join(rows),
        queued=status["queued"],
        limit=status["queue_limit"],
        uptime=status["uptime_s"],
        pid=status["pid"],
        when=time.strftime("%H:%M:%S"),
        external=external,
    )


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>orch serve</title>
<meta http-equiv="refresh" content="2">
<style>
body {{ font-family: "Liberation Sans", Arial, sans-serif; font-size: 15px; margin: 24px;
  color: #1d1d1f; background: #fff; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }}
.meta {{ color: #555; margin: 0 0 16px; }}
table {{ border-collapse: collapse; min-width: 900px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 8px 14px; text-align: left;
  vertical-align: top; }}
th {{ background: #f2f2f4; font-weight: 600; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
small {{ color: #555; }} .dim {{ color: #777; }} .note {{ color: #8a3b00; }}
.state {{ display: inline-block; padding: 1px 9px; border-radius: 10px; font-weight: 600;
  font-size: 13px; }}
.s-ready {{ background: #dcf5e3; color: #11632d; }}
.s-busy {{ background: #ffe9cc; color: #8a4b00; }}
.s-loading {{ background: #dde8fb; color: #1f4f9c; }}
.s-stopped {{ background: #eee; color: #555; }}
.s-stopping {{ background: #f9dddd; color: #8f1d1d; }}
progress {{ width: 150px; height: 12px; vertical-align: middle; margin-top: 6px; }}
.pct {{ font-weight: 600; }}
.pin {{ font-size: 12px; color: #555; border: 1px solid #bbb; border-radius: 8px; padding: 0 6px; }}
</style></head><body>
<h1>orch serve</h1>
<p class="meta">pid {pid} · up {uptime} s · {queued} request(s) queued (limit {limit}) · {when}</p>
<table><tr><th>model</th><th>state</th><th>memory in use / planned</th>
<th>in flight / slots</th><th>queued</th><th>last tok/s</th><th>note</th></tr>
{rows}
</table>
{external}
<p><small>Memory: resident now against the plan's weights, KV and process; compute
buffers and the prompt cache fill later. JSON: <a href="/orch/status">/orch/status</a>
· Prometheus: <a href="/metrics">/metrics</a>
· OpenAI: <a href="/v1/models">/v1/models</a></small></p>
</body></html>
"""
