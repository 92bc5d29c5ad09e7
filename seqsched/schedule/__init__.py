"""Sequence scheduling: predicted lengths in, micro-batches out. No torch here."""

from seqsched.schedule.batch import MicroBatch
from seqsched.schedule.config import ScheduleConfig
from seqsched.schedule.planner import groups, is_failure, plan_group, plan_retries

__all__ = ["MicroBatch", "ScheduleConfig", "groups", "is_failure", "plan_group", "plan_retries"]
