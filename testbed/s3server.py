"""A real S3-compatible object store on loopback for the storage tests: versitygw (POSIX backend).

versitygw is built from its Go module by ``scripts/s3server.sh`` (pinned in tools/s3server,
cached outside the repo) and runs as a local process on a free loopback port, serving buckets
from its own temp directory. Nothing is mocked: clients speak the S3 protocol over HTTP.

    server = S3Server().start()
    server.create_bucket("ckpt")
    server.env            # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... for clients
    server.stop()

Environment knobs: ``GRAFT_S3SERVER_BIN`` (use this binary instead of running the build script),
``GRAFT_KEEP_S3SERVER=1`` (keep the data directory and log after ``stop()``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from testbed.ports import free_port
from testbed.process import Process, ProcessError

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "scripts" / "s3server.sh"
REGION = "us-east-1"


class S3ServerError(ProcessError):
    """Build or startup failure; the message carries the log tail."""


def build() -> Path:
    """The versitygw binary (built on first use; later calls take milliseconds)."""
    override = os.environ.get("GRAFT_S3SERVER_BIN")
    if override:
        return Path(override)
    proc = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise S3ServerError(f"{BUILD_SCRIPT} failed:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


class S3Server:
    def __init__(self, size_limit_mb: int | None = None) -> None:
        """`size_limit_mb`: serve from a tmpfs of that size, so the store fills up (needs root)."""
        self.size_limit_mb = size_limit_mb
        self._mounted = False
        self.access_key = "graft-" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(16)
        self.dir = Path(tempfile.mkdtemp(prefix="graft-s3-"))
        self.data = self.dir / "data"
        self.port = 0
        self.process: Process | None = None
        self._log = self.dir / "versitygw.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables a client (pyarrow, s3fs, graft.storage) needs for this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
        }

    def start(self, timeout: float = 30.0) -> S3Server:
        binary = build()
        self.data.mkdir(parents=True, exist_ok=True)
        if self.size_limit_mb:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size_limit_mb}m", "graft-s3-full", str(self.data)], check=True)
            self._mounted = True
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ROOT_", "VGW_"))}
        env.update(ROOT_ACCESS_KEY=self.access_key, ROOT_SECRET_KEY=self.secret_key)
        self.process = Process(
            "versitygw",
            [str(binary), "--quiet", "--port", f"127.0.0.1:{self.port}", "--region", REGION, "posix", str(self.data)],
            self._log, env=env,
        ).start()
        try:
            self.process.wait_ready(self._answers, timeout, interval=0.1, what=f"answering on {self.endpoint}")
        except ProcessError as exc:
            raise S3ServerError(str(exc)) from None
        return self

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint, timeout=1)
        except urllib.error.HTTPError:
            pass  # an S3 error document (AccessDenied): the server answers
        return True

    def log_tail(self, lines: int = 40) -> str:
        return self.process.tail(lines) if self.process is not None else ""

    def filesystem(self) -> Any:
        """A pyarrow S3 client for this server behind fsspec (for test setup and assertions)."""
        from fsspec.implementations.arrow import ArrowFSWrapper
        from pyarrow.fs import S3FileSystem

        return ArrowFSWrapper(
            S3FileSystem(
                access_key=self.access_key, secret_key=self.secret_key, endpoint_override=f"127.0.0.1:{self.port}",
                scheme="http", region=REGION, allow_bucket_creation=True, allow_bucket_deletion=True,
            )
        )

    def create_bucket(self, name: str) -> str:
        """Create a bucket through the S3 API (CreateBucket); return `s3://name`."""
        self.filesystem().fs.create_dir(name)
        return f"s3://{name}"

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=10)
        self.process = None
        if self._mounted:
            subprocess.run(["umount", str(self.data)], check=False)
            self._mounted = False
        if os.environ.get("GRAFT_KEEP_S3SERVER") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
