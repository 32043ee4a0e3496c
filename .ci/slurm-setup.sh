#!/usr/bin/env bash
# A single-node SLURM cluster on this (Debian) machine, for tests/test_slurm.py. Run as root.
#
#   .ci/slurm-setup.sh      install slurm-wlm + munge if missing, write the configs, start
#                           munged, slurmctld and slurmd; returns once `sinfo` shows the node idle
#   .ci/slurm-teardown.sh   stops the daemons again
#
# Settings seen working on these CI machines (see DESIGN.md): proctrack/linuxproc and task/none
# (no cgroup v1/v2 delegation in the CI sandbox), select/cons_tres, no accounting storage (so the
# executor plugin polls with `squeue`, and MinJobAge keeps finished jobs visible to it long enough).
# The node is called `localhost` whatever the host name. It claims what profiles/slurm asks of a GPU node, so that
# tests/test_readme_cluster.py can run the README's cluster block with the profile unchanged: 16 CPUs, 64 GB and one
# GPU (SlurmdParameters=config_overrides lets slurmd accept more than the hardware has). The GPU's device file is
# /dev/null (slurmd counts no GPU without one): SLURM schedules `--gpus=1` jobs, TensorFlow finds no GPU and trains on
# the CPU. Nothing enforces
# CPUs or memory here (task/none, no accounting), so the jobs share the machine's real cores.
# Two partitions, `cpu` (default) and `gpu`, both on that node: the names profiles/slurm uses.
# Idempotent: a cluster that is already up is left as it is.
set -euo pipefail

SLURM_CONF_DIR=/etc/slurm
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOGS=/var/log/slurm
export SLURM_CONF="$SLURM_CONF_DIR/slurm.conf"

log() { echo "slurm-setup: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    log "must run as root (installs packages and starts daemons)"
    exit 1
fi

# (without a slurm.conf, sinfo would spend a minute looking for a configless controller: ask only with one)
node_state() {
    [ -f "$SLURM_CONF" ] || return 0
    timeout 10 sinfo --noheader --nodes=localhost --format=%T 2>/dev/null | head -n1 | tr -d '*~#' || true
}

if command -v sinfo >/dev/null && pgrep -x slurmctld >/dev/null && [ "$(node_state)" = idle ]; then
    log "cluster already up"
    sinfo
    exit 0
fi

# --- packages -------------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; }
fi

# --- munge ----------------------------------------------------------------------------------------
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "writing a munge key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! pgrep -u munge -x munged >/dev/null; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
fi
for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
munge -n | unmunge >/dev/null || { log "munge does not work"; exit 1; }

# --- slurm.conf -----------------------------------------------------------------------------------
# A node line larger than the hardware (see the top); Boards, sockets and threads as slurmd reports them would
# contradict the CPU count, so the line names CPUs and memory only.
hardware="CPUs=16 RealMemory=65536 Gres=gpu:1"
install -d -m 0755 "$SLURM_CONF_DIR" "$STATE" "$SPOOL" "$LOGS"
cat >"$SLURM_CONF" <<EOF
# Written by .ci/slurm-setup.sh: a single-node test cluster.
ClusterName=bloodcells-ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
SlurmdParameters=config_overrides
# finished jobs stay visible to squeue for 10 min: the executor plugin's status polling needs >= 120 s
MinJobAge=600
ReturnToService=2
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 $hardware State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost Default=NO MaxTime=INFINITE State=UP
EOF
echo "NodeName=localhost Name=gpu File=/dev/null" >"$SLURM_CONF_DIR/gres.conf"
# cgroup.conf is read even with proctrack/linuxproc by some plugins; keep it harmless
[ -f "$SLURM_CONF_DIR/cgroup.conf" ] || echo "CgroupPlugin=autodetect" >"$SLURM_CONF_DIR/cgroup.conf"
log "node: localhost $hardware"

# --- daemons --------------------------------------------------------------------------------------
if ! pgrep -x slurmctld >/dev/null; then
    log "starting slurmctld"
    slurmctld -i   # -i: ignore state files of an earlier cluster
fi
if ! pgrep -x slurmd >/dev/null; then
    log "starting slurmd"
    slurmd -N localhost
fi

for _ in $(seq 60); do
    state=$(node_state)
    if [ "$state" = idle ]; then
        log "cluster up"
        sinfo
        exit 0
    fi
    if [ "$state" = down ] || [ "$state" = drained ]; then
        scontrol update nodename=localhost state=resume 2>/dev/null || true
    fi
    sleep 1
done
log "the node did not become idle (state '${state:-unknown}'); daemon logs follow"
tail -n 30 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2 || true
exit 1
