"""--watch's notion of a complete checkpoint (server/models/watch.py), on a simulated clock."""

from nanoserve.server.models.watch import Settle, stamp

A, B, B2 = (100, 1), (200, 2), (300, 3)


def looks(state: Settle, timeline: list[tuple[float, tuple | None]]) -> list[float]:
    """The times at which `state` says a new version is complete."""
    return [t for t, current in timeline if state.look(t, current)]


def test_a_change_is_taken_once_it_stayed_the_same_for_the_settle_time():
    state = Settle(2.0, tried=A)
    timeline = [(0, A), (1, B), (2, B), (2.9, B), (3.0, B), (4, B), (9, B)]
    assert looks(state, timeline) == [3.0]  # once, 2 s after it was first seen


def test_a_file_still_growing_is_not_taken():
    state = Settle(2.0, tried=A)
    # size and time change at every look (a slow torch.save), then stop
    done = (500, 5)
    timeline = [(0, B), (1.5, B2), (3.0, (400, 4)), (4.5, done), (6.4, done), (6.5, done)]
    assert looks(state, timeline) == [6.5]


def test_the_version_served_at_the_start_is_not_taken_again():
    state = Settle(1.0, tried=A)
    assert looks(state, [(0, A), (5, A), (10, A)]) == []


def test_a_missing_file_is_waited_out_and_the_same_file_back_is_not_new():
    state = Settle(1.0, tried=A)
    # deleted (a trainer that removes, then writes), then the same stamp again, then a new one
    timeline = [(0, None), (5, None), (6, A), (8, A), (9, B), (10.5, B)]
    assert looks(state, timeline) == [10.5]


def test_a_failed_version_is_not_retried_until_the_file_changes_again():
    state = Settle(1.0, tried=A)
    assert looks(state, [(0, B), (1, B), (2, B), (30, B)]) == [1]  # tried once
    assert looks(state, [(31, B2), (32, B2)]) == [32]


def test_stamp_is_size_and_mtime_or_none(tmp_path):
    path = tmp_path / "ckpt.pt"
    assert stamp(path) is None
    path.write_bytes(b"12345")
    size, mtime = stamp(path)
    assert size == 5 and mtime == path.stat().st_mtime_ns
