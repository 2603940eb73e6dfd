"""Signed digests (agentgov.audit.digest, checked by agentgov.audit.chain): a log signed by the real
writer verifies against its pinned key, and each kind of tampering is found and located — an edited
record, records altered and the chain recomputed, a deleted range, a deleted digest, a forged
signature, a range re-signed with another key, digests reordered; keys that cannot be used are
refused with a message naming the file."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from agentgov.audit.chain import ChainHead, verify_lines
from agentgov.audit.digest import (
    RangeHash, SigningKey, VerifyKey, load_signing_key, load_verify_key, records_hash, sign, signing_key_from_pem,
    verify_key_from_pem,
)
from agentgov.audit.errors import AuditConfigError
from agentgov.audit.record import AuditEvent, AuditPolicy, canonical, record_hash
from agentgov.audit.settings import LogOptions
from agentgov.audit.writer import AuditWriter

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
Record = dict[str, object]


def pem(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def public_pem(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


PINNED = ed25519.Ed25519PrivateKey.generate()
MALLORY = ed25519.Ed25519PrivateKey.generate()
SIGNING = signing_key_from_pem(pem(PINNED))
KEYS = {SIGNING.key_id: SIGNING.public()}


async def write_signed_log(path: Path, key_file: Path, events: int = 11) -> None:
    """The real writer, a digest every 3 records: digests at seq 3, 7, 11 and one at close."""
    writer = AuditWriter(path, policy=lambda: AuditPolicy(agent='research/research-assistant'),
                         clock=lambda: T0 + 60, options=LogOptions(digest_key_file=key_file, digest_every_records=3,
                                                                   tick_seconds=3600))
    await writer.start()
    for n in range(events):
        writer.emit(AuditEvent('authorization', 'allowed', 'POST', f'/v1/run/{n}', T0 + n, user='alice'))
    await writer.close()


@pytest.fixture(scope='module')
def signed(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    directory = tmp_path_factory.mktemp('signed')
    (directory / 'digest.pem').write_bytes(pem(PINNED))
    asyncio.run(write_signed_log(directory / 'audit.jsonl', directory / 'digest.pem'))
    return [json.loads(line) for line in (directory / 'audit.jsonl').read_bytes().splitlines()]


def lines_of(records: list[Record]) -> list[bytes]:
    return [canonical(r) for r in records]


def digest_seqs(records: list[Record]) -> list[int]:
    return [int(str(r['seq'])) for r in records if r['event_type'] == 'audit.digest']


# --- what an attacker with write access (but not the private key) can do ---------------------


def rechain(records: list[Record], resign_with: SigningKey | None = None, key_id: str | None = None) -> list[Record]:
    """Renumber, relink and rehash every record; with ``resign_with``, rebuild every digest over
    the records now present and sign it (claiming ``key_id`` if given)."""
    out: list[Record] = []
    prev, last_digest = 'sha256:' + '0' * 64, None
    covered: list[str] = []
    for seq, original in enumerate(records):
        record = json.loads(json.dumps(original))
        record['seq'], record['prev_hash'] = seq, prev
        if record['event_type'] == 'audit.digest' and resign_with is not None:
            statement = record['metadata']['statement']
            statement.update(first_seq=seq - len(covered), last_seq=seq - 1, count=len(covered),
                             records_hash=records_hash(covered), last_hash=covered[-1] if covered else None,
                             key_id=key_id or resign_with.key_id,
                             previous_digest_seq=last_digest[0] if last_digest else None,
                             previous_signature=last_digest[1] if last_digest else None)
            record['metadata']['signature'] = sign(statement, resign_with)
        record['hash'] = record_hash(record)
        if record['event_type'] == 'audit.digest':
            last_digest, covered = (seq, record['metadata']['signature']), []
        else:
            covered.append(str(record['hash']))
        prev = str(record['hash'])
        out.append(record)
    return out


def edited(records: list[Record], index: int) -> list[Record]:
    changed = json.loads(json.dumps(records))
    changed[index]['user'] = 'mallory'
    return changed


def without(records: list[Record], *seqs: int) -> list[Record]:
    return [r for r in records if r['seq'] not in seqs]


def swapped(records: list[Record], a: int, b: int) -> list[Record]:
    swapped_ = list(records)
    swapped_[a], swapped_[b] = swapped_[b], swapped_[a]
    return swapped_


def forged_signature(records: list[Record], seq: int) -> list[Record]:
    """The digest at ``seq`` signed by another key under the pinned key's id, the chain rehashed."""
    changed = json.loads(json.dumps(records))
    digest = changed[seq]['metadata']
    digest['signature'] = base64.b64encode(MALLORY.sign(canonical(digest['statement']))).decode()
    return rechain(changed)


MALLORY_SIGNING = signing_key_from_pem(pem(MALLORY))
Tamper = Callable[[list[Record]], list[Record]]
CASES: list[tuple[str, Tamper, list[tuple[str, int]]]] = [
    ('an edited record', lambda rs: edited(rs, 1), [('edited', 1)]),
    ('an edited record with the whole chain recomputed', lambda rs: rechain(edited(rs, 1)),
     [('altered_after_signing', 3), ('altered_after_signing', 7), ('altered_after_signing', 11),
      ('altered_after_signing', 14)]),
    ('a deleted range of records', lambda rs: without(rs, 4, 5), [('deleted', 6)]),
    ('a deleted digest', lambda rs: without(rs, 7), [('deleted', 8), ('deleted_digest', 11)]),
    ('a deleted digest with the chain renumbered', lambda rs: rechain(without(rs, 7)),
     [('deleted_digest', 10), ('digest_chain', 10), ('digest_chain', 13), ('digest_chain', 13)]),
    ('a forged signature', lambda rs: forged_signature(rs, 14), [('forged_signature', 14)]),
    ('a range re-signed with a key that is not pinned', lambda rs: rechain(edited(rs, 5), MALLORY_SIGNING),
     [('unknown_key', 3), ('unknown_key', 7), ('unknown_key', 11), ('unknown_key', 14)]),
    ('a range re-signed under the pinned key id with another key',
     lambda rs: rechain(edited(rs, 5), MALLORY_SIGNING, SIGNING.key_id),
     [('forged_signature', 3), ('forged_signature', 7), ('forged_signature', 11), ('forged_signature', 14)]),
    ('two digests swapped in the file', lambda rs: swapped(rs, 3, 7), [('reordered', 3), ('reordered', 4)]),
    ('two digests swapped and the chain renumbered', lambda rs: rechain(swapped(rs, 3, 7)),
     [('digest_chain', 3), ('digest_chain', 3), ('digest_chain', 7), ('digest_chain', 7),
      ('digest_chain', 11), ('altered_after_signing', 11), ('altered_after_signing', 14)]),
]


def test_the_signed_log_has_a_digest_every_three_records_and_one_at_close(signed: list[Record]) -> None:
    assert digest_seqs(signed) == [3, 7, 11, 14]
    statements = [r['metadata']['statement'] for r in signed if r['event_type'] == 'audit.digest']  # type: ignore[index]
    assert [(s['first_seq'], s['last_seq']) for s in statements] == [(0, 2), (4, 6), (8, 10), (12, 13)]
    assert [s['previous_digest_seq'] for s in statements] == [None, 3, 7, 11]


def test_an_intact_signed_log_verifies_every_signature_with_the_pinned_key(signed: list[Record]) -> None:
    report = verify_lines(lines_of(signed), keys=KEYS)
    assert report.ok, [str(p) for p in report.problems]
    assert (report.digests, report.signatures_checked, report.unsigned_tail) == (4, 4, None)


def test_without_pinned_keys_the_structure_is_checked_but_no_signature(signed: list[Record]) -> None:
    report = verify_lines(lines_of(signed))
    assert report.ok and (report.digests, report.signatures_checked) == (4, 0)
    tampered = verify_lines(lines_of(rechain(edited(signed, 1))))
    assert {p.kind for p in tampered.problems} == {'altered_after_signing'}


@pytest.mark.parametrize('name, tamper, expected', CASES, ids=[c[0] for c in CASES])
def test_each_kind_of_tampering_with_a_signed_log_is_found_where_it_happened(
        signed: list[Record], name: str, tamper: Tamper, expected: list[tuple[str, int]]) -> None:
    report = verify_lines(lines_of(tamper(signed)), keys=KEYS)
    assert sorted((p.kind, p.seq) for p in report.problems) == sorted(expected), [str(p) for p in report.problems]


def test_a_deleted_digest_is_reported_by_the_range_it_covered(signed: list[Record]) -> None:
    report = verify_lines(lines_of(without(signed, 7)), keys=KEYS)
    [message] = [p.message for p in report.problems if p.kind == 'deleted_digest']
    assert message == 'the digest at seq 7 (covering seq 4-6) is missing: this digest names it as its predecessor'


def test_the_last_digest_cut_off_the_end_is_found_against_the_head(signed: list[Record]) -> None:
    head = ChainHead(int(str(signed[-1]['seq'])), str(signed[-1]['hash']))
    report = verify_lines(lines_of(signed[:-1]), keys=KEYS, head=head)
    assert [(p.kind, p.seq) for p in report.problems] == [('truncated', 13)]
    assert report.unsigned_tail == (12, 13)


def test_records_hash_is_sha256_over_each_hash_and_a_newline_in_order() -> None:
    hashes = ['sha256:' + 'a' * 64, 'sha256:' + 'b' * 64]
    expected = 'sha256:' + hashlib.sha256(b''.join(h.encode() + b'\n' for h in hashes)).hexdigest()
    assert records_hash(hashes) == expected
    incremental = RangeHash()
    for h in hashes:
        incremental.add(h)
    assert incremental.value() == expected and incremental.count == 2 and incremental.last_hash == hashes[1]


def test_an_rsa_pss_key_signs_digests_that_its_public_key_verifies(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / 'rsa.pem').write_bytes(pem(private))
    (tmp_path / 'rsa.pub').write_bytes(public_pem(private))
    asyncio.run(write_signed_log(tmp_path / 'audit.jsonl', tmp_path / 'rsa.pem', events=4))
    key = load_verify_key(tmp_path / 'rsa.pub')
    assert key.algorithm == 'rsa-pss-sha256' and key.key_id == load_signing_key(tmp_path / 'rsa.pem').key_id
    report = verify_lines((tmp_path / 'audit.jsonl').read_bytes().splitlines(), keys={key.key_id: key})
    assert report.ok and report.signatures_checked == report.digests == 2


def test_a_private_key_file_is_accepted_as_the_pinned_public_key() -> None:
    assert verify_key_from_pem(pem(PINNED)).key_id == SIGNING.key_id


KEY_PROBLEMS: list[tuple[str, Callable[[], bytes], str]] = [
    ('an RSA key shorter than 2048 bits',
     lambda: pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), 'too short'),
    ('an elliptic-curve key', lambda: pem(ec.generate_private_key(ec.SECP256R1())), 'Ed25519 or RSA'),
    ('an encrypted key', lambda: PINNED.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.BestAvailableEncryption(b'pass')),
     'not an unencrypted PEM private key'),
    ('garbage', lambda: b'\x00\xff' * 100, 'not an unencrypted PEM private key'),
    ('a file far larger than a key', lambda: b'A' * (1024 * 1024), 'larger than 64 KiB'),
]


@pytest.mark.parametrize('name, content, problem', KEY_PROBLEMS, ids=[k[0] for k in KEY_PROBLEMS])
def test_a_digest_key_that_cannot_be_used_is_refused_naming_the_file(tmp_path: Path, name: str,
                                                                    content: Callable[[], bytes], problem: str) -> None:
    path = tmp_path / 'digest.pem'
    path.write_bytes(content())
    with pytest.raises(AuditConfigError) as raised:
        load_signing_key(path)
    assert str(path) in str(raised.value) and problem in str(raised.value)
    assert 'PRIVATE KEY' not in str(raised.value)


def test_a_missing_digest_key_file_stops_the_writer_from_starting(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path / 'audit.jsonl', policy=AuditPolicy,
                         options=LogOptions(digest_key_file=tmp_path / 'nope.pem'))
    with pytest.raises(AuditConfigError, match='nope.pem: No such file'):
        asyncio.run(writer.start())


def test_keys_never_show_their_material_in_a_repr() -> None:
    assert repr(SIGNING) == f'SigningKey(ed25519, {SIGNING.key_id})'
    assert isinstance(SIGNING.public(), VerifyKey)
