"""Pin a job to one GPU that no other running job holds, before TensorFlow touches a card.

Snakemake counts GPUs (`resources: gpu=1` against `--resources gpu=N`) but does not say *which*
card a job may use; without help every TensorFlow job starts on card 0. `claim_gpu()` closes
that gap on one machine: it takes an exclusive `fcntl.flock` on one lock file per card
(`$BLOODCELLS_GPU_LOCK_DIR/gpu{id}.lock`, default `/tmp/bloodcells-gpu-locks`) and sets
`CUDA_VISIBLE_DEVICES` to that card. The kernel drops the lock when the process ends, however
it ends (exit, exception, SIGKILL, OOM kill), so a crashed job never leaves a card blocked.

Which cards there are: `CUDA_VISIBLE_DEVICES` when it is set (a user who restricts the
workflow to cards 2,3 gets jobs pinned among 2 and 3; set but empty means none), else
`nvidia-smi -L`, else the device nodes `/dev/nvidia[0-9]*`. No card: nothing to do.
Inside a SLURM job that SLURM gave GPUs to, SLURM already made the card exclusive (and may
number it 0 in every job through cgroups), so no lock is taken there.

bloodcells.jobsetup calls it in every TensorFlow job, before TensorFlow lists its devices. Importing keras or
tensorflow does not yet initialise CUDA; the first device query does, and from then on
`CUDA_VISIBLE_DEVICES` is ignored (claim_gpu warns when it comes too late).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import gpus

LOCK_DIR_VARIABLE = "BLOODCELLS_GPU_LOCK_DIR"
DEFAULT_LOCK_DIR = "/tmp/bloodcells-gpu-locks"
SLURM_GPU_VARIABLES = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS")

# The card this process holds (later claim_gpu calls return it); its lock fd is never closed, so the lock lasts until
# the process ends.
_HELD: GpuClaim | None = None


@dataclass
class GpuClaim:
    """A card this process holds: its id as CUDA_VISIBLE_DEVICES names it, and the open lock file."""

    card: str
    path: Path
    fd: int


def lock_dir(environ: dict | None = None) -> Path:
    """Where the per-card lock files live."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(LOCK_DIR_VARIABLE) or DEFAULT_LOCK_DIR)


def candidate_cards(
    environ: dict | None = None, smi: Callable[[], list[str] | None] = gpus.nvidia_smi_ids, devices: str | Path = "/dev"
) -> list[str]:
    """The cards a job may be pinned to, in the order they are tried."""
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        return gpus.parse_visible_devices(environ["CUDA_VISIBLE_DEVICES"])
    listed = smi()
    if listed:
        return listed
    return gpus.device_node_ids(devices)


def slurm_assigned_gpus(environ: dict | None = None) -> str | None:
    """The GPUs SLURM allocated to the current job, if it is a SLURM job with GPUs (else None)."""
    environ = os.environ if environ is None else environ
    if "SLURM_JOB_ID" not in environ:
        return None
    for name in SLURM_GPU_VARIABLES:
        if environ.get(name):
            return environ[name]
    return None


def _lock_file_name(card: str) -> str:
    """A safe file name for a card id (an index, or a UUID such as GPU-3f2c...)."""
    return "gpu" + re.sub(r"[^A-Za-z0-9_.-]", "_", card) + ".lock"


def _open_lock(path: Path) -> int:
    """Open (creating if needed) a lock file that other users of the machine can lock as well."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # made by another user: a read-only descriptor can be flock'ed too
        return os.open(path, os.O_RDONLY)
    try:
        os.fchmod(fd, 0o666)
    except PermissionError:
        pass
    return fd


def _note_holder(fd: int, label: str) -> None:
    """Write who holds the card into its lock file (for the waiting message of others); best effort."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{label}\n".encode(), 0)
    except OSError:
        pass


def _holder_of(path: Path) -> str:
    """Who holds a card, as its lock file says ('?' where it cannot be read)."""
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def try_claim(cards: Sequence[str], directory: Path, label: str = "") -> GpuClaim | None:
    """Lock the first free card of `cards` without waiting; None when every one is held."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(directory, 0o1777)  # like /tmp: every user may add lock files, none may remove others'
    except PermissionError:
        pass
    for card in cards:
        path = directory / _lock_file_name(card)
        fd = _open_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                continue
            raise
        _note_holder(fd, label or f"pid {os.getpid()} on {socket.gethostname()}")
        return GpuClaim(card, path, fd)
    return None


def tensorflow_devices_initialised() -> bool:
    """Whether TensorFlow is imported and has already enumerated its devices (CUDA_VISIBLE_DEVICES is then fixed)."""
    if "tensorflow" not in sys.modules:
        return False
    try:
        from tensorflow.python.eager import context

        return context.context()._physical_devices is not None  # noqa: SLF001 (no public equivalent)
    except Exception:  # another TensorFlow layout: cannot tell, assume not
        return False


def claim_gpu(
    label: str = "",
    environ: dict | None = None,
    poll_seconds: float = 2.0,
    timeout: float | None = None,
    log: Callable[[str], None] | None = None,
    smi: Callable[[], list[str] | None] = gpus.nvidia_smi_ids,
    devices: str | Path = "/dev",
) -> str | None:
    """Pin this process to a free GPU: wait for a card no other job holds, lock it, set CUDA_VISIBLE_DEVICES.

    Returns the card id, or None when there is no GPU (then nothing changes) or SLURM already
    assigned one. The lock stays held until the process ends. `label` names the job in the lock
    file, for the log line of jobs that wait. `timeout` None waits for ever.
    """
    global _HELD
    environ = os.environ if environ is None else environ
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    if _HELD is not None:
        return _HELD.card
    slurm = slurm_assigned_gpus(environ)
    if slurm is not None:
        log(
            f"gpu_lock: SLURM job {environ.get('SLURM_JOB_ID')} was given GPU(s) {slurm}; "
            f"using CUDA_VISIBLE_DEVICES={environ.get('CUDA_VISIBLE_DEVICES', '')!r} as SLURM set it"
        )
        return None
    cards = candidate_cards(environ, smi=smi, devices=devices)
    if not cards:
        return None
    if tensorflow_devices_initialised():
        log(
            "gpu_lock: WARNING TensorFlow has already initialised its GPUs in this process; "
            "CUDA_VISIBLE_DEVICES set now has no effect (call claim_gpu before the first TensorFlow op)"
        )
    directory = lock_dir(environ)
    label = label or f"pid {os.getpid()} on {socket.gethostname()}"
    started = time.monotonic()
    next_note = 0.0
    while True:
        claim = try_claim(cards, directory, label)
        if claim is not None:
            break
        waited = time.monotonic() - started
        if timeout is not None and waited >= timeout:
            raise TimeoutError(f"gpu_lock: no free GPU among {cards} after {waited:.0f} s (locks in {directory})")
        if waited >= next_note:
            holders = "; ".join(f"{card}: {_holder_of(directory / _lock_file_name(card))}" for card in cards)
            log(
                f"gpu_lock: all {len(cards)} GPU(s) are held by other jobs ({holders}); "
                f"waiting for one to be free (waited {waited:.0f} s)"
            )
            next_note = waited + 60.0 if waited else 60.0
        time.sleep(poll_seconds)
    environ["CUDA_VISIBLE_DEVICES"] = claim.card
    # TensorFlow's switch for memory growth on every card, read when it initialises the GPU: a job never
    # reserves the whole card by surprise, even in code that forgets set_memory_growth
    environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    _HELD = claim
    log(f"gpu_lock: {label} pinned to GPU {claim.card} (CUDA_VISIBLE_DEVICES={claim.card}, lock {claim.path})")
    return claim.card


def job_label(rule: str, wildcards: Mapping[str, str]) -> str:
    """How a lock file names the job that holds its card: rule, wildcards, process and host."""
    values = ", ".join(f"{key}={value}" for key, value in wildcards.items())
    return f"rule {rule} ({values}) pid {os.getpid()} on {socket.gethostname()}"


def pin_job_to_gpu(count: int, label: str) -> str | None:
    """claim_gpu for a job that asks for a GPU (its rule's `resources: gpu`, here `count`, >= 1); else nothing."""
    if not count:
        return None
    return claim_gpu(label=label)
