"""The cgroup v2 layout against a cgroupfs stand-in (a directory tree with the same file names).

The v1/hybrid layout of the CI hosts is exercised for real by tests/integration/test_sandbox.py;
these cover the v2-only hosts those machines are not, down to the files a run's limits land in.
"""

from __future__ import annotations

from pathlib import Path

from dispatch.sandbox.cgroups import CgroupLayout, CgroupLimits, detect_cgroups


def v2_root(tmp_path: Path, controllers: str = "cpuset cpu io memory pids") -> Path:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers)
    (root / "cgroup.procs").write_text("")
    return root


def test_v2_host_gets_one_parent_with_the_controllers_enabled(tmp_path: Path) -> None:
    root = v2_root(tmp_path)

    layout = detect_cgroups("inst", root=root)

    assert isinstance(layout, CgroupLayout), layout
    assert layout.version == 2
    assert layout.parents() == [root / "switchboard-inst"]
    enabled = (root / "switchboard-inst" / "cgroup.subtree_control").read_text().split()
    assert {name.lstrip("+") for name in enabled} == {"memory", "pids", "cpu"}


def test_v2_limits_land_in_the_v2_files(tmp_path: Path) -> None:
    layout = detect_cgroups("inst", root=v2_root(tmp_path))
    assert isinstance(layout, CgroupLayout), layout
    cgroup = layout.run_cgroup("req_1")

    cgroup.create(CgroupLimits(memory=512 * 1024 * 1024, pids=64, cpu=1.5))

    directory = tmp_path / "cgroup" / "switchboard-inst" / "run-req_1"
    assert cgroup.directories == [directory]
    assert (directory / "memory.max").read_text() == str(512 * 1024 * 1024)
    assert (directory / "memory.swap.max").read_text() == "0"
    assert (directory / "pids.max").read_text() == "64"
    assert (directory / "cpu.max").read_text() == "150000 100000"
    assert cgroup.procs_files == [directory / "cgroup.procs"]
    assert layout.kill_file(cgroup) == directory / "cgroup.kill"


def test_v2_events_name_the_limit_that_was_hit(tmp_path: Path) -> None:
    layout = detect_cgroups("inst", root=v2_root(tmp_path))
    assert isinstance(layout, CgroupLayout), layout
    cgroup = layout.run_cgroup("req_2")
    cgroup.create(CgroupLimits(memory=1 << 30, pids=256, cpu=1.0))
    directory = cgroup.directories[0]
    (directory / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (directory / "pids.events").write_text("max 2\n")

    events = cgroup.events()

    assert (events.oom_kills, events.pids_max) == (1, 2)


def test_v2_without_the_controllers_is_refused_with_the_reason(tmp_path: Path) -> None:
    found = detect_cgroups("inst", root=v2_root(tmp_path, controllers="cpuset io"))

    assert isinstance(found, str)
    assert "lacks the controllers" in found
    assert "memory" in found
    assert "pids" in found


def test_v2_that_will_not_delegate_is_refused_not_half_used(tmp_path: Path) -> None:
    # A container whose own cgroup is the root it sees: enabling controllers for children fails
    # (here: subtree_control cannot be written). Runs there would get no limits at all.
    root = v2_root(tmp_path)
    (root / "switchboard-inst").mkdir()
    (root / "switchboard-inst" / "cgroup.subtree_control").mkdir()

    found = detect_cgroups("inst", root=root)

    assert isinstance(found, str)
    assert "would not enable the cpu, memory, pids controller(s)" in found


def test_stale_run_cgroups_of_a_crashed_server_are_removed_at_start(tmp_path: Path) -> None:
    root = v2_root(tmp_path)
    stale = root / "switchboard-inst" / "run-req_old"
    stale.mkdir(parents=True)
    other = root / "switchboard-other" / "run-req_theirs"
    other.mkdir(parents=True)

    layout = detect_cgroups("inst", root=root)

    assert isinstance(layout, CgroupLayout), layout
    assert not stale.exists()
    assert other.exists(), "another server's cgroups are not ours to sweep"
