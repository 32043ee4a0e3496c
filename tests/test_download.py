"""ImageNet weights as data: Keras' URL and MD5, fetched once by a rule, read (never downloaded) by training."""

import hashlib
import http.server
import re
import socket
import ssl
import subprocess
import threading
import time

import numpy as np
import pytest
from conftest import REPO, TINY, load_rule_script, run_snakemake

from bloodcells import download
from bloodcells.names import ARCHITECTURES


@pytest.mark.parametrize("arch", ["resnet50", "resnet101"])
def test_weights_url_and_md5_are_the_ones_keras_records(arch):
    from keras.src.applications import resnet

    url, md5 = download.imagenet_weights_url_and_md5(arch)
    assert url == resnet.BASE_WEIGHTS_PATH + f"{arch}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert md5 == resnet.WEIGHTS_HASHES[arch][1]  # [1]: include_top=False
    assert url.startswith("https://")


def test_download_module_needs_only_the_standard_library():
    # the download rules run on a cluster's login node, whose environment may hold only Snakemake
    import ast
    import sys

    tree = ast.parse((REPO / "scripts/bloodcells/download.py").read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and not node.level
    }
    assert imported - sys.stdlib_module_names <= {"medmnist"}, imported


def test_hand_placed_file_with_wrong_md5_is_refused_by_name(tmp_path):
    train = load_rule_script("train")
    placed = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    placed.write_bytes(b"not the weights")
    with pytest.raises(download.DownloadError) as error:
        train.verified_weights(str(placed), "resnet50")
    assert str(placed) in str(error.value) and ARCHITECTURES["resnet50"].imagenet_notop_md5 in str(error.value)
    assert train.verified_weights(None, "resnet50") is None


def legacy_weights_file(path, seed: int) -> np.ndarray:
    """A no-top ResNet-50 weights file in the legacy HDF5 layout of Keras' ImageNet files; returns conv1's kernel."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(seed)
    base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, base)
    return base.get_layer("conv1_conv").get_weights()[0]


def test_training_starts_from_the_weights_file_without_the_network(tmp_path, monkeypatch):
    from bloodcells.model import build_model
    from bloodcells.training import RunSpec, TrainSettings, train_run

    weights = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    kernel = legacy_weights_file(weights, seed=7)

    def no_network(*args, **kwargs):
        raise AssertionError("a training job opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    images = np.zeros((8, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(8) % 4
    spec = RunSpec(arch="resnet50", size=32, batch_size=8, weights="imagenet")
    # an ImageNet run given no file stops before building anything (Keras would download into ~/.keras)
    with pytest.raises(ValueError, match="download_weights"):
        train_run(
            (images, labels),
            (images, labels),
            4,
            spec,
            TrainSettings(max_epochs=1),
            tmp_path / "ckpt",
            log=lambda message: None,
            verbose=0,
        )
    assert not (tmp_path / "ckpt").exists()
    # the file is what train_run hands to build_model: the ResNet starts from exactly its weights
    model = build_model("resnet50", 32, 4, weights=str(weights))
    np.testing.assert_array_equal(model.get_layer("conv1_conv").get_weights()[0], kernel)


def test_dry_run_fetches_each_weights_file_once_and_a_placed_file_is_used(tmp_path):
    import yaml

    config = yaml.safe_load(TINY.read_text())
    config["training"]["weights"] = "imagenet"
    config["training"]["weights_dir"] = str(tmp_path / "cache")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    listing = run_snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(path)).stdout
    fetched = sorted(
        set(
            line.split("/")[-1]
            for line in listing.split()
            if line.endswith("_weights_tf_dim_ordering_tf_kernels_notop.h5")
        )
    )
    assert fetched == [
        "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ]
    assert len(re.findall(r"^(local)?rule download_weights:", listing, flags=re.MULTILINE)) == 2
    # files placed by hand (e.g. copied from ~/.keras/models) are used as they are: nothing to download
    (tmp_path / "cache").mkdir()
    for name in fetched:
        (tmp_path / "cache" / name).write_bytes(b"placed")
    listing = run_snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(path)).stdout
    assert not re.search(r"^(local)?rule download_weights:", listing, flags=re.MULTILINE)
    assert re.search(r"^rule train:", listing, flags=re.MULTILINE)


# --- hostile servers: redirects, sizes, deadlines ---------------------------------------------------


class Loopback:
    """A threaded HTTP (or, given a TLS context, HTTPS) server on 127.0.0.1 whose paths are answered by a test's
    functions; it records each path requested and the body bytes its handlers report sent."""

    def __init__(self, routes: dict, tls: ssl.SSLContext | None = None) -> None:
        self.requested: list[str] = []
        self.sent, self.finished = 0, threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requested.append(self.path)
                routes[self.path.split("?")[0]](self, server)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        """The URL of `path` on this server, addressed by `host`."""
        return f"{self.scheme}://{host}:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    """Start Loopback servers for a test and close them after it."""
    started: list[Loopback] = []

    def start(routes: dict, tls: ssl.SSLContext | None = None) -> Loopback:
        started.append(Loopback(routes, tls))
        return started[-1]

    yield start
    for server in started:
        server.close()


def send(body: bytes, length: bool = True):
    """A route answering 200 with `body` (with or without a Content-Length)."""

    def route(handler: http.server.BaseHTTPRequestHandler, server: Loopback) -> None:
        handler.send_response(200)
        if length:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return route


def redirect(to: str):
    """A route answering 302 to `to`."""

    def route(handler: http.server.BaseHTTPRequestHandler, server: Loopback) -> None:
        handler.send_response(302)
        handler.send_header("Location", to)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def flood(total: int, length: int | None = None, chunk: int = 1 << 16):
    """A route sending `total` zero bytes from a generator (so nothing is held in memory), counting what the
    socket accepted in server.sent until the client hangs up; `length`: the Content-Length it claims."""

    def route(handler: http.server.BaseHTTPRequestHandler, server: Loopback) -> None:
        handler.send_response(200)
        if length is not None:
            handler.send_header("Content-Length", str(length))
        handler.end_headers()
        try:
            for block in (bytes(chunk) for _ in range(total // chunk)):
                handler.wfile.write(block)
                server.sent += len(block)
        except OSError:
            pass  # the client hung up: what it refused to read is the point of the test
        finally:
            handler.close_connection = True
            server.finished.set()

    return route


def drip(head: bytes, body: bytes, every_s: float):
    """A route writing `head` at once, then `body` one byte every `every_s` seconds (raw bytes, so the head may
    stop in the middle of the headers)."""

    def route(handler: http.server.BaseHTTPRequestHandler, server: Loopback) -> None:
        handler.wfile.write(head)
        try:
            for byte in body:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                server.sent += 1
                time.sleep(every_s)
        except OSError:
            pass
        finally:
            handler.close_connection = True
            server.finished.set()

    return route


def quiet(message: str) -> None:
    pass


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: (the server's context, a client context that trusts it)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


def test_a_redirect_from_https_to_http_is_refused_before_it_is_requested(servers, tls, tmp_path, monkeypatch):
    server_context, client_context = tls
    monkeypatch.setattr(ssl, "_create_default_https_context", lambda: client_context)
    plain = servers({"/bundle.tar.gz": send(b"bundle")})
    secure = servers(
        {
            "/moved": redirect("/bundle.tar.gz?token=s3cret"),  # within https: followed
            "/bundle.tar.gz": redirect(plain.url("/bundle.tar.gz?token=s3cret")),
        },
        server_context,
    )
    with pytest.raises(download.DownloadError) as error:
        download.stream_to(secure.url("/moved"), tmp_path / "b", log=quiet, cross_host=True)
    message = str(error.value)
    assert secure.url("/bundle.tar.gz?token=s3cret") in message and plain.url("/bundle.tar.gz?token=s3cret") in message
    assert "leaves https" in message
    assert secure.requested == ["/moved", "/bundle.tar.gz?token=s3cret"]
    assert plain.requested == []  # the token never went out in clear
    # the same server's https answer is fetched as before
    secure_ok = servers({"/bundle.tar.gz": send(b"bundle")}, server_context)
    digest = download.stream_to(secure_ok.url("/bundle.tar.gz"), tmp_path / "b", log=quiet, algorithm="sha256")
    assert digest == hashlib.sha256(b"bundle").hexdigest()


def test_a_redirect_to_another_host_is_refused_unless_allowed(servers, tmp_path):
    # 127.0.0.1 and localhost are the same server under two host names: only the name differs
    other = servers({"/file": send(b"official file")})
    server = servers({"/start": redirect(other.url("/file", host="localhost"))})
    with pytest.raises(download.DownloadError) as error:
        download.stream_to(server.url("/start"), tmp_path / "f", log=quiet)
    assert server.url("/start") in str(error.value) and other.url("/file", host="localhost") in str(error.value)
    assert "another host" in str(error.value) and other.requested == []
    # the official files (MD5 pinned) may move to a storage host
    digest = download.stream_to(server.url("/start"), tmp_path / "f", log=quiet, cross_host=True)
    assert digest == hashlib.md5(b"official file").hexdigest() and other.requested == ["/file"]


@pytest.mark.parametrize(
    "old, new, cross_host, reason",
    [
        ("https://zenodo.org/record/1/files/a.npz", "https://zenodo.org/records/1/files/a.npz", False, None),
        ("https://zenodo.org/a", "https://cdn.example.org/a", True, None),
        ("https://zenodo.org/a", "https://cdn.example.org/a", False, "another host"),
        ("https://zenodo.org/a", "https://zenodo.org:8443/a", False, "another host"),
        ("https://zenodo.org/a", "http://zenodo.org/a", True, "only https"),
        ("https://127.0.0.1:8000/a", "http://127.0.0.1:8000/a", True, "leaves https"),
        ("http://127.0.0.1:8000/a", "ftp://127.0.0.1/a", True, "only https"),
        ("http://127.0.0.1:8000/a", "file:///etc/passwd", True, "only https"),
    ],
)
def test_check_redirect(old, new, cross_host, reason):
    if reason is None:
        download.check_redirect(old, new, cross_host)
    else:
        with pytest.raises(download.DownloadError, match=reason):
            download.check_redirect(old, new, cross_host)


def test_a_body_without_content_length_is_cut_at_the_limit(servers, tmp_path):
    limit = 2 << 20
    server = servers({"/huge": flood(300 << 20), "/exact": send(bytes(limit), length=False)})
    start = time.monotonic()
    with pytest.raises(download.DownloadTooLarge) as error:
        download.stream_to(server.url("/huge"), tmp_path / "huge", log=quiet, max_bytes=limit)
    assert f"over the limit of {limit:,} bytes" in str(error.value) and "no Content-Length" in str(error.value)
    assert server.finished.wait(10)
    # what the loopback socket buffers held when the client hung up, not the 300 MB the server had to send
    assert server.sent < limit + (32 << 20), server.sent
    assert (tmp_path / "huge").stat().st_size <= limit and time.monotonic() - start < 10
    # a body of exactly the limit is not over it
    digest = download.stream_to(server.url("/exact"), tmp_path / "exact", log=quiet, max_bytes=limit)
    assert digest == hashlib.md5(bytes(limit)).hexdigest()


def test_a_content_length_over_the_limit_is_refused_before_the_body_is_read(servers, tmp_path):
    server = servers({"/huge": flood(300 << 20, length=300 << 20)})
    with pytest.raises(download.DownloadTooLarge) as error:
        download.stream_to(server.url("/huge"), tmp_path / "huge", log=quiet, max_bytes=1 << 20)
    assert "Content-Length of 314,572,800 bytes is over the limit of 1,048,576 bytes" in str(error.value)
    assert server.finished.wait(10) and server.sent < 32 << 20, server.sent
    assert (tmp_path / "huge").stat().st_size == 0


DRIP_BODY = (b"HTTP/1.0 200 OK\r\nContent-Length: 50\r\n\r\n", bytes(50), True)  # the body, byte by byte
DRIP_HEADERS = (b"HTTP/1.0 200 OK\r\n", b"X-Slow: " + b"a" * 40 + b"\r\n\r\n", False)  # the headers, byte by byte


@pytest.mark.parametrize(
    "head, body, in_body, secure",
    [(*DRIP_BODY, False), (*DRIP_HEADERS, False), (*DRIP_BODY, True)],
    ids=["body", "headers", "https-body"],
)
def test_a_slow_server_is_cut_off_at_the_deadline(servers, tls, monkeypatch, tmp_path, head, body, in_body, secure):
    # over https the timer's shutdown has to wake a blocked TLS read as well
    monkeypatch.setattr(ssl, "_create_default_https_context", lambda: tls[1])
    server = servers({"/slow": drip(head, body, every_s=0.1)}, tls[0] if secure else None)
    start = time.monotonic()
    with pytest.raises(download.DownloadError) as error:
        download.stream_to(server.url("/slow"), tmp_path / "slow", timeout=30, log=quiet, deadline_s=1.0)
    elapsed = time.monotonic() - start
    message = str(error.value)
    assert re.search(r"stopped after 1\.\d s \(the deadline is 1 s\) with \d+( of 50)? bytes received", message)
    received = int(re.search(r"with (\d+)", message).group(1))
    # each read waits at most 0.1 s here, but the per-read timeout (30 s) alone would have waited 5 s in all
    assert 0.9 < elapsed < 3 and server.sent < len(body)
    assert 3 <= received <= server.sent if in_body else received == 0


def test_a_huge_redirect_target_is_quoted_in_part():
    target = "https://cdn.example.org/" + "a" * 100_000
    with pytest.raises(download.DownloadError) as error:
        download.check_redirect("https://zenodo.org/a", target, cross_host=False)
    assert len(str(error.value)) < 500 and "(100024 characters)" in str(error.value)


def test_restore_max_bytes_reads_the_config_key():
    assert download.restore_max_bytes({}) == download.restore_max_bytes({"restore_max_bytes": None}) == 8 << 30
    assert download.restore_max_bytes({"restore_max_bytes": 1000}) == 1000
    for bad in (0, -5, True, "8GB", 1.5):
        with pytest.raises(ValueError, match="config key restore_max_bytes"):
            download.restore_max_bytes({"restore_max_bytes": bad})
