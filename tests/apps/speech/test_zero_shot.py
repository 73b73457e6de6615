"""``ssm speech zero-shot`` writes its table (markdown, CSV, PNG) for every rate x input x rate change."""

from __future__ import annotations

import csv
import shutil

import pytest
import torch

from apps.common.cli import main
from apps.speech.module import load_speech_classifier
from apps.speech.zero_shot import DATA_KEYS, Adaptation, adapted_nets, eval_data, networks, parse_rates
from tests.apps.speech.speech_sets import tiny_checkpoint, tiny_set


def test_zero_shot_writes_its_table(tmp_path_factory, tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path_factory)
    out = tmp_path / "zs"
    assert main(["speech", "zero-shot", "--ckpt", str(ckpt), "--rates", "8000,16000,4000", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("zero_shot.md", "zero_shot.csv", "zero_shot.png"):
        assert (out / name).is_file() and str(out / name) in printed
    assert (out / "zero_shot.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(open(out / "zero_shot.csv")))
    assert len(rows) == 3 * 2 * 2 + 2  # + the training-rate input low-passed to 8 and 4 kHz audio's bands
    lowpassed = {r["input"]: r for r in rows if r["input"].startswith("low-passed")}
    assert set(lowpassed) == {"low-passed at 4000 Hz", "low-passed at 2000 Hz"}
    assert all(r["sample rate (Hz)"] == "16000" and r["rate change"] == "no" for r in lowpassed.values())
    band = list(csv.DictReader(open(out / "kernel_band.csv")))
    assert [r["cut-off (Hz)"] for r in band] == ["4000", "2000"]
    shares = [float(r["median share above (%)"]) for r in band]
    assert 0 <= shares[0] <= shares[1] <= 100  # more of the kernels' energy lies above 2 kHz than above 4 kHz
    assert (out / "kernel_band.png").read_bytes()[:4] == b"\x89PNG" and "kernel_band.csv" in printed
    keyed = {(r["sample rate (Hz)"], r["input"], r["rate change"]): r for r in rows}
    assert float(keyed["8000", "resampled", "yes"]["SSM rate"]) == 2.0
    assert float(keyed["4000", "naive decimation", "yes"]["SSM rate"]) == 4.0
    assert float(keyed["8000", "resampled", "no"]["SSM rate"]) == 1.0
    at_train = {r["accuracy (%)"] for r in rows if r["sample rate (Hz)"] == "16000" and r["input"] not in lowpassed}
    assert len(at_train) == 1  # at the training rate every way of feeding the (unfiltered) data is the same
    assert all(0 <= float(r["accuracy (%)"]) <= 100 for r in rows)
    assert float(keyed["16000", "resampled", "yes"]["vs training rate (points)"]) == 0
    assert "| 8000 | resampled | yes | 2 |" in (out / "zero_shot.md").read_text()


def test_rates_and_checkpoint_mistakes(tmp_path, capsys):
    assert parse_rates("16000, 8000,8000") == [16000, 8000]
    with pytest.raises(Exception, match="--rates needs"):
        parse_rates("32000")
    assert main(["speech", "zero-shot", "--ckpt", str(tmp_path / "none.ckpt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def _quieter_copy(root, dest, gain: float):
    """``root`` with every clip (background noise too) scaled by ``gain``: the same audio, another level."""
    import shutil

    import soundfile as sf

    shutil.copytree(root, dest)
    for path in dest.rglob("*.wav"):
        wav, rate = sf.read(path, dtype="float64")
        sf.write(path, wav * gain, rate, subtype="FLOAT")
    return dest


def test_adapted_statistics_undo_a_level_change(tmp_path_factory, tmp_path, capsys):
    """``--adapt-norm``: every row again with the folder's own statistics.  A copy of the data 26 dB quieter is,
    once normalised by its own statistics, the same input, so its adapted rows equal the original's."""
    ckpt = tiny_checkpoint(tmp_path_factory)
    original = tiny_set(tmp_path_factory, per_word=30, name="learn")
    quiet = _quieter_copy(original, tmp_path / "quiet", 0.05)
    tables = {}
    for name, root in (("original", original), ("quiet", quiet)):
        out = tmp_path / name
        assert main(["speech", "zero-shot", "--ckpt", str(ckpt), "--rates", "16000", "--data-root", str(root),
                     "--adapt-norm", "40", "--out", str(out)]) == 0
        assert (out / "zero_shot.png").read_bytes()[:4] == b"\x89PNG"
        md = (out / "zero_shot.md").read_text()
        assert f"Adapted: normalised by the statistics of {root}'s training split, labels unread" in md
        assert "up to 40 of its clips" in capsys.readouterr().out
        tables[name] = {(r["sample rate (Hz)"], r["input"], r["rate change"], r["statistics"]): r["accuracy (%)"]
                        for r in csv.DictReader(open(out / "zero_shot.csv"))}
    rows = tables["original"]
    assert len(rows) == 2 * 2 * 2 and {k[3] for k in rows} == {"model", "adapted"}
    adapted = {k: v for k, v in tables["quiet"].items() if k[3] == "adapted"}
    assert adapted == {k: v for k, v in rows.items() if k[3] == "adapted"}
    # the model's own statistics do not follow the level: the quiet copy's unadapted rows are the ones that change
    assert tables["quiet"]["16000", "resampled", "yes", "model"] != rows["16000", "resampled", "yes", "model"]
    # the same to the logits, at 8 kHz with the rate change (9 test clips say little through their accuracy)
    model, saved = load_speech_classifier(ckpt)
    options = {k: v for k, v in saved.items() if k in DATA_KEYS}
    logits = {}
    for name, root in (("original", original), ("quiet", quiet)):
        for adapted in (True, False):
            data = eval_data({**options, "root": str(root)}, model, 8000, "proper", 50, adapted=adapted)
            net = adapted_nets(model, data.adaptation_loader(40), [2.0])[2.0] if adapted else model.net
            with torch.no_grad():
                logits[name, adapted] = torch.cat([net(x, rate=2.0) for x, _ in data.test_dataloader()])
    torch.testing.assert_close(logits["quiet", True], logits["original", True], rtol=1e-4, atol=1e-4)
    assert (logits["quiet", False] - logits["original", False]).abs().max() > 0.1


def test_a_whole_folder_scored(tmp_path_factory, tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path_factory)
    out = tmp_path / "all"
    assert main(["speech", "zero-shot", "--ckpt", str(ckpt), "--rates", "16000", "--split", "all", "--out", str(out)]) == 0
    assert "Scored: every clip of the folder" in capsys.readouterr().out
    accuracy = float(next(csv.DictReader(open(out / "zero_shot.csv")))["accuracy (%)"])
    assert min(abs(accuracy - 100 * k / 90) for k in range(91)) < 0.006  # a share of the 90 clips, not of the 9 tested


def test_adapt_norm_needs_clips(tmp_path_factory, capsys):
    ckpt = tiny_checkpoint(tmp_path_factory)
    assert main(["speech", "zero-shot", "--ckpt", str(ckpt), "--adapt-norm", "0"]) == 2
    assert "--adapt-norm takes a number of clips >= 1" in capsys.readouterr().err
    for args, said in ((["--adapt-epochs", "2"], "needs --adapt-norm (the unlabelled clips it trains on), got "
                                                 "--adapt-epochs 2 without --adapt-norm"),
                       (["--adapt-norm", "--adapt-epochs", "-1"], "--adapt-epochs takes a number of epochs >= 0"),
                       (["--adapt-norm", "--adapt-epochs", "1", "--adapt-lr", "0"], "--adapt-lr takes a learning "
                                                                                      "rate > 0, got 0.0"),
                       (["--adapt-norm", "--adapt-seed", "2"], "--adapt-seed 2 orders the clips of --adapt-epochs' "
                                                               "self-training"),
                       (["--device", "gpu7"], "--device 'gpu7' is not a device")):
        assert main(["speech", "zero-shot", "--ckpt", str(ckpt), *args]) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1


def test_self_trained_rows(tmp_path_factory, tmp_path, capsys):
    """``--adapt-epochs``: a third set of rows, from networks trained on the folder's unlabelled clips after their
    statistics were adapted; the output layer is the model's, the rest has moved, the model itself is untouched."""
    ckpt = tiny_checkpoint(tmp_path_factory)
    out = tmp_path / "st"
    assert main(["speech", "zero-shot", "--ckpt", str(ckpt), "--rates", "16000,8000", "--adapt-norm", "40",
                 "--adapt-epochs", "2", "--out", str(out)]) == 0
    assert "Self-trained: the adapted network, all but its output layer, trained 2 epoch(s)" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "zero_shot.csv")))
    kinds = [r["statistics"] for r in rows]
    assert len(rows) == 3 * (2 * 2 * 2 + 1) and {k: kinds.count(k) for k in kinds} == dict.fromkeys(
        ["model", "adapted", "self-trained"], 9)
    model, saved = load_speech_classifier(ckpt)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = eval_data({k: v for k, v in saved.items() if k in DATA_KEYS}, model, 8000, "proper", 50, adapted=True)
    nets = networks(model, data, [2.0], Adaptation(40, 2))
    nets = {0: nets["adapted"][2.0], 2: nets["self-trained"][2.0]}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert all(torch.equal(a, b) for a, b in zip(nets[0].head.parameters(), nets[2].head.parameters(), strict=True))
    assert max((a - b).abs().max() for a, b in zip(nets[0].parameters(), nets[2].parameters(), strict=True)) > 1e-4
    for a, b in zip(nets[0].buffers(), nets[2].buffers(), strict=True):  # the adapted statistics are kept
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_adapt_seed_draws_the_self_training_order(tmp_path_factory, tmp_path, capsys):
    """``--adapt-seed``: the same seed gives the same self-trained network, another seed another one."""
    ckpt = tiny_checkpoint(tmp_path_factory)
    assert main(["speech", "zero-shot", "--ckpt", str(ckpt), "--rates", "16000", "--adapt-norm", "8", "--adapt-epochs",
                 "1", "--adapt-seed", "3", "--out", str(tmp_path / "s3")]) == 0
    assert "(Adam, lr 0.001, order seed 3)" in capsys.readouterr().out
    model, saved = load_speech_classifier(ckpt)
    # batches of 8, so that the order of the 24 clips decides what each step sees
    data = eval_data({k: v for k, v in saved.items() if k in DATA_KEYS}, model, 16000, "proper", 8, adapted=True)
    trained = [networks(model, data, [1.0], Adaptation(24, 1, seed=seed))["self-trained"][1.0] for seed in (0, 0, 1)]
    same = [torch.equal(a, b) for a, b in zip(trained[0].parameters(), trained[1].parameters(), strict=True)]
    differ = max((a - b).abs().max() for a, b in zip(trained[0].parameters(), trained[2].parameters(), strict=True))
    assert all(same) and differ > 1e-6


def test_test_time_views(tmp_path_factory, tmp_path, capsys):
    """``--tta``: every row again with each clip's log-probabilities averaged over it and its views, computed here
    from the model's own outputs on each view; an identity view gives back the plain rows."""
    from apps.speech.augment import View

    ckpt = tiny_checkpoint(tmp_path_factory)
    out = tmp_path / "tta"
    assert main(["speech", "zero-shot", "--ckpt", str(ckpt), "--rates", "16000,8000", "--tta", "speed0.9,formant1.2",
                 "--out", str(out)]) == 0
    assert "Views: rows with views 3 average each clip's log-probabilities over the clip and its views speed0.9, " \
           "formant1.2" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "zero_shot.csv")))
    assert len(rows) == 2 * (2 * 2 * 2 + 1) and [r["views"] for r in rows] == ["1"] * 9 + ["3"] * 9
    keyed = {(r["sample rate (Hz)"], r["input"], r["rate change"], r["views"]): float(r["accuracy (%)"]) for r in rows}
    model, saved = load_speech_classifier(ckpt)
    model.eval()
    data = eval_data({k: v for k, v in saved.items() if k in DATA_KEYS}, model, 8000, "proper", 50)
    test = data.dataset("test")
    views = (View("speed", 0.9), View("formant", 1.2))
    with torch.no_grad():
        logp, labels = [], []
        for i in range(len(test)):
            wav = test.waveform(i)
            clips = [(test.raw_features(w) - test.mean) / test.std for w in (wav, *(v(wav) for v in views))]
            logp.append(torch.stack([model.net(c.float()[None], rate=2.0)[0].log_softmax(-1) for c in clips]))
            labels.append(test[i][1])
    logp, labels = torch.stack(logp), torch.tensor(labels)
    want = 100 * float((logp.mean(1).argmax(-1) == labels).double().mean())
    assert keyed["8000", "resampled", "yes", "3"] == pytest.approx(want, abs=0.006)
    assert keyed["8000", "resampled", "yes", "1"] == pytest.approx(
        100 * float((logp[:, 0].argmax(-1) == labels).double().mean()), abs=0.006)
    same = tmp_path / "same"
    assert main(["speech", "zero-shot", "--ckpt", str(ckpt), "--rates", "16000", "--tta", "formant1",
                 "--out", str(same)]) == 0
    rows = list(csv.DictReader(open(same / "zero_shot.csv")))
    assert {r["accuracy (%)"] for r in rows if r["views"] == "2"} == {r["accuracy (%)"] for r in rows if r["views"] == "1"}
    capsys.readouterr()
    assert main(["speech", "zero-shot", "--ckpt", str(ckpt), "--tta", "speed3", "--out", str(tmp_path / "x")]) == 2
    assert "--tta: 'speed3' is not a view" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_default_output_is_in_the_run_or_beside_a_checkpoint_kept_elsewhere(tmp_path_factory, tmp_path):
    ckpt = tiny_checkpoint(tmp_path_factory)
    kept = tmp_path / "downloaded" / "classifier.ckpt"  # outside any run: not two folders above it
    kept.parent.mkdir()
    shutil.copy(ckpt, kept)
    assert main(["speech", "zero-shot", "--ckpt", str(kept), "--rates", "16000"]) == 0
    assert (kept.parent / "zero-shot" / "zero_shot.csv").is_file() and not (tmp_path / "zero-shot").exists()
