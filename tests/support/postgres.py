"""A real PostgreSQL server for the tests that share an Optuna study between processes: started
from the distribution's binaries (``make test`` installs them) in a temporary directory, on a free
port, as the ``postgres`` user when the tests run as root (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                       None)
    if found is None:
        pytest.fail(f"PostgreSQL's {name} is not installed: `make test` installs it (apt-get install postgresql)")
    return found


@pytest.fixture(scope="session")
def postgres_url():
    import psycopg

    as_owner: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="adapters-pg-"))
    os.chmod(base, 0o755)
    data = base / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_owner, _binary("initdb"), "-D", str(data), "-U", "sweeper", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_owner, _binary("pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-w", "-o",
                    f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        with psycopg.connect(f"host=127.0.0.1 port={port} user=sweeper dbname=postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE sweeps")
        yield f"postgresql+psycopg://sweeper@127.0.0.1:{port}/sweeps"
    finally:
        subprocess.run([*as_owner, _binary("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
