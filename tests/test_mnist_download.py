"""The real MNIST loader fetches the IDX files itself (no torchvision on the instance): served here by a
loopback HTTP server, as a mirror of the user's own would be (MNIST_MIRROR)."""
from __future__ import annotations

import gzip
import http.server
import json
import os
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest
from stn.data import DataError, download_mnist, read_idx

from tests.stn_helpers import JOBS


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def mirror(tmp_path):
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte.gz": idx_bytes(rng.integers(0, 255, (200, 28, 28))),
        "train-labels-idx1-ubyte.gz": idx_bytes(np.arange(200) % 10),
        "t10k-images-idx3-ubyte.gz": idx_bytes(rng.integers(0, 255, (50, 28, 28))),
        "t10k-labels-idx1-ubyte.gz": idx_bytes(np.arange(50) % 10),
    }
    served: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            name = self.path.rsplit("/", 1)[-1]
            served.append(name)
            body = files.get(name)
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/mnist/", files, served
    server.shutdown()


def test_download_writes_whole_files_once(mirror, tmp_path):
    url, files, served = mirror
    download_mnist(str(tmp_path / "data"), (url,))
    assert sorted(os.listdir(tmp_path / "data")) == sorted(files)
    assert read_idx(str(tmp_path / "data" / "t10k-labels-idx1-ubyte.gz")).tolist() == [i % 10 for i in range(50)]
    download_mnist(str(tmp_path / "data"), (url,))  # already there: nothing fetched again
    assert len(served) == 4


def test_a_mirror_serving_garbage_leaves_no_file(mirror, tmp_path):
    url, files, _ = mirror
    files["train-labels-idx1-ubyte.gz"] = b"<html>not found</html>"
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        download_mnist(str(tmp_path / "data"), (url,))
    assert not any(name.startswith("train-labels") for name in os.listdir(tmp_path / "data"))


def test_train_stn_fetches_mnist_when_the_data_dir_is_empty(mirror, tmp_path):
    url, _, served = mirror
    out = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, str(JOBS / "train_stn.py"), "--dataset", "mnist", "--data-dir", str(tmp_path / "data"),
         "--steps", "3", "--batch-size", "16", "--eval-every", "3", "--log-every", "1", "--out", str(out)],
        env={**os.environ, "MNIST_MIRROR": url}, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert len(served) == 4
    assert json.loads((out / "summary.json").read_text())["steps"] == 3


def test_no_mirror_reachable_is_a_one_line_error(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(JOBS / "train_stn.py"), "--dataset", "mnist", "--data-dir", str(tmp_path / "d"),
         "--steps", "1"], env={**os.environ, "MNIST_MIRROR": "http://127.0.0.1:9/"},
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode != 0
    assert "Traceback" not in completed.stderr
    assert "MNIST download of train-images-idx3-ubyte.gz failed" in completed.stderr
