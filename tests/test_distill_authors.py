"""`--recipe authors` is the released DUKD iteration, numerically; `dukd` differs only by the named fixes.

``released_step`` below is this project's own re-implementation of the authors' released
``DUKD.optimize_parameters`` (BasicSR plugin ``yun224/DUKD``, ``models/dukd_model.py``), written
from reading it, together with what BasicSR wraps around it (``train.py``: the scheduler steps
before every iteration but the first; ``model_ema``; Adam from ``optim_g``). No BasicSR import:

* ``zero_grad``; student and teacher on the LR batch; ``w_pix L1(S, HR) + w_kd L1(S, T)``; backward;
  Adam step;
* **no** ``zero_grad``; tiles drawn (a permutation of the s*s grid, the first n, the same for the
  batch), cut from HR tile-major; the teacher labels them; four draws (colour inversion, flip of
  the height axis, flip of the width axis, transpose; ``np.random.choice([0, 1], p=[1-p, p])``,
  i.e. on where a uniform number is ``>= 1 - p``), applied in place by index; the student's output
  goes through the same operations again ("inverse"); ``w_kd L1``; with zoom-out: each LR image
  shrunk by 1/s (float bicubic, unclamped), ``w_pix L1(S(zo), LR) + w_kd L1(S(zo), T(zo))``;
  backward on top of the step-1 gradients; Adam step;
* EMA ``ema = ema * 0.999 + p * 0.001`` on parameters.

The random draws are made identical by drawing them from the generator the trainer gives the
method, in the released order. The teacher runs in train mode with autograd on, as released.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from dukd_cli.data.imresize import imresize
from dukd_cli.distill import config as C
from dukd_cli.distill import recipes
from dukd_cli.distill.methods import DUKD
from dukd_cli.distill.schedule import derive_seed
from dukd_cli.distill.trainer import Trainer
from dukd_cli.models.factory import create_model

ITERS = 10


# --------------------------------------------------------------------------------------------
# The released iteration, re-implemented
# --------------------------------------------------------------------------------------------


def _noising(imgs, idx, img_range=1.0):
    """The released ``noising``: in place, by index, ops in the order i, h (dim -2), v (dim -1), t."""
    imgs[idx["i"]] = img_range - imgs[idx["i"]]
    imgs[idx["h"]] = imgs[idx["h"]].flip(dims=(-2,))
    imgs[idx["v"]] = imgs[idx["v"]].flip(dims=(-1,))
    imgs[idx["t"]] = imgs[idx["t"]].clone().transpose(-2, -1)
    return imgs


class Released:
    """One released DUKD training process: net_g, net_t, Adam, MultiStepLR, EMA."""

    def __init__(
        self,
        net_g,
        net_t,
        *,
        scale,
        w_pix,
        w_kd,
        prob,
        n_gt_sub,
        zoom_out,
        lr,
        milestones,
        gamma,
        betas,
        generator,
        ema_decay=0.999,
    ):
        self.net_g = net_g.train()
        self.net_t = net_t.train()
        for p in self.net_t.parameters():  # BasicSR builds the teacher like any network: autograd on
            p.requires_grad_(True)
        self.net_g_ema = copy.deepcopy(net_g).eval()
        self.scale, self.w_pix, self.w_kd, self.prob = scale, w_pix, w_kd, prob
        self.n_gt_sub, self.zoom_out, self.g, self.ema_decay = n_gt_sub, zoom_out, generator, ema_decay
        params = [p for p in net_g.parameters() if p.requires_grad]
        self.optimizer_g = torch.optim.Adam(params, lr, weight_decay=0, betas=betas)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer_g, milestones, gamma)

    def cri_pix(self, a, b):
        return self.w_pix * F.l1_loss(a, b, reduction="none").mean()

    def cri_kd(self, a, b):
        return self.w_kd * F.l1_loss(a, b, reduction="none").mean()

    def train_iteration(self, current_iter, lq, gt):
        if current_iter > 1:  # BasicSR's update_learning_rate
            self.scheduler.step()
        self.lq, self.gt = lq, gt
        self.optimize_parameters()

    def optimize_parameters(self):
        self.optimizer_g.zero_grad()
        output = self.net_g(self.lq)
        output_t = self.net_t(self.lq)
        l_total = 0
        l_total += self.cri_pix(output, self.gt)
        l_total += self.cri_kd(output, output_t)
        l_total.backward()
        self.optimizer_g.step()

        l_total = 0
        p, s = self.lq.shape[-1], self.scale
        grid = [(i, j) for i in range(s) for j in range(s)]
        idxs = [grid[k] for k in torch.randperm(s * s, generator=self.g)[: self.n_gt_sub].tolist()]
        gt_sub = torch.cat([self.gt[..., i * p : (i + 1) * p, j * p : (j + 1) * p] for i, j in idxs], 0)
        sr_gt_sub = self.net_t(gt_sub)
        idx = {
            op: torch.nonzero(torch.rand(gt_sub.shape[0], generator=self.g) >= 1 - self.prob).squeeze()
            for op in ("i", "h", "v", "t")
        }
        gt_sub = _noising(gt_sub, idx)
        sr_gt_sub_g = _noising(self.net_g(gt_sub), idx)
        l_total += self.cri_kd(sr_gt_sub, sr_gt_sub_g)
        if self.zoom_out:
            lqlq = torch.stack([imresize(x, 1 / s) for x in self.lq.cpu()])
            sr_lqlq = self.net_g(lqlq)
            l_total += self.cri_pix(sr_lqlq, self.lq) + self.cri_kd(sr_lqlq, self.net_t(lqlq))
        l_total.backward()  # on top of the gradients of the first step
        self.optimizer_g.step()

        with torch.no_grad():
            ema = dict(self.net_g_ema.named_parameters())
            for k, v in self.net_g.named_parameters():
                ema[k].data.mul_(self.ema_decay).add_(v.data, alpha=1 - self.ema_decay)


# --------------------------------------------------------------------------------------------
# Fixtures: tiny EDSR / RCAN at x4 and a few images
# --------------------------------------------------------------------------------------------

NETS = {
    "edsr": ({"n_feats": 4, "n_resblocks": 1}, {"n_feats": 8, "n_resblocks": 2}),
    "rcan": (
        {"n_feats": 8, "n_resgroups": 1, "n_resblocks": 1, "reduction": 4},
        {"n_feats": 8, "n_resgroups": 2, "n_resblocks": 1, "reduction": 4},
    ),
}


def _images(folder, n=3, size=48):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        y, x = np.mgrid[0:size, 0:size]
        img = np.stack([(x * 7 + i * 30) % 256, (y * 5) % 256, ((x + y) * 3) % 256], -1).astype(np.float64)
        img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255)
        if i == n - 1:  # a hard dark/bright edge: zoomed-out patches overshoot [0, 1] (bicubic ringing)
            img[:, : size * 7 // 12] = 0.0
            img[:, size * 7 // 12 :] = 255.0
        img = img.astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i}.png")
    return folder


@pytest.fixture
def pair(tmp_path):
    data = _images(tmp_path / "data")
    out = {"data": data, "cache": tmp_path / "cache", "root": tmp_path}
    for fam, (_, t_args) in NETS.items():
        torch.manual_seed(5)
        teacher = create_model(fam, 4, **t_args)
        w = tmp_path / f"{fam}-teacher.safetensors"
        save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(w))
        out[fam] = w
    return out


def _cfg(pair, fam, recipe="authors", **method):
    s_args, t_args = NETS[fam]
    cfg = C.DistillConfig()
    cfg.student.name, cfg.student.scale, cfg.student.args = fam, 4, dict(s_args)
    cfg.teacher.name, cfg.teacher.weights, cfg.teacher.args = fam, str(pair[fam]), dict(t_args)
    cfg.method.name, cfg.method.recipe, cfg.method.options = "dukd", recipe, dict(method)
    cfg.data.paths, cfg.data.cache_dir, cfg.data.workers = [str(pair["data"])], str(pair["cache"]), 0
    t = cfg.train
    t.iters, t.batch_size, t.patch_size, t.seed, t.device = ITERS, 3, 8, 3, "cpu"
    t.lr, t.milestones, t.gamma = 1e-3, [4, 9], 0.5  # milestones inside the run: the schedule is checked too
    t.log_every, t.save_every = 100, 100
    cfg.val.every = 0
    return cfg


def _replica(cfg, where):
    """The released iteration on exactly the trainer's initial weights and batches."""
    tr = Trainer(cfg, where)
    tr.setup()
    o, t = tr.cfg.method.options, tr.cfg.train
    assert tr.cfg.train.precision == "fp32" and tr.session.teacher.training is (not tr.cfg.train.eval_teacher)
    rel = Released(
        copy.deepcopy(tr.session.student_module),
        copy.deepcopy(tr.session.teacher),
        scale=4,
        w_pix=o["w_pix"],
        w_kd=o["w_kd"],
        prob=o["aug_prob"],
        n_gt_sub=o["zoom_in_tiles"],
        zoom_out=o["zoom_out"],
        lr=t.lr,
        milestones=t.milestones,
        gamma=t.gamma,
        betas=tuple(t.betas),
        generator=torch.Generator().manual_seed(derive_seed(t.seed, 2)),
    )
    batches = iter(tr.make_loader(0))
    for it in range(1, t.iters + 1):
        b = tr.device_batch(*next(batches))
        rel.train_iteration(it, b.lr, b.hr)
    return {k: v.detach().clone() for k, v in rel.net_g_ema.state_dict().items()}, tr.cfg


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), (k, (a[k] - b[k]).abs().max().item())


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fam", "method"),
    [("edsr", {}), ("rcan", {}), ("rcan", {"aug_prob": 0.6})],
    ids=["edsr-x4", "rcan-x4", "rcan-x4-p0.6"],
)
def test_authors_recipe_is_the_released_iteration(pair, fam, method):
    cfg = _cfg(pair, fam, **method)
    want, resolved = _replica(cfg, pair["root"] / "replica")
    o = resolved.method.options
    if fam == "edsr":  # the released EDSR x4 config
        assert (o["zoom_out"], o["zoom_in_tiles"], o["w_pix"]) == (True, 1, 5.0)
    else:  # the released RCAN x4 config
        assert (o["zoom_out"], o["w_pix"]) == (False, 1.0)
    assert o["aug_prob"] == method.get("aug_prob", 0.3 if fam == "edsr" else 0.0)
    assert not o["true_inverse"] and not o["clamp_zoom_out"] and not resolved.train.ema_warmup
    res = Trainer(cfg, pair["root"] / "run").fit()
    assert res.iteration == ITERS
    _assert_same(load_file(str(pair["root"] / "run" / "student.safetensors")), want)


def test_authors_recipe_through_the_cli(pair, run_dukd):
    """The issue's check: `dukd distill --recipe authors ... --aug-prob 0 --precision fp32 --device cpu`."""
    cfg = _cfg(pair, "edsr", aug_prob=0.0)
    cfg.train.precision = "fp32"
    want, _ = _replica(cfg, pair["root"] / "replica")
    s_args, t_args = NETS["edsr"]
    run = pair["root"] / "cli"
    args = [
        "distill",
        "--recipe",
        "authors",
        "--teacher",
        "edsr",
        "--teacher-weights",
        pair["edsr"],
        "--student",
        "edsr",
        "--scale",
        "4",
        "--data",
        pair["data"],
        "--cache-dir",
        pair["cache"],
        "--aug-prob",
        "0",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--iters",
        str(ITERS),
        "--batch-size",
        "3",
        "--patch-size",
        "8",
        "--seed",
        "3",
        "--lr",
        "1e-3",
        "--milestones",
        "4,9",
        "--gamma",
        "0.5",
        "--val-every",
        "0",
        "--out",
        run,
    ]
    for k, v in s_args.items():
        args += ["--student-arg", f"{k}={v}"]
    for k, v in t_args.items():
        args += ["--teacher-arg", f"{k}={v}"]
    code, out, err = run_dukd(*args)
    assert code == 0, err
    _assert_same(load_file(str(run / "student.safetensors")), want)
    saved = C.load(run / "config.toml")
    assert (
        saved.method.recipe == "authors"
        and saved.train.ema_warmup is False
        and saved.train.eval_teacher is False
    )


def test_dukd_differs_from_authors_only_by_the_fixes(pair):
    """The default recipe with every fix switched off is the authors recipe, bit for bit."""
    base = _cfg(pair, "edsr", recipe="dukd", aug_prob=0.6)
    off = base.copy()
    for fix in recipes.FIXES:
        off.set(fix.key, fix.off)
    a = Trainer(_cfg(pair, "edsr", aug_prob=0.6), pair["root"] / "authors")
    a.fit()
    b = Trainer(off, pair["root"] / "all-off")
    b.fit()
    _assert_same(
        load_file(str(pair["root"] / "authors" / "student.safetensors")),
        load_file(str(pair["root"] / "all-off" / "student.safetensors")),
    )
    # ... and every fix changes the result on its own (true inverse, clamp, EMA warm-up here; the
    # teacher mode and bf16 change nothing for a deterministic teacher on the CPU).
    short = off.copy()
    short.train.iters = 3
    Trainer(short, pair["root"] / "short").fit()
    ref = load_file(str(pair["root"] / "short" / "student.safetensors"))
    for name in ("true_inverse", "clamp_zoom_out", "ema_warmup"):
        one = short.copy()
        fix = next(f for f in recipes.FIXES if f.name == name)
        one.set(fix.key, fix.on)
        Trainer(one, pair["root"] / name).fit()
        got = load_file(str(pair["root"] / name / "student.safetensors"))
        assert any(not torch.equal(got[k], ref[k]) for k in ref), name


def test_recipe_resolution_and_explicit_options_win(pair):
    from dukd_cli.distill.resolve import resolve

    dukd = resolve(_cfg(pair, "edsr", recipe="dukd")).cfg
    assert (
        dukd.train.precision == "auto" and dukd.train.ema_warmup is True and dukd.train.eval_teacher is True
    )
    assert dukd.method.options["true_inverse"] is True and dukd.method.options["clamp_zoom_out"] is True
    assert [s.fix.name for s in recipes.fix_states(dukd, DUKD.options) if s.in_force] == [
        f.name for f in recipes.FIXES
    ]
    cfg = _cfg(pair, "edsr", recipe="authors", true_inverse=True)
    cfg.train.ema_warmup = True
    auth = resolve(cfg).cfg
    assert auth.train.precision == "fp32" and auth.train.eval_teacher is False
    assert auth.method.options["true_inverse"] is True and auth.method.options["clamp_zoom_out"] is False
    lines = recipes.describe(auth, DUKD.options)
    assert "fixes in force: true_inverse, ema_warmup" in lines[0]
    assert any("explicit true_inverse = true overrides the authors recipe's false" in ln for ln in lines)
    assert any("explicit ema_warmup = true" in ln for ln in lines)
    bad = _cfg(pair, "edsr", recipe="paper")
    with pytest.raises(Exception, match="--recipe must be one of dukd, authors"):
        resolve(bad)
    # Methods without the dukd-only switches get only the general ones.
    kd = _cfg(pair, "edsr", recipe="authors")
    kd.method.name, kd.method.options = "kd", {}
    r = resolve(kd).cfg
    assert "true_inverse" not in r.method.options and r.train.ema_warmup is False


def test_recipe_recorded_and_honoured_on_resume(pair, run_dukd):
    run = pair["root"] / "r"
    s_args, t_args = NETS["rcan"]
    args = [
        "distill",
        "--recipe",
        "authors",
        "--teacher",
        "rcan",
        "--teacher-weights",
        pair["rcan"],
        "--student",
        "rcan",
        "--scale",
        "4",
        "--data",
        pair["data"],
        "--cache-dir",
        pair["cache"],
        "--device",
        "cpu",
        "--batch-size",
        "2",
        "--patch-size",
        "8",
        "--val-every",
        "0",
    ]
    for k, v in s_args.items():
        args += ["--student-arg", f"{k}={v}"]
    for k, v in t_args.items():
        args += ["--teacher-arg", f"{k}={v}"]
    code, _, err = run_dukd(*args, "--iters", "2", "--out", run)
    assert code == 0, err
    text = (run / "config.toml").read_text()
    assert 'recipe = "authors"' in text and "ema_warmup = false" in text and 'precision = "fp32"' in text
    code, out, err = run_dukd("distill", "--resume", run, "--dry-run")
    assert code == 0, err
    assert "recipe: authors" in out and "fixes in force: none" in out
    code, _, err = run_dukd("distill", "--resume", run, "--recipe", "dukd", "--iters", "3")
    assert code == 1 and "--recipe 'dukd' disagrees" in err
    code, _, err = run_dukd("distill", "--resume", run, "--iters", "3")
    assert code == 0, err
    assert C.load(run / "config.toml").method.recipe == "authors"


def test_dry_run_released_defaults_and_no_weights_needed(run_dukd):
    code, out, err = run_dukd(
        "distill", "--teacher", "rcan-l", "--student", "rcan-s", "--scale", "4", "--dry-run"
    )
    assert code == 0, err
    assert "zoom_out = false" in out and "aug_prob = 0.0" in out
    assert "dukd: zoom-out off, zoom-in tiles 1, augmentation p 0" in out
    assert "teacher file: " in out  # where the weights would come from; nothing downloaded
    assert "fixes in force: true_inverse, eval_teacher, clamp_zoom_out, ema_warmup, bf16" in out
    code, out, err = run_dukd(
        "distill", "--teacher", "edsr-l", "--student", "edsr-s", "--scale", "4", "--dry-run"
    )
    assert code == 0, err
    assert "dukd: zoom-out on, zoom-in tiles 1, augmentation p 0.3" in out and "w_pix 5" in out
    code, out, err = run_dukd(
        "distill",
        "--teacher",
        "rcan-l",
        "--student",
        "rcan-s",
        "--scale",
        "2",
        "--dry-run",
        "--recipe",
        "authors",
        "--precision",
        "auto",
    )
    assert code == 0, err
    assert "zoom_out = false" in out and "aug_prob = 0.0" in out and "w_pix = 1.0" in out
    assert "explicit precision = auto overrides the authors recipe's fp32" in out


def test_init_from_another_runs_ema_student(pair, run_dukd, tmp_path):
    """x4 from an x2 run's EMA student: the body loads, the upsampler (other shapes) does not."""
    x2 = tmp_path / "x2run"
    x2.mkdir()
    torch.manual_seed(9)
    src = create_model("edsr", 2, n_feats=4, n_resblocks=1)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(x2 / "student.safetensors"))
    s_args, t_args = NETS["edsr"]
    run = tmp_path / "x4"
    args = [
        "distill",
        "--teacher",
        "edsr",
        "--teacher-weights",
        pair["edsr"],
        "--student",
        "edsr",
        "--scale",
        "4",
        "--data",
        pair["data"],
        "--cache-dir",
        pair["cache"],
        "--device",
        "cpu",
        "--batch-size",
        "2",
        "--patch-size",
        "8",
        "--val-every",
        "0",
        "--init-from",
        x2,
        "--iters",
        "1",
        "--out",
        run,
    ]
    for k, v in s_args.items():
        args += ["--student-arg", f"{k}={v}"]
    for k, v in t_args.items():
        args += ["--teacher-arg", f"{k}={v}"]
    code, out, err = run_dukd(*args, "--dry-run")
    assert code == 0, err
    assert "strict = false" in out and str((x2 / "student.safetensors").resolve()) in out
    cfg = _cfg(pair, "edsr")
    cfg.student.weights, cfg.student.strict = str(x2 / "student.safetensors"), False
    tr = Trainer(cfg, run)
    tr.setup()
    assert torch.equal(tr.session.student_module.head[0].weight, src.head[0].weight)
    assert any("non-strictly" in n for n in tr.notes)
    code, _, err = run_dukd(*args[:-4], "--init-from", tmp_path / "nothing", "--out", tmp_path / "o")
    assert code == 1 and "--init-from" in err and "no such run directory" in err
    code, _, err = run_dukd(*args, "--student-weights", x2 / "student.safetensors")
    assert code == 1 and "give one" in err


def test_teacher_mode_fix_with_a_drop_path_teacher(pair, tmp_path):
    """authors: a SwinIR teacher stays in train mode (drop-path on: random labels); dukd: eval mode."""
    t_args = {
        "embed_dim": 12,
        "depths": [2],
        "num_heads": [2],
        "window_size": 4,
        "img_size": 8,
        "mlp_ratio": 1.0,
        "drop_path_rate": 0.5,
    }
    torch.manual_seed(1)
    w = tmp_path / "swin.safetensors"
    save_file(
        {k: v.contiguous() for k, v in create_model("swinir", 4, **t_args).state_dict().items()}, str(w)
    )
    x = torch.rand(2, 3, 8, 8)
    for recipe, training in (("authors", True), ("dukd", False)):
        cfg = _cfg(pair, "edsr", recipe=recipe)
        cfg.teacher.name, cfg.teacher.weights, cfg.teacher.args = "swinir", str(w), dict(t_args)
        tr = Trainer(cfg, tmp_path / recipe)
        tr.setup()
        assert tr.session.teacher.training is training
        a, b = tr.session.method.teacher_forward(x), tr.session.method.teacher_forward(x)
        assert a.grad_fn is None and (not torch.equal(a, b)) is training
