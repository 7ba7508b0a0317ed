"""`callrouter check`: validate config.yaml and every plan, list every error, and the prompts without a file."""

from __future__ import annotations

import argparse
import sys

from callrouter.cli.common import EXIT_FAILED, EXIT_OK, add_config_argument, load_config
from callrouter.cli.plans import drift_warnings
from callrouter.config.loader import RoutingConfig
from callrouter.prompts.inventory import check_prompts

HELP = "validate config.yaml and every plan; list every error"


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Exit 2 when the configuration does not load (as every command), 1 when a prompt a plan plays has no file."""
    config = load_config(args.config)
    for number, plan in sorted(config.plans.items()):
        groups = ", ".join(f"{name} ({g.strategy}, {len(g.lines)} lines)" for name, g in plan.hunt_groups.items())
        print(f"{config.sources[number]}: {number} {plan.name}: OK - menus: {len(plan.menus)}; groups: {groups}")
    missing = check_prompts(config)
    for line in missing:
        print(line, file=sys.stderr)
    if missing:
        print(f"{len(missing)} prompt use(s) have no file in {config.service.prompts_dir}", file=sys.stderr)
    for warning in notify_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    for warning in drift_warnings(config):  # the database wins over a file that differs (docs/plans.md)
        print(f"warning: {warning}", file=sys.stderr)
    return EXIT_FAILED if missing else EXIT_OK


def notify_warnings(config: RoutingConfig) -> list[str]:
    """Settings that are valid but will not do what they seem to: messages nobody can send."""
    out = []
    notify = config.service.notify
    for number, plan in sorted(config.plans.items()):
        wants_sms = bool(plan.notify.recipients) or (plan.package is not None and bool(plan.package.recipients))
        if wants_sms and notify.sms is None:
            out.append(f"{config.sources[number]}: SMS recipients are set but config.yaml has no notify.sms gateway: no SMS will be sent")
        if (plan.notify.webhook or (plan.package is not None and plan.package.webhook)) and notify.webhook is None:
            out.append(f"{config.sources[number]}: webhook messages are asked for but config.yaml has no notify.webhook")
    return out
