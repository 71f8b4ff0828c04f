from __future__ import annotations

import numpy as np
import pytest
from _data_synth import write_case

from fuse4seg.data import BratsCase, discover_cases, match_brats_file
from fuse4seg.errors import InputError


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Brats18_2013_2_1_t1ce.nii.gz", ("Brats18_2013_2_1", "brats2021", "t1ce")),
        ("Brats18_2013_2_1_t1.nii.gz", ("Brats18_2013_2_1", "brats2021", "t1")),
        ("BraTS2021_00006_flair.nii", ("BraTS2021_00006", "brats2021", "flair")),
        ("BraTS2021_00006_seg.nii.gz", ("BraTS2021_00006", "brats2021", "seg")),
        ("BraTS-GLI-00000-000-t1c.nii.gz", ("BraTS-GLI-00000-000", "brats2023", "t1ce")),
        ("BraTS-GLI-00000-000-t1n.nii", ("BraTS-GLI-00000-000", "brats2023", "t1")),
        ("BraTS-GLI-00000-000-t2w.nii.gz", ("BraTS-GLI-00000-000", "brats2023", "t2")),
        ("BraTS-GLI-00000-000-t2f.nii.gz", ("BraTS-GLI-00000-000", "brats2023", "flair")),
        ("BraTS-GLI-00000-000-seg.nii.gz", ("BraTS-GLI-00000-000", "brats2023", "seg")),
        ("case_t1ce.nii.gz.bak", None),
        ("case_t1c.nii.gz", None),
        ("case-t1ce.nii.gz", None),
        ("readme.txt", None),
    ],
)
def test_match_brats_file(name, expected):
    assert match_brats_file(name) == expected


def test_folder_of_cases_and_single_case(tmp_path):
    write_case(tmp_path, "A_001", "brats2021")
    write_case(tmp_path, "B-002", "brats2023", ext=".nii", skip=("t2", "seg"))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "x.txt").write_text("not a case")
    cases = discover_cases(tmp_path)
    assert [c.case_id for c in cases] == ["A_001", "B-002"]
    a, b = cases
    assert (a.naming, a.et_label, sorted(a.files)) == ("brats2021", 4, sorted(a.files))
    assert set(a.files) == {"t1", "t1ce", "t2", "flair"} and a.seg is not None
    assert (b.naming, b.et_label, b.seg) == ("brats2023", 3, None)
    assert set(b.files) == {"t1", "t1ce", "flair"}
    assert b.expected_path("t2").name == "B-002-t2w.nii.gz"
    single = discover_cases(tmp_path / "A_001")
    assert len(single) == 1 and single[0].folder == tmp_path / "A_001"
    assert isinstance(single[0], BratsCase)


def test_no_cases_and_bad_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "scan.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="no BraTS cases found") as err:
        discover_cases(tmp_path / "empty")
    assert str(err.value).startswith(str(tmp_path / "empty"))
    with pytest.raises(InputError, match="does not exist"):
        discover_cases(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        discover_cases(tmp_path / "file.txt")


def test_mixed_and_duplicate_files_are_errors(tmp_path):
    folder = write_case(tmp_path, "A_001")
    (folder / "A_001_t2.nii").write_bytes(b"")
    with pytest.raises(InputError, match="two files for t2"):
        discover_cases(folder)
    (folder / "A_001_t2.nii").unlink()
    (folder / "Z_009_flair.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="several cases"):
        discover_cases(folder)


def test_real_cases_discovered_with_naming(brats_dir):
    cases = discover_cases(brats_dir)
    assert len(cases) == 14
    by_id = {c.case_id: c for c in cases}
    assert by_id["BraTS-GLI-00000-000"].naming == "brats2023"
    assert by_id["BraTS-GLI-00000-000"].et_label == 3
    assert by_id["BraTS2021_00006"].naming == "brats2021"
    n18 = [c for c in cases if c.case_id.startswith("Brats18_")]
    assert len(n18) == 12 and all(c.et_label == 4 for c in n18)
    for c in cases:
        assert set(c.files) == {"t1", "t1ce", "t2", "flair"} and c.seg is not None
        assert c.folder.name == c.case_id
    assert np.all([c.files["t1ce"].name.startswith(c.case_id) for c in cases])
