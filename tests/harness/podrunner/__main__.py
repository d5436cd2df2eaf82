"""CLI: `python -m tests.harness.podrunner --kubeconfig K --node local-0` (for `make demo`).

Runs until SIGINT/SIGTERM, then stops every pod process and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from .runner import AsyncPodRunner, RunnerOptions


def parse_args(argv: list[str] | None = None) -> RunnerOptions:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.podrunner",
                                     description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--context")
    parser.add_argument("--node", default="local-0")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--cpu", default="2")
    parser.add_argument("--memory", default="8Gi")
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--pod-cidr",
                        help="pod CIDR: IPv4 loopback (default: random 127.X.Y.0/24), or 'routed' "
                        "(random 198.18.X.0/24 made host-local by a route; root only; "
                        "needed for EndpointSlices)")
    parser.add_argument("--extra-path", action="append", default=[],
                        help="directory searched first for container commands (repeatable)")
    parser.add_argument("--entrypoint", action="append", default=[], metavar="IMAGE=CMD",
                        help="command for an image whose containers set no command")
    parser.add_argument("--backoff", type=float, default=10.0,
                        help="initial crash-loop back-off in seconds (kubelet: 10)")
    parser.add_argument("--runtime", choices=("process", "podman"), default="process",
                        help="local processes, or one `podman run` of its image per container")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    entrypoints = {}
    for item in args.entrypoint:
        image, _, command = item.partition("=")
        entrypoints[image] = command.split()
    return RunnerOptions(
        kubeconfig=args.kubeconfig, context=args.context, node_name=args.node,
        workdir=args.workdir, cpu=args.cpu, memory=args.memory, gpus=args.gpus,
        pod_cidr=args.pod_cidr, extra_path=args.extra_path, entrypoints=entrypoints,
        backoff_initial=args.backoff, runtime=args.runtime,
    )


async def serve(options: RunnerOptions) -> None:
    runner = AsyncPodRunner(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await runner.start()
        await stop.wait()
    finally:
        await runner.stop()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
