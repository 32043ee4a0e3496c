"""The workflow through `--profile profiles/slurm` against a real (single-node) SLURM cluster.

Start the cluster first with `.ci/slurm-setup.sh` (root; stop it with `.ci/slurm-teardown.sh`).
Without `sbatch` on PATH or a responding controller the test is skipped, unless
BLOODCELLS_REQUIRE_SLURM=1 (set by CI), which turns a missing cluster into a failure.

The run is CPU-only: a profile layered on top of profiles/slurm sets `gpu: 0` for the GPU rules
(the test node has no GPU), shrinks memory requests to fit the node, drops conda (the test venv
has every package) and sends no account (no accounting on the test cluster). Everything else,
partitions, runtimes, the status command, comes from profiles/slurm unchanged.

The same run also shows that a training job cut by SLURM's time limit survives: SLURM kills it in
the middle of training (state TIMEOUT, SIGTERM to the job), Snakemake's `retries` submits it again,
and the new job resumes from the checkpoint of the last committed epoch and finishes. How the cut
is made, and why not with a one-minute `runtime` on the first attempt
(`runtime: "1 if attempt == 1 else 240"` in set-resources):

* SLURM's smallest limit is one minute from the job's start, and slurmctld enforces limits only
  at its time-limit check, every 30 s (a 1-minute job here was killed after 76 s). The training
  job needs 35-55 s from its start to its first committed epoch on this 2-core machine, so on a
  machine twice as slow a 1-minute limit could kill it before any epoch was committed: it would
  train from scratch and nothing would show a resumption. On a fast machine, the other way round,
  the whole training would have to outlast up to 90 s.
* So both attempts are submitted with the profile's runtime (`-t 240`), and the test watches the
  checkpoint's state.json. Right after the first committed epoch it sets the job's end to now:
  `scontrol update JobId=<id> EndTime=now+2`, which lowers the job's time limit to the time
  it has run. slurmctld enforces it as any limit, at its next check (2-32 s later): SIGTERM to the
  job, `DUE TO TIME LIMIT` in its log, state TIMEOUT. Unlike `TimeLimit=1` this needs no full
  minute since the job's start, so the cut always falls after epoch 1, at most ~32 s later.
* MAX_EPOCHS (no early stopping) makes the training outlast that check: its 49 epochs after the
  first take about 1.5 s each on a 2-core AMD EPYC (AVX-512; each writes a ~280 MB weights checkpoint),
  about 73 s in all, against at most 32 s until the cut; a slower machine has more margin (CPU share
  halved by load: epoch 1 after 79 s, an epoch every 4-5 s, cut after epoch 2, passed), and a machine up
  to ~2.3x faster still has enough (each epoch adds ~1.5 s of test time here). The cut epoch varies from
  run to run (it depends on where slurmctld's 30 s cycle stands): epochs 1-16 seen here.
* Snakemake deletes a job's log files before it runs the job again, so logs/train/<run>.log holds
  only the retry's lines (`resuming from ... after epoch N`); the test keeps a copy of the first
  job's log as it last was (train-attempt-1.log, with the SIGTERM line) to check both.
"""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SNAKEMAKE

PROFILE = REPO / "profiles/slurm"
TINY = REPO / "tests/configs/tiny.yaml"
GPU_RULES = ("train", "evaluate", "gradcam")
RUN = "synthetic-32-resnet50-bs32-s0"
# explicit targets, so that studies added to tiny.yaml later do not grow this test
TARGETS = ["results/tables/table3.csv", f"results/gradcam/{RUN}/panel.png", "results/figures/montage_synthetic.png"]
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")
TRAIN_SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: [^)]*/rule_train/")
# Epochs of the test run (no early stopping): the first attempt is cut after epoch 1, at most ~32 s
# later (slurmctld's time-limit check), while epochs 2..MAX_EPOCHS (about 1.5 s each here, 73 s) still run.
MAX_EPOCHS = 50


def cluster_problem() -> str | None:
    """Why no SLURM cluster can be used here, or None when one answers with an idle or busy node."""
    for tool in ("sbatch", "squeue", "sinfo"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    try:
        states = subprocess.run(
            ["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, timeout=20
        ).stdout.split()
    except (OSError, subprocess.SubprocessError) as error:
        return f"sinfo failed: {error}"
    if not any(state.rstrip("*~#") in ("idle", "mixed", "allocated") for state in states):
        return f"no usable SLURM node (sinfo: {states or 'no answer'}); run .ci/slurm-setup.sh"
    return None


@pytest.fixture(scope="module")
def cluster():
    problem = cluster_problem()
    if problem:
        if os.environ.get("BLOODCELLS_REQUIRE_SLURM") == "1":
            pytest.fail(f"SLURM required (BLOODCELLS_REQUIRE_SLURM=1) but {problem}")
        pytest.skip(problem)


def node_cpus() -> int:
    out = subprocess.run(["sinfo", "--noheader", "--format=%c"], capture_output=True, text=True, timeout=20).stdout
    return min(int(value.rstrip("+")) for value in out.split())


def ci_overlay(profile: dict, cpus: int) -> dict:
    """The settings that make profiles/slurm run CPU-only on the small test node (top-level keys replace its own)."""
    defaults = dict(profile["default-resources"])
    defaults["mem_mb"] = min(defaults["mem_mb"], 1000)
    rules = {}
    for rule, resources in profile["set-resources"].items():
        resources = dict(resources)
        if "gpu" in resources:
            resources["gpu"] = 0
            resources.pop("gpu_model", None)
        resources["mem_mb"] = min(resources.get("mem_mb", 4000), 3000)
        resources["cpus_per_task"] = min(resources.get("cpus_per_task", 1), cpus)
        rules[rule] = resources
    return {
        "default-resources": defaults,
        "set-resources": rules,
        "use-conda": False,  # the test's venv already has every package
        "slurm-no-account": True,  # no accounting on the test cluster
        "slurm-init-seconds-before-status-checks": 3,
        "seconds-between-status-checks": 3,
        # one resubmission, for the training job cut by the time limit; the tests check that no other job was retried
        "retries": 1,
        "keep-going": False,
    }


def small_config(path: Path) -> Path:
    """tests/configs/tiny.yaml with a one-run Table 3 grid (ResNet-50, batch 32): a train -> evaluate -> gradcam chain.

    The run trains MAX_EPOCHS epochs (patience as long: no early stopping), long enough to be cut by the time limit.
    """
    config = yaml.safe_load(TINY.read_text())
    config["studies"]["table3"]["grid"] = {"arch": ["resnet50"], "batch_size": [32]}
    config["training"]["threads"] = 1
    config["training"]["max_epochs"] = MAX_EPOCHS
    config["training"]["patience"] = MAX_EPOCHS
    path.write_text(yaml.safe_dump(config))
    return path


def slurm_jobs(ids: list[str]) -> dict[str, dict]:
    """What SLURM knows of these jobs (finished ones stay in squeue for MinJobAge): state, comment, start and end."""
    out = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i|%T|%k|%S|%e", "--jobs", ",".join(ids)],
        capture_output=True,
        text=True,
        timeout=20,
    ).stdout

    def seconds(stamp: str) -> float | None:
        try:
            return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").timestamp()
        except ValueError:  # N/A, Unknown
            return None

    jobs = {}
    for line in out.split():
        job, state, comment, start, end = line.split("|")
        jobs[job] = {
            "state": state,
            "rule": comment.removeprefix("rule_").split("_wildcards_")[0],
            "start": seconds(start),
            "end": seconds(end),
        }
    return jobs


def committed_epochs(state_json: Path) -> int | None:
    """epochs_done of the run's checkpoint (state.json is replaced atomically), or None without one."""
    try:
        return json.loads(state_json.read_text())["epochs_done"]
    except (OSError, ValueError, KeyError):
        return None


def leftover_processes(workdir: Path) -> dict[int, tuple[str | None, str]]:
    """Processes still running whose command line names this run's directory: pid -> (SLURM job id, command line)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if str(workdir) not in command:
                    continue
                environ = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            job = next((item.split(b"=", 1)[1].decode() for item in environ if item.startswith(b"SLURM_JOB_ID=")), None)
            found[int(proc.name)] = (job, command)
    return found


def run_and_cut_training(command: list[str], workdir: Path, env: dict, timeout: float) -> dict:
    """Run Snakemake; once the first training job has committed an epoch, end it by SLURM's time limit.

    Returns what was seen: Snakemake's return code and output, the checkpoint's commits (time, epochs, SLURM job),
    the time limit set (SLURM job, time, epochs committed), and the first job's rule log as it last was: Snakemake
    deletes a job's log files before it runs the job again, so the retry's log starts afresh (kept as
    train-attempt-1.log).
    """
    output_path = workdir / "snakemake-output.txt"
    state_json = workdir / f"results/checkpoints/{RUN}/state.json"
    train_log = workdir / f"logs/train/{RUN}.log"
    seen = {"commits": [], "cut": None, "cut_error": None, "first_log": "", "first_log_done": False}
    last_epochs = None
    seen["start"] = start = time.time()
    with output_path.open("w") as output:
        process = subprocess.Popen(command, cwd=workdir, stdout=output, stderr=subprocess.STDOUT, env=env)
        try:
            while process.poll() is None:
                if time.time() - start > timeout:
                    process.send_signal(signal.SIGTERM)  # Snakemake cancels its SLURM jobs on the way out
                    process.wait(timeout=60)
                    pytest.fail(f"snakemake via SLURM took over {timeout} s; output in {output_path}")
                trains = TRAIN_SUBMITTED.findall(output_path.read_text(errors="replace"))
                if not seen["first_log_done"]:  # the first job's log, until the retry replaces it
                    try:
                        text = train_log.read_text(errors="replace")
                    except OSError:
                        text = ""
                    if text.startswith(seen["first_log"]):
                        seen["first_log"] = text
                    else:
                        seen["first_log_done"] = True
                epochs = committed_epochs(state_json)
                if epochs is not None and epochs != last_epochs:
                    seen["commits"].append((time.time(), epochs, trains[-1] if trains else None))
                    last_epochs = epochs
                if seen["cut"] is None and seen["cut_error"] is None and len(trains) == 1 and epochs:
                    # SLURM's own limit, moved to now: slurmctld ends the job at its next time-limit check
                    update = ["scontrol", "update", f"JobId={trains[0]}", "EndTime=now+2"]
                    done = subprocess.run(update, capture_output=True, text=True, timeout=20)
                    if done.returncode == 0:
                        seen["cut"] = (trains[0], time.time(), epochs)
                    else:
                        seen["cut_error"] = f"{' '.join(update)}: {done.stderr.strip()}"
                time.sleep(0.5)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    seen["end"] = time.time()
    seen["returncode"] = process.returncode
    seen["output"] = output_path.read_text(errors="replace")
    (workdir / "train-attempt-1.log").write_text(seen["first_log"])
    # The test cluster tracks a job's processes by parentage (proctrack/linuxproc: no cgroups in CI). When the time
    # limit ends the first training job, its batch shell dies at once and the job's Snakemake, busy shutting down,
    # is re-parented to init, where SLURM's final SIGKILL cannot find it. Ended here, once the run is over.
    seen["leftovers"] = leftover_processes(workdir)
    for pid in seen["leftovers"]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return seen


def print_timings(seen: dict) -> None:
    """The run's phases, for the -s output: every SLURM job, the checkpoint's commits and the cut."""
    start = seen["start"]
    ids = [job for _, job in SUBMITTED.findall(seen["output"])]
    jobs = slurm_jobs(ids) if ids else {}
    lines = [f"\nSLURM run, seconds since snakemake started (total {seen['end'] - start:.0f} s):"]
    for job, info in sorted(jobs.items(), key=lambda item: item[1]["start"] or 0):
        began = f"{info['start'] - start:5.0f}" if info["start"] else "    ?"
        ended = f"{info['end'] - start:5.0f}" if info["end"] else "    ?"
        took = f"{info['end'] - info['start']:4.0f} s" if info["start"] and info["end"] else ""
        lines.append(f"  job {job:>4} {info['rule']:<16} {info['state']:<10} {began} -> {ended}  {took}")
    trains = TRAIN_SUBMITTED.findall(seen["output"])
    for attempt, job in enumerate(trains, start=1):
        commits = [(when, epochs) for when, epochs, commit_job in seen["commits"] if commit_job == job]
        began = jobs.get(job, {}).get("start")
        if not commits or not began:
            continue
        steps = sorted(later[0] - earlier[0] for earlier, later in zip(commits, commits[1:], strict=False))
        per_epoch = f", then an epoch every {steps[len(steps) // 2]:.1f} s (median of {len(steps)})" if steps else ""
        lines.append(
            f"  training attempt {attempt} (job {job}): epoch {commits[0][1]} committed "
            f"{commits[0][0] - began:.0f} s after the job started{per_epoch}; last: epoch {commits[-1][1]}"
        )
    if seen["cut"]:
        job, when, epochs = seen["cut"]
        ended = jobs.get(job, {}).get("end")
        lag = f"; slurmctld ended it {ended - when:.0f} s later" if ended else ""
        lines.append(f"  time limit of job {job} moved to now at {when - start:.0f} s, after epoch {epochs}{lag}")
        if len(trains) == 2 and ended and jobs.get(trains[1], {}).get("start"):
            lines.append(
                f"  retry started {jobs[trains[1]]['start'] - ended:.0f} s after the cut (Snakemake's status polling)"
            )
    for pid, (job, command) in seen["leftovers"].items():
        lines.append(f"  left behind by SLURM job {job}, killed now: pid {pid}: {command[:120]}")
    print("\n".join(lines))


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """The small workflow run through the SLURM profile, its training job cut once by the time limit.

    Returns (workdir, snakemake output, what run_and_cut_training saw).
    """
    workdir = tmp_path_factory.mktemp("slurm")
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    overlay = workdir / "ci-profile"
    overlay.mkdir()
    (overlay / "config.yaml").write_text(yaml.safe_dump(ci_overlay(profile, node_cpus())))
    config = small_config(workdir / "config.yaml")
    command = [
        *SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
        "--profile",
        str(PROFILE),
        "--profile",
        str(overlay),
        "--verbose",
        *TARGETS,
    ]
    env = os.environ | {"CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("SLURM_JOB_ID", None)
    seen = run_and_cut_training(command, workdir, env, timeout=1200)
    print_timings(seen)
    output = seen["output"]
    assert seen["returncode"] == 0, f"snakemake via SLURM failed:\n{output[-8000:]}"
    return workdir, output, seen


def test_workflow_finishes_through_slurm(slurm_run):
    workdir, output, _ = slurm_run
    assert re.search(r"\d+ of \d+ steps \(100%\) done", output)
    for path in (f"results/runs/{RUN}/metrics.json", *TARGETS):
        assert (workdir / path).stat().st_size > 0, path


def test_every_job_was_a_slurm_job(slurm_run):
    workdir, output, _ = slurm_run
    submissions = SUBMITTED.findall(output)  # (snakemake job id, SLURM job id) per sbatch
    planned = re.search(r"Job stats:\n.*?\n\s*total\s+(\d+)", output, flags=re.S)
    assert planned, "no job stats in snakemake's output"
    n_jobs = int(planned.group(1))
    # prepare_dataset, montage, train, evaluate, bootstrap, gradcam, tables_grid; train submitted twice (time limit)
    assert n_jobs == 7 and len({job for job, _ in submissions}) == n_jobs
    slurm_ids = [slurm_id for _, slurm_id in submissions]
    assert len(slurm_ids) == len(set(slurm_ids)) == n_jobs + 1  # one SLURM job each, one more for the retry
    trains = TRAIN_SUBMITTED.findall(output)
    assert len(trains) == 2, f"the training job should be submitted exactly twice: {trains}"
    # SLURM itself knows these jobs and says how they ended (MinJobAge keeps them in squeue)
    states = {job: info["state"] for job, info in slurm_jobs(slurm_ids).items()}
    assert states == {job: "TIMEOUT" if job == trains[0] else "COMPLETED" for job in slurm_ids}
    # and the plugin kept one SLURM log per job, named by its SLURM job id, under slurm-logdir
    logdir = workdir / "logs/slurm"
    logs = {path.stem for path in logdir.rglob("*.log")}
    assert set(slurm_ids) <= logs
    for rule in ("prepare_dataset", *GPU_RULES, "bootstrap", "tables_grid"):
        assert (logdir / f"rule_{rule}").is_dir(), rule


def test_gpu_rules_got_their_profile_resources(slurm_run):
    workdir, output, _ = slurm_run
    calls = re.findall(r"sbatch call: (sbatch .*)", output)
    assert calls, "no sbatch call in the --verbose output"
    (workdir / "sbatch-calls.txt").write_text("\n".join(calls) + "\n")
    train = [call for call in calls if "--comment rule_train_wildcards_" in call]
    assert len(train) == 2, calls  # the first attempt and its resubmission after the time limit
    print("\nsbatch calls of the training job (first attempt, then the retry):\n" + "\n".join(train))
    for attempt, call in enumerate(train, start=1):
        # partition and runtime straight from profiles/slurm; memory, CPUs and gpu=0 from the CI overlay
        assert " -p gpu" in call and " -t 240" in call and "--mem 3000" in call
        assert f"--cpus-per-task={min(8, node_cpus())}" in call
        assert "--gpus" not in call and "--gres" not in call and " -A " not in call
        assert f"--attempt {attempt} " in call
    prepare = next(call for call in calls if "rule_prepare_dataset" in call)
    assert " -p cpu" in prepare and " -t 30" in prepare and "--mem 1000" in prepare


def test_training_survives_slurm_time_limit(slurm_run):
    """SLURM killed the first training job at its time limit; the retry resumed from the checkpoint and finished."""
    workdir, output, seen = slurm_run
    assert seen["cut_error"] is None, seen["cut_error"]
    assert seen["cut"], "the first training job never committed an epoch while the test watched"
    trains = TRAIN_SUBMITTED.findall(output)
    assert len(trains) == 2, (
        f"the training job was submitted {len(trains)} times, not twice: the time limit did not "
        f"cut it (it finished within ~30 s of its first epoch?): raise MAX_EPOCHS"
    )
    first, second = trains
    cut_job, _, cut_epochs = seen["cut"]
    assert cut_job == first
    # SLURM, not the test, ended the first job: its limit, in state TIMEOUT, said so in its log
    assert slurm_jobs([first])[first]["state"] == "TIMEOUT"
    slurm_log = (workdir / f"logs/slurm/rule_train/{RUN}/{first}.log").read_text(errors="replace")
    assert re.search(rf"\*\*\* JOB {first} ON \S+ CANCELLED AT \S+ DUE TO TIME LIMIT \*\*\*", slurm_log), slurm_log[
        -3000:
    ]
    # Snakemake saw the failure and retried the job (attempt 2)
    assert f"SLURM-job '{first}' failed, SLURM status is: 'TIMEOUT'" in output
    assert re.search(r"Trying to restart job \d+\.", output)
    # the rule's log: the first job trained, committed epochs and stopped on SIGTERM; the retry (whose log Snakemake
    # started afresh) resumed after a committed epoch, not from scratch, and finished
    first_log = (workdir / "train-attempt-1.log").read_text()
    log = (workdir / f"logs/train/{RUN}.log").read_text(errors="replace")
    story = r"(Epoch \d+/|train: received|resuming from|best epoch)"
    for name, text in (("first job", first_log), ("retry", log)):
        lines = [line for line in text.splitlines() if re.match(story, line)]
        print(f"\nlogs/train/{RUN}.log of the {name}:\n" + "\n".join(f"  {line[:150]}" for line in lines))
    assert "Epoch 1/" in first_log and "resuming from" not in first_log, first_log[-3000:]
    assert "train: received SIGTERM; stopping" in first_log, (
        f"the first job did not log SLURM's SIGTERM:\n{first_log[-3000:]}"
    )
    assert "best epoch" not in first_log, "the first job finished training before the time limit cut it"
    resumed = re.search(r"resuming from (\S+) after epoch (\d+)", log)
    assert resumed, f"the retried job did not resume from the checkpoint:\n{log[-3000:]}"
    resumed_after = int(resumed.group(2))
    assert cut_epochs <= resumed_after < MAX_EPOCHS, (cut_epochs, resumed_after)  # cut in the middle of training
    assert re.search(rf"Epoch {resumed_after}/{MAX_EPOCHS}\b", first_log)  # the epoch resumed after is the first job's
    finished = re.findall(rf"best epoch \d+ \(val_loss \S+\) of {MAX_EPOCHS} run", log)
    assert len(finished) == 1 and log.index(finished[0]) > resumed.start()
    assert "Epoch 1/" not in log and "train: received" not in log
    # the only processes SLURM could not end are the killed job's (see run_and_cut_training)
    assert {job for job, _ in seen["leftovers"].values()} <= {first}, seen["leftovers"]
    # the outputs: the final model, and every epoch once in the history
    assert (workdir / f"results/runs/{RUN}/model.keras").stat().st_size > 0
    with (workdir / f"results/runs/{RUN}/history.csv").open() as handle:
        epochs = [int(float(row["epoch"])) for row in csv.DictReader(handle)]
    assert epochs == list(range(1, MAX_EPOCHS + 1))
    # and host.json, from the checkpoint's record of sessions: which SLURM job trained which epochs
    sessions = json.loads((workdir / f"results/runs/{RUN}/host.json").read_text())["sessions"]
    assert [(session["slurm_job_id"], session["epochs"]) for session in sessions] == [
        (first, list(range(1, resumed_after + 1))),
        (second, list(range(resumed_after + 1, MAX_EPOCHS + 1))),
    ]
    assert not (workdir / f"results/checkpoints/{RUN}").exists()  # removed once model.keras was written
