"""Fixtures shared by test files: a local S3 server (moto) that storage tests write to."""

import logging
import os
import socket
from dataclasses import dataclass

import pytest

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
"""Credentials moto accepts; also keeps pyarrow from asking EC2 for a region."""


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # host:port

    @property
    def query(self) -> str:
        return f"endpoint_override={self.endpoint}&scheme=http"

    def bucket(self, name: str, prefix: str = "") -> str:
        """Create bucket `name`; returns the URI of `prefix` in it, the endpoint in its query."""
        import pyarrow.fs as pafs

        pafs.S3FileSystem(endpoint_override=self.endpoint, scheme="http",
                          allow_bucket_creation=True).create_dir(name)
        return f"s3://{name}/{prefix}?{self.query}" if prefix else f"s3://{name}?{self.query}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 (a free port), with its credentials in os.environ for
    this process and every process it starts (Ray nodes and their workers included)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield S3Server(f"127.0.0.1:{port}")
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
