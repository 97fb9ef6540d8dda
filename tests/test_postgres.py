"""A population sweep on the local multi-node cluster (cluster/devcluster: a head without CPUs and
two 1-CPU worker nodes on 127.0.0.1) with its Optuna study in a real PostgreSQL server, as a
multi-node population sweep needs it: the driver is killed mid-sweep and `resume=true` finishes
it, with every configuration in the study once. The server is Debian's PostgreSQL (`.ci/run`
installs it), started here in its own data folder, on 127.0.0.1 only, and stopped by its PID.
About 2.5 minutes on 2 cores.
"""
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

from cluster import faults
from sweeps.config import database_url

from conftest import assert_accounted_for, free_port

pytestmark = pytest.mark.ray
USER, DATABASE = "sweeper", "optuna"


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs: Debian keeps them off PATH, per major version."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if versions:
        return versions[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def missing(what: str) -> None:
    """Under CI a missing PostgreSQL fails (`.ci/run` installs it); elsewhere the test is skipped."""
    message = f"{what}: `apt-get install postgresql` and `pip install -e '.[test]'` (.ci/run does both)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Server:
    port: int
    password: str
    process: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def connect(self, dbname: str = DATABASE, password: str | None = None):
        import psycopg2
        return psycopg2.connect(host="127.0.0.1", port=self.port, user=USER, dbname=dbname, connect_timeout=5,
                                password=self.password if password is None else password)


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """PostgreSQL's fast shutdown (SIGINT: it ends the sessions still open), then SIGKILL to its
    process group (its own session: the server and every backend it forked)."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=timeout)


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of our own: password login over TCP on 127.0.0.1 only, its socket in
    its data folder. PostgreSQL refuses to run as root: as root, it runs as the `postgres` user
    that Debian's package creates (else `nobody`), in a folder outside pytest's root-only tmp."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        missing("PostgreSQL's initdb is not installed")
    try:
        import psycopg2
    except ImportError:
        missing("psycopg2 (Optuna's PostgreSQL driver) is not installed")
    as_user = {}
    home = Path(tempfile.mkdtemp(prefix="gs-postgres-"))
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            account = pwd.getpwnam("nobody")
        os.chown(home, account.pw_uid, account.pw_gid)
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(home), "TZ": "UTC"}
    process = None
    try:
        password = secrets.token_hex(16)
        pwfile = home / "password"
        pwfile.write_text(password + "\n")
        if as_user:
            os.chown(pwfile, as_user["user"], as_user["group"])
        data = home / "data"
        init = subprocess.run([bin_dir / "initdb", "-D", data, "-U", USER, f"--pwfile={pwfile}", "-E", "UTF8",
                               "--locale=C", "--auth-host=scram-sha-256", "--auth-local=trust", "--no-sync"],
                              cwd=home, env=env, capture_output=True, text=True, timeout=120, **as_user)
        assert init.returncode == 0, f"initdb failed:\n{init.stdout[-2000:]}{init.stderr[-2000:]}"
        pwfile.unlink()
        log = home / "postgres.log"
        for attempt in range(3):  # a free port can be taken before the server binds it
            port = free_port()
            with open(log, "w") as out:
                process = subprocess.Popen(
                    [bin_dir / "postgres", "-D", data, "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                     "-c", f"unix_socket_directories={home}", "-c", "fsync=off"],
                    cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, **as_user)
            server = Server(port, password, process, log)
            deadline = time.monotonic() + 60
            while process.poll() is None and time.monotonic() < deadline:
                try:
                    server.connect("postgres").close()
                    break
                except psycopg2.OperationalError:
                    time.sleep(0.2)
            if process.poll() is None:
                break
            if "could not bind" not in log.read_text() or attempt == 2:
                raise AssertionError(f"PostgreSQL did not start:\n{log.read_text()[-3000:]}")
        assert process.poll() is None and time.monotonic() < deadline, \
            f"PostgreSQL did not accept connections within 60 s:\n{log.read_text()[-3000:]}"
        admin = server.connect("postgres")
        admin.autocommit = True
        admin.cursor().execute(f"CREATE DATABASE {DATABASE}")
        admin.close()
        yield server
    finally:
        if process is not None:
            stop(process)
        shutil.rmtree(home, ignore_errors=True)


def test_the_server_is_ours_on_loopback_with_password_login(postgres):
    with postgres.connect() as db, db.cursor() as cur:
        cur.execute("SELECT current_user, inet_server_addr()::text, current_setting('listen_addresses')")
        assert cur.fetchone() == (USER, "127.0.0.1/32", "127.0.0.1")
    import psycopg2
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        postgres.connect(password="wrong")


def test_population_sweep_keeps_its_study_in_postgresql_through_a_killed_driver(postgres, npz, tmp_path):  # noqa: F811
    # Six configurations, two to a Tune trial, on two 1-CPU worker nodes: the driver is killed
    # once a population has finished while another runs past its first stage, then resumed.
    # (With four, the two populations run side by side and may end together: no moment to kill.)
    # The URL as users write it: `postgresql://` names no driver (see sweeps.config.database_url).
    outcome = faults.run_fault("driver", npz, tmp_path, iters=15, trials=6, population=2,
                               optuna_storage=postgres.url)
    sweep_dir = tmp_path / "results" / "faults"
    storage = database_url(postgres.url)

    # The driver ran twice: killed before its summary, then resumed to the end. The study was
    # never in SQLite.
    logs = sorted(tmp_path.glob("driver-*.log"))
    assert [p.name for p in logs] == ["driver-0.log", "driver-1.log"]
    assert "optuna study:" not in logs[0].read_text() and "optuna study:" in logs[1].read_text()
    # The password is given on the command line, and written nowhere: not in the saved arguments
    # (resume was given the URL again), the logs or the exports.
    assert "password is not saved" in logs[0].read_text() and ":***@127.0.0.1" in logs[1].read_text()
    for path in [*logs, *(tmp_path / "results").rglob("*"), *(tmp_path / "exports").rglob("*")]:
        assert not path.is_file() or postgres.password.encode() not in path.read_bytes(), path
    assert not (sweep_dir / "optuna.db").exists() and not list(sweep_dir.rglob("*.db"))
    assert optuna.get_all_study_names(storage) == ["faults"]  # one study, never a second
    trials = optuna.load_study(study_name="faults", storage=storage).get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(6))
    with postgres.connect() as db, db.cursor() as cur:
        cur.execute("SELECT count(*) FROM trials JOIN studies USING (study_id) WHERE study_name = 'faults'")
        assert cur.fetchone() == (6,)

    # Every configuration was asked once, trained to the end, and is in the summary once.
    assert_accounted_for(outcome, 6)
    assert outcome.finished == 6 and len(outcome.rows) == 6
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6
    tune_ids = [t.user_attrs["tune_trial_id"] for t in trials]
    assert sorted(tune_ids.count(i) for i in set(tune_ids)) == [2, 2, 2]  # three populations of two
    assert sorted(r["trial_id"] for r in outcome.rows) == sorted(outcome.study_ids())
    assert len(set(outcome.study_ids())) == 6

    # The resume continued: a population cut off by the kill went on from its stage checkpoint,
    # with the Optuna trials it had asked (no new asks: six in all, above).
    restored = outcome.restored()
    assert restored, "no Tune trial continued from a checkpoint after the resume"
    for trial in restored:
        results = outcome.results[trial]
        first = next(r for r in results if r["iterations_since_restore"] < r["training_iteration"])
        assert first["stages_done"] >= 2 and first["members"] == 2
        assert results[-1]["finished"]


def test_a_postgresql_url_names_the_driver_installed():
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg (3); the cluster images install psycopg2.
    driver, _, rest = database_url("postgresql://u:p@127.0.0.1:5432/optuna").partition("://")
    assert driver in ("postgresql+psycopg", "postgresql+psycopg2") and rest == "u:p@127.0.0.1:5432/optuna"
    for other in ("", "sqlite:////tmp/optuna.db", "postgresql+psycopg2://u@h/db", "mysql://u@h/db"):
        assert database_url(other) == other
