"""Reading the local audit log for shipping, on real files: complete lines only, across
rotation by rename, unusable lines reported rather than skipped, and resuming from a cursor."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from agentgov.audit.files import MAX_LINE_BYTES, rotated_name
from agentgov.audit.record import GENESIS_HASH, AuditEvent, AuditPolicy, build_record, canonical
from agentgov.audit.sinks.cursor import Cursor
from agentgov.audit.sinks.logread import LogLine, LogReader

POLICY = AuditPolicy(agent='research/research-assistant')


def records(first: int, count: int, prev: str = GENESIS_HASH) -> list[bytes]:
    lines = []
    for seq in range(first, first + count):
        event = AuditEvent('agent_execution', 'success', 'POST', f'/v1/run/{seq}', 1_800_000_000.0 + seq, user='alice')
        record = build_record(event, seq=seq, prev_hash=prev, policy=POLICY)
        prev = str(record['hash'])
        lines.append(canonical(record))
    return lines


def append(path: Path, *lines: bytes, newline: bool = True) -> None:
    with open(path, 'ab') as f:
        f.write(b'\n'.join(lines) + (b'\n' if newline else b''))


def seqs(lines: list[LogLine]) -> list[int | None]:
    return [line.seq for line in lines]


def test_only_complete_lines_are_read_from_the_active_file(tmp_path: Path) -> None:
    log = tmp_path / 'audit.jsonl'
    first, second = records(0, 2)
    append(log, first)
    append(log, second[:30], newline=False)  # the writer is in the middle of a line
    reader = LogReader(log)
    assert seqs(reader.read(10, 1 << 20)) == [0]
    assert reader.read(10, 1 << 20) == []
    append(log, second[30:])
    assert seqs(reader.read(10, 1 << 20)) == [1]


def test_reading_follows_a_rotated_file_to_its_end_then_the_new_one(tmp_path: Path) -> None:
    log = tmp_path / 'audit.jsonl'
    lines = records(0, 6)
    append(log, *lines[:3])
    reader = LogReader(log)
    assert seqs(reader.read(2, 1 << 20)) == [0, 1]
    os.rename(log, rotated_name(log, 0))  # rotation: rename, then a new active file
    append(log, *lines[3:])
    assert seqs(reader.read(10, 1 << 20)) == [2, 3, 4, 5]


def test_a_rotated_file_cut_short_is_reported_and_reading_goes_on(tmp_path: Path) -> None:
    log = tmp_path / 'audit.jsonl'
    lines = records(0, 3)
    rotated = rotated_name(log, 0)
    append(rotated, lines[0])
    append(rotated, lines[1][:25], newline=False)
    append(log, lines[2])
    read = LogReader(log).read(10, 1 << 20)
    assert seqs(read) == [0, None, 2]
    assert read[1].problem == 'the last line of a rotated file is cut short'
    assert read[1].raw == lines[1][:25]


@pytest.mark.parametrize('length', [MAX_LINE_BYTES + 10, 3 * MAX_LINE_BYTES],
                         ids=['just over the limit', 'several times the limit'])
def test_an_overlong_line_is_reported_without_being_held_and_the_next_one_is_read(tmp_path: Path, length: int) -> None:
    log = tmp_path / 'audit.jsonl'
    first, second = records(0, 2)
    append(log, first, b'x' * length, second)
    read = LogReader(log).read(10, 8 << 20)
    assert seqs(read) == [0, None, 1]
    assert read[1].problem is not None and 'over' in read[1].problem and read[1].raw == b''
    assert read[2].end == log.stat().st_size


def test_a_cursor_resumes_right_after_the_record_it_names(tmp_path: Path) -> None:
    log = tmp_path / 'audit.jsonl'
    append(log, *records(0, 5))
    first = LogReader(log).read(3, 1 << 20)
    third = first[-1]
    cursor = Cursor('d', seq=2, hash=third.hash, inode=third.inode, offset=third.end, origin_seq=0,
                    origin_hash=first[0].hash)
    reader = LogReader(log)
    assert reader.locate(cursor).kind == 'after'
    assert seqs(reader.read(10, 1 << 20)) == [3, 4]


def test_a_log_copied_to_a_new_file_is_searched_for_the_cursors_record(tmp_path: Path) -> None:
    log = tmp_path / 'audit.jsonl'
    append(log, *records(0, 5))
    read = LogReader(log).read(2, 1 << 20)
    cursor = Cursor('d', seq=1, hash=read[1].hash, inode=read[1].inode, offset=read[1].end)
    shutil.copy(log, tmp_path / 'copy')
    os.replace(tmp_path / 'copy', log)  # same content, another inode: the offset cannot be trusted
    reader = LogReader(log)
    assert reader.locate(cursor).kind == 'after'
    assert seqs(reader.read(10, 1 << 20)) == [2, 3, 4]


def test_a_file_pruned_while_it_was_read_is_left_for_the_next_one(tmp_path: Path) -> None:
    log = tmp_path / 'audit.jsonl'
    lines = records(0, 6)
    append(rotated_name(log, 0), *lines[:2])
    append(rotated_name(log, 2), *lines[2:4])
    append(log, *lines[4:])
    reader = LogReader(log)
    assert seqs(reader.read(1, 1 << 20)) == [0]
    rotated_name(log, 0).unlink()
    rotated_name(log, 2).unlink()
    assert seqs(reader.read(10, 1 << 20)) == [4, 5]
    assert any('seq 1-3' in notice for notice in reader.notices)
