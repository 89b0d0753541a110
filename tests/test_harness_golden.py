"""Unit tests for harness.golden: reference lookup, comparison, .out.bad, regeneration."""

from harness import golden


def test_reference_prefers_format_variant(tmp_path):
    (tmp_path / "test_a.out").write_text("generic\n")
    assert golden.reference_path(tmp_path, "test_a", "raw") == tmp_path / "test_a.out"
    (tmp_path / "test_a.out.raw").write_text("raw only\n")
    assert golden.reference_path(tmp_path, "test_a", "raw") == tmp_path / "test_a.out.raw"
    assert golden.reference_path(tmp_path, "test_a", "qcow2") == tmp_path / "test_a.out"


def test_match_removes_stale_bad(tmp_path):
    ref, bad = tmp_path / "t.out", tmp_path / "t.out.bad"
    ref.write_text("a\nb\n")
    bad.write_text("old failure\n")
    assert golden.check("a\nb\n", ref, bad) is None
    assert not bad.exists()


def test_missing_line_is_a_mismatch(tmp_path):
    ref, bad = tmp_path / "t.out", tmp_path / "t.out.bad"
    ref.write_text("one\ntwo\nthree\n")
    mismatch = golden.check("one\nthree\n", ref, bad)
    assert mismatch is not None
    assert bad.read_text() == "one\nthree\n"
    assert "-two\n" in mismatch.diff
    assert str(bad) in mismatch.message()


def test_extra_or_changed_trailing_newline_is_a_mismatch(tmp_path):
    ref, bad = tmp_path / "t.out", tmp_path / "t.out.bad"
    ref.write_text("one\n")
    assert golden.check("one", ref, bad) is not None
    assert golden.check("one\n\n", ref, bad) is not None


def test_missing_reference_fails_and_says_how_to_fix(tmp_path):
    ref, bad = tmp_path / "t.out", tmp_path / "sub" / "t.out.bad"
    mismatch = golden.check("x\n", ref, bad)
    assert mismatch is not None
    assert "--regen" in mismatch.diff
    assert bad.read_text() == "x\n"


def test_regenerate_reports_changes(tmp_path):
    ref = tmp_path / "t.out"
    assert golden.regenerate("a\n", ref) is True
    assert golden.regenerate("a\n", ref) is False
    assert golden.regenerate("b\n", ref) is True
    assert ref.read_text() == "b\n"


def test_allocation_noise_of_a_block_or_two_is_tolerated(tmp_path):
    ref, bad = tmp_path / "t.out", tmp_path / "t.out.bad"
    ref.write_text('x\ndisk size: 88 KiB\n    "actual-size": 475136,\nvirtual size: 1 MiB\n')
    # An ext4 extent-tree block more or less, and 2.02/2.03 MiB printed with 3 digits.
    assert golden.check('x\ndisk size: 92 KiB\n    "actual-size": 471040,\n'
                        'virtual size: 1 MiB\n', ref, bad) is None
    assert golden.same_but_allocation_noise("disk size: 2.02 MiB", "disk size: 2.03 MiB")
    assert golden.same_but_allocation_noise("disk size: 0 B", "disk size: 4 KiB")


def test_allocation_differing_by_clusters_is_a_mismatch(tmp_path):
    ref, bad = tmp_path / "t.out", tmp_path / "t.out.bad"
    ref.write_text("disk size: 64 KiB\n")
    assert golden.check("disk size: 128 KiB\n", ref, bad) is not None
    assert golden.check("disk size: 0 B\n", ref, bad) is not None
    assert not golden.same_but_allocation_noise('"actual-size": 475136,',
                                                '"actual-size": 409600,')
    assert not golden.same_but_allocation_noise("disk size: 2.02 MiB", "disk size: 2.12 MiB")
    # Only allocation lines may differ, and only in their figure.
    assert not golden.same_but_allocation_noise("virtual size: 1 MiB", "virtual size: 2 MiB")
    assert not golden.same_but_allocation_noise("disk size: 4 KiB\n", "disk size: 4 KiB\nx\n")
