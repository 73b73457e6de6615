"""``extract-features`` fails (exit 2) when no video could be used, and checks its numbers first."""

from __future__ import annotations

from apps.common.cli import main


def test_every_video_failing_is_an_error(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (videos / name).write_bytes(b"not a video" * 10)
    code = main(["vis4mer", "extract-features", "--videos", str(videos), "--out", str(tmp_path / "cache")])
    captured = capsys.readouterr()
    assert code == 2 and "every video failed (2" in captured.err and "failed.csv" in captured.err
    assert (tmp_path / "cache" / "failed.csv").is_file()


def test_numbers_are_checked_before_any_work(tmp_path, capsys):
    for option, value in (("--fps", "nan"), ("--batch-size", "0"), ("--workers", "-1")):
        assert main(["vis4mer", "extract-features", "--videos", str(tmp_path), "--out", str(tmp_path / "c"),
                     option, value]) == 2
        assert option in capsys.readouterr().err
