"""Distillation: the trainer's loss against an independent reference, and bad settings refused."""

from __future__ import annotations

import pytest


def test_distillation_loss_is_hintons():
    import torch
    import torch.nn.functional as F

    from adapters.training.trainer import distillation_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, generator=g)
    teacher_logits = torch.randn(5, 3, generator=g)
    labels = torch.tensor([0, 2, 1, 1, 0])
    probs = torch.softmax(teacher_logits, -1)
    for t, alpha in ((1.0, 0.5), (2.0, 0.3), (4.0, 1.0), (3.0, 0.0)):
        ce = F.cross_entropy(logits, labels)
        kl = F.kl_div(F.log_softmax(logits / t, -1), F.softmax(teacher_logits / t, -1), reduction="batchmean")
        expected = alpha * t * t * kl + (1 - alpha) * ce
        assert torch.allclose(distillation_loss(logits, probs, ce, t, alpha), expected, atol=1e-6)


@pytest.mark.parametrize("temperature, alpha", [(0.0, 0.5), (-1.0, 0.5), (2.0, 1.5), (2.0, -0.1)])
def test_bad_settings_are_usage_errors(temperature, alpha):
    from adapters.cli.main import main

    assert main(["distill", "--teacher", "t@1", "--config", "none.yaml", "--temperature", str(temperature),
                 "--alpha", str(alpha)]) == 2
