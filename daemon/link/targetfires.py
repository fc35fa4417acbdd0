"""Fires the master sent to minions (``eventbus fire --target``) and which minions acknowledged them.

No sockets and no clock of its own: the link starts a job when it sends a
fire, notes each ``fired`` answer, and expires jobs older than ``ttl`` so a
minion that never answers costs nothing for long. The CLI polls a job's
acks until every target answered or its own timeout passed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

FIRE_JOB_TTL = 120.0


@dataclass
class FireJob:
    """A fire sent to some minions, and which of them said it is on their bus."""

    targets: list[str]
    started: float
    acked: set[str] = field(default_factory=set)


class FireJobs:
    """Open fire jobs by id; ids count up from 1 for the life of the master."""

    def __init__(self, ttl: float = FIRE_JOB_TTL) -> None:
        self.ttl = ttl
        self.jobs: dict[int, FireJob] = {}
        self._next_id = 1

    def start(self, targets: list[str], now: float) -> int:
        """Open a job for a fire sent to ``targets``; return its id."""
        job_id = self._next_id
        self._next_id += 1
        self.jobs[job_id] = FireJob(sorted(targets), now)
        return job_id

    def ack(self, job_id: int, minion_id: str) -> bool:
        """Note that ``minion_id`` has fire ``job_id`` on its bus; ``False`` when that job was never sent to it.

        An answer to an expired job (from a slow minion) is noted nowhere but is no lie: ``True``.
        """
        job = self.jobs.get(job_id)
        if job is None:
            return 0 < job_id < self._next_id
        if minion_id not in job.targets:
            return False
        job.acked.add(minion_id)
        return True

    def status(self, job_id: int) -> dict | None:
        """``{"targets", "acked"}`` of ``job_id``, or ``None`` when there is no such job (or it expired)."""
        job = self.jobs.get(job_id)
        if job is None:
            return None
        return {"targets": job.targets, "acked": sorted(job.acked)}

    def expire(self, now: float) -> list[int]:
        """Drop the jobs started more than ``ttl`` ago; return their ids."""
        old = [job_id for job_id, job in self.jobs.items() if now - job.started > self.ttl]
        for job_id in old:
            del self.jobs[job_id]
        return old
