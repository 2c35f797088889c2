"""Cron schedules that submit meta-training jobs (croniter + zoneinfo).

- ``cron``: the slots of a 5-field cron expression in an IANA time zone as UTC instants
  (daylight-saving rules in its docstring): ``next_fire_time``, ``latest_fire_time``;
- ``scheduler``: ``Scheduler``, the loop that fires due schedules through the job manager,
  once per ``(schedule_id, fire_time)``, with the misfire, overlap and warm-start rules in its
  docstring (and in docs/service.md, "Schedules").

Wiring (``services.app``)::

    scheduler = Scheduler(store, manager)       # manager: submit_spec_json(...), cancel(job_id)
    task = asyncio.create_task(scheduler.run())
    schedule = await scheduler.create(convert.schedule_request(request))
    ...
    scheduler.stop(); await task
"""

from services.schedule.cron import check_cron, latest_fire_time, next_fire_time, zone
from services.schedule.scheduler import JobSubmitter, Scheduler

__all__ = [
    "JobSubmitter",
    "Scheduler",
    "check_cron",
    "latest_fire_time",
    "next_fire_time",
    "zone",
]
