"""A re-run of a round starts from the client state that round began with (issue 7, finding 4)."""

from __future__ import annotations

from pathlib import Path

from resonfl_server.workers.client_state import SNAPSHOTS, begin_round, prepare_round


def _advance(state: Path, text: str) -> None:
    """What a round's job does: rewrite its optimizer state and add a file."""
    state.mkdir(exist_ok=True)
    (state / "optimizer_state.pt").write_text(text)
    (state / f"seen-{text}").write_text(text)


def test_a_rerun_round_sees_the_state_the_round_began_with(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert begin_round(state, 0) == 1
    _advance(state, "after-0")
    assert begin_round(state, 1) == 1
    _advance(state, "after-1-lost")  # trained, but the update never reached the server
    assert begin_round(state, 1) == 2
    assert (state / "optimizer_state.pt").read_text() == "after-0"
    assert sorted(p.name for p in state.iterdir()) == ["optimizer_state.pt", "seen-after-0"]


def test_the_first_round_starts_from_an_empty_state_again(tmp_path: Path) -> None:
    state = tmp_path / "state"
    begin_round(state, 0)
    _advance(state, "lost")
    assert begin_round(state, 0) == 2
    assert list(state.iterdir()) == []


def test_only_the_current_rounds_snapshot_is_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    for n in range(4):
        begin_round(state, n)
        _advance(state, f"after-{n}")
    names = sorted(p.name for p in (tmp_path / SNAPSHOTS).iterdir() if p.name[0] != ".")
    assert names == ["round-3", "round-3.attempts", "round-3.manifest"]
    assert (tmp_path / SNAPSHOTS / "round-3" / "optimizer_state.pt").read_text() == "after-2"


def test_a_prepared_snapshot_links_unchanged_files_and_still_restores_after_in_place_writes(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "big.bin").write_bytes(b"x" * 4096)
    begin_round(state, 0)
    _advance(state, "after-0")
    prepare_round(state, 1)  # after round 0's upload, off the hot path
    snaps = tmp_path / SNAPSHOTS
    linked = (snaps / "round-1" / "big.bin").stat()
    assert linked.st_ino == (snaps / "round-0" / "big.bin").stat().st_ino  # not copied again
    assert linked.st_ino != (state / "big.bin").stat().st_ino  # never shared with STATE_DIR
    assert begin_round(state, 1) == 1
    assert (snaps / "round-1" / "big.bin").stat().st_ino == linked.st_ino  # used as it was
    (state / "big.bin").write_bytes(b"y" * 4096)  # job code rewriting a file in place
    _advance(state, "after-1-lost")
    assert begin_round(state, 1) == 2
    assert (state / "big.bin").read_bytes() == b"x" * 4096
    assert (state / "optimizer_state.pt").read_text() == "after-0"


def test_a_state_changed_after_the_snapshot_was_prepared_is_snapshotted_again(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    begin_round(state, 0)
    _advance(state, "after-0")
    prepare_round(state, 1)
    (state / "optimizer_state.pt").write_text("after-0-late")  # written after the prepare
    assert begin_round(state, 1) == 1
    _advance(state, "after-1-lost")
    assert begin_round(state, 1) == 2
    assert (state / "optimizer_state.pt").read_text() == "after-0-late"
