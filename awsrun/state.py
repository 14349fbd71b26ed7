"""The local state: a SQLite cache in AWSRUN_HOME of clusters, instances and jobs.

The cloud is the source of truth (everything awsrun creates is tagged); this cache is written before
and after every cloud call, so a killed CLI leaves a record, and `status` reconciles it with the tags.
Concurrent awsrun processes serialise on SQLite's own locking (WAL, busy timeout).
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from awsrun.errors import StateError
from awsrun.locks import file_lock

SCHEMA = """
CREATE TABLE IF NOT EXISTS clusters (
    name        TEXT PRIMARY KEY,
    provider    TEXT NOT NULL,
    region      TEXT,
    config      TEXT NOT NULL DEFAULT '{}',
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    id            TEXT PRIMARY KEY,
    cluster       TEXT NOT NULL,
    node          INTEGER NOT NULL DEFAULT 0,
    state         TEXT NOT NULL,
    instance_type TEXT,
    market        TEXT,
    zone          TEXT,
    public_ip     TEXT,
    private_ip    TEXT,
    launched_at   REAL,
    updated_at    REAL NOT NULL,
    extra         TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS kept_disks (
    id          TEXT PRIMARY KEY,
    region      TEXT NOT NULL,
    cluster     TEXT,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    cluster      TEXT NOT NULL,
    session      TEXT NOT NULL,
    command      TEXT NOT NULL,
    workdir      TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    PRIMARY KEY (cluster, session)
);
"""

SCHEMA_VERSION = 2  # stored as PRAGMA user_version once SCHEMA is in place; bump it with every change to SCHEMA
BUSY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ClusterRecord:
    name: str
    provider: str
    region: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0


@dataclass(frozen=True)
class InstanceRecord:
    id: str
    cluster: str
    state: str
    node: int = 0
    instance_type: str | None = None
    market: str | None = None
    zone: str | None = None
    public_ip: str | None = None
    private_ip: str | None = None
    launched_at: float | None = None
    updated_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobRecord:
    cluster: str
    session: str
    command: list[str]
    workdir: str
    submitted_at: float


class State:
    """Open with `State.open(path)`; every method is one short transaction."""

    def __init__(self, connection: sqlite3.Connection, path: Path):
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, path: Path) -> "State":
        try:
            connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            connection.row_factory = sqlite3.Row
            # Two processes opening a new database at once: SQLite answers `database is locked` at once,
            # without its busy wait, to the one that asks for WAL while the other sets the file up.
            with file_lock(Path(f"{path}.lock")):
                connection.execute("PRAGMA journal_mode=WAL")
                # in WAL mode a commit at NORMAL is atomic and durable up to the last checkpoint: a power cut
                # may lose the newest commits, never corrupt the file, and this cache can be rebuilt anyway
                connection.execute("PRAGMA synchronous=NORMAL")
                if connection.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                    connection.executescript(SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};")
        except sqlite3.DatabaseError as exc:
            raise _state_error(path, exc) from None
        return cls(connection, path)

    def close(self) -> None:
        self._db.close()

    # clusters -----------------------------------------------------------------------------------
    def put_cluster(self, record: ClusterRecord) -> None:
        self._write(
            "INSERT INTO clusters(name, provider, region, config, created_at) VALUES (?,?,?,?,?) "
            "ON CONFLICT(name) DO UPDATE SET provider=excluded.provider, region=excluded.region, "
            "config=excluded.config",
            (record.name, record.provider, record.region, json.dumps(record.config),
             record.created_at or time.time()),
        )

    def get_cluster(self, name: str) -> ClusterRecord | None:
        records = self._records(_cluster, self._read("SELECT * FROM clusters WHERE name=?", (name,)))
        return records[0] if records else None

    def clusters(self) -> list[ClusterRecord]:
        return self._records(_cluster, self._read("SELECT * FROM clusters ORDER BY name", ()))

    def delete_cluster(self, name: str) -> None:
        self._write_many([
            ("DELETE FROM instances WHERE cluster=?", (name,)),
            ("DELETE FROM jobs WHERE cluster=?", (name,)),
            ("DELETE FROM clusters WHERE name=?", (name,)),
        ])

    # instances ----------------------------------------------------------------------------------
    def put_instance(self, record: InstanceRecord) -> None:
        data = asdict(record)
        data["updated_at"] = time.time()
        data["extra"] = json.dumps(record.extra)
        columns = ", ".join(data)
        placeholders = ", ".join("?" for _ in data)
        updates = ", ".join(f"{name}=excluded.{name}" for name in data if name != "id")
        self._write(
            f"INSERT INTO instances({columns}) VALUES ({placeholders}) "
            f"ON CONFLICT(id) DO UPDATE SET {updates}",
            tuple(data.values()),
        )

    def instances(self, cluster: str | None = None) -> list[InstanceRecord]:
        if cluster is None:
            rows = self._read("SELECT * FROM instances ORDER BY cluster, node, id", ())
        else:
            rows = self._read("SELECT * FROM instances WHERE cluster=? ORDER BY node, id", (cluster,))
        return self._records(_instance, rows)

    def delete_instance(self, instance_id: str) -> None:
        self._write("DELETE FROM instances WHERE id=?", (instance_id,))

    # jobs ---------------------------------------------------------------------------------------
    def put_job(self, record: JobRecord) -> None:
        self._write(
            "INSERT OR REPLACE INTO jobs(cluster, session, command, workdir, submitted_at) VALUES (?,?,?,?,?)",
            (record.cluster, record.session, json.dumps(record.command), record.workdir, record.submitted_at),
        )

    def jobs(self, cluster: str) -> list[JobRecord]:
        rows = self._read("SELECT * FROM jobs WHERE cluster=? ORDER BY submitted_at", (cluster,))
        return self._records(_job, rows)

    # disks that outlive their instances: where `status` must look for them, whichever clusters remain
    def remember_kept_disk(self, disk_id: str, region: str, cluster: str | None) -> None:
        self._write("INSERT OR REPLACE INTO kept_disks(id, region, cluster, recorded_at) VALUES (?,?,?,?)",
                    (disk_id, region, cluster, time.time()))

    def kept_disk_regions(self) -> dict[str, set[str]]:
        """region -> the ids of the kept disks remembered there."""
        found: dict[str, set[str]] = {}
        for disk_id, region in self._records(_kept_disk, self._read("SELECT id, region FROM kept_disks", ())):
            found.setdefault(region, set()).add(disk_id)
        return found

    def forget_kept_disk(self, disk_id: str) -> None:
        self._write("DELETE FROM kept_disks WHERE id=?", (disk_id,))

    # plumbing -----------------------------------------------------------------------------------
    def _read(self, sql: str, params: tuple) -> list[sqlite3.Row]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise _state_error(self.path, exc) from None

    def _records(self, convert: Callable[[sqlite3.Row], Any], rows: list[sqlite3.Row]) -> list[Any]:
        """Rows made records; a row that cannot be one (BadRow) is a corrupt database, as SQLite's own errors are."""
        try:
            return [convert(row) for row in rows]
        except BadRow as exc:
            raise _state_error(self.path, exc) from None

    def _write(self, sql: str, params: tuple) -> None:
        self._write_many([(sql, params)])

    def _write_many(self, statements: list[tuple[str, tuple]]) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._db.execute(sql, params)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise _state_error(self.path, exc) from None


class BadRow(ValueError):
    """A row that cannot be a record: SQLite keeps whatever a column is given, and a state.db another program
    (or a hand) wrote may hold anything under our tables' names."""


# the SQLite values (or decoded JSON) each type of field in a record may be
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "str | None": (str, type(None)), "int": (int,), "float": (int, float),
    "float | None": (int, float, type(None)), "dict[str, Any]": (dict,), "list[str]": (list,),
}


def _record(kind: type, table: str, row: sqlite3.Row, **decoded: Any) -> Any:
    """A record of `kind` from a row of `table`, each field checked against its type; `decoded`: its JSON fields."""
    values = {}
    for f in fields(kind):
        value = decoded[f.name] if f.name in decoded else _column(table, row, f.name)
        expected = _FIELD_TYPES[f.type]
        if not isinstance(value, expected):
            names = " or ".join(t.__name__ for t in expected if t is not type(None))
            raise BadRow(f"a row of {table} has {f.name} {_shown(value)}, not {names}")
        values[f.name] = value
    return kind(**values)


def _column(table: str, row: sqlite3.Row, name: str) -> Any:
    if name not in row.keys():
        raise BadRow(f"its {table} table has no column {name!r}")
    return row[name]


def _json(table: str, row: sqlite3.Row, name: str, empty: str | None = None) -> Any:
    """A JSON column, decoded; `empty`: the JSON that NULL or '' stands for, if either may."""
    raw = _column(table, row, name)
    if raw in (None, "") and empty is not None:
        raw = empty
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        raise BadRow(f"a row of {table} has {name} {_shown(raw)}, not JSON") from None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _cluster(row: sqlite3.Row) -> ClusterRecord:
    return _record(ClusterRecord, "clusters", row, config=_json("clusters", row, "config"))


def _instance(row: sqlite3.Row) -> InstanceRecord:
    return _record(InstanceRecord, "instances", row, extra=_json("instances", row, "extra", empty="{}"))


def _job(row: sqlite3.Row) -> JobRecord:
    record = _record(JobRecord, "jobs", row, command=_json("jobs", row, "command"))
    if not all(isinstance(word, str) for word in record.command):
        raise BadRow(f"a row of jobs has command {_shown(record.command)}, not a list of strings")
    return record


def _kept_disk(row: sqlite3.Row) -> tuple[str, str]:
    if not (isinstance(row["id"], str) and isinstance(row["region"], str)):
        raise BadRow(f"a row of kept_disks has id and region {_shown(tuple(row))}, not two strings")
    return row["id"], row["region"]


def _state_error(path: Path, exc: Exception) -> StateError:
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and ("locked" in text or "busy" in text):
        return StateError(
            f"state database {path} stayed locked for {BUSY_TIMEOUT_S:.0f}s: {text}",
            hint="another awsrun command holds it; wait for it to finish and try again",
        )
    return StateError(
        f"state database {path} is unreadable: {text}",
        hint=f"move it aside (mv {path} {path}.bad); `awsrun status` rebuilds it from the cloud's tags",
    )

