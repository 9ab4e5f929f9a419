#!/usr/bin/env bash
# A one-node SLURM cluster on localhost for CI's SLURM run (tests/test_slurm.py); Debian, as root, no systemd.
#   bash tests/slurm/cluster.sh install   # Debian's slurmctld, slurmd, slurm-client, munge (skips if present)
#   bash tests/slurm/cluster.sh up        # write slurm.conf, start munged, slurmctld, slurmd; wait for idle
#   bash tests/slurm/cluster.sh down      # stop what `up` started (by PID) and wait for it to exit
#   bash tests/slurm/cluster.sh check     # exit 0 if `install` can work here (root and apt-get), else say why
# The node: partitions `cpu` (default) and `gpu`, feature `ci`, two fake GPUs of GRES type `fake` (their device
# files are links to /dev/null: SLURM schedules them and sets CUDA_VISIBLE_DEVICES, CUDA itself is absent).
# No slurmdbd: status comes from squeue, which keeps finished jobs for MinJobAge seconds.
set -euo pipefail

DIR=${SLURM_CI_DIR:-/var/tmp/hspd-slurm}
NODE=$(hostname -s)

check() {
  if [ "$(id -u)" != 0 ]; then echo "not root: cannot install or start SLURM daemons"; return 1; fi
  if ! command -v apt-get >/dev/null && ! command -v slurmctld >/dev/null; then
    echo "no apt-get and no SLURM installed"; return 1
  fi
}

install() {
  check
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
  mkdir -p "$DIR"/{ctld,d,log,run,dev} /etc/slurm
  # The node line as slurmd detects the hardware, with RealMemory at 90% so it never registers as "low".
  local hw mem
  hw=$(slurmd -C | head -1)
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  hw=$(sed -e "s/RealMemory=[0-9]*/RealMemory=$((mem * 9 / 10))/" -e "s/^NodeName=[^ ]*/NodeName=$NODE/" <<<"$hw")
  # GPU GRES needs character devices (a Count-only line is dropped and the node drains): links to /dev/null.
  ln -sfn /dev/null "$DIR/dev/gpu0"
  ln -sfn /dev/null "$DIR/dev/gpu1"
  echo "NodeName=$NODE Name=gpu Type=fake File=$DIR/dev/gpu[0-1]" > /etc/slurm/gres.conf
  cat > /etc/slurm/slurm.conf <<EOF
ClusterName=hspd-ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
MinJobAge=900
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
GresTypes=gpu
$hw NodeAddr=127.0.0.1 Gres=gpu:fake:2 Features=ci State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL Default=NO MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi  # one is running: reuse, never stop it
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge /etc/munge/munge.key
  chmod 0700 /etc/munge
  chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge
  runuser -u munge -- /usr/sbin/munged
  cp /run/munge/munged.pid "$DIR/run/munged.pid"
}

up() {
  check
  if [ -s "$DIR/run/slurmctld.pid" ] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null; then
    echo "SLURM is already up (slurmctld $(cat "$DIR/run/slurmctld.pid")): run 'down' first"; return 1
  fi
  write_conf
  start_munge
  /usr/sbin/slurmctld -c -i   # -c: no jobs from an earlier run
  /usr/sbin/slurmd
  local state=""
  for _ in $(seq 60); do
    state=$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)
    [ "$state" = idle ] && break
    sleep 0.5
  done
  sinfo -N -o '%N %P %t %c %m %G %f'
  if [ "$state" != idle ]; then
    echo "node not idle: '$state'"
    tail -n 20 "$DIR"/log/*.log
    return 1
  fi
}

stop() {  # stop <pidfile>: SIGTERM, then wait up to 30 s
  local pid
  [ -s "$1" ] || return 0
  pid=$(cat "$1")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -f "$1"
}

down() {
  scancel --user=root 2>/dev/null || true
  stop "$DIR/run/slurmd.pid"
  stop "$DIR/run/slurmctld.pid"
  stop "$DIR/run/munged.pid"
}

"${1:?usage: cluster.sh install|up|down|check}"
