#!/usr/bin/env bash
# A single-node SLURM cluster on this machine (Debian 12 packages, slurm 22.05), no systemd needed.
#
#   slurm/local_cluster.sh [start|stop|status|reset]      (default: start; must run as root)
#
#   start   install what is missing (apt), then start munged (unless one already answers),
#           [mariadbd + slurmdbd], slurmctld and slurmd on 127.0.0.1 and wait until the node is idle.
#           Idempotent: if everything this script started is alive, answers, and the configuration it
#           would write is unchanged, start is a no-op; otherwise it stops its own daemons and starts
#           them again (job state and job ids survive a restart; only `reset` wipes them).
#   stop    stop only the daemons this script started (by the pidfiles under $SLURM_DIR).
#   status  which of our daemons run, and sinfo.
#   reset   stop, then delete $SLURM_DIR (conf, job state, accounting database, logs).
#
# Environment:
#   SLURM_DIR=/tmp/salt-slurm       everything lives here: slurm.conf, env.sh, state/, spool/, log/, pidfiles
#   SLURM_ACCOUNTING=1|0            1 (default): also MariaDB + slurmdbd, so sacct works and submitit's
#                                   job.state reads COMPLETED/FAILED/CANCELLED/TIMEOUT... (and a job killed
#                                   by SLURM is seen as done). 0: faster start, no extra packages; sacct
#                                   fails, submitit warns "Bypassing sacct error" and job.state is UNKNOWN.
#   SLURM_PORT_BASE=6817            slurmctld=BASE, slurmd=BASE+1, slurmdbd=BASE+2, mariadb=BASE+3
#
# Clients (sinfo, sbatch, srun, submitit) need:   source $SLURM_DIR/env.sh   (exports SLURM_CONF)
#
# The node advertises this machine's CPUs and 90% of its memory (consumable: CR_CPU_Memory, with a
# default of memory/CPUs per allocated CPU). Partitions: debug (default) and cpu, both on this node.
# GresTypes=gpu with no GPU on the node: a GPU request (--gres=gpu:1, --gpus-per-node=1) is rejected
# at submission by SLURM. JobRequeue=1: batch jobs are requeueable (`scontrol requeue <id>`; a job
# submitted with --no-requeue is refused: "Requested operation is presently disabled").
# Test-friendly timings (real clusters use larger values): KillWait=3 (SIGTERM -> SIGKILL), a requeued
# job may start again after AuthInfo=cred_expire=5 s (default 120 s), and the scheduler runs every 1-2 s
# (a job whose dependency is met or whose requeue delay is over starts at once, not after 30-60 s).
set -euo pipefail

DIR=${SLURM_DIR:-/tmp/salt-slurm}
ACCT=${SLURM_ACCOUNTING:-1}
PORT=${SLURM_PORT_BASE:-6817}
CMD=${1:-start}
HOST=$(hostname -s)
MYSOCK=$DIR/mysqld.sock
export SLURM_CONF=$DIR/slurm.conf

log() { echo "[local_cluster $(date +%T.%3N)] $*"; }
die() { echo "[local_cluster] ERROR: $*" >&2; exit 1; }

# a pid that exists, is not a zombie (PID 1 here reaps late; kill -0 succeeds on a zombie), and runs the
# daemon its pidfile is named after (a stale pidfile whose pid was reused by another process is ignored)
comm_of() { case $1 in munged.ours) echo munged ;; mysqld) echo mariadbd ;; *) echo "$1" ;; esac; }
pid_running() {  # pid_running PID [expected comm]
  kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ] \
    && { [ -z "${2:-}" ] || [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]; }
}
alive() { local n; n=$(basename "$1" .pid); [ -s "$1" ] && pid_running "$(cat "$1")" "$(comm_of "$n")"; }

stop_pidfiles() {  # stop daemons we started, by the PIDs in their pidfiles, all of them together
  local names=("$@") pids=() n pid i
  for n in "${names[@]}"; do
    pid=""; [ -s "$DIR/$n.pid" ] && pid=$(cat "$DIR/$n.pid")
    if [ -n "$pid" ] && pid_running "$pid" "$(comm_of "$n")"; then kill "$pid" 2>/dev/null || true; pids+=("$pid"); else pids+=(""); fi
  done
  for i in $(seq 1 150); do
    local left=0
    for pid in "${pids[@]}"; do [ -n "$pid" ] && pid_running "$pid" && left=1; done
    [ $left = 0 ] && break; sleep 0.1
  done
  for i in "${!names[@]}"; do
    pid=${pids[$i]}; n=${names[$i]}
    [ -n "$pid" ] || { rm -f "$DIR/$n.pid"; continue; }
    if pid_running "$pid"; then log "${n%.ours} ($pid) still alive after 15s, SIGKILL"; kill -9 "$pid" 2>/dev/null || true; fi
    log "stopped ${n%.ours} ($pid)"
    rm -f "$DIR/$n.pid"
  done
}

do_stop() {
  [ -d "$DIR" ] || return 0
  stop_pidfiles slurmd slurmctld           # slurmctld saves its state (job ids go on after a restart)
  stop_pidfiles slurmdbd munged.ours       # munged: only if this script started it (munged.ours.pid)
  stop_pidfiles mysqld
}

install_pkgs() {
  local pkgs="slurm-wlm munge" missing="" p
  # mariadb-server-core/-client-core: mariadbd, mariadb-install-db and the client, without the
  # mariadb-server package's service scripts (we run mariadbd ourselves on a private socket/port).
  [ "$ACCT" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server-core mariadb-client-core"
  for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  log "apt-get install$missing"
  local t0=$SECONDS
  # the package lists may already be there; update only if the install cannot find a package
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >"$DIR/log/apt.log" 2>&1; then
    apt-get update -qq >>"$DIR/log/apt.log" 2>&1 || { cat "$DIR/log/apt.log" >&2; die "apt-get update failed"; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >>"$DIR/log/apt.log" 2>&1 \
      || { tail -30 "$DIR/log/apt.log" >&2; die "apt-get install$missing failed (log: $DIR/log/apt.log)"; }
  fi
  log "installed in $((SECONDS - t0))s"
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  if munge_ok; then
    alive "$DIR/munged.ours.pid" || log "munged already answering (not ours), reusing it"
    return 0
  fi
  rm -f "$DIR/munged.ours.pid"
  [ -s /etc/munge/munge.key ] || { mkdir -p /etc/munge; mungekey -c -k /etc/munge/munge.key; }
  chown munge:munge /etc/munge /etc/munge/munge.key; chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge; chmod 755 /run/munge
  rm -f /run/munge/munged.pid
  # a stale socket of a dead munged makes a new one refuse to start: --force
  runuser -u munge -- /usr/sbin/munged --force 9>&- </dev/null >>"$DIR/log/munged.stdout" 2>&1  # daemonizes
  for _ in $(seq 1 100); do munge_ok && break; sleep 0.1; done
  munge_ok || die "munged does not answer (see /var/log/munge/munged.log)"
  cp /run/munge/munged.pid "$DIR/munged.ours.pid"
  log "munged up (pid $(cat "$DIR/munged.ours.pid"))"
}

node_hw() {  # CPUs and RealMemory (MiB) of this machine, as slurmd sees them
  local line; line=$(slurmd -C | head -1)
  CPUS=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$line")
  MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$line")
  [ -n "$CPUS" ] && [ -n "$MEM" ] || die "cannot parse 'slurmd -C': $line"
  MEM=$(( MEM * 90 / 100 ))          # leave room for the OS and the daemons
}

write_conf() {  # writes $1 (slurm.conf contents for the current settings)
  node_hw
  cat > "$1" <<EOF
# generated by slurm/local_cluster.sh - do not edit, it is rewritten on start
ClusterName=local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job waits cred_expire seconds (default 120) before it may start again
AuthInfo=cred_expire=5
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
SchedulerType=sched/backfill
# frequent passes: a requeued job or a job whose dependency is met starts within ~1-2 s, not 30-60 s
SchedulerParameters=bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$(( MEM / CPUS ))
GresTypes=gpu
JobRequeue=1
ReturnToService=2
SlurmdTimeout=300
InactiveLimit=0
MinJobAge=300
KillWait=3
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=cpu Nodes=$HOST Default=NO MaxTime=INFINITE State=UP
EOF
  if [ "$ACCT" = 1 ]; then
    cat >> "$1" <<EOF
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((PORT + 2))
EOF
  else
    echo "AccountingStorageType=accounting_storage/none" >> "$1"
  fi
}

write_dbd_conf() {
  cat > "$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=$HOST
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 3))
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$DIR/slurmdbd.conf"
}

write_env() {
  cat > "$DIR/env.sh" <<EOF
# source me: clients (sinfo, sbatch, squeue, sacct, submitit) of the local cluster under $DIR
export SLURM_CONF=$DIR/slurm.conf
export SALT_SLURM_DIR=$DIR
export SALT_SLURM_PARTITION=debug
export SALT_SLURM_ACCOUNTING=$ACCT
EOF
}

db() { mariadb --no-defaults -S "$MYSOCK" -uroot "$@"; }

start_db() {
  local fresh=0
  if [ ! -d "$DIR/mysql/mysql" ]; then
    rm -rf "$DIR/mysql"
    mariadb-install-db --no-defaults --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=normal \
      --skip-test-db > "$DIR/log/mysql_install.log" 2>&1 || { tail -20 "$DIR/log/mysql_install.log" >&2; die "mariadb-install-db failed"; }
    fresh=1
  fi
  rm -f "$MYSOCK"
  setsid /usr/sbin/mariadbd --no-defaults --user=root --datadir="$DIR/mysql" --socket="$MYSOCK" \
    --port=$((PORT + 3)) --bind-address=127.0.0.1 --pid-file="$DIR/mysqld.pid" \
    --log-error="$DIR/log/mysqld.err" --innodb-buffer-pool-size=64M --innodb-log-file-size=16M \
    --innodb-lock-wait-timeout=900 --skip-name-resolve 9>&- </dev/null >/dev/null 2>&1 &
  for _ in $(seq 1 240); do db -e 'select 1' >/dev/null 2>&1 && break; sleep 0.25; done
  db -e 'select 1' >/dev/null 2>&1 || { tail -20 "$DIR/log/mysqld.err" >&2; die "mariadbd does not answer"; }
  for _ in $(seq 1 20); do [ -s "$DIR/mysqld.pid" ] && break; sleep 0.1; done
  if [ $fresh = 1 ]; then
    db -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw';
      GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
  fi
  log "mariadbd up (pid $(cat "$DIR/mysqld.pid"))"
  write_dbd_conf
  SLURM_CONF=$SLURM_CONF /usr/sbin/slurmdbd 9>&- </dev/null >>"$DIR/log/slurmdbd.stdout" 2>&1   # daemonizes
  for _ in $(seq 1 240); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.25; done
  sacctmgr -n list cluster >/dev/null 2>&1 || { tail -20 "$DIR/log/slurmdbd.log" >&2; die "slurmdbd does not answer"; }
  sacctmgr -n list cluster format=cluster | grep -qw local || sacctmgr -i add cluster local >/dev/null
  log "slurmdbd up (pid $(cat "$DIR/slurmdbd.pid"))"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_ports() {  # after do_stop nothing of ours listens: a listener now belongs to someone else
  local p ports="$PORT $((PORT + 1))"
  [ "$ACCT" = 1 ] && ports="$ports $((PORT + 2)) $((PORT + 3))"
  for p in $ports; do
    port_busy "$p" && die "port $p on 127.0.0.1 is in use by a process this script did not start (another cluster? set SLURM_PORT_BASE, or stop it)"
  done
  return 0
}

running_ok() {  # every daemon of ours alive, and the controller answers
  alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" || return 1
  if [ "$ACCT" = 1 ]; then alive "$DIR/mysqld.pid" && alive "$DIR/slurmdbd.pid" || return 1; fi
  munge_ok && scontrol ping 2>/dev/null | grep -q UP
}

wait_idle() {
  local st="" i
  for i in $(seq 1 240); do
    st=$(sinfo -h -n "$HOST" -p debug -o %t 2>/dev/null || true)
    case "$st" in
      idle|mix|alloc) return 0 ;;
      down*|drain*|drng*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.25
  done
  log "node state '$st' after 60s - see $DIR/log"; sinfo >&2 || true; return 1
}

do_start() {
  [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"
  local t0=$SECONDS
  mkdir -p "$DIR"/{state,spool,log}
  install_pkgs
  write_conf "$DIR/slurm.conf.new"
  if [ -s "$DIR/slurm.conf" ] && cmp -s "$DIR/slurm.conf" "$DIR/slurm.conf.new" && running_ok; then
    rm -f "$DIR/slurm.conf.new"; write_env
    log "already running (slurmctld $(cat "$DIR/slurmctld.pid"), slurmd $(cat "$DIR/slurmd.pid")), nothing to do"
    log "now: source $DIR/env.sh   (SLURM_CONF=$DIR/slurm.conf)"
    return 0
  fi
  do_stop
  check_ports
  mv "$DIR/slurm.conf.new" "$DIR/slurm.conf"
  [ "$ACCT" = 1 ] || rm -f "$DIR/slurmdbd.conf"
  write_env
  start_munge
  [ "$ACCT" = 1 ] && start_db
  # -i: ignore unreadable state (e.g. a state dir of another slurm version): never refuse to start
  /usr/sbin/slurmctld -i 9>&- </dev/null >>"$DIR/log/slurmctld.stdout" 2>&1 || { tail -20 "$DIR/log/slurmctld.log" >&2; die "slurmctld failed"; }
  /usr/sbin/slurmd 9>&- </dev/null >>"$DIR/log/slurmd.stdout" 2>&1 || { tail -20 "$DIR/log/slurmd.log" >&2; die "slurmd failed"; }
  wait_idle || die "node did not become idle"
  log "cluster up in $((SECONDS - t0))s (accounting=$ACCT): slurmctld $(cat "$DIR/slurmctld.pid"), slurmd $(cat "$DIR/slurmd.pid")"
  log "now: source $DIR/env.sh   (SLURM_CONF=$DIR/slurm.conf)"
}

do_status() {
  local d rc=0
  for d in munged.ours mysqld slurmdbd slurmctld slurmd; do
    if alive "$DIR/$d.pid"; then echo "$d: running (pid $(cat "$DIR/$d.pid"))"; else echo "$d: not running"; fi
  done
  alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" || rc=3
  [ $rc = 0 ] && { sinfo 2>/dev/null || true; echo "SLURM_CONF=$DIR/slurm.conf"; }
  return $rc
}

# one start/stop/reset at a time per SLURM_DIR (e.g. two test sessions starting together).
# Every daemon is started with 9>&- so that none of them inherits (and keeps holding) the lock.
lock() { mkdir -p "$DIR"; exec 9>"$DIR/.lock"; flock -w 300 9 || die "another local_cluster.sh holds $DIR/.lock"; }

case "$CMD" in
  start) lock; do_start ;;
  stop) lock; do_stop ;;
  reset) lock; do_stop; exec 9>&-; rm -rf "$DIR" ;;
  status) do_status ;;
  *) echo "usage: $0 [start|stop|status|reset]" >&2; exit 2 ;;
esac
