"""``mlops-rollback [--to VERSION] --reason TEXT [--by NAME]``: move ``champion`` back, in one command.

1. the registry alias ``champion`` moves to the version the current champion replaced (or to
   ``--to VERSION``), and both versions get tags saying who, when and why;
2. the ``champion`` asset gets a materialisation in its history (the partition of the week that
   produced the version now serving) with the same facts, visible in the Dagster UI;
3. ``model_deployment`` is materialised again: the serving Deployment is re-rendered for the
   version now in place (and applied, on the k8s profile).

Refuses (exit 2, nothing changed) when there is no champion, the version does not exist, is
already the champion, or was blocked by the gate.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mlops-rollback", description=__doc__.split("\n\n")[0])
    ap.add_argument("--to", metavar="VERSION", help="the version to serve (default: the one the champion replaced)")
    ap.add_argument("--reason", required=True, help="why; recorded in the registry and the asset history")
    ap.add_argument("--by", default=os.environ.get("MLOPS_USER") or getpass.getuser(), help="who (default: $MLOPS_USER or the login)")
    args = ap.parse_args(argv)

    import dagster as dg

    from mlops_assets.defs.deployment.assets import model_deployment
    from mlops_assets.defs.partitions import weekly_partitions
    from mlops_assets.defs.resources import build_resources
    from mlops_assets.lib import registry, tracking
    from mlops_assets.settings import ensure_dagster_home, get_settings

    s = get_settings()
    ensure_dagster_home()
    tracking.configure(s.tracking_uri, s.mlflow_artifact_root)
    try:
        moved = registry.rollback(args.to, by=args.by, reason=args.reason)
    except registry.RollbackError as exc:
        print(f"mlops-rollback: {exc}; nothing changed", file=sys.stderr)
        return 2
    instance = dg.DagsterInstance.get()
    week = moved["week"] if moved["week"] in weekly_partitions.get_partition_keys() else None
    facts = {"model_version": moved["to"], "previous_version": moved["from"], "rolled_back_by": moved["by"],
             "reason": moved["reason"], "rolled_back_at": moved["at"], "via": "mlops-rollback"}
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key="champion", partition=week,
        description=f"rollback v{moved['from']} -> v{moved['to']} by {moved['by']}: {moved['reason']}",
        metadata=facts))
    result = dg.materialize([model_deployment], resources=build_resources(s), instance=instance,
                            tags={"mlops/rollback": f"v{moved['from']}->v{moved['to']}", "mlops/rollback_by": moved["by"]},
                            raise_on_error=False)
    print(f"champion: v{moved['from']} -> v{moved['to']} (by {moved['by']}: {moved['reason']})")
    if not result.success:
        print("mlops-rollback: the alias moved but re-rendering the serving deployment failed; "
              f"see Dagster run {result.run_id}", file=sys.stderr)
        return 1
    print(f"model_deployment re-rendered for v{moved['to']} (Dagster run {result.run_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
