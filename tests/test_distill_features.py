"""Feature methods (fitnet, at, fsp, fakd --affinity), DUKD + a feature term, and several teachers.

``Released`` below is this project's own re-implementation of the authors' released
``FAKD.optimize_parameters`` (BasicSR plugin ``yun224/DUKD``, ``models/fakd_model.py``), written from
reading it, with BasicSR's surroundings as in ``test_distill_authors.py`` (the scheduler steps before
every iteration but the first; EMA without warm-up; Adam). No BasicSR import:

* ``zero_grad``; ``forward_feats`` of the student and of the teacher (the output and the maps at the
  positions, here the release's per family); ``l_pix + l_kd``;
* the feature losses of each transformed pair, summed through ``torch.sum(torch.tensor([...]))``:
  a new tensor without history, so ``l_total.backward()`` gets no gradient from them;
* Adam step; EMA.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from dukd_cli import registry
from dukd_cli.distill import config as C
from dukd_cli.distill import features as feat
from dukd_cli.distill.feature_methods import AT, FAKD, FSP, FitNet
from dukd_cli.distill.methods import DUKD, KD, Batch, MethodContext
from dukd_cli.distill.teachers import TeacherPanel
from dukd_cli.distill.trainer import Trainer
from dukd_cli.errors import DukdError
from dukd_cli.models.factory import create_model

S_ARGS = {"n_feats": 4, "n_resblocks": 3}  # the student: EDSR, 4 features
T_ARGS = {"n_feats": 8, "n_resblocks": 2}  # the teacher: EDSR, 8 features (other widths)
R_ARGS = {"n_feats": 8, "n_resgroups": 2, "n_resblocks": 1, "reduction": 4}  # a second teacher: RCAN


def _ctx(update="two-step", seed=0):
    return MethodContext(torch.device("cpu"), 4, update, torch.Generator().manual_seed(seed))


def _batch(n=2, p=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.rand(n, 3, p, p, generator=g), torch.rand(n, 3, p * 4, p * 4, generator=g))


def _net(arch, args, seed):
    torch.manual_seed(seed)
    return create_model(arch, 4, **args)


def _save(model, path):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture
def setup(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(data / f"{i}.png")
    return {
        "data": data,
        "cache": tmp_path / "cache",
        "root": tmp_path,
        "edsr": _save(_net("edsr", T_ARGS, 1), tmp_path / "edsr_t.safetensors"),
        "rcan": _save(_net("rcan", R_ARGS, 2), tmp_path / "rcan_t.safetensors"),
    }


def _args(setup, out, *extra, iters=2, teacher=True):
    a = ["distill", "--student", "edsr", "--scale", "4"]
    for k, v in S_ARGS.items():
        a += ["--student-arg", f"{k}={v}"]
    if teacher:
        a += ["--teacher", "edsr", "--teacher-weights", setup["edsr"]]
        for k, v in T_ARGS.items():
            a += ["--teacher-arg", f"{k}={v}"]
    a += ["--data", setup["data"], "--cache-dir", setup["cache"], "--device", "cpu", "--iters", str(iters)]
    a += ["--batch-size", "2", "--patch-size", "8", "--val-every", "0", "--log-every", "1", "--out", out]
    return [*a, *map(str, extra)]


def _losses(run):
    return [json.loads(line)["losses"] for line in (run / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------------------------
# Transforms against hand-computed values
# --------------------------------------------------------------------------------------------


def test_transforms_match_hand_computed_values():
    # Two channels at two positions: c0 = [3, 0], c1 = [4, 2].
    f = torch.tensor([[[[3.0, 0.0]], [[4.0, 2.0]]]])  # (1, 2, 1, 2)
    # spatial: unit channel vectors per position [0.6, 0.8] and [0, 1]; A = their dot products
    want = torch.tensor([[[1.0, 0.8], [0.8, 1.0]]])
    assert torch.allclose(feat.spatial_affinity(f), want, atol=1e-6)
    # channel: unit spatial vectors per channel [1, 0] and [0.894.., 0.447..]
    c1 = torch.tensor([4.0, 2.0]) / math.sqrt(20)
    want = torch.tensor([[[1.0, c1[0]], [c1[0], 1.0]]])
    assert torch.allclose(feat.channel_affinity(f), want, atol=1e-6)
    # at: sum_c f^2 per position = [9 + 16, 0 + 4], divided by its L2 norm sqrt(625 + 16)
    want = torch.tensor([25.0, 4.0]) / (math.sqrt(641) + 1e-6)
    assert torch.allclose(feat.attention_map(f).flatten(), want, atol=1e-6)
    assert feat.attention_map(f).shape == (1, 1, 1, 2)
    # fitnet-mean (the release's): the channel mean
    assert torch.equal(feat.channel_mean(f).flatten(), torch.tensor([3.5, 1.0]))
    # batch: rows [1, 0] and [1, 1] -> Q = [[1, 1], [1, 2]], rows divided by their norms
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).view(2, 1, 1, 2)
    want = torch.tensor([[1 / math.sqrt(2), 1 / math.sqrt(2)], [1 / math.sqrt(5), 2 / math.sqrt(5)]])
    assert torch.allclose(feat.batch_affinity(b), want, atol=1e-6)
    assert feat.batch_affinity(torch.rand(3, 5, 4, 4)).shape == (3, 3)  # width-free: N x N
    # fsp: first (2 channels) x second (1 channel) over the 2 positions / 2
    second = torch.tensor([[[[5.0, 6.0]]]])  # (1, 1, 1, 2)
    first = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # (1, 2, 1, 2)
    got = feat.fsp_matrix(first, second)
    assert got.shape == (1, 2, 1)
    assert torch.allclose(got.flatten(), torch.tensor([17.0, 39.0]) / 2)
    # a larger first map is average-pooled to the second's size: mean 2.5 times 2 over 1 position
    got = feat.fsp_matrix(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]), torch.tensor([[[[2.0]]]]))
    assert got.shape == (1, 1, 1) and got.item() == pytest.approx(5.0)
    assert feat.fsp_matrix(torch.rand(2, 4, 8, 8), torch.rand(2, 6, 4, 4)).shape == (2, 4, 6)
    with pytest.raises(DukdError, match="must be one of"):
        feat.check_kind("gram")
    assert feat.check_kind("FAKD") == "spatial" and feat.check_kind("ca") == "channel"


def test_release_positions_per_family_and_hooks_elsewhere(tiny_plugin):
    with torch.device("meta"):
        edsr = create_model("edsr", 4, n_feats=64, n_resblocks=32)
        rcan = create_model("rcan", 4, n_feats=64, n_resgroups=10, n_resblocks=6)
        swin = create_model("swinir", 4, embed_dim=12, depths=[2, 2, 2], num_heads=[2, 2, 2], window_size=4)
    # The release: ['conv_first', 10, 21, 'conv_after_body'] (EDSR 32 blocks) and
    # ['conv_first', 2, 6, 'conv_after_body'] (RCAN 10 groups); the zoo's body.{n} is conv_after_body.
    assert feat.default_layers(edsr, "edsr") == ["head", "body.10", "body.21", "body.32"]
    assert feat.default_layers(rcan, "rcan") == ["head", "body.2", "body.6", "body.10"]
    assert feat.default_layers(swin, "swinir") == swin.feature_taps()
    with pytest.raises(DukdError, match="--feature-layers"):
        feat.default_layers(create_model("tiny", 4), None)


# --------------------------------------------------------------------------------------------
# Gradients: into the student with the fix, none as released
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "given"),
    [(FitNet, {}), (AT, {}), (FSP, {}), (FAKD, {"affinity": "channel"}), (FAKD, {"affinity": "batch"})],
    ids=["fitnet", "at", "fsp", "fakd-channel", "fakd-batch"],
)
def test_feature_term_trains_the_student_and_not_as_released(cls, given):
    wide = _net("edsr", T_ARGS, 1).eval().requires_grad_(False)
    # As released (no adapter) the widths must agree for fitnet, fsp and channel: a 4-feature teacher.
    same = _net("edsr", {"n_feats": 4, "n_resblocks": 2}, 1).eval().requires_grad_(False)
    for grad in (True, False):
        teacher = wide if grad else same
        student = _net("edsr", S_ARGS, 2).train()
        opts = cls.resolve_options({**given, "feature_grad": grad}, family="edsr", scale=4)
        m = cls(student, teacher, opts, _ctx())
        (group,) = list(m.losses(_batch()))
        assert group["feat"].item() > 0  # logged either way
        if grad:
            group["feat"].backward()  # the feature term alone reaches the student's head and body
            assert student.head[0].weight.grad.abs().sum() > 0
            assert student.body[0].body[0].weight.grad.abs().sum() > 0
            assert student.tail[1].weight.grad is None  # after the last tap
            adapters = m.trainable()
            if cls.kind in ("fitnet", "fsp") or given.get("affinity") == "channel":  # 4 vs 8 channels
                assert adapters is not None and adapters[0].weight.shape == (8, 4, 1, 1)
                assert adapters[0].weight.grad.abs().sum() > 0
            else:  # width-free transforms need no adapter
                assert adapters is None
        else:
            assert not group["feat"].requires_grad  # the release's torch.tensor([...]): no history
        m.close()
        assert not student.head._forward_hooks and not teacher.head._forward_hooks


def test_release_fitnet_is_the_channel_mean_and_width_free():
    teacher = _net("edsr", T_ARGS, 1).eval().requires_grad_(False)
    student = _net("edsr", S_ARGS, 2)
    m = FitNet(student, teacher, FitNet.resolve_options({"mean": True}, family="edsr", scale=4), _ctx())
    assert m.term.kind == "fitnet-mean" and m.trainable() is None
    m.close()


def test_channel_affinity_without_an_adapter_refuses_other_widths():
    """As released there is no adapter: channel affinity of 4 and 8 channels cannot be compared."""
    teacher = _net("edsr", T_ARGS, 1).eval().requires_grad_(False)
    student = _net("edsr", S_ARGS, 2)
    opts = FAKD.resolve_options({"affinity": "channel", "feature_grad": False}, family="edsr", scale=4)
    with pytest.raises(DukdError, match="use --feature-grad"):
        FAKD(student, teacher, opts, _ctx())
    assert not student.head._forward_hooks  # nothing left behind


def test_dukd_feature_term_on_the_original_pair_in_both_updates():
    teacher = _net("edsr", T_ARGS, 1).eval().requires_grad_(False)
    student = _net("edsr", S_ARGS, 2).train()
    opts = DUKD.resolve_options({"feature_loss": "at", "aug_prob": 0.5}, family="edsr", scale=4)
    b = _batch(n=3)
    two = list(DUKD(student, teacher, opts, _ctx("two-step", 5)).losses(b))
    (one,) = list(DUKD(student, teacher, opts, _ctx("single", 5)).losses(b))
    assert set(two[0]) == {"rec", "kd", "feat"} and "feat" not in two[1]
    # the single update fuses LR and zoom-in rows; its feature term reads the LR rows only
    assert torch.allclose(one["feat"], two[0]["feat"], rtol=1e-5)
    two[0]["feat"].backward()
    assert student.head[0].weight.grad.abs().sum() > 0
    plain = DUKD.resolve_options({}, family="edsr", scale=4)
    assert set(next(iter(DUKD(student, teacher, plain, _ctx()).losses(b)))) == {"rec", "kd"}


def test_feature_layers_by_name_on_a_plugin_network(tiny_plugin):
    """A network with no known positions: its modules named explicitly, read by forward hooks."""
    torch.manual_seed(0)
    student = create_model("tiny", 4, n_feats=4)
    teacher = create_model("tiny", 4, n_feats=6).eval().requires_grad_(False)
    opts = AT.resolve_options({"feature_layers": "conv_first"}, family=None, scale=4)
    m = AT(student, teacher, opts, _ctx())
    (group,) = list(m.losses(_batch()))
    group["feat"].backward()
    assert student.conv_first.weight.grad.abs().sum() > 0 and student.conv_last.weight.grad is None
    m.close()
    with pytest.raises(DukdError, match="has no module nope"):
        AT(student, teacher, AT.resolve_options({"feature_layers": "nope"}, family=None, scale=4), _ctx())


def test_teacher_of_another_family_pairs_feature_taps():
    """An EDSR student (4 release positions) and a SwinIR teacher (3 taps): both networks' feature_taps()."""
    torch.manual_seed(3)
    swin = create_model(
        "swinir",
        4,
        embed_dim=12,
        depths=[2, 2, 2],
        num_heads=[2, 2, 2],
        window_size=4,
        img_size=8,
        mlp_ratio=1.0,
    ).eval()
    student = _net("edsr", S_ARGS, 2)
    m = AT(student, swin, AT.resolve_options({}, family="edsr", scale=4), _ctx())
    assert m.term.student_layers == student.feature_taps() and m.term.teacher_layers == swin.feature_taps()
    (group,) = list(m.losses(_batch()))
    assert group["feat"].item() > 0
    m.close()
    opts = AT.resolve_options({"feature_layers": "head,body.0"}, family="edsr", scale=4)
    with pytest.raises(DukdError, match="teacher_feature_layers"):
        AT(student, swin, opts, _ctx())  # the student's names do not exist in the teacher
    opts = AT.resolve_options(
        {"feature_layers": "head", "teacher_feature_layers": "layers.0,layers.1"}, family="edsr", scale=4
    )
    with pytest.raises(DukdError, match="the student has 1 feature layers and the teacher 2"):
        AT(student, swin, opts, _ctx())


# --------------------------------------------------------------------------------------------
# Every method through the CLI
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        ["--method", "fitnet"],
        ["--method", "at"],
        ["--method", "fsp", "--feature-weight", "0.01"],
        ["--method", "fakd", "--affinity", "channel"],
        ["--method", "fakd", "--affinity", "batch"],
        ["--method", "dukd", "--feature-loss", "at", "--feature-weight", "2"],
    ],
    ids=["fitnet", "at", "fsp", "fakd-channel", "fakd-batch", "dukd-at"],
)
def test_each_feature_method_trains_through_the_cli(setup, run_dukd, extra):
    run = setup["root"] / "run"
    code, out, err = run_dukd(*_args(setup, run, *extra))
    assert code == 0, err
    assert (run / "student.safetensors").is_file()
    cfg = C.load(run / "config.toml")
    assert cfg.method.name == extra[1] and cfg.method.options["feature_grad"] is True
    logged = _losses(run)
    assert len(logged) == 2 and all(r["feat"] > 0 for r in logged)
    # The positions used are recorded: the release's for EDSR (student 3 blocks, teacher 2)
    assert cfg.method.options["feature_layers"] == ["head", "body.1", "body.2", "body.3"]
    assert cfg.method.options["teacher_feature_layers"] == ["head", "body.0", "body.1", "body.2"]
    if "--affinity" in extra:
        assert cfg.method.options["affinity"] == extra[-1]
    if "--feature-loss" in extra:
        assert cfg.method.options["feature_loss"] == "at" and cfg.method.options["w_feat"] == 2.0
    state = torch.load(run / "state.pt", weights_only=True)
    needs_adapter = extra[1] in ("fitnet", "fsp") or extra[-1] == "channel"
    assert ("method" in state) is needs_adapter  # the adapters are saved with the run
    # The exported student holds the student alone
    assert not any(k.startswith("0.") for k in load_file(str(run / "student.safetensors")))


def test_feature_options_fail_with_one_line(setup, run_dukd):
    root = setup["root"]
    code, _, err = run_dukd(*_args(setup, root / "a", "--method", "fakd", "--affinity", "diagonal"))
    assert code == 1 and "fakd: --affinity must be one of spatial, channel, batch, got 'diagonal'" in err
    assert len(err.strip().splitlines()) == 1 and not (root / "a" / "state.pt").exists()
    code, _, err = run_dukd(*_args(setup, root / "b", "--method", "dukd", "--feature-loss", "gram"))
    assert code == 1 and "--feature-loss must be one of" in err
    code, _, err = run_dukd(*_args(setup, root / "c", "--method", "at", "--feature-layers", "body.0,nope"))
    assert code == 1 and "has no module nope" in err
    code, _, err = run_dukd(*_args(setup, root / "d", "--method", "kd", "--feature-loss", "at"))
    assert code == 1 and "takes no option feature_loss" in err


def test_adapters_resume_exactly(setup, run_dukd):
    """The adapters are part of the training state: a run resumed at 2 ends as an uninterrupted one."""
    root = setup["root"]
    code, _, err = run_dukd(*_args(setup, root / "full", "--method", "fitnet", iters=4))
    assert code == 0, err
    code, _, err = run_dukd(*_args(setup, root / "cut", "--method", "fitnet", iters=2))
    assert code == 0, err
    code, _, err = run_dukd("distill", "--resume", root / "cut", "--iters", "4")
    assert code == 0, err
    a = load_file(str(root / "full" / "student.safetensors"))
    b = load_file(str(root / "cut" / "student.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa = torch.load(root / "full" / "state.pt", weights_only=True)["method"]
    sb = torch.load(root / "cut" / "state.pt", weights_only=True)["method"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------------------------
# --recipe authors: the released FAKD iteration (its feature term detached)
# --------------------------------------------------------------------------------------------


def _forward_feats(net, x, positions):
    """The release's ``forward_feats`` on the zoo's EDSR layout: the output and the maps after
    ``conv_first`` (our ``head``), after body block i, and after ``conv_after_body`` (our ``body.{n}``)."""
    maps = []
    x = net.sub_mean(x * net.img_range)
    x = net.head(x)
    if "conv_first" in positions:
        maps.append(x)
    res = x
    n = len(net.body) - 1
    for i in range(n):
        res = net.body[i](res)
        if i in positions:
            maps.append(res)
    res = net.body[n](res)
    if "conv_after_body" in positions:
        maps.append(res)
    res = res + x
    return net.add_mean(net.tail(res)) / net.img_range, maps


class Released:
    """One released FAKD training process: net_g, net_t (train mode, autograd on), Adam, MultiStepLR, EMA."""

    def __init__(self, net_g, net_t, *, positions_g, positions_t, w_pix, w_kd, w_feat, transform, train):
        self.net_g, self.net_t = net_g.train(), net_t.train()
        for p in self.net_t.parameters():
            p.requires_grad_(True)
        self.net_g_ema = copy.deepcopy(net_g).eval()
        self.pos_g, self.pos_t = positions_g, positions_t
        self.w_pix, self.w_kd, self.w_feat, self.transform = w_pix, w_kd, w_feat, transform
        self.optimizer_g = torch.optim.Adam(list(net_g.parameters()), train.lr, betas=tuple(train.betas))
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer_g, train.milestones, train.gamma)

    def train_iteration(self, it, lq, gt):
        if it > 1:
            self.scheduler.step()
        self.optimizer_g.zero_grad()
        output, fms_g = _forward_feats(self.net_g, lq, self.pos_g)
        output_t, fms_t = _forward_feats(self.net_t, lq, self.pos_t)
        l_total = 0
        l_total += self.w_pix * F.l1_loss(output, gt, reduction="none").mean()
        l_total += self.w_kd * F.l1_loss(output, output_t, reduction="none").mean()
        agg_g = [self.transform(fm) for fm in fms_g]
        agg_t = [self.transform(fm) for fm in fms_t]
        l_feature = torch.sum(
            torch.tensor(
                [
                    self.w_feat * F.l1_loss(a, b, reduction="none").mean()
                    for a, b in zip(agg_g, agg_t, strict=True)
                ]
            )
        )
        l_total += l_feature
        l_total.backward()
        self.optimizer_g.step()
        with torch.no_grad():
            ema = dict(self.net_g_ema.named_parameters())
            for k, v in self.net_g.named_parameters():
                ema[k].data.mul_(0.999).add_(v.data, alpha=1 - 0.999)


def _fakd_cfg(setup, recipe, iters=6):
    cfg = C.DistillConfig()
    cfg.student.name, cfg.student.scale, cfg.student.args = "edsr", 4, dict(S_ARGS)
    cfg.teacher.name, cfg.teacher.weights, cfg.teacher.args = "edsr", str(setup["edsr"]), dict(T_ARGS)
    cfg.method.name, cfg.method.recipe = "fakd", recipe
    cfg.data.paths, cfg.data.cache_dir, cfg.data.workers = [str(setup["data"])], str(setup["cache"]), 0
    t = cfg.train
    t.iters, t.batch_size, t.patch_size, t.seed, t.device = iters, 2, 8, 3, "cpu"
    t.lr, t.milestones, t.gamma = 1e-3, [3], 0.5
    t.log_every, t.save_every = 100, 100
    cfg.val.every = 0
    return cfg


@pytest.mark.filterwarnings(
    "ignore:Converting a tensor with requires_grad"
)  # the release's torch.tensor([...])
def test_authors_recipe_is_the_released_fakd_iteration(setup):
    cfg = _fakd_cfg(setup, "authors")
    tr = Trainer(cfg, setup["root"] / "replica")
    tr.setup()
    o, t = tr.cfg.method.options, tr.cfg.train
    assert o["feature_grad"] is False and t.precision == "fp32" and tr.session.teacher.training
    # The release's positions for these depths: student 3 blocks, teacher 2 blocks.
    assert tr.session.method.term.student_layers == ["head", "body.1", "body.2", "body.3"]
    assert tr.session.method.term.teacher_layers == ["head", "body.0", "body.1", "body.2"]
    rel = Released(
        copy.deepcopy(tr.session.student_module),
        copy.deepcopy(tr.session.teacher),
        positions_g=["conv_first", 1, 2, "conv_after_body"],
        positions_t=["conv_first", 0, 1, "conv_after_body"],
        w_pix=1 - o["alpha"],
        w_kd=o["alpha"],
        w_feat=o["w_feat"],
        transform=lambda fm: feat.spatial_affinity(fm, 0),
        train=t,
    )
    batches = iter(tr.make_loader(0))
    for it in range(1, t.iters + 1):
        b = tr.device_batch(*next(batches))
        rel.train_iteration(it, b.lr, b.hr)
    tr.session.method.close()
    want = rel.net_g_ema.state_dict()
    Trainer(cfg, setup["root"] / "authors").fit()
    got = load_file(str(setup["root"] / "authors" / "student.safetensors"))
    assert all(torch.equal(got[k], want[k]) for k in want)
    # ... and the fix matters: with the feature gradient (dukd recipe, other fixes off) the student differs.
    fixed = _fakd_cfg(setup, "authors")
    fixed.method.options["feature_grad"] = True
    Trainer(fixed, setup["root"] / "fixed").fit()
    other = load_file(str(setup["root"] / "fixed" / "student.safetensors"))
    assert any(not torch.equal(other[k], want[k]) for k in want)


def test_recipe_lists_the_feature_fix(setup, run_dukd):
    code, out, err = run_dukd(
        *_args(setup, setup["root"] / "p", "--method", "at", "--recipe", "authors", "--dry-run")
    )
    assert code == 0, err
    assert "feature_grad = false" in out and "fixes in force: none" in out
    code, out, err = run_dukd(*_args(setup, setup["root"] / "p", "--method", "at", "--dry-run"))
    assert code == 0, err
    assert "feature_grad" in out.split("fixes in force:")[1].splitlines()[0]
    code, out, err = run_dukd(*_args(setup, setup["root"] / "p", "--feature-loss", "fsp", "--dry-run"))
    assert code == 0, err
    assert "update two-step, feature term fsp (w_feat 10)" in out


# --------------------------------------------------------------------------------------------
# Several teachers
# --------------------------------------------------------------------------------------------


class _Const(torch.nn.Module):
    """A 'teacher' that answers every input with one value (x4 size)."""

    scale = 4

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x):
        return torch.full((x.shape[0], 3, x.shape[2] * 4, x.shape[3] * 4), self.value)


def test_teacher_mix_best_picks_per_sample_and_mean_averages():
    panel = TeacherPanel([_Const(0.2), _Const(0.8)], "best")
    x = torch.zeros(2, 3, 2, 2)
    hr = torch.stack(
        [torch.full((3, 8, 8), 0.7), torch.full((3, 8, 8), 0.1)]
    )  # sample 0 near 0.8, 1 near 0.2
    y, choice = panel.label(x, target=hr)
    assert choice.tolist() == [1, 0]
    assert y[0].unique().tolist() == [pytest.approx(0.8)] and y[1].unique().tolist() == [pytest.approx(0.2)]
    # Upcycled rows (tile-major: row r belongs to sample r % n) keep their sample's teacher.
    y2, _ = panel.label(torch.zeros(4, 3, 2, 2), choice=choice)
    assert [round(v, 3) for v in y2[:, 0, 0, 0].tolist()] == [0.8, 0.2, 0.8, 0.2]
    mean = TeacherPanel([_Const(0.2), _Const(0.8)], "mean")
    assert torch.allclose(mean.label(x)[0], torch.full((2, 3, 8, 8), 0.5))
    assert torch.allclose(mean(x), torch.full((2, 3, 8, 8), 0.5))
    # KD labels each sample with its teacher
    student = _net("edsr", S_ARGS, 2)
    m = KD(student, panel, KD.resolve_options({}, family="edsr", scale=4), _ctx())
    with torch.no_grad():
        s = student(x)
    (group,) = list(m.losses(Batch(x, hr)))
    want = (s[0] - 0.8).abs().mean() / 2 + (s[1] - 0.2).abs().mean() / 2
    assert group["kd"].item() == pytest.approx(want.item(), rel=1e-5)


@pytest.mark.parametrize("update", ["two-step", "single"])
def test_dukd_best_teacher_labels_each_samples_upcycled_inputs(update):
    """Under 'best' the teacher chosen on a sample's LR patch also labels its zoom-in and zoom-out inputs."""
    from dukd_cli.distill.upcycle import zoom_in, zoom_out

    panel = TeacherPanel([_Const(0.2), _Const(0.8)], "best")
    student = _net("edsr", S_ARGS, 2)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    hr = torch.stack([torch.full((3, 32, 32), 0.7), torch.full((3, 32, 32), 0.1)])  # -> teachers 1, 0
    opts = DUKD.resolve_options({"aug_prob": 0.0, "w_pix": 1.0}, family="edsr", scale=4)
    m = DUKD(student, panel, opts, _ctx(update, seed=7))
    terms = {k: v.item() for g in m.losses(Batch(x, hr)) for k, v in g.items()}
    assert m._choice.tolist() == [1, 0]
    label = torch.tensor([0.8, 0.2]).view(2, 1, 1, 1)
    (tile,), _, _ = DUKD(student, panel, opts, _ctx(update, seed=7)).draw(2)
    with torch.no_grad():
        zi = zoom_in(hr, 8, 4, [tile])
        want_zi = (student(zi) - label).abs().mean().item()
        want_zo = (student(zoom_out(x, 4)) - label).abs().mean().item()
    assert terms["zi_kd"] == pytest.approx(want_zi, rel=1e-5)
    assert terms["zo_kd"] == pytest.approx(want_zo, rel=1e-5)


def _two_teachers(setup):
    args = ["--teacher", "rcan", "--teacher-weights", setup["rcan"]]
    for k, v in R_ARGS.items():
        args += ["--teacher-arg", f"2:{k}={v}"]
    return args


@pytest.mark.parametrize("method", ["kd", "dukd"])
def test_two_teachers_of_different_architectures(setup, run_dukd, method):
    run = setup["root"] / method
    extra = ["--method", method, *_two_teachers(setup), "--teacher-mix", "best"]
    code, out, err = run_dukd(*_args(setup, run, *extra))
    assert code == 0, err
    cfg = C.load(run / "config.toml")
    assert cfg.teacher.name == "edsr" and cfg.teacher.args == T_ARGS and cfg.teacher.mix == "best"
    assert cfg.teacher.weights == str(setup["edsr"].resolve())
    assert cfg.teacher.extra == [{"name": "rcan", "weights": str(setup["rcan"].resolve()), "args": R_ARGS}]
    code, out, err = run_dukd("distill", "--resume", run, "--dry-run")
    assert code == 0, err
    assert "teacher 2" in out and "rcan" in out and "--teacher-mix best" in out
    code, _, err = run_dukd("distill", "--resume", run, "--teacher-mix", "mean", "--iters", "3")
    assert code == 1 and "--teacher-mix 'mean' disagrees" in err
    code, _, err = run_dukd("distill", "--resume", run, "--iters", "3")
    assert code == 0, err
    tr = Trainer(C.DistillConfig(), run, resume=True)
    tr.setup()
    assert isinstance(tr.session.teacher, TeacherPanel) and tr.session.teacher.mix == "best"
    assert [type(t).__name__ for t in tr.session.teacher.teachers] == ["EDSR", "RCAN"]
    tr.session.method.close()


def test_two_teachers_mean_is_the_mean_label(setup):
    """kd with two teachers under 'mean' trains exactly like kd with their mean as one teacher."""
    cfg = _fakd_cfg(setup, "dukd", iters=2)
    cfg.method.name = "kd"
    cfg.teacher.extra = [{"name": "rcan", "weights": str(setup["rcan"]), "args": dict(R_ARGS)}]
    tr = Trainer(cfg, setup["root"] / "mean")
    tr.setup()
    b = _batch()
    t_e = _net("edsr", T_ARGS, 1).eval()
    t_e.load_state_dict(load_file(str(setup["edsr"])))
    t_r = _net("rcan", R_ARGS, 2).eval()
    t_r.load_state_dict(load_file(str(setup["rcan"])))
    with torch.no_grad():
        want = (t_e(b.lr) + t_r(b.lr)) / 2
    assert torch.allclose(tr.session.method.teacher_forward(b.lr), want, atol=1e-6)
    assert tr.cfg.teacher.mix == "mean"


def test_several_teachers_fail_with_one_line(setup, run_dukd):
    root = setup["root"]
    code, _, err = run_dukd(*_args(setup, root / "a", "--method", "at", *_two_teachers(setup)))
    assert code == 1 and "method 'at' takes one teacher" in err
    code, _, err = run_dukd(*_args(setup, root / "b", "--method", "kd", "--teacher-mix", "best"))
    assert code == 1 and "give --teacher more than once" in err
    code, _, err = run_dukd(*_args(setup, root / "c", "--method", "kd", "--teacher", "rcan"))
    assert code == 1 and "--teacher-weights is given 1 times for 2 teacher(s)" in err
    code, _, err = run_dukd(
        *_args(setup, root / "d", "--method", "kd", *_two_teachers(setup), "--teacher-mix", "vote")
    )
    assert code == 1 and "--teacher-mix must be one of mean, best" in err
    code, _, err = run_dukd(
        *_args(setup, root / "e", "--method", "kd", *_two_teachers(setup), "--teacher-arg", "3:x=1")
    )
    assert code == 1 and "there is no teacher 3" in err
    assert not any((root / d / "state.pt").exists() for d in "abcde")


def test_feature_methods_are_entry_points():
    assert registry.get_method("fitnet") is FitNet
    assert registry.get_method("at") is AT
    assert registry.get_method("fsp") is FSP
    assert registry.get_method("fakd") is FAKD
