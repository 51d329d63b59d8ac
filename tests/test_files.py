"""Records written whole or not at all (``normzoo.files``)."""

from __future__ import annotations

import pytest

from normzoo.files import atomic_file, write_atomically


def test_a_record_is_replaced_whole_and_a_failed_write_keeps_the_old_one(tmp_path):
    record = tmp_path / "evaluation.yaml"
    write_atomically(record, "step: 1\n")
    with pytest.raises(RuntimeError, match="killed mid-write"), atomic_file(record) as file:
        file.write("step: 2\n")
        raise RuntimeError("killed mid-write")
    assert record.read_text() == "step: 1\n"
    assert [path.name for path in tmp_path.iterdir()] == ["evaluation.yaml"]  # no temporary left behind
    write_atomically(record, "step: 3\n")
    assert record.read_text() == "step: 3\n"
