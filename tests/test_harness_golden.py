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
