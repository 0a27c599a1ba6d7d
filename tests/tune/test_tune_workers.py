"""`cnnctl tune` with several workers: two commands sharing one study (SQLite, then a private
PostgreSQL server), `--jobs 2` in one command, and a PostgreSQL storage that cannot be reached."""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

STUDY = Path("studies") / "tuned"
STARTED = re.compile(r"^trial (\d+) started:", re.MULTILINE)


def start_tune(*args, cwd: Path) -> subprocess.Popen:
    """`cnnctl tune ARGS` started in the background, in `cwd`."""
    return subprocess.Popen([sys.executable, "-m", "cnnctl", "tune", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def two_commands(root: Path, tune_yaml: str, *args, timeout: float = 300) -> list[tuple[int, str, str]]:
    """Two `cnnctl tune tuned.yaml ARGS` started at the same moment in `root`, run to the end:
    (exit code, stdout, stderr) of each."""
    (root / "tuned.yaml").write_text(tune_yaml)
    procs = [start_tune("tuned.yaml", *args, cwd=root) for _ in range(2)]
    done = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            done.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return done


def assert_each_trial_ran_once(root: Path, tune_process, trials: int, stdouts: list[str]) -> None:
    """Trials 0..trials-1 are complete in `cnnctl tune status`, each started once: one
    `# trial N:` line in its log, one "trial N started" in the commands' output, and its run
    holds the metrics of trial N."""
    status = tune_process("status", STUDY, "--json", cwd=root)
    assert status.returncode == 0, status.stdout + status.stderr
    rows = json.loads(status.stdout)
    assert [(r["number"], r["state"]) for r in rows] == [(n, "complete") for n in range(trials)]
    started = sorted(int(n) for out in stdouts for n in STARTED.findall(out))
    assert started == list(range(trials)), stdouts
    for n in range(trials):
        log = (root / STUDY / "trials" / f"{n:04d}.log").read_text()
        heads = [line for line in log.splitlines() if line.startswith("# trial ")]
        assert len(heads) == 1 and heads[0].startswith(f"# trial {n}:"), log
        metrics = json.loads((root / STUDY / "trials" / f"{n:04d}" / "metrics.json").read_text())
        assert metrics["tune"]["trial"] == n


def check_two_commands(root: Path, tune_yaml: str, tune_process, trials: int, *args) -> None:
    done = two_commands(root, tune_yaml, "--trials", trials, "--set", "train.epochs=1", *args)
    for code, out, err in done:
        assert code == 0, out + err
        assert "Traceback" not in err, err
    stdouts = [out for _, out, _ in done]
    assert_each_trial_ran_once(root, tune_process, trials, stdouts)
    # both took part: each started a trial while the other was training one
    assert all(STARTED.search(out) for out in stdouts), stdouts


@pytest.mark.slow
def test_two_commands_share_a_sqlite_study_and_run_each_trial_once(tmp_path, tune_yaml, tune_process):
    check_two_commands(tmp_path, tune_yaml, tune_process, 4)


# ------------------------------------------------------------------------------ PostgreSQL
def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """postgresql://postgres@127.0.0.1:PORT/cnnctl: a database on a PostgreSQL server of this
    test module's own (trust authentication, data in a temporary folder), stopped afterwards."""
    initdb, pg_ctl, createdb = (_postgres_bin(n) for n in ("initdb", "pg_ctl", "createdb"))
    if not (initdb and pg_ctl and createdb):
        pytest.skip("PostgreSQL's server programs (initdb, pg_ctl, createdb) are not installed: "
                    "not on PATH nor in /usr/lib/postgresql/*/bin/")
    root = os.geteuid() == 0  # initdb refuses to run as root: the server runs as `postgres`
    if root:
        import pwd

        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and there is no `postgres` user to run PostgreSQL's server as")
    # not under pytest's tmp_path: its parents are private to root, out of the postgres user's reach
    top = Path(tempfile.mkdtemp(prefix="cnnctl-postgres-"))
    data, sockets, log = top / "data", top / "sockets", top / "server.log"
    sockets.mkdir()
    if root:
        for path in (top, sockets):
            os.chown(path, account.pw_uid, account.pw_gid)

    def server(*cmd):
        cmd = [str(c) for c in cmd]
        if root:
            cmd = (["runuser", "-u", "postgres", "--", *cmd] if shutil.which("runuser")
                   else ["su", "postgres", "-c", shlex.join(cmd)])
        done = subprocess.run(cmd, cwd=top, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{shlex.join(cmd)}:\n{done.stdout}{done.stderr}"

    port = _free_port()
    started = False
    try:
        server(initdb, "-A", "trust", "-U", "postgres", "-D", data)
        server(pg_ctl, "-D", data, "-l", log, "-w", "-o",
               f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1", "start")
        started = True
        made = subprocess.run([createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "cnnctl"],
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stdout + made.stderr
        yield f"postgresql://postgres@127.0.0.1:{port}/cnnctl"
    finally:
        if started:
            server(pg_ctl, "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.optional
def test_two_commands_share_a_postgresql_study_and_run_each_trial_once(tmp_path, tune_yaml, tune_process,
                                                                       postgres_url):
    check_two_commands(tmp_path, tune_yaml, tune_process, 3, "--storage", postgres_url)
    study = json.loads((tmp_path / STUDY / "study.json").read_text())
    assert study["storage"] == postgres_url  # the trials were told to the server, not to a file
    assert not (tmp_path / STUDY / "study.db").exists()


def test_a_postgresql_server_that_is_not_there_is_one_line_and_exit_2(tmp_path, tune_yaml, tune_process):
    (tmp_path / "tuned.yaml").write_text(tune_yaml)
    done = tune_process("tuned.yaml", "--storage", "postgresql://postgres@127.0.0.1:1/nowhere", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("--storage postgresql://postgres@127.0.0.1:1/nowhere"), lines[0]
    assert "cannot open the study's database" in lines[0]


# ----------------------------------------------------------------------------- --jobs K
@pytest.mark.slow
def test_jobs_2_runs_two_trials_at_a_time_in_one_command(tmp_path, tune_yaml, tune_process):
    (tmp_path / "tuned.yaml").write_text(tune_yaml)
    done = tune_process("tuned.yaml", "--jobs", 2, "--set", "train.epochs=1", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 at a time" in done.stdout.splitlines()[0]
    assert_each_trial_ran_once(tmp_path, tune_process, 3, [done.stdout])
    # side by side: the second trial started while the first was training
    assert done.stdout.index("trial 1 started") < done.stdout.index("trial 0 complete"), done.stdout
