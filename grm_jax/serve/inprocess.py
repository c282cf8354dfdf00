"""A `Server` running inside this process (uvicorn in a thread): for notebooks, tests and benchmarks that want the
real HTTP surface without a second process."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx

from grm_jax.serve.app import Server, create_app


def free_port(host: str = "127.0.0.1") -> int:
  with socket.socket() as s:
    s.bind((host, 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def serving(server: Server, host: str = "127.0.0.1", port: int | None = None, start_timeout: float = 60.0
            ) -> Iterator[str]:
  """Serve `server` on `host:port` (a free port by default) until the block ends; yields the base URL once
  `/health` answers. Leaving the block shuts down as SIGTERM does: requests in flight finish, the engine stops."""
  import uvicorn  # noqa: PLC0415

  port = free_port(host) if port is None else port
  uv = uvicorn.Server(uvicorn.Config(create_app(server), host=host, port=port, log_level="warning"))
  thread = threading.Thread(target=uv.run, name="grm-serve", daemon=True)
  thread.start()
  url = f"http://{host}:{port}"
  deadline = time.monotonic() + start_timeout
  while True:
    try:
      if httpx.get(f"{url}/health", timeout=1).status_code == 200:
        break
    except httpx.HTTPError:
      pass
    if time.monotonic() > deadline or not thread.is_alive():
      uv.should_exit = True
      raise RuntimeError(f"the server on {url} did not start within {start_timeout:g} s")
    time.sleep(0.1)
  try:
    yield url
  finally:
    uv.should_exit = True
    thread.join(60)
