"""Sequence scheduling: predicted lengths in, a plan out (micro-batches for static
engines, an order / priority / admission plan for continuous ones). No torch here."""

from seqsched.schedule.batch import MicroBatch
from seqsched.schedule.config import ScheduleConfig
from seqsched.schedule.planner import groups, is_failure, plan_group, plan_retries
from seqsched.schedule.stream import KVAdmission, StreamPlan, bounded_sort, plan_stream

__all__ = [
    "KVAdmission",
    "MicroBatch",
    "ScheduleConfig",
    "StreamPlan",
    "bounded_sort",
    "groups",
    "is_failure",
    "plan_group",
    "plan_retries",
    "plan_stream",
]
