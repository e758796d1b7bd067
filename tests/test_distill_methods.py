"""Distillation methods: registration, the frozen teacher, DUKD's loss groups, FAKD's gradients."""

from __future__ import annotations

import pytest
import torch

from dukd_cli import registry
from dukd_cli.distill.feature_methods import FAKD
from dukd_cli.distill.features import spatial_affinity
from dukd_cli.distill.methods import DUKD, KD, Batch, MethodContext, Scratch, model_family
from dukd_cli.distill.resolve import build_teacher
from dukd_cli.errors import DukdError
from dukd_cli.models.factory import create_model, resolve_spec


def _batch(n=2, p=8, s=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.rand(n, 3, p, p, generator=g), torch.rand(n, 3, p * s, p * s, generator=g))


def _edsr(feats, blocks, seed, scale=4):
    torch.manual_seed(seed)
    return create_model("edsr", scale, n_feats=feats, n_resblocks=blocks)


def _ctx(update="two-step", seed=0, scale=4):
    return MethodContext(torch.device("cpu"), scale, update, torch.Generator().manual_seed(seed))


def test_builtin_methods_are_entry_points():
    assert registry.get_method("scratch") is Scratch
    assert registry.get_method("kd") is KD
    assert registry.get_method("dukd") is DUKD
    assert registry.get_method("fakd") is FAKD
    assert {"scratch", "kd", "dukd", "fakd"} <= set(registry.methods())


def test_teacher_is_frozen_no_grad_no_graph(tmp_path):
    teacher_net = _edsr(8, 2, seed=1)
    w = tmp_path / "t.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in teacher_net.state_dict().items()}, str(w))
    spec = resolve_spec("edsr", 4, kwargs={"n_feats": 8, "n_resblocks": 2}, weights=str(w))
    teacher = build_teacher(spec, torch.device("cpu"))
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    student = _edsr(4, 1, seed=2).train()
    m = KD(student, teacher, KD.resolve_options({}, family="edsr", scale=4), _ctx())
    b = _batch()
    out = m.teacher_forward(b.lr)
    assert out.requires_grad is False and out.grad_fn is None
    (group,) = list(m.losses(b))
    sum(group.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())


def test_dukd_two_step_and_single_compute_the_same_terms():
    teacher = _edsr(8, 2, seed=1).eval().requires_grad_(False)
    student = _edsr(4, 1, seed=2).train()
    opts = DUKD.resolve_options({"aug_prob": 0.5}, family="edsr", scale=4)
    b = _batch(n=3, p=8)
    two = list(DUKD(student, teacher, opts, _ctx("two-step", seed=5)).losses(b))
    (one,) = list(DUKD(student, teacher, opts, _ctx("single", seed=5)).losses(b))
    assert [set(g) for g in two] == [{"rec", "kd"}, {"zi_kd", "zo_kd", "zo_pix"}]
    assert set(one) == {"rec", "kd", "zi_kd", "zo_kd", "zo_pix"}
    merged = {**two[0], **two[1]}
    for k in one:  # same random draws, same weights (no step in between): same numbers
        assert torch.allclose(one[k], merged[k], rtol=1e-5, atol=1e-6), k
    assert opts["w_pix"] == 5.0
    assert torch.allclose(two[0]["rec"] / 5.0, torch.nn.functional.l1_loss(student(b.lr), b.hr))


def test_dukd_zoom_out_off_and_no_tiles():
    teacher = _edsr(8, 1, seed=1).eval().requires_grad_(False)
    student = _edsr(4, 1, seed=2).train()
    opts = DUKD.resolve_options({"zoom_out": False, "zoom_in_tiles": 0}, family="edsr", scale=4)
    groups = list(DUKD(student, teacher, opts, _ctx()).losses(_batch()))
    assert [set(g) for g in groups] == [{"rec", "kd"}]


def test_family_defaults_follow_the_released_configs():
    def d(fam, s):
        return DUKD.resolve_options({}, family=fam, scale=s)

    # The method doc's table of options/*/dukd_*.yml: (w_pix, aug p, zoom-out, zoom-in tiles).
    released = {
        ("edsr", 2): (5.0, 0.3, True, 2),
        ("edsr", 3): (5.0, 0.3, True, 1),
        ("edsr", 4): (5.0, 0.3, True, 1),
        ("rcan", 2): (1.0, 0.0, False, 1),
        ("rcan", 3): (2.0, 0.3, True, 1),
        ("rcan", 4): (1.0, 0.0, False, 1),
        ("swinir", 2): (5.0, 0.3, False, 1),
        ("swinir", 3): (5.0, 0.3, False, 1),
        ("swinir", 4): (5.0, 0.3, False, 1),
    }
    for (fam, s), want in released.items():
        o = d(fam, s)
        assert (o["w_pix"], o["aug_prob"], o["zoom_out"], o["zoom_in_tiles"]) == want, (fam, s)
        assert o["w_kd"] == 1.0 and o["zoom_out_aug"] is False
    assert d(None, 4)["w_kd"] == 1.0
    over = DUKD.resolve_options(
        {"w_pix": 2, "zoom_out": "true", "aug_ops": "hflip,invert"}, family="swinir", scale=4
    )
    assert over["w_pix"] == 2.0 and over["zoom_out"] is True and over["aug_ops"] == ["hflip", "invert"]
    with pytest.raises(DukdError, match="takes no option"):
        DUKD.resolve_options({"nope": 1}, family=None, scale=4)
    with pytest.raises(DukdError, match="must be float"):
        DUKD.resolve_options({"w_pix": "lots"}, family=None, scale=4)


def test_family_detection():
    assert model_family(None, "edsr") == "edsr"
    assert model_family(None, "rcan") == "rcan"
    assert model_family(None, "swinir") == "swinir"
    assert model_family(None, "tiny") is None

    class Win(torch.nn.Module):
        window_size = 8

    class Declared(torch.nn.Module):
        dukd_family = "RCAN"

    assert model_family(Win(), "myarch") == "swinir"
    assert model_family(Declared(), "myarch") == "rcan"


def test_fakd_affinity_gradient_reaches_student_taps():
    teacher = _edsr(8, 3, seed=1).eval().requires_grad_(False)
    student = _edsr(4, 3, seed=2).train()
    m = FAKD(student, teacher, FAKD.resolve_options({}, family="edsr", scale=4), _ctx())
    (group,) = list(m.losses(_batch(p=12)))
    assert set(group) == {"rec", "kd", "feat"} and group["feat"].item() > 0
    group["feat"].backward()  # the affinity term alone
    g_head = student.head[0].weight.grad
    g_tap = student.body[0].body[0].weight.grad  # inside the first tapped block
    assert g_head is not None and g_head.abs().sum() > 0
    assert g_tap is not None and g_tap.abs().sum() > 0
    assert student.tail[1].weight.grad is None  # after the last tap: untouched by this term
    assert all(p.grad is None for p in teacher.parameters())
    m.close()
    assert not student.body[0]._forward_hooks


def test_fakd_affinity_memory_is_bounded():
    f = torch.rand(2, 5, 100, 60)
    a = spatial_affinity(f, max_side=16)
    assert a.shape == (2, 16 * 16, 16 * 16)
    diag = torch.diagonal(a, dim1=1, dim2=2)
    assert torch.allclose(diag, torch.ones_like(diag), atol=1e-5)  # unit channel vectors
    assert spatial_affinity(torch.rand(1, 4, 6, 7), 16).shape == (1, 42, 42)


def test_fakd_needs_feature_taps(tiny_plugin):
    tiny = create_model("tiny", 4)
    teacher = _edsr(8, 3, seed=1).eval()
    with pytest.raises(DukdError, match="feature_taps"):
        FAKD(tiny, teacher, FAKD.resolve_options({}, family=None, scale=4), _ctx())


def test_method_needing_teacher_refuses_none():
    with pytest.raises(DukdError, match="needs a teacher"):
        KD(_edsr(4, 1, 0), None, KD.resolve_options({}, family=None, scale=4), _ctx())


def test_dukd_draws_for_the_global_batch_under_ddp():
    """Rank r of W keeps exactly its rows of the draws one process makes for the global batch."""
    teacher = _edsr(8, 1, seed=1).eval().requires_grad_(False)
    student = _edsr(4, 1, seed=2)
    opts = DUKD.resolve_options(
        {"aug_prob": 0.5, "zoom_in_tiles": 2, "zoom_out_aug": True}, family="edsr", scale=4
    )
    n, world = 3, 2

    def ctx(w, r):
        return MethodContext(
            torch.device("cpu"), 4, "two-step", torch.Generator().manual_seed(11), world=w, rank=r
        )

    tiles1, zi1, zo1 = DUKD(student, teacher, opts, ctx(1, 0)).draw(n * world)
    for r in range(world):
        tiles, zi, zo = DUKD(student, teacher, opts, ctx(world, r)).draw(n)
        assert tiles == tiles1
        assert torch.equal(zo.mask, zo1.mask[r * n : (r + 1) * n])
        for k in range(len(tiles)):  # tile-major rows: tile k of this rank's samples
            glob = zi1.mask[k * n * world + r * n : k * n * world + (r + 1) * n]
            assert torch.equal(zi.mask[k * n : (k + 1) * n], glob)
