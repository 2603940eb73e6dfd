"""Verifying an audit log: the hash chain across rotated files, the head, the anchor, the digests.

What is found, and where (file, line, seq):

- an edited record (its content no longer matches its hash, or its hash no longer matches
  what the next record recorded), deleted records (a gap in ``seq``, reported by range),
  reordered records (``seq`` going backwards in the files), duplicated records, a record cut
  short, malformed lines, and records missing at the end (against the ``.head`` file);
- with digests (``audit.digest`` records, see ``digest.py``): a deleted digest (by the range
  it covered), a forged signature (it does not verify with the pinned key of its key id), a
  range re-signed with another key (a key id that is not pinned), records altered after they
  were signed (their hashes no longer give the signed ``records_hash``, even though the chain
  was recomputed), and a broken chain of digests (a digest that does not name its predecessor);
- after retention pruned the oldest files, the chain starts from ``<path>.anchor``, which an
  ``audit.pruned`` record in the remaining chain must confirm (else ``unanchored``).

The verifier streams: it holds one small entry per out-of-order record (up to ``WINDOW``),
never the records themselves, so a log of any size verifies in bounded memory. Records that
arrive more than ``WINDOW`` places early make the verifier declare the missing ones deleted
(a late arrival after that is reported as reordered).

A hash chain is tamper-*evident*: whoever can rewrite the whole log and its head can rewrite
history; digests signed with a key the writer's node does not expose, verified against a
pinned public key, and copies shipped off the node close that gap.

Pure except ``verify_log`` / ``verify_chain`` / ``verify_copies``, which read files.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from agentgov.audit.digest import DigestClaim, DigestLink, RangeHash, VerifyKey, parse_claim
from agentgov.audit.files import (
    Line, anchor_path_for, head_path_for, load_json, log_files, open_log, read_lines, read_small_json,
)
from agentgov.audit.record import DIGEST_EVENT, GENESIS_HASH, PRUNED_EVENT, record_hash

WINDOW: Final = 10_000
MAX_PROBLEMS: Final = 1000

ProblemKind = Literal[
    "edited", "deleted", "reordered", "duplicated", "truncated", "malformed",
    "deleted_digest", "forged_signature", "unknown_key", "altered_after_signing", "digest_chain", "unanchored",
]
TAMPERING_KINDS: Final[frozenset[str]] = frozenset({
    "edited", "deleted", "reordered", "duplicated", "truncated", "malformed", "deleted_digest",
    "forged_signature", "unknown_key", "altered_after_signing", "digest_chain", "unanchored",
})


@dataclass(frozen=True)
class ChainHead:
    """The writer's note of the last record it wrote (``<log>.head``), or an anchor's start point."""

    seq: int
    hash: str


@dataclass(frozen=True)
class Anchor:
    """``<log>.anchor``: the last pruned record (the remaining chain links to it) and the last
    pruned digest (the next digest names it)."""

    seq: int
    hash: str
    last_digest: DigestLink | None = None

    def as_json(self) -> dict[str, object]:
        return {"seq": self.seq, "hash": self.hash,
                "last_digest": {"seq": self.last_digest.seq, "signature": self.last_digest.signature}
                if self.last_digest else None}


@dataclass(frozen=True)
class ChainProblem:
    kind: ProblemKind
    line: int
    seq: int | None
    message: str
    file: str = ""

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" (seq {self.seq})" if self.seq is not None else "")
        return f"{where}: {self.kind}: {self.message}"


@dataclass(frozen=True)
class ChainReport:
    records: int
    last_seq: int | None
    last_hash: str
    problems: tuple[ChainProblem, ...]
    first_seq: int | None = None
    digests: int = 0
    signatures_checked: int = 0
    # Records after the last digest (not signed yet: normal for the newest few), as (first, last).
    unsigned_tail: tuple[int, int] | None = None
    files: int = 1
    problems_dropped: int = 0
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class _Where:
    file: str
    line: int

    def relative(self, other: _Where) -> str:
        return f"line {self.line}" if self.file == other.file else f"line {self.line} of {self.file or 'the log'}"


@dataclass
class _Entry:
    where: _Where
    seq: int
    prev_hash: str
    hash: str
    content_ok: bool
    digest: DigestClaim | str | None = None  # str: a digest record that is not well-formed
    pruned: Anchor | None = None  # an audit.pruned record: the anchor it announced


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def anchor_from_json(data: object) -> Anchor | None:
    """An anchor (the file's content, or ``metadata.anchor`` of an ``audit.pruned`` record); None
    if it is not one."""
    if not isinstance(data, Mapping):
        return None
    seq, hash_, digest = _int(data.get("seq")), data.get("hash"), data.get("last_digest")
    if seq is None or not isinstance(hash_, str):
        return None
    link = None
    if isinstance(digest, Mapping) and _int(digest.get("seq")) is not None and isinstance(digest.get("signature"), str):
        link = DigestLink(int(str(digest["seq"])), str(digest["signature"]))
    return Anchor(seq, hash_, link)


def _parse(raw: bytes, where: _Where) -> _Entry | ChainProblem:
    try:
        record = load_json(raw)
    except ValueError:
        return ChainProblem("malformed", where.line, None, "not a JSON record", where.file)
    if not isinstance(record, dict):
        return ChainProblem("malformed", where.line, None, "not a JSON object", where.file)
    seq, prev, digest = record.get("seq"), record.get("prev_hash"), record.get("hash")
    if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(prev, str) or not isinstance(digest, str):
        return ChainProblem("malformed", where.line, None, "seq, prev_hash or hash is missing", where.file)
    entry = _Entry(where, seq, prev, digest, record_hash(record) == digest)
    kind = record.get("event_type")
    if kind == DIGEST_EVENT:
        entry.digest = parse_claim(record)
    elif kind == PRUNED_EVENT:
        metadata = record.get("metadata")
        entry.pruned = anchor_from_json(metadata.get("anchor") if isinstance(metadata, dict) else None)
    return entry


def _count(n: int) -> str:
    return f"{n} record" if n == 1 else f"{n} records"


def _span(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seq {first}-{last}"


class ChainVerifier:
    """Feeds lines in file order; ``finish`` gives the report.

    ``start``: where the chain must begin (an anchor after pruning), default seq 0 from the
    genesis hash. ``keys``: pinned public keys by key id; None checks digests' structure and
    records but not their signatures. ``file_order``: False for sink copies, whose export
    order means nothing (only conflicting duplicates are problems there).
    """

    def __init__(self, *, start: Anchor | None = None, keys: Mapping[str, VerifyKey] | None = None,
                 file_order: bool = True, window: int = WINDOW) -> None:
        self._start_seq = start.seq + 1 if start else 0
        self._start_hash = start.hash if start else GENESIS_HASH
        self._keys = keys
        self._file_order = file_order
        self._window = window
        self._problems: list[ChainProblem] = []
        self._dropped = 0
        self._records = 0
        self._ignored = 0
        self._previous_in_file: _Entry | None = None
        self._seen_hash: dict[int, str] = {}  # only for copies (file_order False): seq -> hash while pending
        # chain (by seq) state
        self._expected = self._start_seq
        self._last: _Entry | None = None  # the last record linked in seq order
        self._pending: dict[int, _Entry] = {}
        self._first_seq: int | None = None
        # digests
        self._digests = 0
        self._checked = 0
        self._last_digest: DigestLink | None = start.last_digest if start else None
        # The first digest after an anchor covers from the last pruned digest on: its first
        # records are gone, so only its signature and links can be checked.
        self._range_start = self._last_digest.seq + 1 if self._last_digest else self._start_seq
        self._ranges: dict[int, RangeHash] = {self._start_seq: RangeHash()}
        self._missing: list[tuple[int, int]] = []  # gaps declared since the start, as (first, last)
        self._pruned: list[Anchor] = []

    # -- feeding --

    def problem(self, problem: ChainProblem) -> None:
        if len(self._problems) < MAX_PROBLEMS:
            self._problems.append(problem)
        else:
            self._dropped += 1

    def feed_lines(self, lines: Iterable[Line], file: str = "") -> None:
        """One file's lines; the last one without a newline is a record cut short."""
        held: Line | None = None
        for line in lines:
            if held is not None:
                self._feed_line(held, file, last=False)
            held = line
        if held is not None:
            self._feed_line(held, file, last=True)

    def _feed_line(self, line: Line, file: str, *, last: bool) -> None:
        where = _Where(file, line.number)
        if line.oversized:
            self.problem(ChainProblem("malformed", line.number, None, "a line far longer than any record", file))
            return
        if not line.raw.strip():
            if not last:  # a blank last line is harmless (nothing follows it)
                self.problem(ChainProblem("malformed", line.number, None, "an empty line inside the log", file))
            return
        parsed = _parse(line.raw, where)
        if isinstance(parsed, ChainProblem):
            if last and not line.complete:
                parsed = ChainProblem("truncated", line.number, None, "the last record is cut short", file)
            self.problem(parsed)
            return
        if last and not line.complete:
            self.problem(ChainProblem("truncated", line.number, parsed.seq, "the log does not end with a newline", file))
        self.feed_entry(parsed)

    def feed_entry(self, entry: _Entry) -> None:
        if entry.seq < self._start_seq:
            # At or before the anchor: a file whose pruning was recorded but not finished.
            self._ignored += 1
            return
        self._records += 1
        if not entry.content_ok:
            self.problem(ChainProblem("edited", entry.where.line, entry.seq, "the record does not match its hash",
                                      entry.where.file))
        before = self._previous_in_file
        if self._file_order and before is not None:
            if entry.seq == before.seq:
                self.problem(ChainProblem("duplicated", entry.where.line, entry.seq,
                                          f"seq {entry.seq} already appears on {before.where.relative(entry.where)}",
                                          entry.where.file))
            elif entry.seq < before.seq:
                self.problem(ChainProblem("reordered", entry.where.line, entry.seq,
                                          f"seq {entry.seq} comes after seq {before.seq} ({before.where.relative(entry.where)})",
                                          entry.where.file))
        self._previous_in_file = entry
        self._place(entry)

    # -- the chain, in seq order --

    def _place(self, entry: _Entry) -> None:
        if entry.seq < self._expected or entry.seq in self._pending:
            if not self._file_order:
                self._copy_duplicate(entry)
            return  # the first occurrence counts; file order reported the rest
        if entry.seq > self._expected:
            self._pending[entry.seq] = entry
            if len(self._pending) > self._window:
                self._declare_gap()
            return
        self._link(entry)
        self._drain()

    def _copy_duplicate(self, entry: _Entry) -> None:
        known = self._pending.get(entry.seq)
        known_hash = known.hash if known else self._seen_hash.get(entry.seq)
        if known_hash is not None and known_hash != entry.hash:
            self.problem(ChainProblem("duplicated", entry.where.line, entry.seq,
                                      f"seq {entry.seq} appears twice with different content", entry.where.file))

    def _drain(self) -> None:
        while self._expected in self._pending:
            self._link(self._pending.pop(self._expected))

    def _declare_gap(self) -> None:
        self._link(self._pending.pop(min(self._pending)))
        self._drain()

    def _link(self, entry: _Entry) -> None:
        before = self._last
        if self._first_seq is None:
            self._first_seq = entry.seq
        if not self._file_order:
            self._seen_hash[entry.seq] = entry.hash
            if len(self._seen_hash) > self._window:
                self._seen_hash.pop(min(self._seen_hash))
        if entry.seq > self._expected:  # records missing before it
            first_missing, last_missing = self._expected, entry.seq - 1
            self._missing.append((first_missing, last_missing))
            if before is None:
                message = f"{_count(entry.seq - first_missing)} before it missing ({_span(first_missing, last_missing)})"
                if first_missing == 0:
                    message = f"{_count(entry.seq)} before it missing (seq 0-{entry.seq - 1})"
            else:
                message = (f"{_count(last_missing - first_missing + 1)} missing before it "
                           f"({_span(first_missing, last_missing)}, after {before.where.relative(entry.where)})")
            self.problem(ChainProblem("deleted", entry.where.line, entry.seq, message, entry.where.file))
            self._ranges.setdefault(entry.seq, RangeHash())  # a digest may start right after a gap
        elif before is None:
            if entry.prev_hash != self._start_hash and entry.content_ok:
                message = ("seq 0 does not start from the genesis hash" if self._start_seq == 0 else
                           f"seq {entry.seq} does not link to the anchor (seq {self._start_seq - 1})")
                self.problem(ChainProblem("edited", entry.where.line, entry.seq, message, entry.where.file))
        elif entry.prev_hash != before.hash and before.content_ok and entry.content_ok:
            self.problem(ChainProblem("edited", before.where.line, before.seq,
                                      f"its hash differs from the one seq {entry.seq} ({entry.where.relative(before.where)}) recorded",
                                      before.where.file))
        self._expected = entry.seq + 1
        self._last = entry
        if entry.pruned is not None:
            self._pruned.append(entry.pruned)
        if entry.digest is not None:
            self._check_digest(entry)
        else:
            for hasher in self._ranges.values():
                hasher.add(entry.hash)

    # -- digests --

    def _gap_holding(self, seq: int) -> tuple[int, int] | None:
        for first, last in self._missing:
            if first <= seq <= last:
                return first, last
        return None

    def _check_digest(self, entry: _Entry) -> None:
        claim, where = entry.digest, entry.where
        self._digests += 1
        covered_from = self._range_start

        def report(kind: ProblemKind, message: str) -> None:
            self.problem(ChainProblem(kind, where.line, entry.seq, message, where.file))

        if isinstance(claim, str) or claim is None:
            report("digest_chain", claim or "a digest record without a statement")
            self._reset_range(entry, None)
            return
        span = _span(claim.first_seq, claim.last_seq)
        # Its predecessor: the last digest seen, or one that is gone.
        previous, named = self._last_digest, claim.previous_digest_seq
        if previous is None and named is not None and named < self._start_seq:
            covered_from = named + 1  # its predecessor lies before where verification started
        elif named != (previous.seq if previous else None):
            if previous is not None and claim.previous_signature == previous.signature:
                report("digest_chain", f"names seq {named} as the previous digest, which is at seq {previous.seq}: "
                                       f"the records were renumbered")
            elif named is not None and self._gap_holding(named) is not None:
                lost_from = previous.seq + 1 if previous else self._start_seq
                lost = _span(lost_from, named - 1) if named > lost_from else "no records"
                report("deleted_digest",
                       f"the digest at seq {named} (covering {lost}) is missing: this digest names it as its predecessor")
                covered_from = named + 1
            elif named is not None and previous is not None and previous.seq < named < entry.seq:
                report("deleted_digest",
                       f"names a digest at seq {named} as its predecessor, but that record is not "
                       f"a digest (a digest was removed and the chain rewritten)")
            else:
                expected = f"seq {previous.seq}" if previous else "none (the first digest)"
                report("digest_chain", f"names seq {named} as the previous digest; expected {expected}")
        elif previous is not None and claim.previous_signature != previous.signature:
            report("digest_chain", f"does not carry the signature of the previous digest (seq {previous.seq})")
        # Its range: everything since its predecessor, up to itself.
        if claim.first_seq != covered_from or claim.last_seq != entry.seq - 1:
            report("digest_chain", f"covers {span}, but the records since the previous digest are "
                                   f"{_span(covered_from, entry.seq - 1) if entry.seq > covered_from else 'none'}")
        elif claim.count != claim.last_seq - claim.first_seq + 1:
            report("digest_chain", f"says {claim.count} record(s) for {span}")
        else:
            hasher = self._ranges.get(claim.first_seq)
            holes = [g for g in self._missing if g[1] >= claim.first_seq and g[0] <= claim.last_seq]
            if hasher is not None and not holes and hasher.value() != claim.records_hash:
                report("altered_after_signing",
                       f"the records of {span} are not the ones signed (their hashes changed after the digest was made)")
        # Its signature.
        if self._keys is not None:
            key = self._keys.get(claim.key_id)
            if key is None:
                report("unknown_key", f"{span} is signed with key {claim.key_id}, which is not a pinned key "
                                      f"(re-signed with another key?)")
            elif not claim.signature_valid(key):
                report("forged_signature", f"the signature over {span} does not verify with pinned key {claim.key_id}")
            else:
                self._checked += 1
        self._reset_range(entry, claim)

    def _reset_range(self, entry: _Entry, claim: DigestClaim | None) -> None:
        if claim is not None:
            self._last_digest = DigestLink(entry.seq, claim.signature)
        self._range_start = entry.seq + 1
        self._ranges = {entry.seq + 1: RangeHash()}
        self._missing = [g for g in self._missing if g[1] > entry.seq]

    # -- the end --

    def finish(self, *, head: ChainHead | None = None, anchor: Anchor | None = None, files: int = 1,
               notes: Sequence[str] = ()) -> ChainReport:
        while self._pending:
            self._declare_gap()
        last = self._last
        if head is not None:
            if last is None or last.seq < head.seq:
                end = last.seq if last else self._start_seq - 1
                self.problem(ChainProblem(
                    "truncated", last.where.line if last else 0, last.seq if last else None,
                    f"{_count(head.seq - end)} missing at the end (the head says seq {head.seq})",
                    last.where.file if last else ""))
            elif last.seq == head.seq and last.hash != head.hash and last.content_ok:
                self.problem(ChainProblem("edited", last.where.line, last.seq, "the last record differs from the head",
                                          last.where.file))
        if anchor is not None and not any(p.seq == anchor.seq and p.hash == anchor.hash
                                          and p.last_digest == anchor.last_digest for p in self._pruned):
            self.problem(ChainProblem("unanchored", 0, anchor.seq + 1,
                                      f"the anchor file says the chain starts after seq {anchor.seq}, but no audit.pruned "
                                      f"record in the log confirms it", ""))
        if self._ignored:
            notes = [*notes, f"{_count(self._ignored)} at or before the anchor (seq {self._start_seq - 1}) "
                             f"not checked: their pruning was recorded but had not finished"]
        unsigned = None
        if self._digests and last is not None and last.digest is None and self._range_start <= last.seq:
            unsigned = (self._range_start, last.seq)
        problems = sorted(self._problems, key=lambda p: (p.file != "", p.file, p.line, p.kind))
        return ChainReport(
            records=self._records,
            last_seq=last.seq if last else None,
            last_hash=last.hash if last else self._start_hash,
            problems=tuple(problems),
            first_seq=self._first_seq,
            digests=self._digests,
            signatures_checked=self._checked,
            unsigned_tail=unsigned,
            files=files,
            problems_dropped=self._dropped,
            notes=tuple(notes),
        )


# --- single file (the original API) ------------------------------------------------------


def _lines_of(lines: Sequence[bytes], complete: bool) -> Iterator[Line]:
    for index, raw in enumerate(lines, start=1):
        yield Line(index, raw, complete or index < len(lines))


def verify_lines(lines: Sequence[bytes], *, complete: bool = True, head: ChainHead | None = None,
                 keys: Mapping[str, VerifyKey] | None = None) -> ChainReport:
    """Check a log given as its lines; ``complete`` is False when the file did not end in a newline."""
    verifier = ChainVerifier(keys=keys)
    verifier.feed_lines(_lines_of(lines, complete))
    return verifier.finish(head=head)


# --- files -----------------------------------------------------------------------------------


def read_head(path: Path) -> ChainHead | None:
    """The head file, or None when there is none; ValueError when it is unreadable."""
    try:
        data = read_small_json(path)
    except FileNotFoundError:
        return None
    except ValueError:
        raise ValueError(f"{path}: not an audit head file") from None
    if isinstance(data, dict) and _int(data.get("seq")) is not None and isinstance(data.get("hash"), str):
        return ChainHead(int(data["seq"]), str(data["hash"]))
    raise ValueError(f"{path}: not an audit head file")


def read_anchor(path: Path) -> Anchor | None:
    """The anchor file, or None when there is none; ValueError when it is unreadable."""
    try:
        data = read_small_json(path)
    except FileNotFoundError:
        return None
    except ValueError:
        raise ValueError(f"{path}: not an audit anchor file") from None
    anchor = anchor_from_json(data)
    if anchor is None:
        raise ValueError(f"{path}: not an audit anchor file")
    return anchor


def verify_log(path: str | Path, *, head_path: str | Path | None = None,
               keys: Mapping[str, VerifyKey] | None = None) -> ChainReport:
    """Verify the log at ``path``: its rotated files oldest first, then the active file, from
    the anchor (if pruned) to the head. OSError when a file cannot be read, ValueError when the
    head or anchor file is not one."""
    path = Path(path)
    files = log_files(path)
    if not files:
        raise FileNotFoundError(2, "No such file or directory", str(path))
    head = read_head(Path(head_path) if head_path is not None else head_path_for(path))
    anchor = read_anchor(anchor_path_for(path))
    verifier = ChainVerifier(start=anchor, keys=keys)
    for file in files:
        with open_log(file) as stream:
            verifier.feed_lines(read_lines(stream), "" if file == path else file.name)
    return verifier.finish(head=head, anchor=anchor, files=len(files))


def verify_chain(path: str | Path, head_path: str | Path | None = None) -> ChainReport:
    """Verify an audit log (and its head file, ``<path>.head`` unless given), rotated files included."""
    return verify_log(path, head_path=head_path)


COPY_SUFFIXES: Final = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".json.gz")


def copy_files(directory: Path) -> list[Path]:
    """JSON lines files of a directory tree of sink copies (S3 objects as downloaded, an
    Elasticsearch export), ordered by the first seq each holds."""
    found = sorted(p for p in directory.rglob("*") if p.is_file() and p.name.endswith(COPY_SUFFIXES))
    keyed: list[tuple[int, str, Path]] = []
    for file in found:
        first = None
        with open_log(file) as stream:
            for line in read_lines(stream):
                try:
                    record = load_json(line.raw) if not line.oversized else None
                except ValueError:
                    continue
                if isinstance(record, dict) and _int(record.get("seq")) is not None:
                    first = int(record["seq"])
                    break
        keyed.append((first if first is not None else -1, str(file), file))
    return [file for _, _, file in sorted(keyed)]


def verify_copies(directory: str | Path, *, keys: Mapping[str, VerifyKey] | None = None,
                  start: Anchor | None = None) -> ChainReport:
    """Verify sink copies (records in any order and split over any files): the same chain and
    digest checks, by seq; only conflicting duplicates count as duplicated. ``start`` when the
    sink began after the log did (its first record's seq and prev_hash)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(20, "Not a directory", str(directory))
    files = copy_files(directory)
    verifier = ChainVerifier(start=start, keys=keys, file_order=False)
    for file in files:
        with open_log(file) as stream:
            verifier.feed_lines(read_lines(stream), str(file.relative_to(directory)))
    return verifier.finish(files=len(files))
