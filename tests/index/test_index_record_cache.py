"""RecordCache: decoded instance records by their stored bytes, shared by an Index's readers."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pytest

from engine.errors import CorruptDataError
from engine.index import Index, decode_instance, encode_instance
from engine.index._record_cache import RecordCache


def test_a_record_read_again_is_the_same_decoded_object_and_equal_to_a_fresh_decode(factory) -> None:
    cache = RecordCache()
    raw = encode_instance(factory.record(study=0, series=0, number=1))
    first = cache.decode(raw)
    assert first == decode_instance(raw)
    assert cache.decode(bytes(raw)) is first  # equal bytes from another read: no second decode
    changed = encode_instance(dataclasses.replace(first, generation=first.generation + 1))
    assert cache.decode(changed).generation == first.generation + 1  # changed bytes: decoded anew
    assert len(cache) == 2


def test_the_cache_holds_at_most_its_byte_bound_dropping_the_least_recently_read(factory) -> None:
    raws = [encode_instance(factory.record(study=0, series=0, number=n)) for n in range(1, 6)]
    cache = RecordCache(max_bytes=sum(len(r) for r in raws[:3]))
    for raw in raws[:3]:
        cache.decode(raw)
    cache.decode(raws[0])  # most recently read now
    cache.decode(raws[3])  # over the bound: the least recently read (raws[1]) goes
    assert len(cache) == 3
    kept = cache.decode(raws[0])
    assert cache.decode(raws[0]) is kept


def test_bytes_that_are_no_record_raise_and_are_not_kept() -> None:
    cache = RecordCache()
    with pytest.raises(CorruptDataError):
        cache.decode(b"not a record")
    assert len(cache) == 0


def test_index_readers_see_a_replacement_not_the_cached_original(factory) -> None:
    with tempfile.TemporaryDirectory() as tmp, Index(Path(tmp) / "index", map_size=1 << 24) as index:
        record = factory.record(study=0, series=0, number=1)
        index.put_instances([factory.entry(record)])
        before = index.get_instance(record.sop_instance_uid)
        assert index.get_instance(record.sop_instance_uid) is before  # the second read is the cached decode
        replacement = dataclasses.replace(record, digest="f" * 32, generation=1)
        index.put_instances([factory.entry(replacement, overwrite=True)])
        after = index.get_instance(record.sop_instance_uid)
        assert (after.digest, after.generation) == ("f" * 32, 1)
