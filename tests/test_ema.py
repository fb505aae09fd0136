"""Weight EMA: the same average as torch's AveragedModel, without a host sync, with its checkpoint layout."""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from polypseg.ema import WeightEMA
from polypseg.models import create_model


def _train_steps(model, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(n):
        x = torch.rand(2, 3, 32, 32, generator=g) * 255
        loss = model(x).float().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        yield


def test_same_average_as_averaged_model():
    torch.manual_seed(0)
    model = create_model("unetpp", width=4)
    ours = WeightEMA(model, 0.9)
    ref = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in _train_steps(model, 5):
        ours.update(model)
        ref.update_parameters(model)
    assert isinstance(ours.updates, int) and ours.updates == 5
    a, b = ours.module.state_dict(), ref.module.state_dict()
    floats = [k for k in a if a[k].is_floating_point()]
    assert len(floats) > 20
    for k in floats:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    # the average lags the model: it is not a copy of the last weights
    last = dict(model.named_parameters())
    assert any(not torch.allclose(a[k], last[k]) for k in last)
    assert not any(p.requires_grad for p in ours.module.parameters())


def test_checkpoints_load_both_ways():
    torch.manual_seed(1)
    model = create_model("unetpp", width=4)
    ref = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.8), use_buffers=True)
    for _ in _train_steps(model, 3):
        ref.update_parameters(model)
    ours = WeightEMA(create_model("unetpp", width=4), 0.8)
    ours.load_state_dict(ref.state_dict())  # a run written with AveragedModel resumes
    assert ours.updates == 3
    for k, v in ref.module.state_dict().items():
        assert torch.equal(ours.module.state_dict()[k], v)
    back = AveragedModel(create_model("unetpp", width=4), use_buffers=True)
    back.load_state_dict(ours.state_dict())
    assert int(back.n_averaged) == 3


def test_model_without_counters():
    lin = torch.nn.Linear(3, 2)
    ema = WeightEMA(lin, 0.5)
    ema.update(lin)
    with torch.no_grad():
        lin.weight.add_(2.0)
    ema.update(lin)
    torch.testing.assert_close(ema.module.weight, lin.weight - 1.0)  # halfway between old and new
