"""The bundled Adult data and the CSV reader."""

from __future__ import annotations

import numpy as np

from edgefair import data


def test_adult_splits_have_the_documented_shape(adult_test):
    train = data.load_adult("train")
    assert train.rows == 32561 and adult_test.rows == 16281
    assert set(np.unique(adult_test.columns["income"])) == {0, 1}
    assert "?" in set(adult_test.columns["workclass"])  # missing kept as '?'
    assert adult_test.columns["age"].dtype == np.float64
    assert 0.2 < adult_test.columns["income"].mean() < 0.3
    race = adult_test.columns["race"].tolist()  # one object per distinct string, as pandas' reader gives
    assert len({id(v) for v in race}) == len(set(race)) == 5


def test_csv_chunks_cover_every_row(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i % 3}\n" for i in range(1000)))
    chunks = list(data.iter_csv(path, ["b"], chunk_rows=300))
    assert [c.rows for c in chunks] == [300, 300, 300, 100]
    assert [c.first_line for c in chunks] == [2, 302, 602, 902]
    assert data.numeric(chunks[1].columns["b"], "b", "x")[0] == 300 % 3
