"""The Docker driver: finds containers and follows their lives through the
Docker Engine API (the ``docker`` SDK), never the ``docker`` command. It makes
no decisions.

Docker is optional: without it, Docker guests answer UNAVAILABLE and
everything else works. The event watcher reconnects with backoff when dockerd
restarts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import Conflict, DependencyUnavailable, InternalError, NotFound, PreconditionFailed

log = logging.getLogger("netplumb.docker")

EVENTS = ("start", "die", "destroy")


@dataclass(frozen=True, slots=True)
class Container:
    id: str  # the full id
    name: str  # without Docker's leading "/"
    pid: int  # 0 when not running
    running: bool


class DockerDriver:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        self._client: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.up = False
        self.detail = "not connected yet"

    def _api(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    import docker
                except ImportError as e:  # pragma: no cover - a packaging error
                    raise DependencyUnavailable(f"the docker SDK is not installed: {e}") from e
                self._client = docker.APIClient(base_url=self.url, timeout=self.timeout)
            return self._client

    def _unavailable(self, e: Exception) -> DependencyUnavailable:
        self.up = False
        self.detail = f"cannot reach Docker at {self.url}: {e}"
        return DependencyUnavailable(
            f"Docker is not reachable at {self.url}",
            hint="start dockerd, or check --docker-url; netplumb follows it again by itself",
        )

    def available(self) -> bool:
        """True when dockerd answers (a cheap ping)."""
        try:
            self._api().ping()
        except Exception as e:
            self._unavailable(e)
            return False
        self.up, self.detail = True, f"connected to {self.url}"
        return True

    def inspect(self, ref: str) -> Container | None:
        """The container a name, id or unique id prefix names, or None.
        Raises Conflict when an id prefix matches several containers."""
        import docker.errors

        try:
            info = self._api().inspect_container(ref)
        except docker.errors.NotFound:
            return self._by_prefix(ref)
        except docker.errors.APIError as e:
            raise InternalError(f"Docker refused to inspect {ref!r}: {e}") from e
        except Exception as e:
            raise self._unavailable(e) from e
        self.up, self.detail = True, f"connected to {self.url}"
        return _container(info)

    def _by_prefix(self, ref: str) -> Container | None:
        # Docker resolves unique id prefixes itself; an ambiguous one is a 404
        # there, so look for several matches to say so.
        try:
            rows = self._api().containers(all=True, quiet=True)
        except Exception as e:
            raise self._unavailable(e) from e
        matches = [r["Id"] for r in rows if r["Id"].startswith(ref)]
        if len(matches) > 1:
            raise Conflict(
                f"{ref!r} is the start of {len(matches)} container ids",
                field="guest",
                hint="give more of the id, or the container's name",
            )
        return None

    def running_container(self, ref: str) -> Container:
        """A running container, or a clear error."""
        c = self.inspect(ref)
        if c is None:
            raise NotFound(f"Docker has no container {ref!r}", field="guest")
        if not c.running or c.pid <= 0:
            raise PreconditionFailed(
                f"container {c.name} is not running",
                field="guest",
                hint=f"start it first (docker start {c.name}); netplumb plumbs it again by "
                "itself when it restarts",
            )
        return c

    # -- events

    def watch(self, callback: Callable[[str, str], None]) -> None:
        """Call ``callback(action, container_id)`` for container start, die
        and destroy events, from a background thread that reconnects with
        backoff when dockerd goes away."""
        if self._watcher is not None:
            return
        self._watcher = threading.Thread(
            target=self._watch, args=(callback,), name="docker-events", daemon=True
        )
        self._watcher.start()

    def _watch(self, callback: Callable[[str, str], None]) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                stream = self._api().events(
                    decode=True, filters={"type": "container", "event": list(EVENTS)}
                )
            except Exception as e:
                self._unavailable(e)
                self._stop.wait(delay)
                delay = min(delay * 2, 1.0)
                continue
            # Every new stream: events may have been missed while there was
            # none (request threads also update self.up, so it cannot tell).
            self.up, self.detail = True, f"connected to {self.url}"
            delay = 0.2
            log.info("following Docker events at %s", self.url)
            try:
                callback("connected", "")
            except Exception:
                log.exception("Docker reconnect handler failed")
            try:
                for ev in stream:
                    if self._stop.is_set():
                        break
                    action = str(ev.get("Action") or ev.get("status") or "")
                    cid = str(ev.get("id") or ev.get("Actor", {}).get("ID") or "")
                    if action in EVENTS and cid:
                        try:
                            callback(action, cid)
                        except Exception:
                            log.exception("handling Docker event %s %s failed", action, cid[:12])
            except Exception as e:
                self._unavailable(e)
            if not self._stop.is_set():
                log.warning("lost the Docker event stream; reconnecting")
                self._stop.wait(delay)

    def close(self) -> None:
        self._stop.set()


def _container(info: dict[str, Any]) -> Container:
    state = info.get("State", {})
    return Container(
        id=str(info["Id"]),
        name=str(info.get("Name", "")).lstrip("/"),
        pid=int(state.get("Pid") or 0),
        running=bool(state.get("Running")),
    )
