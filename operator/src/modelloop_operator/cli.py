"""``modelloop-operator``: run the operator against the cluster of ``KUBECONFIG`` (or the
pod's service account).

A small wrapper around ``kopf.run`` instead of ``kopf run handlers.py``: the handlers are
registered from the configuration (no import-time registration), and the flags users
expect from a controller (namespaces, peering, liveness) map onto our configuration, so
the Helm chart and a developer's shell start the operator the same way.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

import kopf

from .config import OperatorConfig
from .handlers import build_registry


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; every flag also has a ``MODELLOOP_*`` variable (see config)."""
    parser = argparse.ArgumentParser(
        prog="modelloop-operator",
        description="Reconcile TrainingJobs, OptimizationJobs and ModelDeployments in the "
                    "cluster of KUBECONFIG (in-cluster credentials without one).")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                       help="serve this namespace (repeatable); default: MODELLOOP_NAMESPACES")
    scope.add_argument("-A", "--all-namespaces", action="store_true",
                       help="serve every namespace")
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument("--standalone", action="store_true",
                         help="run without peering, even if MODELLOOP_PEERING_NAME is set")
    peering.add_argument("--peering", metavar="NAME",
                         help="kopf peering object for high availability (one active replica)")
    parser.add_argument("--liveness", metavar="URL",
                        help="liveness endpoint, e.g. http://0.0.0.0:8081/healthz; "
                             "default: port MODELLOOP_HEALTH_PORT (0 disables)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("--debug", action="store_true", help="log everything, kopf included")
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace) -> OperatorConfig:
    """The environment's configuration, with command-line flags taking precedence."""
    overrides: dict[str, Any] = {}
    if args.namespace:
        overrides["namespaces"] = tuple(args.namespace)
    elif args.all_namespaces:
        overrides["namespaces"] = ()
    if args.standalone:
        overrides["peering_name"] = ""
    elif args.peering:
        overrides["peering_name"] = args.peering
    return OperatorConfig(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``modelloop-operator`` console script."""
    args = parse_args(argv)
    config = load_config(args)
    kopf.configure(verbose=args.verbose, debug=args.debug,
                   log_format=kopf.LogFormat[config.log_format.upper()])
    if not (args.verbose or args.debug):
        # kopf says "Handler 'x' succeeded" at INFO for every handler of every event:
        # dozens of lines per object (15,000 for 450 objects in bench/operator_scale.py),
        # none of them news. Failures and retries (WARNING and up) are still logged and
        # posted as Events; the reconcilers log what they do under modelloop_operator.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    liveness = args.liveness or (
        f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None)
    kopf.run(
        registry=build_registry(config=config),
        clusterwide=config.clusterwide,
        namespaces=list(config.namespaces),
        standalone=config.standalone,
        peering_name=config.peering_name or None,
        liveness_endpoint=liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
