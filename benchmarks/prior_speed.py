#!/usr/bin/env python
"""Speed of the prior network and of one full ZSSD sample on this machine.

* forward and forward + input-gradient (what DPS/UCG guidance needs) at 128x128, batch 1, against
  the analytic FLOP count (the floor: a perfect machine at the measured rate);
* training throughput (samples/s) at 64x64, batch 16, AdamW, with the trainer's precision
  (bf16 autocast where the CPU has native bf16, else float32), network only;
* one 100-step ZSSD sample of a 128x128 region, 4 variables, through the pipeline (target <= 15 s on
  this 2-core CPU).

Usage: python benchmarks/prior_speed.py [--checkpoint PATH] [--threads N] [--repeats 10] [--name prior_speed]
Writes benchmarks/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from _common import header, md_header, timed, write  # noqa: E402


def med(fn, repeats: int) -> float:
    return timed(fn, repeats)["median_s"]


def main() -> None:
    from zssd_engine import pipeline as P
    from zssd_engine.prior.network import ConditionalUNet, count_flops
    from zssd_engine.prior.train import TrainConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--sample-steps", type=int, default=100)
    ap.add_argument("--name", default="prior_speed", help="output name under benchmarks/results/")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    prior = P.load_prior(a.checkpoint) if a.checkpoint else P.default_prior()
    cfg = prior.net.cfg if hasattr(prior.net, "cfg") else None
    net = prior.net.eval()
    H = W = 128
    s = torch.randn(1, 8, H, W)
    tf = torch.randn(1, 6)
    t = torch.tensor([500])
    x0 = torch.randn(1, 4, H, W)

    def fwd():
        with torch.no_grad():
            net(x0, t, s, tf)

    def fwd_grad():
        x = x0.clone().requires_grad_(True)
        e = net(x, t, s, tf)
        torch.autograd.grad(e.square().sum(), x)

    flops = count_flops(cfg, H, W) if cfg is not None else float("nan")
    t_fwd = med(fwd, a.repeats)
    t_grad = med(fwd_grad, a.repeats)

    # training throughput (network only, synthetic batch), trainer precision
    amp = TrainConfig().amp
    use_bf16 = amp != "off" and torch.backends.mkldnn.is_available() and "amx" in open("/proc/cpuinfo").read()
    train_net = ConditionalUNet(cfg).train()
    opt = torch.optim.AdamW(train_net.parameters(), 1e-4)
    B, h = 16, 64
    xb, sb, tfb = torch.randn(B, 4, h, h), torch.randn(B, 8, h, h), torch.randn(B, 6)
    tb = torch.randint(0, 1000, (B,))

    def train_step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            e = train_net(xb, tb, sb, tfb)
        loss = (e.float() - xb).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    t_train = med(train_step, max(a.repeats // 2, 3))
    train_flops = 3 * count_flops(cfg, h, h, batch=B)

    # one full ZSSD sample through the pipeline
    world = P.get_world(0)
    case_tc = world.catalog()[0]
    case = P.prepare_case("x20", case_tc.peak_time, case_tc.region)
    t0 = time.perf_counter()
    for _ in P.sampler(case, prior, "zssd", steps=a.sample_steps, members=1, seed=0):
        pass
    t_sample = time.perf_counter() - t0

    res = {
        "threads": a.threads, "params": int(sum(p.numel() for p in net.parameters())),
        "forward_128_s": t_fwd, "forward_input_grad_128_s": t_grad, "flops_forward_128": flops,
        "achieved_gflops_forward": flops / t_fwd / 1e9, "achieved_gflops_forward_grad": 3 * flops / t_grad / 1e9,
        "train_precision": "bf16 autocast" if use_bf16 else "float32", "train_step_s_b16_64": t_train,
        "train_samples_per_s": B / t_train, "train_achieved_gflops": train_flops / t_train / 1e9,
        "zssd_sample_steps": a.sample_steps, "zssd_sample_128_s": t_sample, "zssd_target_s": 15.0,
    }
    payload = {**header(), "results": res}
    md = "# Prior network and sampler speed\n\n" + md_header(payload)
    md += "| what | measured | note |\n|---|---|---|\n"
    md += f"| parameters | {res['params']:,} | |\n"
    md += f"| forward 128x128, batch 1 | {t_fwd * 1000:.1f} ms | {flops / 1e9:.2f} GFLOP -> {res['achieved_gflops_forward']:.0f} GFLOP/s |\n"
    md += f"| forward + input gradient 128x128 | {t_grad * 1000:.1f} ms | ~3x forward FLOPs -> {res['achieved_gflops_forward_grad']:.0f} GFLOP/s |\n"
    md += f"| training step 16x64x64 ({res['train_precision']}) | {t_train * 1000:.0f} ms | {res['train_samples_per_s']:.1f} samples/s, {res['train_achieved_gflops']:.0f} GFLOP/s |\n"
    md += f"| ZSSD sample, {a.sample_steps} steps, 128x128, 4 variables | {t_sample:.1f} s | target <= 15 s |\n"
    write(a.name, payload, md)
    print(md)


if __name__ == "__main__":
    main()
