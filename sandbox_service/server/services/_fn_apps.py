"""Deployments and apps of functions (server layer): `deploy` (ephemeral runs and
versioned deployments), `stop_app`, the app summaries and history. A mixin of
`FunctionService` (services/_functions.py), whose state it uses: `store`, `functions`,
`pools`, `manager`.

A redeploy makes new function ids and points the app's names at them; the previous
version's pools drain (finish their queued and running inputs, then stop their containers).
"""

from __future__ import annotations

import time
from typing import Any

from security import Principal

from ...wire import AppDeploy, AppDeployed, AppSummary, check_payload, new_id
from ...wire import errors as E
from ._records import AppRecord
from ._schedules import check_schedule


class AppsMixin:
    store: Any
    manager: Any
    functions: dict[str, dict[str, Any]]
    pools: dict[Any, Any]
    schedules: Any                    # ScheduleService, or None (tests of the layers above)
    web_labels: dict[str, str]
    web_label_for: Any
    check_web_label: Any
    web_url: Any
    _pool: Any

    async def deploy(self, who: Principal, body: AppDeploy) -> AppDeployed:
        owner = who.name
        if who.scope not in ("admin", "user"):
            raise E.PermissionDeniedError("deploying needs a user key or the admin token")
        for spec in body.functions:
            check_payload(spec.serialized_b64, f"function {spec.name}")
            if spec.schedule is not None:
                check_schedule(spec.schedule.model_dump())
            await self.manager.images.resolve(spec.image)  # NotFound now, not at first call
            if spec.volumes:  # likewise: a volume of someone else is unknown here
                await self.manager.volumes.binds(owner, spec.volumes)
        now = time.time()
        if body.mode == "deployed":
            app = await self.store.get_app_by_name(owner, body.name)
            if app is None:
                await self.store.put_app(AppRecord(app_id=new_id("app"), owner=owner,
                                                   name=body.name, created_at=now))
                app = await self.store.get_app_by_name(owner, body.name)
        else:
            app_id = new_id("app")
            app = AppRecord(app_id=app_id, owner=owner, name=f"~{app_id}", created_at=now,
                            state="ephemeral", display_name=body.name)
            await self.store.put_app(app)
        old_ids = dict(app.functions)
        app.version += 1
        app.state = "deployed" if body.mode == "deployed" else "ephemeral"
        labels: dict[str, str] = {}
        for spec in body.functions:
            if spec.web is not None:
                name = f"{spec.name}-{spec.web.attr}" if spec.web.attr else spec.name
                label = self.web_label_for(name, app.display_name or app.name, owner,
                                           spec.web.model_dump(), body.mode)
                self.check_web_label(label, app.app_id)
                if label in labels.values():
                    raise E.ConflictError(f"two endpoints of the app would be at {label!r}: "
                                          "give one a label=")
                labels[spec.name] = label
        for label in labels.values():  # claimed before the first await below
            self.web_claims[label] = app.app_id
        try:
            return await self._deploy_functions(app, body, labels, old_ids, now)
        finally:
            for label in labels.values():
                if self.web_claims.get(label) == app.app_id:
                    del self.web_claims[label]

    async def _deploy_functions(self, app: AppRecord, body: AppDeploy, labels: dict[str, str],
                                old_ids: dict[str, str], now: float) -> AppDeployed:
        owner = app.owner
        ids: dict[str, str] = {}
        for spec in body.functions:
            fid = new_id("function")
            fn = {"function_id": fid, "app_id": app.app_id, "owner": owner, "name": spec.name,
                  "app_name": app.display_name or app.name, "version": app.version,
                  "state": "active", "created_at": now, "spec": spec.model_dump(),
                  "web_label": labels.get(spec.name)}
            self.functions[fid] = fn
            ids[spec.name] = fid
            if labels.get(spec.name):  # at once: no request of a redeploy finds no endpoint
                self.web_labels[labels[spec.name]] = fid
            await self.store.put_function(fn)
            if spec.min_containers:
                self._pool(fn, None)
        app.functions = ids
        app.history.append({"version": app.version, "deployed_at": now,
                            "functions": sorted(ids)})
        app.history = app.history[-50:]
        await self.store.update_app(app)
        for name, fid in old_ids.items():  # the previous version finishes what it has
            await self._retire_function(fid, draining=True)
        if self.schedules is not None:
            self.schedules.reload()
        return AppDeployed(app_id=app.app_id, name=app.display_name or app.name,
                           mode=body.mode, version=app.version, functions=ids,
                           web_urls={n: self.web_url(self.functions[ids[n]]) or ""
                                     for n in labels})

    async def _retire_function(self, fid: str, *, draining: bool) -> None:
        fn = self.functions.get(fid) or await self.store.get_function(fid)
        if fn is None or fn.get("state") == "stopped":
            return
        fn["state"] = "draining" if draining else "stopped"
        await self.store.put_function(fn)
        for key, pool in list(self.pools.items()):
            if key[0] != fid:
                continue
            if draining:
                pool.draining = True
                pool.poke()
            else:
                del self.pools[key]
                await pool.close("its app was stopped")
        if not draining:
            self.functions.pop(fid, None)
            if self.web_labels.get(fn.get("web_label") or "") == fid:
                del self.web_labels[fn["web_label"]]

    def pool_done(self, pool: Any) -> None:
        for key, p in list(self.pools.items()):
            if p is pool:
                del self.pools[key]

    async def app_record(self, who: Principal, app_id: str) -> AppRecord:
        app = await self.store.get_app(app_id)
        if app is None or not (who.is_admin or app.owner == who.name):
            raise E.NotFoundError(f"no app {app_id!r}: `sbx app ls` lists the apps")
        return app

    async def stop_app(self, who: Principal, app_id: str) -> AppSummary:
        app = await self.app_record(who, app_id)
        for fid in app.functions.values():
            await self._retire_function(fid, draining=False)
        for fn in list(self.functions.values()):  # older versions still draining
            if fn["app_id"] == app_id:
                await self._retire_function(fn["function_id"], draining=False)
        if app.state in ("ephemeral", "deployed"):
            app.state = "stopped"
            app.history.append({"version": app.version, "stopped_at": time.time()})
            await self.store.update_app(app)
        if self.schedules is not None:
            self.schedules.reload()
        return self.summary(app)

    def summary(self, app: AppRecord) -> AppSummary:
        containers = sum(p.stats()["containers"] for (fid, _), p in self.pools.items()
                         if self.functions.get(fid, {}).get("app_id") == app.app_id)
        return AppSummary(app_id=app.app_id, name=app.display_name or app.name,
                          state=app.state, version=app.version, created_at=app.created_at,
                          functions=sorted(app.functions), containers=containers,
                          next_runs=self.schedules.app_next_runs(app.app_id)
                          if self.schedules is not None and app.state == "deployed" else {})

    async def list_apps(self, who: Principal) -> list[AppSummary]:
        apps = await self.store.list_apps(None if who.is_admin else who.name)
        return [self.summary(a) for a in sorted(apps, key=lambda a: a.created_at)
                if a.functions or a.state != "active"]
