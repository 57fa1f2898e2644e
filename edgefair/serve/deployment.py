"""One served model: its loaded versions, the version answering unversioned requests, and
the field checks on it (a candidate's shadow/canary gate, the serving version's drift).

A failed look writes an ``Incident`` (``runtime.incidents``) and, unless the server is
alert-only, switches unversioned traffic: a failed candidate is detached (in canary mode it
stops answering its share), a drifting serving version gives way to the highest earlier
version whose certificate passed. Switched-off versions are kept in ``rejected`` and read
back from the incident store after a restart.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefair.core import tables
from edgefair.files import write_text
from edgefair.runtime.incidents import Incident, IncidentStore, Watch, WatchOptions
from edgefair.runtime.shadow import ShadowOptions, ShadowSession
from edgefair.serve import field
from edgefair.serve import protocol as v2
from edgefair.serve.layout import ModelEntry
from edgefair.verification.policy import load_policy

Endpoint = Any  # an App (serve.app) for one bundle


@dataclass(frozen=True)
class Context:
    """What every deployment of one server shares."""

    incidents: IncidentStore | None
    rollback: bool  # False: alert only
    store: Path | None  # the folder of counters stores (field tables are written beside them)
    min_cell: int


class Trial:
    """A candidate beside the serving version: the shadow session, its router and watch."""

    def __init__(self, deployment: Deployment, candidate: int, rollback: bool):
        trial = deployment.entry.config.field
        assert trial is not None and deployment.default is not None
        self.reference, self.candidate, self.mode = deployment.default, candidate, trial.mode
        serving, cand = deployment.versions[self.reference], deployment.versions[candidate]
        options = ShadowOptions(mode=trial.mode, share=trial.share)
        self.shadow = ShadowSession(serving.session, cand.session, options)
        self.router = copy.copy(serving)  # the serving endpoint, answering through the shadow
        self.router.session = self.shadow
        self.policy = load_policy(trial.policy)
        watch = WatchOptions(
            check_every=trial.check_every, max_looks=trial.max_looks, alpha=self.policy.alpha, rollback=rollback
        )
        self.watch = Watch(field.gate_check(self.shadow.paired_table, self.policy), watch)


class Deployment:
    """One model: its loaded versions, the version answering unversioned requests, checks."""

    def __init__(self, entry: ModelEntry, versions: dict[int, Endpoint], unavailable: dict[int, str], context: Context):
        self.entry, self.versions, self.unavailable, self.context = entry, versions, unavailable, context
        self.default: int | None = None
        self.trial: Trial | None = None
        self.drift_watch: Watch | None = None
        self.rejected: set[int] = set()
        self.rollbacks = 0
        self.incidents = 0
        self.note = ""

    def passing(self, number: int) -> bool:
        return self.versions[number].session.describe().certificate_verdict == "pass"

    def choose(self, rejected: set[int]) -> None:
        """Pick the default version and attach the field trial (if any, and not rolled back)."""
        self.rejected = set(rejected)
        trial = self.entry.config.field
        excluded = self.rejected | ({trial.candidate} if trial and trial.candidate is not None else set())
        wanted = self.entry.config.default
        if isinstance(wanted, int) and wanted not in self.rejected:
            self.default = wanted if wanted in self.versions else None
            self.note = "" if self.default else f"default version {wanted} is not loaded"
        else:
            good = [n for n in self.versions if n not in excluded and self.passing(n)]
            self.default = max(good) if good else None
            self.note = "" if good else "no loaded version's certificate passed; ask for a version explicitly"
        self.trial = None
        if trial and trial.candidate is not None and self.default is not None and trial.candidate in self.versions:
            if trial.candidate in self.rejected:
                self.note = f"candidate {trial.candidate} was rolled back (see the incidents); not run again"
            else:
                self.trial = Trial(self, trial.candidate, self.context.rollback)
        self.drift_watch = None
        if trial and trial.drift and self.default is not None:
            options = WatchOptions(
                check_every=trial.check_every,
                max_looks=trial.max_looks,
                alpha=load_policy(trial.policy).alpha,
                rollback=self.context.rollback,
            )
            self.drift_watch = Watch(field.drift_check(self.versions[self.default].session), options)

    def router(self) -> Endpoint:
        if self.default is None:
            raise v2.ClientError(f"model {self.entry.name!r}: {self.note}", 503)
        return self.trial.router if self.trial else self.versions[self.default]

    def close(self) -> None:
        for app in self.versions.values():
            app.session.close()

    def answered(self) -> int | None:
        if self.trial is not None and self.trial.shadow.last_answered_by == "candidate":
            return self.trial.candidate
        return self.default

    def look(self) -> None:
        if self.trial is not None:
            verdict = self.trial.watch.observe(self.trial.shadow.labelled_rows())
            if verdict is not None:
                self._save_field_table()
            if verdict is not None and verdict.verdict == "fail":
                self._incident("field_gate", self.trial.watch, verdict, self.trial.shadow.paired_table())
        if self.drift_watch is not None and self.default is not None:
            table = self.versions[self.default].session.table()
            verdict = self.drift_watch.observe(table.rows)
            if verdict is not None and verdict.verdict == "fail":
                self._incident("drift", self.drift_watch, verdict, table)

    def _incident(self, check: str, watch: Watch, verdict: Any, table: tables.CountsTable) -> None:
        trial = self.trial
        before = self.default
        to: int | None
        if check == "field_gate":
            assert trial is not None
            bad, mode = trial.candidate, trial.mode
            from_version = trial.candidate if trial.mode == "canary" else trial.reference
            # back to the reference if its certificate passed (the usual case), else the last that did
            good = [n for n in self.versions if n != bad and n not in self.rejected and self.passing(n)]
            to = trial.reference if self.passing(trial.reference) else (max(good) if good else None)
        else:
            assert before is not None
            earlier = [n for n in self.versions if n < before and n not in self.rejected and self.passing(n)]
            bad, to, mode, from_version = before, (max(earlier) if earlier else None), "serving", before
        act = self.context.rollback and to is not None
        record = Incident(
            model=self.entry.name,
            check=check,
            mode=mode,
            reference_version=trial.reference if trial else before,
            candidate_version=trial.candidate if trial else None,
            from_version=from_version,
            to_version=to if act else from_version,
            action="rolled_back" if act else "alert",
            failing=verdict.failing,
            labelled_rows=int(table.counts[:, :2].sum()),
            look=watch.looks,
            max_looks=watch.options.max_looks,
            level=verdict.level,
            table=table.to_dict(),
            note="" if to is not None else "no earlier version whose certificate passed: alert only",
        )
        if self.context.incidents is not None:
            record = self.context.incidents.record(record)
        self.incidents += 1
        if act:
            self.rollbacks += 1
            self.rejected.add(bad)
            self.note = f"version {bad} rolled back after a failed {check} (incident {record.id or 'not stored'})"
            if trial is not None:
                trial.shadow.detach()
            self.trial = None
            if check == "drift" or to != before:
                self.default, self.drift_watch = to, None

    def _save_field_table(self) -> None:
        """The paired table as table JSON beside the stores (``edgefair counters show|gate`` read it)."""
        if self.context.store and self.trial is not None:
            name = f"{self.entry.name}-field-v{self.trial.reference}-v{self.trial.candidate}.json"
            write_text(self.context.store / name, self.trial.shadow.paired_table().to_json() + "\n")

    def field_summary(self) -> dict[str, Any] | None:
        t = self.trial
        if t is None:
            return {"attached": False, "note": self.note or "no field trial", "rollbacks": self.rollbacks}
        table = t.shadow.paired_table()
        now = field.gate_verdict(table, t.policy, 1.0 - t.watch.options.look_alpha)
        return {
            "attached": True,
            "mode": t.mode,
            "reference": t.reference,
            "candidate": t.candidate,
            "share": t.shadow.options.share,
            "rows": table.rows,
            "labelled_rows": int(table.counts[:, :2].sum()),
            "watch": t.watch.describe(),
            "current": field.shown(now, self.context.min_cell),
            "last_look": field.shown(t.watch.last, self.context.min_cell),
            "rollbacks": self.rollbacks,
        }
