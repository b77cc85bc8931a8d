"""An S3 server for tests: moto on 127.0.0.1, started once per session, plus a fault-injecting front.

Loaded as a pytest plugin (`pytest_plugins = ["tests.s3server"]` in conftest.py), it gives:
  s3_endpoint  (session)  URL of the moto server; while it runs, AWS_* variables hold dummy
                          credentials and nothing reaches a real account or a metadata service
  s3_bucket    (function) (Storage for that endpoint, "s3://<fresh empty bucket>"), emptied after
  s3_faults    (function) s3_faults(faults) -> FaultyFront, an endpoint on 127.0.0.1 that answers
                          the first requests with `faults` and forwards the rest to moto
"""
from __future__ import annotations

import http.client
import os
import socket
import struct
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import boto3
import pytest
from moto.server import ThreadedMotoServer

from farm.storage import Storage, StorageOptions

HOST = "127.0.0.1"
# Dummy credentials, no profile or shared files, no EC2 metadata lookups, no proxy for 127.0.0.1.
TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "farm-test-key",
    "AWS_SECRET_ACCESS_KEY": "farm-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
CLEARED_ENV = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "upgrade"}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with _test_environment():
        server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Iterator[tuple[Storage, str]]:
    name = f"farm-test-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=name)
    yield Storage(StorageOptions(endpoint_url=s3_endpoint)), f"s3://{name}"
    # Emptied and removed so a session of big uploads does not pile up in moto's memory.
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)


@pytest.fixture
def s3_faults(s3_endpoint: str) -> Iterator:
    fronts: list[FaultyFront] = []

    def make(faults: Sequence[int | str]) -> FaultyFront:
        front = FaultyFront(s3_endpoint, faults)
        fronts.append(front)
        return front

    yield make
    for front in fronts:
        front.close()


@contextmanager
def moto_auth_enforced(endpoint: str) -> Iterator[None]:
    """Make moto check credentials (unknown keys get 403) for the duration; off again afterwards."""
    _moto_auth(endpoint, "0")
    try:
        yield
    finally:
        _moto_auth(endpoint, "inf")


class FaultyFront:
    """An HTTP endpoint on 127.0.0.1 in front of `target`: request n gets faults[n], later ones are forwarded.

    A fault is an HTTP status (answered with an S3 XML error) or "reset" (the connection is closed
    without an answer). `requests` counts what arrived, faults included. Request bodies must carry
    Content-Length (botocore sends it for every S3 call the farm makes over http).
    """

    def __init__(self, target: str, faults: Sequence[int | str]) -> None:
        self.target = urlsplit(target)
        self.faults = list(faults)
        self.requests = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((HOST, 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}"

    def next_fault(self) -> int | str | None:
        with self._lock:
            self.requests += 1
            return self.faults.pop(0) if self.faults else None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _handler_for(front: FaultyFront) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def read_body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def answer(self) -> None:
            body = self.read_body()
            fault = front.next_fault()
            if fault == "reset":
                _reset(self.connection)
                self.close_connection = True
            elif fault is not None:
                self.send_error_xml(int(fault))
            else:
                self.forward(body)

        def send_error_xml(self, status: int) -> None:
            code = {403: "AccessDenied", 500: "InternalError", 503: "ServiceUnavailable"}.get(status, "InjectedFault")
            xml = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>injected by the test</Message></Error>".encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(xml)))
            self.end_headers()
            self.wfile.write(xml)

        def forward(self, body: bytes) -> None:
            upstream = http.client.HTTPConnection(front.target.hostname, front.target.port, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            upstream.close()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in _HOP_BY_HOP and (key.lower() != "content-length" or self.command == "HEAD"):
                    self.send_header(key, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = answer

    return Handler


def _reset(connection: socket.socket) -> None:
    """Close with RST (linger 0), as a crashed load balancer would."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def _moto_auth(endpoint: str, value: str) -> None:
    target = urlsplit(endpoint)
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
    connection.request("POST", "/moto-api/reset-auth", body=value.encode())
    response = connection.getresponse()
    response.read()
    connection.close()
    assert response.status == 200, f"moto refused reset-auth: {response.status}"


@contextmanager
def _test_environment() -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in (*TEST_ENV, *CLEARED_ENV, "NO_PROXY", "no_proxy")}
    try:
        for key in CLEARED_ENV:
            os.environ.pop(key, None)
        os.environ.update(TEST_ENV)
        for key in ("NO_PROXY", "no_proxy"):
            os.environ[key] = ",".join(filter(None, [os.environ.get(key), HOST, "localhost"]))
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
