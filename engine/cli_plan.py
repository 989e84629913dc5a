"""``deepseg plan``: print the training plan for some data on this machine, without training."""

from __future__ import annotations

import argparse


def add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="choose network, patch and batch for the data and this machine (no training)",
                       description="Measure this device, look at the images (voxel size, object sizes) and print "
                       "the plan `deepseg train` uses when no network is given, with the estimated step time.")
    p.add_argument("--images", required=True, help="training image(s): a file or a folder (or a DeepMIB folder)")
    p.add_argument("--labels", help="label image(s): a file or a folder (object sizes come from them)")
    p.add_argument("--axes", help="axes of image files that do not record them, e.g. ZYX")
    p.add_argument("--device", default="auto", help="where to train: auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--step-time", type=float, help="CPU target seconds per training step (default 0.25, less "
                   "with a short --time)")
    p.add_argument("--time", help="plan for a training time budget, as `deepseg train --time` (e.g. 90s, 10m, 1h): "
                   "short budgets get cheaper steps")
    p.add_argument("--batch", type=int, help="patches per step (default 4 in 2D, 2 in 3D)")
    p.add_argument("--json", help="also write the plan as JSON to this file")
    p.add_argument("--remeasure", action="store_true", help="forget the step timings remembered for this machine "
                   "(in the user's cache folder) and measure again")


def run_plan(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .data import load_samples
    from .errors import InputError
    from .fileutil import atomic_path, refuse_overwriting
    from .plan import make_plan

    refuse_overwriting({"--json": args.json}, {"the images": args.images, "the labels": args.labels})
    if args.step_time is not None and args.step_time <= 0:
        raise InputError(f"--step-time {args.step_time}: expected seconds > 0")
    budget = None
    if args.time is not None:
        from .budget import parse_duration

        budget = parse_duration(args.time)
    samples = load_samples(args.images, args.labels, axes=args.axes)
    if args.remeasure:
        from .plan import forget_timings

        forget_timings()
    plan = make_plan(samples, device=args.device, step_seconds=args.step_time, batch=args.batch,
                     time_budget=budget)
    print(plan.summary())
    if budget is not None:  # what `deepseg train --time` picks for augmentation=auto
        from .augment import auto_preset
        from .config import TrainConfig
        from .training import expected_steps

        steps = expected_steps(TrainConfig(time_budget=args.time), plan, 1)
        print(f"augmentation   auto -> {auto_preset(steps, plan.network)} (about {steps:.0f} steps in {args.time})")
    if args.json:
        import json

        with atomic_path(Path(args.json)) as tmp:
            Path(tmp).write_text(json.dumps(plan.to_dict(), indent=2) + "\n")
    return 0
