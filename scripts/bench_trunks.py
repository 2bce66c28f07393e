"""Forward + backward time of every recurrent trunk's cell, kernel against reference loop.

For each trunk (GRU, LSTM, minGRU), each sequence length and each batch of windows, the
cell's forward and backward pass over ``[B, T, input]`` with the weights passed in (as the
agent runs it): the path the agent takes on this device (``kernel``: cuDNN on CUDA,
oneDNN LSTM / TorchScript GRU / parallel scan on CPU) against the step-by-step Python
reference (``loop``). One command gives the figures on a GPU machine:

    python scripts/bench_trunks.py --device cuda
    python scripts/bench_trunks.py --device cpu --sizes 128 --lengths 32 200
"""

from __future__ import annotations

import argparse
import time

import torch

from agents.nets.networks import TRUNKS, make_cell


def timed(fn, repeats: int, device: torch.device) -> float:
    for _ in range(2):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--trunks", nargs="+", default=[t for t in TRUNKS if t != "mlp"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 256], help="cell widths")
    parser.add_argument("--lengths", nargs="+", type=int, default=[32, 200], help="window lengths T")
    parser.add_argument("--batches", nargs="+", type=int, default=[4, 128], help="windows per batch B")
    parser.add_argument("--input", type=int, default=48, help="cell input width (Meta-World obs + action + reward)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, {args.threads} thread(s); ms per forward + backward")
    print(f"{'trunk':8s} {'size':>5s} {'B':>5s} {'T':>5s} {'kernel':>9s} {'loop':>9s} {'speedup':>8s}")
    for trunk in args.trunks:
        for size in args.sizes:
            for batch in args.batches:
                for steps in args.lengths:
                    cell = make_cell(trunk, args.input, size, chrono_horizon=200).to(device)
                    params = dict(cell.named_parameters())
                    x = torch.randn(batch, steps, args.input, device=device)

                    def run(fn):
                        out, last = fn(params, "", x, None, None)
                        (out.sum() + last.sum()).backward()

                    kernel = timed(lambda: run(cell.run), args.repeats, device)
                    loop = timed(lambda: run(cell.run_loop), args.repeats, device)
                    print(f"{trunk:8s} {size:5d} {batch:5d} {steps:5d} {kernel:9.2f} {loop:9.2f} {loop / kernel:7.2f}x",
                          flush=True)


if __name__ == "__main__":
    main()
