"""A lease on an output folder: one run at a time writes a campaign or a shot (DESIGN §12).

The lease is a small JSON file (an object on S3), `.farm-lease`, in the folder it holds. It is made
only where none is (O_EXCL on local disk, an If-None-Match request on S3), names its holder (host,
process, run) and an expiry that the holder renews while it runs. A second run stops with a message
that names the holder. A lease left by a crashed run is taken over once it has expired, or at once
when its holder was a process of this machine that no longer exists.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time

from farm.errors import FarmError
from farm.storage.store import Storage

LEASE = ".farm-lease"
TTL_SECONDS = 300.0


class Lease:
    """Hold the folder `folder_uri` (local or s3://) for this run: `with Lease(store, uri): ...`."""

    def __init__(self, store: Storage, folder_uri: str, ttl: float = TTL_SECONDS) -> None:
        self.store, self.folder, self.ttl = store, folder_uri, ttl
        self.uri = Storage.join(folder_uri, LEASE)
        self.run = secrets.token_hex(8)
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.since = time.time()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        for _ in range(3):
            if self.store.create(self._body(), self.uri):
                self._renewer = threading.Thread(target=self._renew, name=f"lease {self.folder}", daemon=True)
                self._renewer.start()
                return
            other = self._read()
            if other is None:  # released meanwhile
                continue
            if _stale(other):
                self.store.delete(self.uri)
                continue
            raise FarmError(
                self.folder,
                f"is being written by another run ({other.get('holder', '?')}, since {_iso(other.get('since'))})",
                f"wait for that run to end, or stop it; a lease left by a crashed run on another machine expires at "
                f"{_iso(other.get('expires'))}",
            )
        raise FarmError(self.folder, "could not take the output's lease (others keep taking it)", "run again")

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        if self._ours():
            self.store.delete(self.uri)

    def _renew(self) -> None:
        """Push the expiry forward while the run lives (a third of the lease's life at a time)."""
        while not self._stop.wait(self.ttl / 3):
            try:
                if self._ours():
                    self.store.put_bytes(self._body(), self.uri)
            except FarmError:  # the store is away for a moment: the next turn tries again
                pass

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps({"holder": self.holder, "run": self.run, "since": self.since, "expires": now + self.ttl}).encode()

    def _read(self) -> dict | None:
        try:
            return json.loads(self.store.get_bytes(self.uri))
        except FarmError:
            return None
        except ValueError:  # not a lease of ours: treat as expired
            return {}

    def _ours(self) -> bool:
        found = self._read()
        return bool(found) and found.get("run") == self.run


def _stale(lease: dict) -> bool:
    """Expired, or held by a process of this machine that is gone."""
    if not lease or lease.get("expires", 0) < time.time():
        return True
    host, _, pid = str(lease.get("holder", "")).rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, someone else's
            return False
    return False


def _iso(t) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if isinstance(t, (int, float)) else "?"
