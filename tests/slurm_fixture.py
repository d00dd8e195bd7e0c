"""pytest plugin: a real single-node SLURM cluster for tests marked `slurm`.

Load it with `pytest_plugins = ["tests.slurm_fixture"]` in the root conftest.py (or `-p tests.slurm_fixture`).

`slurm_cluster` (session scope):
  1. reuses a cluster that already answers: the one named by $SLURM_CONF, else the one
     `slurm/local_cluster.sh` keeps under $SLURM_DIR (default /tmp/salt-slurm);
  2. otherwise runs `slurm/local_cluster.sh start` (root only; it installs slurm-wlm/munge [+ slurmdbd,
     MariaDB when SLURM_ACCOUNTING=1, the default] with apt when missing) and stops it at session end, once no
     other session (a pytest-xdist worker) uses it: file locks beside $SLURM_DIR order the starts and the stop.
  While the session runs, os.environ["SLURM_CONF"] names the cluster's configuration, so sbatch/squeue/sacct
  and submitit (which shells out to them) talk to it.
  Not root, no apt, or a failed start: the tests are skipped with the reason, unless SALT_REQUIRE_SLURM=1,
  in which case they fail with the script's output.
"""
from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "slurm" / "local_cluster.sh"
DEFAULT_DIR = Path("/tmp/salt-slurm")
START_TIMEOUT_S = 900          # a first start installs packages


@dataclasses.dataclass
class SlurmCluster:
    conf: Path                  # the slurm.conf clients must use (exported as SLURM_CONF for the session)
    dir: Path                   # the cluster's state folder (conf, logs, env.sh), or the conf's folder if not ours
    partition: str              # the default partition ("debug" on the local cluster)
    accounting: bool            # sacct works, so submitit's job.state reads COMPLETED/FAILED/...
    started: bool               # this session started it (and stops it at the end)

    @property
    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a SLURM client command (sbatch, squeue, scontrol...) against this cluster; text output."""
        return subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, check=check, timeout=timeout)

    def executor(self, folder, **params):
        """A submitit AutoExecutor on this cluster (its default partition, 5 min limit unless given)."""
        import submitit

        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        ex.update_parameters(**{"slurm_partition": self.partition, "timeout_min": 5, **params})
        return ex


def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: needs a SLURM cluster (the slurm_cluster fixture starts a local one)")


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist's `--dist loadgroup` (`make test`), every test on the cluster runs on one worker, one after
    another as without xdist: they share its one node, and some wait on each other's queue."""
    for item in items:
        if "slurm_cluster" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("slurm"))


def _answers(conf: Path) -> bool:
    """A controller answers for this slurm.conf."""
    if not conf.is_file() or shutil.which("scontrol") is None:
        return False
    try:
        out = subprocess.run(["scontrol", "ping"], env={**os.environ, "SLURM_CONF": str(conf)},
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and " is UP" in out.stdout


def _describe(conf: Path, started: bool) -> SlurmCluster:
    env = {**os.environ, "SLURM_CONF": str(conf)}
    parts = subprocess.run(["sinfo", "-h", "-o", "%P"], env=env, capture_output=True, text=True, timeout=20).stdout.split()
    default = next((p.rstrip("*") for p in parts if p.endswith("*")), parts[0] if parts else "debug")
    config = subprocess.run(["scontrol", "show", "config"], env=env, capture_output=True, text=True, timeout=20).stdout
    acct_line = next((ln for ln in config.splitlines() if ln.startswith("AccountingStorageType")), "")
    accounting = "slurmdbd" in acct_line
    return SlurmCluster(conf=conf, dir=conf.parent, partition=os.environ.get("SALT_SLURM_PARTITION", default),
                        accounting=accounting, started=started)


def _unavailable(reason: str):
    if os.environ.get("SALT_REQUIRE_SLURM") == "1":
        pytest.fail(f"SALT_REQUIRE_SLURM=1 but no SLURM cluster: {reason}", pytrace=False)
    pytest.skip(f"no SLURM cluster: {reason}")


def _start(slurm_dir: Path) -> SlurmCluster:
    """The cluster under slurm_dir, started unless it already answers. A file lock keeps two pytest-xdist workers
    from starting it at once (the second finds it answering)."""
    with open(slurm_dir.parent / f".{slurm_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _answers(slurm_dir / "slurm.conf"):
            return _describe(slurm_dir / "slurm.conf", started=False)
        if os.geteuid() != 0:
            _unavailable(f"not root, cannot start {SCRIPT.relative_to(REPO)} (start it as root, then export SLURM_CONF)")
        if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
            _unavailable("no apt-get to install SLURM with, and no slurmctld installed")
        env = {**os.environ, "SLURM_DIR": str(slurm_dir)}
        env.pop("SLURM_CONF", None)
        try:
            out = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True,
                                 timeout=START_TIMEOUT_S)
            output, rc = out.stdout + out.stderr, out.returncode
        except subprocess.TimeoutExpired as e:
            output, rc = f"{e.stdout or ''}{e.stderr or ''}\ntimed out after {START_TIMEOUT_S}s", -1
        if rc != 0:
            _unavailable(f"`{SCRIPT.relative_to(REPO)} start` failed (rc {rc}):\n{output}")
        return _describe(slurm_dir / "slurm.conf", started=True)


@pytest.fixture(scope="session")
def slurm_cluster():
    old_conf = os.environ.get("SLURM_CONF")
    slurm_dir = Path(os.environ.get("SLURM_DIR", DEFAULT_DIR))
    users = None    # a shared lock held while this session uses a cluster of slurm_dir
    if old_conf and _answers(Path(old_conf)):
        cluster = _describe(Path(old_conf), started=False)
    else:
        slurm_dir.parent.mkdir(parents=True, exist_ok=True)
        users = open(slurm_dir.parent / f".{slurm_dir.name}.users", "w")
        fcntl.flock(users, fcntl.LOCK_SH)
        try:
            cluster = _start(slurm_dir)
        except BaseException:
            users.close()
            raise
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old_conf
        if users is not None:
            if cluster.started:
                # the session that started it stops it once no other session (another pytest-xdist worker) uses it
                fcntl.flock(users, fcntl.LOCK_EX)
                subprocess.run(["bash", str(SCRIPT), "stop"], env={**os.environ, "SLURM_DIR": str(cluster.dir)},
                               capture_output=True, text=True, timeout=120)
            users.close()
