"""The LRA models: padding never leaks, the heads' shapes and losses, exact summed accuracy."""

from __future__ import annotations

import pytest
import torch

from apps.lra.model import (
    LRAEncoder,
    MaskedNorm,
    RetrievalClassifier,
    SequenceClassifier,
    TokenClassifier,
    token_loss,
)
from apps.lra.module import LRAModule


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.parametrize("name", ["s4d", "s4", "s5", "dss", "dlr"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("norm,prenorm", [("batch", False), ("layer", True)])
def test_padded_batch_equals_each_sequence_alone(name, bidirectional, norm, prenorm):
    """Eval mode: every valid position of a padded batch, and the pooled logits, match the sequence run alone."""
    torch.manual_seed(0)
    spec = {"name": name, "d_state": 8, "bidirectional": bidirectional}
    model = SequenceClassifier(n_classes=5, d_model=8, n_layers=2, layer=spec, vocab_size=11, ff_expand=2,
                               norm=norm, prenorm=prenorm)
    for m in model.modules():  # non-trivial running statistics, so BatchNorm is not the identity
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    lengths = torch.tensor([29, 17, 6])
    x = torch.randint(1, 11, (3, 29))
    x[torch.arange(29)[None, :] >= lengths[:, None]] = 0  # padding id
    with torch.no_grad():
        h, mask = model.encoder(x, lengths)
        logits = model(x, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone_h, alone_mask = model.encoder(x[i : i + 1, :n], torch.tensor([n]))
            assert alone_mask is None  # a single full-length sequence needs no mask
            assert _rel(h[i, :n], alone_h[0]) < 1e-5
            assert _rel(logits[i], model(x[i : i + 1, :n])[0]) < 1e-5


def test_padding_reaches_the_anticausal_half_without_the_mask():
    """The check above has teeth: without the mask, a bidirectional layer's valid outputs change with the padding."""
    torch.manual_seed(0)
    enc = LRAEncoder(d_model=8, n_layers=1, layer={"name": "s4d", "d_state": 8, "bidirectional": True},
                     vocab_size=None, norm="layer", prenorm=True).eval()
    x = torch.randn(1, 20)
    with torch.no_grad():
        alone, _ = enc(x[:, :12])
        unmasked, _ = enc(x)  # the tail read as data
        masked, _ = enc(x, torch.tensor([12]))
    assert _rel(unmasked[0, :12], alone[0]) > 1e-3
    assert _rel(masked[0, :12], alone[0]) < 1e-5


def test_batchnorm_takes_its_statistics_from_valid_positions_only():
    torch.manual_seed(0)
    norm = MaskedNorm(4, "batch").train()
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    norm.double()
    y = norm(x, mask)
    valid = x[mask]  # (8, 4)
    expected = (valid - valid.mean(0)) / torch.sqrt(valid.var(0, unbiased=False) + norm.norm.eps)
    torch.testing.assert_close(y[mask], expected, rtol=1e-10, atol=1e-10)
    assert (y[~mask] == 0).all()
    torch.testing.assert_close(norm.norm.running_mean, 0.1 * valid.mean(0))


def test_bidirectional_attention_is_refused_when_lengths_vary():
    torch.manual_seed(0)
    enc = LRAEncoder(d_model=8, n_layers=1, layer={"name": "mega", "bidirectional": True}, vocab_size=5)
    x = torch.randint(1, 5, (2, 7))
    with pytest.raises(ValueError, match="model.layer.name: 'mega' cannot take a batch of sequences of different"):
        enc(x, torch.tensor([7, 4]))
    enc(x, torch.tensor([7, 7]))  # equal lengths: nothing to mask
    causal = LRAEncoder(d_model=8, n_layers=1, layer={"name": "mega", "bidirectional": False}, vocab_size=5)
    causal(x, torch.tensor([7, 4]))  # causal: padding at the end is never read by a valid position


def test_retrieval_two_towers_share_one_encoder_and_combine_four_ways():
    torch.manual_seed(0)
    model = RetrievalClassifier(n_classes=2, d_model=8, n_layers=1, layer={"name": "s4d", "d_state": 8},
                                vocab_size=257).eval()
    assert model.head[0].in_features == 4 * 8
    x1, x2 = torch.randint(1, 257, (3, 15)), torch.randint(1, 257, (3, 9))
    l1, l2 = torch.tensor([15, 10, 3]), torch.tensor([9, 9, 2])
    logits = model(x1, l1, x2, l2)
    assert logits.shape == (3, 2)
    a, b = model.embed(x1, l1), model.embed(x2, l2)
    torch.testing.assert_close(logits, model.head(torch.cat([a, b, a * b, a - b], -1)))
    # swapping the documents changes only the a - b part
    swapped = model(x2, l2, x1, l1)
    torch.testing.assert_close(swapped, model.head(torch.cat([b, a, a * b, b - a], -1)))


def test_token_loss_ignores_unlabelled_positions():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[-100, 1, -100, 2, 0], [0, -100, -100, -100, -100]])
    loss = token_loss(logits, labels)
    keep = labels != -100
    expected = -torch.log_softmax(logits, -1)[keep].gather(1, labels[keep][:, None]).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert (logits.grad[~keep] == 0).all()


def test_token_classifier_gives_logits_at_every_position():
    model = TokenClassifier(n_classes=2, d_model=8, n_layers=1, layer={"name": "dlr", "d_state": 8}, vocab_size=None)
    assert model(torch.rand(3, 16), torch.tensor([16, 16, 16])).shape == (3, 16, 2)


def _module(task: str) -> LRAModule:
    torch.manual_seed(0)
    return LRAModule(task=task, d_model=8, n_layers=1, layer={"name": "s4d", "d_state": 8})


def test_module_accuracy_is_summed_not_averaged_over_batches():
    module = _module("listops")
    # a batch of 1 right and a batch of 3 wrong: 1/4, not the mean of 1 and 0
    for y, right in ((torch.tensor([3]), True), (torch.tensor([1, 2, 3]), False)):
        batch = {"x": torch.randint(1, 16, (len(y), 12)), "lengths": torch.full((len(y),), 12), "y": y}
        with torch.no_grad():
            pred = module(batch).argmax(-1)
        batch["y"] = pred if right else (pred + 1) % 10
        module._shared(batch, "val")
    metrics = module.epoch_metrics("val")
    assert metrics["val/acc"] == pytest.approx(0.25) and metrics["val/count"] == 4
    assert module.epoch_metrics("val") == {}  # reset for the next epoch


def test_segmentation_module_counts_pixels_and_path_iou():
    module = _module("pathfinder_segmentation")
    x = torch.randint(0, 256, (2, 16), dtype=torch.uint8)
    with torch.no_grad():
        logits = module({"x": x, "lengths": torch.tensor([16, 16])})
    assert logits.shape == (2, 16, 3)  # DLR's classes: elsewhere, other long path, joining path
    pred = logits.argmax(-1)
    y = pred.clone()
    y[0, :4] = (y[0, :4] + 1) % 3  # 4 wrong pixels
    y[1, :6] = 2  # some joining-path pixels, so the IoU is not empty
    module._shared({"x": x, "lengths": torch.tensor([16, 16]), "y": y}, "test")
    metrics = module.epoch_metrics("test")
    assert metrics["test/acc"] == pytest.approx((pred == y).sum().item() / 32)
    inter = ((pred == 2) & (y == 2)).sum().item()
    union = ((pred == 2) | (y == 2)).sum().item()
    assert union > 0
    assert metrics["test/iou"] == pytest.approx(inter / max(union, 1))


def test_subtree_module_scores_only_labelled_tokens():
    module = _module("listops_subtrees")
    x = torch.randint(1, 16, (2, 10))
    y = torch.full((2, 10), -100)
    y[0, 4], y[1, 9] = 3, 7
    loss = module._shared({"x": x, "lengths": torch.tensor([10, 10]), "y": y}, "val")
    assert torch.isfinite(loss)
    assert module.epoch_metrics("val")["val/count"] == 2


def test_pixels_are_scaled_to_minus_one_one():
    scaled = LRAModule._inputs(torch.tensor([0, 255], dtype=torch.uint8))
    torch.testing.assert_close(scaled, torch.tensor([-1.0, 1.0]))
    ids = torch.tensor([1, 2])
    assert LRAModule._inputs(ids) is ids


def test_unknown_pooling_and_norm_are_refused():
    with pytest.raises(ValueError, match="model.pooling"):
        SequenceClassifier(n_classes=2, pooling="max", d_model=8, n_layers=1, layer={"name": "s4d"}, vocab_size=5)
    with pytest.raises(ValueError, match="model.norm"):
        LRAEncoder(d_model=8, n_layers=1, layer={"name": "s4d"}, vocab_size=5, norm="group")


def test_last_token_pooling_reads_the_last_valid_position():
    from apps.lra.model import pool

    h = torch.arange(12.0).reshape(2, 3, 2)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    torch.testing.assert_close(pool(h, mask, "last"), torch.stack([h[0, 1], h[1, 2]]))
    torch.testing.assert_close(pool(h, mask, "mean"), torch.stack([h[0, :2].mean(0), h[1].mean(0)]))


def test_bucketed_batches_use_every_example_once_and_group_lengths():
    from apps.lra.data import BucketBatchSampler

    lengths = [int(v) for v in torch.randint(1, 1000, (203,), generator=torch.Generator().manual_seed(0))]
    sampler = BucketBatchSampler(lengths, batch_size=8, seed=0, pool=5)
    first, second = list(sampler), list(sampler)
    assert len(first) == len(sampler) == 26
    assert sorted(i for b in first for i in b) == list(range(203))
    assert first != second  # a new order every epoch
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first) / len(first)
    assert spread < 300  # sorted pools of 40: ~1000 * 8 / 41 = 195; random batches of 8 from U[1, 1000): ~780


def test_padding_collate_pads_inputs_with_zero_and_token_labels_with_ignore():
    from apps.lra.data import pad_batch

    batch = pad_batch([{"x": torch.tensor([3, 4, 5]), "y": torch.tensor([-100, 1, 2])},
                       {"x": torch.tensor([7]), "y": torch.tensor([0])}])
    assert batch["x"].tolist() == [[3, 4, 5], [7, 0, 0]] and batch["lengths"].tolist() == [3, 1]
    assert batch["y"].tolist() == [[-100, 1, 2], [0, -100, -100]]


def test_module_refuses_an_unmaskable_layer_for_padded_tasks_only():
    with pytest.raises(ValueError, match="model.layer: 'mega' cannot take the padded batches of listops"):
        LRAModule(task="listops", d_model=8, n_layers=1, layer={"name": "mega", "bidirectional": True})
    LRAModule(task="pathfinder", d_model=8, n_layers=1, layer={"name": "mega", "bidirectional": True})
    LRAModule(task="listops", d_model=8, n_layers=1, layer={"name": "mega", "bidirectional": False})
