"""The idempotency key is a contract with every future version: pinned by test vectors."""

import hashlib
import io

from agent.base.fingerprint import NAMESPACE, idempotency_key, sha256_file, sha256_stream


def test_key_is_pinned_for_all_versions():
    assert str(NAMESPACE) == "fb62e918-3a96-55e2-8dcb-d8aa14514dee"
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert idempotency_key(empty) == "0d7607c7-a108-559a-b6a9-fc141d895e29"
    assert idempotency_key(empty.upper()) == idempotency_key(empty)


def test_streaming_hash_matches_hashlib_across_chunk_boundaries(tmp_path):
    data = bytes(range(256)) * (4096 * 3 + 7)  # a little over 3 MiB: several chunks and a remainder
    path = tmp_path / "big.pdf"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_stream(io.BytesIO(data)) == hashlib.sha256(data).hexdigest()


def test_same_bytes_same_key_different_bytes_different_key(tmp_path):
    a, b, c = tmp_path / "a.pdf", tmp_path / "b.pdf", tmp_path / "c.pdf"
    a.write_bytes(b"%PDF-1.4 one")
    b.write_bytes(b"%PDF-1.4 one")
    c.write_bytes(b"%PDF-1.4 two")
    assert idempotency_key(sha256_file(a)) == idempotency_key(sha256_file(b))
    assert idempotency_key(sha256_file(a)) != idempotency_key(sha256_file(c))
