from __future__ import annotations

import multiprocessing
import sqlite3

import pytest

from awsrun.errors import StateError
from awsrun.state import ClusterRecord, InstanceRecord, JobRecord, State


def test_round_trip_of_clusters_instances_and_jobs(tmp_path):
    state = State.open(tmp_path / "state.db")
    state.put_cluster(ClusterRecord("default", "aws", "us-east-1", {"instance_type": "g4dn.xlarge"}))
    state.put_instance(InstanceRecord("i-1", "default", "pending", instance_type="g4dn.xlarge", market="spot"))
    state.put_instance(InstanceRecord("i-1", "default", "running", instance_type="g4dn.xlarge", market="spot",
                                      public_ip="54.1.2.3"))
    state.put_job(JobRecord("default", "work", ["python", "train.py"], "~/awsrun/p", 1.0))
    reopened = State.open(tmp_path / "state.db")
    assert reopened.get_cluster("default").config == {"instance_type": "g4dn.xlarge"}
    [instance] = reopened.instances("default")
    assert (instance.state, instance.public_ip, instance.market) == ("running", "54.1.2.3", "spot")
    assert reopened.jobs("default")[0].command == ["python", "train.py"]
    reopened.delete_cluster("default")
    assert reopened.instances() == [] and reopened.clusters() == []


def test_corrupt_database_is_reported_with_the_way_to_rebuild(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a sqlite database" * 100)
    with pytest.raises(StateError) as raised:
        State.open(path)
    assert "unreadable" in raised.value.message
    assert "awsrun status" in raised.value.hint


def _writer(path, prefix, count):
    state = State.open(path)
    for index in range(count):
        state.put_instance(InstanceRecord(f"{prefix}-{index}", "c", "running"))


def test_concurrent_writers_serialise_without_losing_records(tmp_path):
    path = tmp_path / "state.db"
    State.open(path).close()
    processes = [multiprocessing.Process(target=_writer, args=(path, f"p{n}", 50)) for n in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    assert len(State.open(path).instances("c")) == 200


def _first_open(path):
    State.open(path).clusters()


def test_processes_creating_the_database_at_once_all_open_it(tmp_path):
    """Two `up`s on a new machine: both create AWSRUN_HOME's database at once. Without the setup lock one
    in about five pairs got `database is locked` at once (SQLite skips its busy wait to switch to WAL)."""
    failed = []
    for round_ in range(30):
        path = tmp_path / f"state-{round_}.db"
        processes = [multiprocessing.Process(target=_first_open, args=(path,)) for _ in range(3)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
        failed += [(round_, process.exitcode) for process in processes if process.exitcode != 0]
    assert failed == []


def test_a_database_made_before_the_schema_version_gets_it_and_keeps_its_records(tmp_path):
    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.executescript("CREATE TABLE clusters (name TEXT PRIMARY KEY, provider TEXT NOT NULL, region TEXT, "
                      "config TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL);"
                      "INSERT INTO clusters VALUES ('old', 'ssh', NULL, '{}', 1.0);")
    old.close()
    state = State.open(path)
    assert state.get_cluster("old").provider == "ssh"
    state.put_job(JobRecord("old", "work", ["python", "a.py"], "~/p", 2.0))  # the tables it lacked exist now
    state.close()
    reopened = sqlite3.connect(path)
    assert reopened.execute("PRAGMA user_version").fetchone()[0] >= 1
    assert reopened.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_commits_skip_the_per_commit_fsync_wal_mode_makes_safe(tmp_path):
    state = State.open(tmp_path / "state.db")
    assert state._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
