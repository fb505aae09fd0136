"""The training step shared by the loop and the throughput benchmark, and what a CUDA-graph step relies on.

The graph capture itself needs a GPU (benchmarks/gpu_suite.sh runs it); here: the eager step is the
textbook step, and the learning-rate plumbing a captured step depends on works with this torch.
"""

from __future__ import annotations

import pytest
import torch
from tests.conftest import real_batch

from polypseg.config import load_config
from polypseg.losses import seg_loss
from polypseg.models import create_model
from polypseg.step import TrainStep, make_optimizer, optimizer_state, plain_floats
from polypseg.train import lr_lambda


@pytest.fixture(scope="module")
def batch(cvc):
    x, y = real_batch(cvc, (1, 30, 200, 400), 64, 80)
    return x.float(), y.float()


def test_eager_step_is_the_textbook_step(batch):
    x, y = batch
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    a = create_model("unetpp", width=4)
    b = create_model("unetpp", width=4)
    b.load_state_dict(a.state_dict())
    opt_a = make_optimizer(a.parameters(), 1e-2, 1e-4, cpu)
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=1e-4)
    step = TrainStep(a, opt_a, seg_loss, amp=False, grad_clip=0.5)
    for _ in range(3):
        loss_a = step(x, y)
        opt_b.zero_grad(set_to_none=True)
        loss_b = seg_loss(b(x, heads=True), y)
        loss_b.backward()
        torch.nn.utils.clip_grad_norm_(b.parameters(), 0.5)
        opt_b.step()
        assert torch.equal(loss_a, loss_b.detach())
    for (k, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), k
    assert not loss_a.requires_grad


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler\.step\(\)` before")
def test_schedule_moves_a_tensor_learning_rate_in_place():
    # A captured step reads the learning rate from one device tensor at every replay: the scheduler
    # must fill that same tensor, not replace it, or the schedule would be frozen at capture.
    cfg = load_config(overrides=["optim.epochs=4", "optim.warmup_epochs=1", "optim.lr=1e-2"])
    model = create_model("unet", width=4)
    opt = make_optimizer(model.parameters(), cfg.optim.lr, 0.0, torch.device("cpu"))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, steps_per_epoch=2))
    lr = torch.tensor(float(opt.param_groups[0]["lr"]))  # as TrainStep does at capture
    opt.param_groups[0]["lr"] = lr
    seen = []
    for _ in range(6):
        sched.step()
        assert opt.param_groups[0]["lr"] is lr
        seen.append(lr.item())
    expected = [1e-2 * lr_lambda(cfg, 2)(i) for i in range(1, 7)]
    assert seen == pytest.approx(expected, rel=1e-6) and seen[0] > seen[-1]

    # What a checkpoint stores is plain floats, so an eager or CPU run can resume from it.
    state, sched_state = optimizer_state(opt), plain_floats(sched.state_dict())
    assert isinstance(state["param_groups"][0]["lr"], float)
    assert all(isinstance(v, float) for v in sched_state["base_lrs"] + sched_state["_last_lr"])
    assert opt.param_groups[0]["lr"] is lr  # the live optimiser keeps its tensor
    fresh = create_model("unet", width=4)
    opt2 = make_optimizer(fresh.parameters(), cfg.optim.lr, 0.0, torch.device("cpu"))
    opt2.load_state_dict(state)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lr_lambda(cfg, steps_per_epoch=2))
    sched2.load_state_dict(sched_state)
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(1e-2 * lr_lambda(cfg, 2)(7), rel=1e-6)


def test_step_takes_a_compiled_network():
    """`train.compile=true` hands the step a torch.compile wrapper, which has no truth value (it raised
    `TypeError: UNetPlusPlus does not support len()` before any training); compiling waits for the first
    call, so building the step costs nothing here."""
    model = create_model("unetpp", width=4)
    compiled = torch.compile(model)
    opt = make_optimizer(model.parameters(), 1e-3, 0.0, torch.device("cpu"))
    step = TrainStep(model, opt, seg_loss, amp=False, grad_clip=1.0, net=compiled)
    assert step.net is compiled
    assert TrainStep(model, opt, seg_loss, amp=False, grad_clip=1.0).net is model


def test_graph_step_refuses_a_cpu_model():
    model = create_model("unet", width=4)
    opt = make_optimizer(model.parameters(), 1e-3, 0.0, torch.device("cpu"))
    with pytest.raises(ValueError, match="needs the model on a CUDA device"):
        TrainStep(model, opt, seg_loss, amp=False, grad_clip=1.0, cuda_graph=True)


def test_bf16_where_it_is_faster():
    """bf16 autocast: always on CUDA; on a CPU only with native bf16, and for the Lite0 encoder only under a
    decoder wide enough that depthwise convolutions do a small share of the work (NOTES 62)."""
    from polypseg.devices import (
        DEPTHWISE_SHARE_MAX,
        depthwise_share,
        has_depthwise_conv,
        native_bf16_cpu,
        use_bf16,
    )

    vgg = create_model("unetpp", width=4)
    lite = create_model("unetpp", width=8, encoder="efficientnet-lite0")
    wide = create_model("unetpp", width=32, encoder="efficientnet-lite0")
    assert not has_depthwise_conv(vgg) and has_depthwise_conv(lite) and has_depthwise_conv(wide)
    assert use_bf16(torch.device("cuda"), vgg) and use_bf16(torch.device("cuda"), lite)
    assert use_bf16(torch.device("cpu"), vgg) == native_bf16_cpu()
    assert not use_bf16(torch.device("cpu"), lite)
    assert use_bf16(torch.device("cpu"), wide) == native_bf16_cpu()
    # The share: 4.2% of the multiply-adds under the width-8 decoder, 0.7% under width 32.
    assert depthwise_share(wide) < DEPTHWISE_SHARE_MAX < depthwise_share(lite) < 0.1
    # Counting runs the network in eval mode and leaves its mode and batch-norm statistics as they were.
    wide.train()
    stats = {k: v.clone() for k, v in wide.state_dict().items()}
    depthwise_share(wide)
    assert wide.training and all(torch.equal(v, wide.state_dict()[k]) for k, v in stats.items())
