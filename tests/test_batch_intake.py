"""Batch intake: every batch-level fault refuses the whole batch; good batches stream their entries."""

import zipfile

import pytest

import csr_factory as f
from smki.requests.batch import BatchRefused, open_batch

LIMIT = 50_000


def make_zip(path, entries, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return path


def test_a_good_zip_streams_its_entries(tmp_path):
    csrs = [(f"device-{i}.csr", f.device_csr()) for i in range(3)]
    batch = open_batch(make_zip(tmp_path / "b.zip", csrs), LIMIT)
    entries = list(batch.entries())
    assert [e.name for e in entries] == [name for name, _ in csrs]
    assert [e.data for e in entries] == [data for _, data in csrs]
    assert entries[0].response_name == "device-0.crt"
    assert len(batch.batch_id) == 64 and open_batch(tmp_path / "b.zip", LIMIT).batch_id == batch.batch_id


def test_the_batch_digest_is_the_files_sha256(tmp_path):
    import hashlib
    path = make_zip(tmp_path / "b.zip", [("0.csr", f.device_csr())])
    assert open_batch(path, LIMIT).batch_id == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("how", ["replaced", "rewritten"])
def test_a_zip_changed_after_its_check_is_not_read(tmp_path, how):
    path = make_zip(tmp_path / "b.zip", [("0.csr", f.device_csr()), ("1.csr", f.device_csr())])
    batch = open_batch(path, LIMIT)
    other = make_zip(tmp_path / "other.zip", [("0.csr", f.device_csr()), ("1.csr", f.device_csr())])
    if how == "replaced":
        other.replace(path)
    else:
        path.write_bytes(other.read_bytes())
    with pytest.raises(BatchRefused, match="changed after the batch was checked"):
        list(batch.entries())


def test_a_directory_batch(tmp_path):
    (tmp_path / "d").mkdir()
    for i in range(2):
        (tmp_path / "d" / f"{i}.csr").write_bytes(f.device_csr())
    batch = open_batch(tmp_path / "d", LIMIT)
    assert [e.name for e in batch.entries()] == ["0.csr", "1.csr"]


@pytest.mark.parametrize("entries, fragment", [
    ([], "empty"),
    ([("../evil.csr", b"x")], "has a path"),
    ([("nested/dir.csr", b"x")], "has a path"),
    ([("/abs.csr", b"x")], "has a path"),
    ([("a\\b.csr", b"x")], "has a path"),
    ([("readme.txt", b"x")], "not a .csr file"),
    ([("a.csr", b"x"), ("a.csr", b"y")], "appears twice"),
    ([("big.csr", b"A" * 20000)], "over 16384"),
    # a name becomes its request's ID in CSRBatchResult: these made the answer not well-formed XML (hostile review)
    ([("a\x01b.csr", b"x")], "may not have"),
    ([("c\ufffed.csr", b"x")], "may not have"),
    ([("line\nbreak.csr", b"x")], "may not have"),
])
def test_batch_level_faults(tmp_path, entries, fragment):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name we make on purpose
        path = make_zip(tmp_path / "b.zip", entries)
    with pytest.raises(BatchRefused, match=fragment):
        open_batch(path, LIMIT)


def test_more_entries_than_the_limit(tmp_path):
    path = make_zip(tmp_path / "b.zip", [(f"{i}.csr", b"x") for i in range(11)], zipfile.ZIP_STORED)
    with pytest.raises(BatchRefused, match="11 entries, more than the batch limit of 10"):
        open_batch(path, 10)
    assert len(open_batch(path, 11).names) == 11


def test_a_zip_bomb_is_refused(tmp_path):
    path = make_zip(tmp_path / "bomb.zip", [("bomb.csr", b"\0" * 16000)])
    with pytest.raises(BatchRefused, match="a zip bomb"):
        open_batch(path, LIMIT)


@pytest.mark.parametrize("content", [b"PK\x03\x04 truncated", b"not a zip at all", b""])
def test_not_a_zip(tmp_path, content):
    (tmp_path / "b.zip").write_bytes(content)
    with pytest.raises(BatchRefused, match="not a ZIP file"):
        open_batch(tmp_path / "b.zip", LIMIT)


def test_missing_batch(tmp_path):
    with pytest.raises(BatchRefused, match="no such file"):
        open_batch(tmp_path / "absent.zip", LIMIT)
