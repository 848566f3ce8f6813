"""Row and pending counts from collection statistics, against a real FerretDB (the server tests and native runs
use; MongoDB answers ``$collStats`` the same way)."""

from __future__ import annotations

import numpy as np
import pytest

from mlstack_core.data.generator import FEATURES, TARGET, generate_frame
from mlstack_core.mongo import collection_count
from mlstack_core.rows import RowsRepository, new_batch_id

pytestmark = pytest.mark.integration


@pytest.fixture
def db(fresh_db):
    return fresh_db


def _insert(repo: RowsRepository, rows: int, *, pending: bool, seed: int = 0) -> list:
    frame = generate_frame(rows, seed=seed)
    return repo.insert_batch(frame[list(FEATURES)].to_numpy(dtype=np.float64), frame[TARGET].tolist(),
                             source="test", batch_id=new_batch_id(), pending=pending)


def test_counts_follow_inserts_and_deletes_exactly(db):
    repo = RowsRepository(db["rows"])
    assert repo.count() == 0 and repo.count_pending() == 0 and not repo.has_rows()  # no collection yet
    ids = _insert(repo, 1234, pending=True)
    _insert(repo, 66, pending=False, seed=1)
    assert repo.has_rows()
    assert repo.count() == 1300 == db["rows"].count_documents({})
    assert repo.count_pending() == 1234
    db["predictions"].insert_many([{"_id": row_id, "prediction": 5.0} for row_id in ids[:1000]])
    assert repo.mark_predicted(ids[:1000]) == (1000, [])  # marks go only with a stored prediction
    assert repo.count_pending() == 234 == db["rows_pending"].count_documents({})
    db["rows"].delete_many({"_id": {"$in": ids[:10]}})
    assert repo.count() == 1290


def test_an_emptied_collection_counts_zero(db):
    db["c"].insert_many([{"x": i} for i in range(5)])
    assert collection_count(db["c"]) == 5
    db["c"].delete_many({})
    assert collection_count(db["c"]) == 0
