"""Frame sampling, spans, preprocessing and decoding errors of apps.vis4mer.video."""


import numpy as np
import pytest
import torch

from apps.vis4mer.video import VideoError, preprocess, read_frames, sample_indices, span_indices


def test_fps_sampling_takes_one_frame_per_period():
    # 10 s at 30 fps, 1 fps -> frames 0, 30, ..., 270
    np.testing.assert_array_equal(sample_indices(300, 30.0, fps=1.0), np.arange(10) * 30)
    # 2 fps of a 25 fps video: every 12.5 frames, floored
    np.testing.assert_array_equal(sample_indices(100, 25.0, fps=2.0), [0, 12, 25, 37, 50, 62, 75, 87])
    # a partial last second still gives a frame; a clip shorter than a period gives its first frame
    assert sample_indices(301, 30.0, fps=1.0).tolist()[-1] == 300
    assert sample_indices(5, 30.0, fps=1.0).tolist() == [0]


def test_uniform_sampling_takes_segment_centres():
    np.testing.assert_array_equal(sample_indices(100, 25.0, num_samples=4), [12, 37, 62, 87])
    # more samples than frames repeats frames, never leaves the video
    idx = sample_indices(3, 25.0, num_samples=6)
    assert idx.tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="exactly one"):
        sample_indices(10, 25.0, fps=1.0, num_samples=3)


def test_spans_pad_the_tail_with_the_last_frame():
    spans = span_indices(7, 3)
    assert [s.tolist() for s in spans] == [[0, 1, 2], [3, 4, 5], [6, 6, 6]]
    assert [s.tolist() for s in span_indices(2, 5)] == [[0, 1, 1, 1, 1]]  # shorter than one span
    assert len(span_indices(60, 60)) == 1


def test_preprocess_resizes_crops_and_normalises():
    frames = torch.full((2, 40, 80, 3), 255, dtype=torch.uint8)
    frames[..., 0] = 0
    x = preprocess(frames, 20, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 0.5))
    assert x.shape == (2, 3, 20, 20)
    torch.testing.assert_close(x[:, 0], torch.full((2, 20, 20), -2.0))  # (0 - 0.5) / 0.25
    torch.testing.assert_close(x[:, 1], torch.full((2, 20, 20), 1.0))  # (1 - 0.5) / 0.5


@pytest.mark.parametrize("width", [64, 32, 48])  # decord2 mis-sizes 32 and 48 wide frames; PyAV reads those
def test_pyav_written_clip_decodes(tmp_path, width):
    """A 4 s, 25 fps H.264 clip of a moving colour gradient, written with PyAV, read back with decord."""
    from apps.vis4mer.prepare import write_mp4

    t, y, x = np.meshgrid(np.arange(100), np.arange(48), np.arange(width), indexing="ij")
    frames = np.stack([(x * 4 + t * 3) % 256, (y * 5) % 256, (x + y + t) % 256], axis=-1).astype(np.uint8)
    clip = tmp_path / "gradient.mp4"
    write_mp4(clip, frames, fps=25)
    decoded, info = read_frames(clip, fps=1.0)
    assert decoded.dtype == torch.uint8 and decoded.shape == (4, 48, width, 3)
    assert info["video_fps"] == pytest.approx(25.0) and list(info["indices"]) == [0, 25, 50, 75]
    assert decoded.float().std() > 10  # real picture content, not a blank
    # the first sampled frame is the first written one, up to H.264's loss
    assert (decoded[0].float() - torch.from_numpy(frames[0]).float()).abs().mean() < 8
    uniform, _ = read_frames(clip, fps=None, num_samples=5)
    assert uniform.shape[0] == 5


@pytest.mark.parametrize("content", [None, b"", b"not a video at all" * 20])
def test_unusable_videos_are_reported_by_name(tmp_path, content):
    path = tmp_path / "broken_clip.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoError, match="broken_clip.mp4"):
        read_frames(path)
