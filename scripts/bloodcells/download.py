"""Verified downloads with the standard library only (the login node of a cluster may have nothing else)."""

from __future__ import annotations

import contextlib
import email.message
import hashlib
import http.client
import io
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .atomic import atomic_path
from .names import ARCHITECTURES
from .quoting import shown

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
CHUNK_BYTES = 1 << 20
PROGRESS_BYTES = 10 * 1000 * 1000
# Over twice the full study's bundle with its models (3.7 GB unpacked, docs/bundle.md); the largest official file,
# bloodmnist_224.npz (17,092 images of 224 x 224 x 3 bytes: at most 2.6 GB), is smaller. It bounds what a hostile
# or broken server can write to the disk.
MAX_BYTES = 8 << 30
# A 3.4 GB bundle at 0.5 MB/s; a server that sends one byte every few seconds is cut off here, not after days.
DEADLINE_S = 2 * 3600.0


class DownloadError(RuntimeError):
    """A download that failed or whose content does not match its MD5."""


class DownloadTooLarge(DownloadError):
    """A download larger than its byte limit (refused at its Content-Length, or cut at the limit)."""


def restore_max_bytes(config: dict) -> int:
    """The byte limit of a results bundle, as downloaded and as unpacked: config key restore_max_bytes, or
    MAX_BYTES where it is absent."""
    value = config.get("restore_max_bytes")
    if value is None:
        return MAX_BYTES
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"config key restore_max_bytes: {shown(str(value))} is not a positive number of bytes")
    return value


def file_md5(path: Path) -> str:
    """Return the hex MD5 of the file at `path`."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def _check_url(url: str) -> bool:
    """Raise ValueError unless `url` is https (or http to loopback); return whether it is loopback."""
    parts = urllib.parse.urlsplit(url)
    loopback = parts.hostname in LOOPBACK_HOSTS
    if parts.scheme == "https" or (parts.scheme == "http" and loopback):
        return loopback
    raise ValueError(
        f"refusing to download {shown(url)}: only https:// URLs (or http:// to loopback for tests) are allowed"
    )


def _host_and_port(parts: urllib.parse.SplitResult) -> tuple[str | None, int | None]:
    """The host and the port (the scheme's default where none is given) a URL connects to."""
    return parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)


def check_redirect(old: str, new: str, cross_host: bool) -> None:
    """Raise DownloadError unless a redirect from `old` to `new` may be followed: `new` passes _check_url, never
    goes from https to http, and (unless `cross_host`) stays on the same host and port."""
    try:
        _check_url(new)
        before, after = urllib.parse.urlsplit(old), urllib.parse.urlsplit(new)
        if before.scheme == "https" and after.scheme != "https":
            raise ValueError("it leaves https")
        if not cross_host and _host_and_port(before) != _host_and_port(after):
            raise ValueError("it goes to another host or port")
    except ValueError as error:
        raise DownloadError(f"{shown(old)} redirects to {shown(new)}, which was not requested: {error}") from None


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, each hop checked by check_redirect before it is requested."""

    def __init__(self, cross_host: bool) -> None:
        self.cross_host = cross_host

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: email.message.Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        """The request of the next hop, or a DownloadError (with the redirect response closed) if it is refused."""
        try:
            check_redirect(req.full_url, newurl, self.cross_host)
        except DownloadError:
            fp.close()
            raise
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Deadline:
    """A timer that shuts down every socket of a download when `seconds` have passed, waking a blocked read."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.started, self.expired = seconds, time.monotonic(), False
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.timer = threading.Timer(seconds, self.expire)
        self.timer.daemon = True

    def expire(self) -> None:
        """Mark the deadline passed and shut down the sockets opened so far."""
        with self.lock:
            self.expired = True
            for sock in self.sockets:
                _shut(sock)

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down when the deadline passes (at once if it has)."""
        with self.lock:
            self.sockets.append(sock)
            if self.expired:
                _shut(sock)

    def connection(self, base: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
        """`base` with each connected socket watched."""
        deadline = self

        class Watched(base):
            def connect(self) -> None:
                super().connect()
                deadline.watch(self.sock)

        return Watched

    def elapsed(self) -> float:
        """Seconds since the download started."""
        return time.monotonic() - self.started


def _shut(sock: socket.socket) -> None:
    """Shut down both directions of `sock` (the plain socket's call also wakes a blocked TLS read)."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _WatchedHTTP(urllib.request.HTTPHandler):
    """urllib's http handler whose connections a _Deadline watches."""

    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        """Open `req` on a watched connection."""
        return self.do_open(self.deadline.connection(http.client.HTTPConnection), req)


class _WatchedHTTPS(urllib.request.HTTPSHandler):
    """urllib's https handler (its default certificate checks) whose connections a _Deadline watches."""

    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        """Open `req` on a watched connection."""
        return self.do_open(self.deadline.connection(http.client.HTTPSConnection), req, context=self._context)


def _opener(loopback: bool, cross_host: bool, deadline: _Deadline) -> urllib.request.OpenerDirector:
    """An opener with checked redirects and watched connections (and no proxy for loopback)."""
    handlers = [_CheckedRedirects(cross_host), _WatchedHTTP(deadline), _WatchedHTTPS(deadline)]
    # A proxy from the environment must never see (or break) a test's loopback server.
    return urllib.request.build_opener(*handlers, *([urllib.request.ProxyHandler({})] if loopback else []))


def _limit_from_length(url: str, length: str | None, max_bytes: int) -> int | None:
    """The body length a Content-Length promises; DownloadTooLarge before any byte is read if over `max_bytes`."""
    total = int(length) if length and length.isdigit() else None
    if total is not None and total > max_bytes:
        raise DownloadTooLarge(
            f"{shown(url)}: refused, its Content-Length of {total:,} bytes is over the limit of {max_bytes:,} "
            "bytes; nothing was read"
        )
    return total


@dataclass
class _Progress:
    """How much of a download has arrived, and how much its Content-Length promised."""

    done: int = 0
    total: int | None = None
    opened: bool = False


def stream_to(
    url: str,
    tmp: Path,
    timeout: float = 60,
    log: Callable[[str], None] = print,
    algorithm: str = "md5",
    *,
    max_bytes: int = MAX_BYTES,
    deadline_s: float = DEADLINE_S,
    cross_host: bool = False,
) -> str:
    """Copy `url` into `tmp`, logging progress; return the hex digest (`algorithm`: md5, sha256) of what arrived.

    Each redirect is checked before it is followed (check_redirect; `cross_host` allows https to another host);
    more than `max_bytes` is refused, with or without a Content-Length; the whole download, headers included,
    is cut off after `deadline_s` seconds, and a read after `timeout` seconds of silence.
    """
    loopback = _check_url(url)
    deadline, progress = _Deadline(deadline_s), _Progress()
    deadline.timer.start()
    try:
        digest = _copy(_opener(loopback, cross_host, deadline), url, tmp, timeout, log, algorithm, max_bytes, progress)
    except (OSError, http.client.HTTPException) as error:
        if deadline.expired:
            raise _too_slow(url, deadline, progress) from None
        if not progress.opened:
            raise DownloadError(f"{shown(url)}: could not download ({error})") from error
        raise DownloadError(f"{shown(url)}: connection lost after {progress.done} bytes ({error})") from error
    finally:
        deadline.timer.cancel()
    # A socket shut down by the deadline reads as a clean end of file.
    if deadline.expired:
        raise _too_slow(url, deadline, progress)
    # http.client reads a short body as a clean end of file, so the length has to be checked here.
    if progress.total is not None and progress.done != progress.total:
        raise DownloadError(f"{shown(url)}: connection closed after {progress.done} of {progress.total} bytes")
    return digest


def _too_slow(url: str, deadline: _Deadline, progress: _Progress) -> DownloadError:
    """The error of a download cut off at its deadline, with what had arrived."""
    of_total = f" of {progress.total:,}" if progress.total is not None else ""
    return DownloadError(
        f"{shown(url)}: stopped after {deadline.elapsed():.1f} s (the deadline is {deadline.seconds:g} s) with "
        f"{progress.done:,}{of_total} bytes received: the server is too slow or has stalled"
    )


def _copy(
    opener: urllib.request.OpenerDirector,
    url: str,
    tmp: Path,
    timeout: float,
    log: Callable[[str], None],
    algorithm: str,
    max_bytes: int,
    progress: _Progress,
) -> str:
    """Open `url` and write its body to `tmp`, counting it in `progress`; return the hex digest of the body."""
    with opener.open(url, timeout=timeout) as response, open(tmp, "wb") as out:
        progress.opened = True
        progress.total = total = _limit_from_length(url, response.headers.get("Content-Length"), max_bytes)
        step = min(PROGRESS_BYTES, max(total // 20, 1)) if total else PROGRESS_BYTES
        digest, next_report = hashlib.new(algorithm), step
        # read1: one read of the socket at most, so that no call waits for a whole chunk from a slow server;
        # one byte past the limit tells a body over it from one exactly at it.
        while chunk := response.read1(min(CHUNK_BYTES, max_bytes + 1 - progress.done)):
            progress.done += len(chunk)
            if progress.done > max_bytes:
                raise DownloadTooLarge(
                    f"{shown(url)}: stopped reading after {progress.done:,} bytes, over the limit of "
                    f"{max_bytes:,} bytes (the server gave no Content-Length)"
                )
            out.write(chunk)
            digest.update(chunk)
            if progress.done >= next_report:
                of_total = f" of {total / 1e6:.1f} MB ({100 * progress.done / total:.0f} %)" if total else ""
                log(f"{Path(urllib.parse.urlsplit(url).path).name}: {progress.done / 1e6:.1f} MB{of_total}")
                next_report = progress.done + step
    return digest.hexdigest()


def download_verified(url: str, md5: str, dest: Path, timeout: float = 60, log: Callable[[str], None] = print) -> Path:
    """Download `url` to `dest` atomically, keeping it only if its MD5 is `md5`; skip when `dest` already matches."""
    _check_url(url)
    dest, md5 = Path(dest), md5.lower()
    if dest.is_file():
        if file_md5(dest) == md5:
            log(f"{dest} is already present with MD5 {md5}; not downloading")
            return dest
        log(f"{dest} exists but its MD5 differs from {md5}; downloading it again")
    log(f"downloading {url} -> {dest}")
    with atomic_path(dest) as tmp:
        # The official hosts may hand a file to a storage host (over https only): the pinned MD5, not the host,
        # vouches for what arrives, and these URLs carry no secret that another host could see.
        actual = stream_to(url, tmp, timeout, log, cross_host=True)
        if actual != md5:
            raise DownloadError(f"{url}: MD5 mismatch, expected {md5} but got {actual}; the file was not kept")
    log(f"{dest}: MD5 {md5} verified")
    return dest


# --- MedMNIST's official files ---------------------------------------------------------------------


def _medmnist_info() -> dict[str, dict]:
    """Return medmnist.info.INFO without the package's 'install torch' message on stdout."""
    # Importing medmnist.info runs medmnist/__init__.py, which prints when torch is absent (our setup).
    with contextlib.redirect_stdout(io.StringIO()):
        from medmnist.info import INFO
    return INFO


def medmnist_url_and_md5(flag: str, size: int) -> tuple[str, str]:
    """Return the official URL and MD5 of the MedMNIST npz for `flag` (e.g. 'bloodmnist') at `size` px."""
    info = _medmnist_info()
    if flag not in info:
        raise ValueError(f"unknown MedMNIST flag {flag!r}; known flags: {sorted(info)}")
    entry = info[flag]
    sizes = sorted([28] + [int(key[4:]) for key in entry if key.startswith("url_") and key[4:].isdigit()])
    suffix = "" if size == 28 else f"_{size}"
    if f"url{suffix}" not in entry or f"MD5{suffix}" not in entry:
        raise ValueError(f"MedMNIST {flag!r} has no {size} px file; available sizes: {sizes}")
    return entry[f"url{suffix}"], entry[f"MD5{suffix}"].lower()


# --- Keras' ImageNet weights -----------------------------------------------------------------------

# Where keras.applications.ResNet50/101(weights="imagenet", include_top=False) fetch their weights
# (keras/src/applications/resnet.py, BASE_WEIGHTS_PATH); their MD5s are names.ARCHITECTURES'.
KERAS_RESNET_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
IMAGENET_NOTOP_NAME = "{arch}_weights_tf_dim_ordering_tf_kernels_notop.h5"


def imagenet_weights_name(arch: str) -> str:
    """Keras' file name of the ImageNet weights of `arch` without the classifier top."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch: no ImageNet weights known for '{arch}'; known: {sorted(ARCHITECTURES)}")
    return IMAGENET_NOTOP_NAME.format(arch=arch)


def imagenet_weights_url_and_md5(arch: str) -> tuple[str, str]:
    """The URL and MD5 of the ImageNet no-top weights of `arch`, as Keras records them."""
    return KERAS_RESNET_WEIGHTS_URL + imagenet_weights_name(arch), ARCHITECTURES[arch].imagenet_notop_md5


def imagenet_weights_pattern(config: dict) -> str:
    """The path of the ImageNet weights files with an {arch} wildcard (the output of rule download_weights)."""
    return str(Path(config["training"]["weights_dir"]) / IMAGENET_NOTOP_NAME)


def imagenet_weights_file(config: dict, arch: str) -> str | None:
    """The ImageNet weights file a run of `arch` starts from, or None when training starts from random weights."""
    training = config["training"]
    if training["weights"] != "imagenet":
        return None
    return str(Path(training["weights_dir"]) / imagenet_weights_name(arch))


def check_file_md5(path: str | Path, md5: str, what: str) -> None:
    """Raise DownloadError naming `path` unless its MD5 is `md5` (a hand-placed or damaged file)."""
    actual = file_md5(Path(path))
    if actual != md5.lower():
        raise DownloadError(
            f"{path}: MD5 {actual} is not the {md5} of {what}; delete the file (the workflow fetches "
            "it again) or replace it with the right one"
        )


def verified_weights(path: str | None, arch: str, md5: str | None = None) -> str | None:
    """The ImageNet weights file a run starts from, its MD5 checked against `md5` (training.weights_md5), else
    Keras' (None: random initialisation)."""
    if path is not None:
        if md5 is None:
            check_file_md5(path, ARCHITECTURES[arch].imagenet_notop_md5, f"Keras' ImageNet no-top weights of {arch}")
        else:
            check_file_md5(path, md5, f"the {arch} weights file that config key training.weights_md5.{arch} names")
    return path
