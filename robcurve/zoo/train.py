"""Seeded, resumable training of zoo models.

Every random choice of a step (data order, crop offsets, flips, adversarial random start)
is drawn from a generator seeded by (seed, epoch, step), and the learning rate is a pure
function of the step, so a run resumed from any checkpoint continues exactly as an
uninterrupted run would. Checkpoints are written atomically every ``ckpt_every`` steps and
at each epoch end; per-epoch weights (epoch 0 = initialisation) go to ``epochs/``.
Checkpoints are read back with ``torch.load(weights_only=True)`` only (:func:`load_state`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from robcurve.data.base import load_dataset
from robcurve.errors import RobcurveError, UnsafeFileError, one_line
from robcurve.models.common import refused_global
from robcurve.models.wrapper import RobcurveModel
from robcurve.zoo import MEAN, STD
from robcurve.zoo.archs import build
from robcurve.zoo.recipes import Recipe


def step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 100_003 + step)


def augment(x: Tensor, g: torch.Generator, pad: int = 2) -> Tensor:
    """Random crop with zero padding ``pad`` (none when 0) and random horizontal flip, per sample."""
    b, c, h, w = x.shape
    if pad:
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=g)
        x = _crop(F.pad(x, (pad, pad, pad, pad)), oy, ox, h, w)
    flip = torch.rand(b, generator=g) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _crop(xp: Tensor, oy: Tensor, ox: Tensor, h: int, w: int) -> Tensor:
    b = xp.shape[0]
    bi = torch.arange(b)[:, None, None]
    ri = (oy[:, None] + torch.arange(h))[:, :, None]
    ci = (ox[:, None] + torch.arange(w))[:, None, :]
    return xp.permute(0, 2, 3, 1)[bi, ri, ci].permute(0, 3, 1, 2).contiguous()


def lr_at(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    total = recipe.epochs * steps_per_epoch
    warm = max(1, int(recipe.warmup_epochs * steps_per_epoch))
    if step < warm:
        return recipe.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def fgsm_rs(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, g: torch.Generator) -> Tensor:
    """FGSM with a uniform random start in the L-inf ball, clipped to the ball and [0, 1]."""
    delta = (torch.rand(x.shape, generator=g) * 2 - 1) * eps
    delta.requires_grad_(True)
    loss = F.cross_entropy(model(torch.clamp(x + delta, 0, 1)), y)
    (grad,) = torch.autograd.grad(loss, delta)
    delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
    return torch.clamp(x + delta, 0, 1).detach()


def wrap(net: nn.Module) -> RobcurveModel:
    return RobcurveModel(net, MEAN, STD)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_safetensors(tensors: dict[str, Tensor], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    for s in range(0, len(y), batch_size):
        correct += (model(x[s : s + batch_size]).argmax(1) == y[s : s + batch_size]).sum().item()
    return correct / len(y)


def load_state(state_path: Path, model: RobcurveModel, opt: torch.optim.Optimizer) -> tuple[int, float, list]:
    """Resume from a checkpoint ``state.pt``: load model and optimiser, return (step, elapsed s, history).

    The file is read with ``torch.load(weights_only=True)`` (tensors and plain containers
    only; a file that asks to import or call anything else is refused and nothing in it
    runs). A truncated, foreign or hostile file raises a RobcurveError that says to delete it.
    """
    fix = f"delete {state_path} to train from the start (or restore the file from a backup)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            st = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e)
        refused = refused_global(msg)
        if refused:
            raise UnsafeFileError(f"refusing to resume from {state_path}: it asks for {refused}, which a training "
                                  "checkpoint never needs (loading it fully could run code)", where=str(state_path), fix=fix) from None
        first = next((ln.strip() for ln in msg.splitlines() if ln.strip()), "") or "empty or truncated file"
        raise RobcurveError(f"cannot resume from {state_path}: {type(e).__name__}: {first[:200]}", where=str(state_path),
                            fix=fix) from None
    keys = {"model": dict, "opt": dict, "global_step": int, "elapsed": (int, float), "history": str}
    bad = [k for k, t in keys.items() if not isinstance(st, dict) or not isinstance(st.get(k), t)]
    if bad:
        raise RobcurveError(f"cannot resume from {state_path}: it is not a robcurve training checkpoint "
                            f"(missing or wrong {', '.join(bad)})", where=str(state_path), fix=fix)
    try:
        history = json.loads(st["history"])
        model.net.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
    except (ValueError, RuntimeError, KeyError, TypeError) as e:
        raise RobcurveError(f"cannot resume from {state_path}: it does not fit this recipe ({type(e).__name__}: "
                            f"{one_line(e, 200)})", where=str(state_path), fix=fix) from None
    if not isinstance(history, list) or st["global_step"] < 0:
        raise RobcurveError(f"cannot resume from {state_path}: damaged step counter or history", where=str(state_path), fix=fix)
    return int(st["global_step"]), float(st["elapsed"]), history


def train(recipe: Recipe, work_dir: Path, data_dir: str | None = None, progress: bool = True,
          stop_after_steps: int | None = None) -> Path:
    """Train (or resume) ``recipe`` in ``work_dir``; return the path of the final weights.

    ``stop_after_steps`` ends this call after that many steps of this call (used to simulate
    an interruption in tests); the state is checkpointed first.
    """
    work_dir = Path(work_dir)
    (work_dir / "epochs").mkdir(parents=True, exist_ok=True)
    state_path = work_dir / "state.pt"
    data = load_dataset(recipe.train_data, split="train" if recipe.train_data == "fashion-mnist" else "test",
                        data_dir=data_dir)
    x_all, y_all = data.images, data.labels
    n = len(y_all)
    steps_per_epoch = n // recipe.batch_size  # drop the last partial batch

    torch.manual_seed(recipe.seed)
    model = wrap(build(recipe.arch))
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    global_step, elapsed, history = 0, 0.0, []
    if state_path.exists():
        global_step, elapsed, history = load_state(state_path, model, opt)
    elif 0 in recipe.series:
        _atomic_safetensors(model.net.state_dict(), work_dir / "epochs" / "epoch_000.safetensors")

    total_steps = recipe.epochs * steps_per_epoch
    if recipe.max_steps is not None:
        total_steps = min(total_steps, recipe.max_steps)

    def checkpoint() -> None:
        _atomic_save({"model": model.net.state_dict(), "opt": opt.state_dict(), "global_step": global_step,
                      "elapsed": elapsed, "history": json.dumps(history)}, state_path)

    bar = tqdm(total=total_steps, initial=global_step, desc=f"train {recipe.name}", disable=not progress, unit="step")
    steps_this_call = 0
    t0 = time.time()
    while global_step < total_steps:
        epoch, s = divmod(global_step, steps_per_epoch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(recipe.seed * 7919 + epoch))
        idx = perm[s * recipe.batch_size : (s + 1) * recipe.batch_size]
        g = step_generator(recipe.seed, epoch, s)
        x = augment(x_all[idx], g, pad=recipe.crop_pad)
        y = y_all[idx]
        model.train()
        if recipe.adv_eps:
            x = fgsm_rs(model, x, y, recipe.adv_eps, recipe.adv_step or recipe.adv_eps, g)
        for group in opt.param_groups:
            group["lr"] = lr_at(recipe, global_step, steps_per_epoch)
        loss = F.cross_entropy(model(x), y, label_smoothing=recipe.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        global_step += 1
        steps_this_call += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", epoch=epoch)
        end_of_epoch = global_step % steps_per_epoch == 0
        if end_of_epoch or global_step % recipe.ckpt_every == 0 or global_step == total_steps:
            elapsed += time.time() - t0
            t0 = time.time()
            if end_of_epoch:
                ep = global_step // steps_per_epoch
                history.append({"epoch": ep, "step": global_step, "loss": round(loss.item(), 5),
                                "elapsed_s": round(elapsed, 1)})
                _atomic_safetensors(model.net.state_dict(), work_dir / "epochs" / f"epoch_{ep:03d}.safetensors")
            checkpoint()
        if stop_after_steps is not None and steps_this_call >= stop_after_steps and global_step < total_steps:
            elapsed += time.time() - t0
            checkpoint()
            bar.close()
            return state_path
    bar.close()
    final = work_dir / "final.safetensors"
    if steps_this_call == 0 and final.exists() and (work_dir / "train_info.json").exists():
        return final  # already finished: keep the record of the call that trained
    _atomic_safetensors(model.net.state_dict(), final)
    (work_dir / "train_info.json").write_text(json.dumps({
        "recipe": recipe.to_dict(), "arch": recipe.arch,
        "steps": global_step, "steps_per_epoch": steps_per_epoch, "train_images": n,
        "train_time_s": round(elapsed, 1), "history": history,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
    }, indent=2))
    return final
