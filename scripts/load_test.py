"""Load test of the HTTP prediction service (image_transfer.serve): for each level of concurrent clients (1, 8 and 32
by default) every client POSTs real images, one per request, one request after another, for --seconds; per level
the requests answered per second, the p50 and p99 latency and the errors, as a markdown table (and JSON with --json).

    python scripts/load_test.py --url http://127.0.0.1:8000 --images ../shared/data/emergency_vehicles
    python scripts/load_test.py --ckpt-path model.onnx --images test.csv --clients 1 8 32 --seconds 60 --json load.json
    python scripts/load_test.py --ckpt-path best.ckpt --images photos/ max_batch_size=16 batch_timeout=0.02

With --ckpt-path the script starts the service itself on a free port (trailing arguments are its overrides) and stops
it at the end. --images: a folder (every image under it) or a csv of image names (its first column).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import numpy as np

from image_transfer.data.sources import csv_location, folder_table
from image_transfer.data.table import read_header, read_table
from image_transfer.markdown import table


def image_bytes(source: Path) -> list[bytes]:
    """The images of a folder (nested folders too) or of a csv's first column, as bytes."""
    if source.is_dir():
        paths = folder_table(source, "--images").paths
    else:
        csv_path, image_dir = csv_location(source, "auto", "auto")
        paths = read_table(csv_path, image_dir, read_header(csv_path)[0], None, []).paths
    return [Path(p).read_bytes() for p in paths]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


class Service(NamedTuple):
    process: subprocess.Popen
    url: str
    log: Path


def start_service(ckpt_path: str, overrides: list[str] = (), log: Path | None = None) -> Service:
    """`python -m image_transfer.serve ckpt_path=...` on a free port of 127.0.0.1, its output to `log` (a temporary
    file by default); see wait_until_healthy and stop."""
    port = free_port()
    log = log or Path(tempfile.mkstemp(prefix="serve_", suffix=".log")[1])
    command = [sys.executable, "-m", "image_transfer.serve", f"ckpt_path={ckpt_path}", f"port={port}", *overrides]
    with open(log, "w") as output:
        # Its own session: whatever is left of it at the end can be stopped as a group.
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    return Service(process, f"http://127.0.0.1:{port}", log)


def wait_until_healthy(service: Service, timeout: float = 300) -> str:
    """The service's URL once /health answers; raises with its output if it exits or times out first."""
    deadline = time.monotonic() + timeout
    while not healthy(service.url):
        if service.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"the service did not start ({' '.join(service.process.args)}):\n{service.log.read_text()}"
            )
        time.sleep(0.2)
    return service.url


def stop(service: Service) -> None:
    """SIGTERM: the service stops its worker processes and exits; its process group is killed if it does not."""
    service.process.send_signal(signal.SIGTERM)
    try:
        service.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(service.process.pid, signal.SIGKILL)
        service.process.wait()


@contextmanager
def running_service(ckpt_path: str, overrides: list[str] = ()) -> Iterator[str]:
    """A service started for the block; yields its URL once it answers."""
    service = start_service(ckpt_path, overrides)
    try:
        yield wait_until_healthy(service)
    finally:
        stop(service)


def client(url: str, images: list[bytes], first: int, step: int, deadline: float, results: list) -> None:
    """POST images[first], images[first + step] ... until `deadline` over one kept-alive connection; appends
    (latency in s, error or None) per request."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    index = first
    while time.monotonic() < deadline:
        body, start = images[index % len(images)], time.perf_counter()
        try:
            connection.request(
                "POST", f"{parts.path.rstrip('/')}/predict", body, {"Content-Type": "application/octet-stream"}
            )
            response = connection.getresponse()
            response.read()
            error = None if response.status == 200 else f"HTTP {response.status}"
        except (OSError, http.client.HTTPException) as exception:
            error = type(exception).__name__
            connection.close()  # reconnects at the next request
        results.append((time.perf_counter() - start, error))
        index += step
    connection.close()


def level(url: str, images: list[bytes], clients: int, seconds: float) -> dict:
    """`clients` concurrent clients for `seconds`: requests per second answered, p50/p99 latency, errors."""
    results: list[tuple[float, str | None]] = []  # list.append is atomic: the threads share it
    start = time.monotonic()
    deadline = start + seconds
    threads = [
        threading.Thread(target=client, args=(url, images, i, clients, deadline, results)) for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start  # until the last request sent before the deadline was answered
    answered = [latency for latency, error in results if error is None]
    errors = Counter(error for _, error in results if error is not None)
    p50, p99 = np.percentile(answered, [50, 99]) * 1000 if answered else (float("nan"), float("nan"))
    return {
        "clients": clients,
        "requests": len(results),
        "requests_per_s": round(len(answered) / elapsed, 2),
        "p50_ms": round(float(p50), 1),
        "p99_ms": round(float(p99), 1),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "seconds": round(elapsed, 1),
    }


def load_test(url: str, images: list[bytes], clients: list[int], seconds: float) -> list[dict]:
    level(url, images, 1, min(seconds, 3))  # warm-up: the first batches of a fresh worker are slower
    return [level(url, images, n, seconds) for n in clients]


def markdown(levels: list[dict]) -> str:
    rows = [[r["clients"], r["requests_per_s"], r["p50_ms"], r["p99_ms"], r["errors"]] for r in levels]
    return table(["clients", "requests/s", "p50 ms", "p99 ms", "errors"], rows, align="rrrrr")


@contextmanager
def target(args: argparse.Namespace) -> Iterator[str]:
    if args.url:
        yield args.url.rstrip("/")
    else:
        with running_service(args.ckpt_path, args.overrides) as url:
            yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running service, e.g. http://127.0.0.1:8000")
    where.add_argument("--ckpt-path", help="start the service on this checkpoint or .onnx file (stopped at the end)")
    parser.add_argument("--images", type=Path, required=True, help="a folder of images or a csv of image names")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="concurrent clients per level")
    parser.add_argument("--seconds", type=float, default=60, help="duration of each level")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("overrides", nargs="*", help="the service's options with --ckpt-path (max_batch_size=16 ...)")
    args = parser.parse_args()
    if args.overrides and not args.ckpt_path:
        parser.error("service options apply only to a service this script starts (--ckpt-path)")
    images = image_bytes(args.images)
    with target(args) as url:
        levels = load_test(url, images, args.clients, args.seconds)
    print(markdown(levels))
    if args.json:
        figures = {"url": args.url, "ckpt_path": args.ckpt_path, "overrides": args.overrides, "images": len(images)}
        args.json.write_text(json.dumps({**figures, "seconds": args.seconds, "levels": levels}, indent=2) + "\n")


if __name__ == "__main__":
    main()
