"""The hash locks (requirements*.lock, written by envs/lock.sh with uv): every package pinned with hashes, and the
same versions as the pins of requirements*.txt and envs/*.yaml, so that a pin changed without a refreshed lock fails.
"""

import re
from pathlib import Path

import pytest
from conftest import REPO
from test_envs import ENVS, env_packages, normalise, requirements

# each requirements file and the lock made from it (envs/lock.sh)
LOCK_OF = {
    "requirements.txt": "requirements.lock",
    "requirements-gpu.txt": "requirements-gpu.lock",
    "requirements-dev.txt": "requirements-dev.lock",
    "requirements-login.txt": "requirements-login.lock",
}
# what includes what (-r): a lock holds the pins of the files its source includes as well
INCLUDES = {"requirements-gpu.txt": ["requirements.txt"], "requirements-dev.txt": ["requirements.txt"]}


def lock_entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """Distribution -> (version, hashes) of a lock written by `uv pip compile --generate-hashes`."""
    entries = {}
    for block in re.split(r"\n(?=\S)", path.read_text()):
        head = block.split("\\")[0].strip()
        if not head or head.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==(\S+)", head)
        assert match, f"{path.name}: not an exact pin: {head!r}"
        entries[normalise(match.group(1))] = (match.group(3), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return entries


LOCKS = {name: lock_entries(REPO / name) for name in LOCK_OF.values()}


def test_lock_parsing(tmp_path):
    lock = tmp_path / "x.lock"
    lock.write_text(
        "# header\nPyYAML==6.0.4 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64 + "\n"
        "    # via snakemake\ntensorflow[and-cuda]==2.21.0 \\\n    --hash=sha256:" + "c" * 64 + "\n"
    )
    assert lock_entries(lock) == {"pyyaml": ("6.0.4", ["a" * 64, "b" * 64]), "tensorflow": ("2.21.0", ["c" * 64])}
    lock.write_text("numpy>=2\n")
    with pytest.raises(AssertionError, match="not an exact pin"):
        lock_entries(lock)


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_locked_package_has_its_hashes(lock):
    assert len(LOCKS[lock]) > 40, lock
    unhashed = [name for name, (_, hashes) in LOCKS[lock].items() if not hashes]
    assert not unhashed, f"{lock}: no --hash for {unhashed}"


@pytest.mark.parametrize("source", sorted(LOCK_OF))
def test_requirements_pins_are_the_locks_versions(source):
    lock = LOCKS[LOCK_OF[source]]
    pins = {}
    for name in [*INCLUDES.get(source, []), source]:
        pins |= requirements(REPO / name)
    assert pins, source
    disagree = {
        name: (pin, lock.get(name, ("missing",))[0]) for name, pin in pins.items() if lock.get(name, [0])[0] != pin
    }
    assert not disagree, f"{source} pin -> {LOCK_OF[source]}: {disagree}; refresh with envs/lock.sh (README, Layout)"


def test_the_gpu_lock_fixes_the_cuda_libraries():
    # tensorflow[and-cuda] accepts ranges (nvidia-cudnn-cu12>=9.3,<10 ...): the lock is what fixes them
    cuda = {name for name in LOCKS["requirements-gpu.lock"] if name.startswith("nvidia-")}
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12"} <= cuda
    assert not cuda & set(LOCKS["requirements.lock"]) and not cuda & set(LOCKS["requirements-dev.lock"])


def test_the_tensorflow_env_pins_every_cuda_library_of_the_gpu_lock():
    cuda = {
        name: version for name, (version, _) in LOCKS["requirements-gpu.lock"].items() if name.startswith("nvidia-")
    }
    pinned = env_packages(REPO / "envs/tensorflow.yaml")
    assert {name: pinned.get(name) for name in cuda} == cuda


def test_a_package_has_one_version_in_every_lock():
    versions = {}
    for lock, entries in LOCKS.items():
        for name, (version, _) in entries.items():
            versions.setdefault(name, {})[lock] = version
    split = {name: found for name, found in versions.items() if len(set(found.values())) > 1}
    assert not split, split


@pytest.mark.parametrize("env_file", ENVS, ids=lambda path: path.name)
def test_env_pins_are_the_locks_versions(env_file):
    lock = LOCKS["requirements-gpu.lock"]  # every env package is in it (tensorflow.yaml installs the CUDA extra)
    pins = {name: version for name, version in env_packages(env_file).items() if name not in ("python", "pip")}
    pins.pop("medmnist", None)  # installed --no-deps by data.post-deploy.sh, outside every lock (its deps hold torch)
    disagree = {
        name: (pin, lock.get(name, ("missing",))[0]) for name, pin in pins.items() if lock.get(name, [0])[0] != pin
    }
    assert not disagree, f"{env_file.name} pin -> requirements-gpu.lock: {disagree}"


def test_the_locks_are_made_by_the_refresh_script():
    script = (REPO / "envs/lock.sh").read_text()
    for source, lock in LOCK_OF.items():
        assert re.search(rf"^compile {re.escape(source)} .*-o {re.escape(lock)}$", script, flags=re.MULTILINE), lock
        header = (REPO / lock).read_text().splitlines()[:2]
        assert header[0] == "# This file was autogenerated by uv via the following command:", lock
        assert f" {source} " in header[1] and header[1].endswith(f"-o {lock}"), header
