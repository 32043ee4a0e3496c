#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by .ci/slurm-setup.sh (jobs still queued are cancelled).
# Safe to run when nothing is running. Stops the daemons by their pid files, never by name patterns.
set -uo pipefail

log() { echo "slurm-teardown: $*" >&2; }

if command -v scancel >/dev/null && command -v squeue >/dev/null; then
    jobs=$(squeue --noheader --format=%i 2>/dev/null || true)
    [ -n "$jobs" ] && scancel $jobs 2>/dev/null || true
fi

stop() {  # stop <name> <pidfile>: TERM, wait up to 10 s, then KILL
    local name=$1 pidfile=$2 pid
    [ -s "$pidfile" ] || { log "$name: no pid file"; return 0; }
    pid=$(cat "$pidfile")
    if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$pidfile"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    rm -f "$pidfile"
}

stop slurmd /run/slurmd.pid
stop slurmctld /run/slurmctld.pid
stop munged /run/munge/munged.pid
exit 0
