"""pgbench (shipped with PostgreSQL) as the floor a bench compares itself with, in the same run:
the same statements cangflow sends, with nothing around them but libpq and a prepared statement.

`run(url, script, clients=, seconds=, variables=)` writes the script to a file, runs pgbench
against the URL's database and returns its committed transactions per second (its "tps",
without the initial connection time). A failed pgbench (or one that is missing) raises
`PgbenchFailed` with its output. `latencies_ms(url, script, transactions=)` runs one client
for that many transactions and returns each one's latency, from pgbench's transaction log.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy.engine import make_url


class PgbenchFailed(RuntimeError):
    pass


def executable() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True)
    if installed:  # Debian keeps it out of PATH: the newest version's
        return str(installed[0])
    raise PgbenchFailed(
        "pgbench is not installed (Debian package: postgresql-contrib or postgresql-<version>)"
    )


def environment(url: str) -> dict[str, str]:
    """libpq's variables for a SQLAlchemy URL (pgbench takes no URL with a driver name)."""
    parsed = make_url(url)
    env = dict(os.environ)
    for variable, value in (
        ("PGHOST", parsed.host or parsed.query.get("host")),
        ("PGPORT", parsed.port),
        ("PGUSER", parsed.username),
        ("PGPASSWORD", parsed.password),
        ("PGDATABASE", parsed.database),
    ):
        if value:
            env[variable] = str(value if not isinstance(value, tuple) else value[0])
    return env


def run(
    url: str,
    script: str,
    *,
    clients: int,
    seconds: float,
    variables: dict[str, object] | None = None,
    threads: int | None = None,
) -> float:
    """Transactions per second of `script` run by `clients` connections for `seconds`."""
    with tempfile.NamedTemporaryFile("w", suffix=".pgbench", delete=False) as file:
        file.write(script)
    command = [
        executable(),
        "--no-vacuum",
        "--protocol=prepared",
        f"--client={clients}",
        f"--jobs={threads or min(clients, os.cpu_count() or 1)}",
        f"--time={max(1, round(seconds))}",
        f"--file={file.name}",
    ]
    for name, value in (variables or {}).items():
        command.append(f"--define={name}={value}")
    try:
        done = subprocess.run(
            command, env=environment(url), capture_output=True, text=True, timeout=seconds + 120
        )
    finally:
        Path(file.name).unlink(missing_ok=True)
    found = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
    if done.returncode != 0 or found is None or (failed and int(failed.group(1))):
        raise PgbenchFailed(
            f"pgbench exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    return float(found.group(1))


def latencies_ms(
    url: str, script: str, *, transactions: int, variables: dict[str, object] | None = None
) -> list[float]:
    """Each transaction's latency (ms) of `script` run `transactions` times by one client."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "script.pgbench"
        path.write_text(script)
        command = [
            executable(),
            "--no-vacuum",
            "--protocol=prepared",
            "--client=1",
            f"--transactions={transactions}",
            f"--file={path}",
            "--log",
            f"--log-prefix={Path(folder) / 'latency'}",
        ]
        for name, value in (variables or {}).items():
            command.append(f"--define={name}={value}")
        done = subprocess.run(
            command, env=environment(url), capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            raise PgbenchFailed(f"pgbench exited {done.returncode}:\n{done.stderr[-2000:]}")
        # One line per transaction: client, transaction number, latency in microseconds, ...
        return [
            int(line.split()[2]) / 1000
            for log in Path(folder).glob("latency*")
            for line in log.read_text().splitlines()
            if line.strip()
        ]
