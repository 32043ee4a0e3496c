"""The start of every TensorFlow job (rules train, evaluate, gradcam, transfer), in the one order that works.

1. fds 1 and 2 to the job's log (logs.log_to_file): TensorFlow's C++ code writes to them from its import on,
   so nothing here may import TensorFlow before this step.
2. A GPU no other running job holds (gpu_lock): CUDA_VISIBLE_DEVICES counts only before TensorFlow lists its devices.
3. training.require_gpu (hardware.enforce_gpu_requirement): stop now, not after hours on the CPU.
4. TensorFlow's threads and GPU memory growth (hardware.set_threads_and_memory): only before its first op.

The adapters in scripts/ hand plain values (log path, rule, wildcards, GPU count, setting, threads) to
start_tensorflow_job; nothing below them sees a Snakemake object.
"""

from __future__ import annotations

from collections.abc import Mapping

from .gpu_lock import job_label, pin_job_to_gpu
from .hardware import enforce_gpu_requirement, set_threads_and_memory
from .logs import log_to_file


def start_tensorflow_job(
    log: str | None, rule: str, wildcards: Mapping[str, str], gpus: int, require_gpu: bool | str, threads: int
) -> None:
    """Redirect the job's output to its log, pin it to a free GPU, check training.require_gpu, set TF's threads."""
    log_to_file(log)
    pin_job_to_gpu(gpus, job_label(rule, wildcards))  # no-op on a machine without GPU, or a rule without one
    enforce_gpu_requirement(require_gpu, rule)
    if not set_threads_and_memory(threads):
        print("note: TensorFlow already initialised, thread/GPU settings kept", flush=True)
