"""Ways to run the sandbox: in the caller's event loop, in a background thread, or as a
blocking server until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable

from aiohttp import web

from .app import make_app
from .settings import SandboxSettings
from .state import SandboxState

# Handlers still running at shutdown (slow faults) are cancelled after this grace period.
SHUTDOWN_SECONDS = 0.5


class Sandbox:
    """`async with Sandbox(settings) as sb:` serves on sb.url until the block ends."""

    def __init__(self, settings: SandboxSettings | None = None):
        self.settings = settings or SandboxSettings()
        self.app = make_app(self.settings)
        self.state: SandboxState = self.app["state"]
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Sandbox:
        self._runner = web.AppRunner(self.app, access_log=None,
                                     shutdown_timeout=SHUTDOWN_SECONDS)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc_info) -> None:
        assert self._runner is not None  # set by __aenter__
        await self._runner.cleanup()


class SandboxThread:
    """`with SandboxThread(settings) as sb:` serves from a background thread with its own
    event loop, for callers that are not async (CliRunner, subprocesses, the demo)."""

    def __init__(self, settings: SandboxSettings | None = None):
        self.settings = settings or SandboxSettings()
        self.url = ""
        self.state: SandboxState | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sandbox", daemon=True)

    def __enter__(self) -> SandboxThread:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def __exit__(self, *exc_info) -> None:
        # __enter__ returned, so _serve has set both before signalling ready
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # a failed start is re-raised in the caller's thread
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with Sandbox(self.settings) as sandbox:
            self.url, self.state = sandbox.url, sandbox.state
            self._ready.set()
            await self._stop.wait()


def serve(settings: SandboxSettings | None = None,
          print_banner: Callable[[str], object] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, after printing the URL and the demo credentials."""
    asyncio.run(_serve_until_signal(settings or SandboxSettings(),
                                    print_banner or _print_flushed))


async def _serve_until_signal(settings: SandboxSettings, print_banner) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Sandbox(settings) as sandbox:
        print_banner(banner(sandbox.url, settings))
        await stop.wait()


def banner(url: str, settings: SandboxSettings) -> str:
    # The sandbox's credentials are public demo values: printing them is the point.
    return (f"Capillary sandbox on {url} | Basic: till code {settings.till_code!r}, "
            f"password {settings.password!r} | OAuth: key {settings.oauth_key!r}, "
            f"secret {settings.oauth_secret!r}")


def _print_flushed(line: str) -> None:
    print(line, flush=True)  # a parent process reading the pipe needs the URL now
