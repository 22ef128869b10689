"""The pure planners: reconcile, the rollout strategies, crash backoff, the route table."""

from kiln.planning.backoff import crash_delay, forgive, next_start_at, record_crash
from kiln.planning.inputs import DesiredApp
from kiln.planning.instances import container_name, instance_spec, new_instance_id
from kiln.planning.reconcile import Plan, app_routes, describe_exit, plan
from kiln.planning.routes import route_table

__all__ = [
    "DesiredApp",
    "Plan",
    "app_routes",
    "container_name",
    "crash_delay",
    "describe_exit",
    "forgive",
    "instance_spec",
    "new_instance_id",
    "next_start_at",
    "plan",
    "record_crash",
    "route_table",
]
