"""Plugin discovery, registration and the one dispatch facade for hooks.

Built-in and third-party plugins come from the same entry-point group,
``smtp_appliance``. An entry point names a class (instantiated with its
validated config, an instance of its ``Config`` attribute or of
:class:`PluginConfig`) or a module (registered as it is). Each is loaded on its
own: a broken third-party plugin is reported and skipped, never fatal. A plugin
may own a config area (``area = "access"`` and an ``Area`` class); a claim on a
core name, or on an area another plugin claims too, skips the plugin likewise.

Hooks are called only through :meth:`PluginHost.decide` (verdict hooks),
:meth:`PluginHost.notify` (collect-all hooks) and :meth:`PluginHost.first`
(firstresult hooks), with keyword arguments, the per-call time budget, the
exception policy and the decision trace. Only the host writes the trace, monitored
verdicts included, so it reads the same whichever plugin decided. The host calls
each implementation itself, so a pluggy wrapper hook (``wrapper=True``,
``hookwrapper=True``) could never wrap anything: a plugin with one is skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

import pluggy
from attrs import define, field

from appliance.config import PluginConfig
from appliance.config.areas import area_problem
from appliance.hooks import specs as hookspecs
from appliance.hooks.budgets import TimeBudgetExceeded, TimeBudgets
from appliance.hooks.verdict import Action, Verdict
from appliance.mail.context import SessionContext, TraceEntry, Transaction

log = logging.getLogger("smtp_appliance.plugins")

GROUP = hookspecs.NAME

#: What a failing plugin means for the client: a temporary error, never a 250.
PLUGIN_FAILURE = Verdict.tmpreject("Internal error in a policy plugin, try again later",
                                   451, "4.3.0")


@define
class Discovered:
    """An installed plugin: its entry point, loaded object and config schema."""

    name: str
    obj: Any = None
    schema: type[PluginConfig] = PluginConfig
    distribution: str = ""
    error: str = ""
    #: The config area it owns ("access"), and that area's attrs class.
    area: str = ""
    area_schema: type | None = None


def discover(extra: Iterable[tuple[str, Any]] = ()) -> dict[str, Discovered]:
    """Load every entry point of the group, each guarded. ``extra`` adds
    (name, object) pairs without an entry point (tests, embedding)."""
    found: dict[str, Discovered] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist else ""
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - any plugin error is reported, not fatal
            log.error("plugin %s (%s) could not be loaded: %s: %s",
                      ep.name, dist or "?", type(exc).__name__, exc)
            found[ep.name] = Discovered(ep.name, distribution=dist,
                                        error=f"{type(exc).__name__}: {exc}")
            continue
        found[ep.name] = Discovered(ep.name, obj, _schema_of(obj), dist)
    for name, obj in extra:
        found[name] = Discovered(name, obj, _schema_of(obj), "")
    _claim_areas(found)
    return found


def _skip(d: Discovered, reason: str) -> None:
    log.error("plugin %s (%s) skipped: %s", d.name, d.distribution or "?", reason)
    d.error = reason


def _claim_areas(found: dict[str, Discovered]) -> None:
    """Give each plugin that declares ``area``/``Area`` its area, or skip it."""
    for d in found.values():
        if d.error or not (hasattr(d.obj, "area") or hasattr(d.obj, "Area")):
            continue
        name, area_class = getattr(d.obj, "area", None), getattr(d.obj, "Area", None)
        problem = area_problem(name, area_class)
        if problem:
            d.area = name if isinstance(name, str) else ""
            _skip(d, problem)
        else:
            d.area, d.area_schema = name, area_class
    claims: dict[str, list[Discovered]] = {}
    for d in found.values():
        if d.area and not d.error:
            claims.setdefault(d.area, []).append(d)
    for area, owners in claims.items():
        if len(owners) > 1:
            names = " and ".join(d.name for d in owners)
            for d in owners:
                _skip(d, f"area {area!r} is claimed by plugins {names}: uninstall all but one")


def _schema_of(obj: Any) -> type[PluginConfig]:
    schema = getattr(obj, "Config", PluginConfig)
    if not (isinstance(schema, type) and issubclass(schema, PluginConfig)):
        return PluginConfig
    return schema


def schemas(found: dict[str, Discovered]) -> dict[str, type[PluginConfig]]:
    """Config schemas of the plugins that loaded, for the config loader."""
    return {n: d.schema for n, d in found.items() if not d.error}


def areas(found: dict[str, Discovered]) -> dict[str, type]:
    """Area classes of the plugins that loaded, by area name, for the config loader."""
    return {d.area: d.area_schema for d in found.values() if d.area and not d.error}


def area_hints(found: dict[str, Discovered]) -> dict[str, str]:
    """For names no plugin owns, the broken plugin that may own them (error text)."""
    hints: dict[str, str] = {}
    for d in found.values():
        if d.error and d.area:
            hints.setdefault(d.area, f"plugin {d.name}, which claims it, was skipped: {d.error}")
        elif d.error:
            hints.setdefault(d.name, f"plugin {d.name}, its likely owner, could not be loaded "
                                     f"({d.error})")
    return hints


def loader_inputs(found: dict[str, Discovered]) -> dict[str, Any]:
    """Keyword arguments for ``load_config``/``check_config``: plugin schemas, areas
    and hints, so every caller validates against the same installed plugins."""
    return {"plugin_schemas": schemas(found), "plugin_areas": areas(found),
            "area_hints": area_hints(found)}


@define
class PluginHost:
    """The registered, enabled plugins of one configuration generation."""

    pm: pluggy.PluginManager
    configs: dict[str, PluginConfig]
    timeout: float
    order: list[str] = field(factory=list)  # plugin names, first asked first
    errors: list[str] = field(factory=list)
    #: The per-call time budget; None (timeout 0: the CLI, tests) calls unbounded.
    budgets: TimeBudgets | None = None
    #: Hooks with a budget of their own: the hand-off of an accepted message
    #: (``queue_message``) waits for the disk as long as ``[queue] timeout`` allows.
    hook_budgets: dict[str, TimeBudgets] = field(factory=dict)

    @classmethod
    def build(
        cls,
        found: dict[str, Discovered],
        configs: dict[str, PluginConfig],
        timeout: float,
        queue_timeout: float = 0,
    ) -> PluginHost:
        """Register the enabled plugins of ``found``; ``timeout`` (seconds, 0: none)
        bounds every hook call but ``queue_message``, which ``queue_timeout`` bounds."""
        pm = pluggy.PluginManager(GROUP)
        pm.add_hookspecs(hookspecs)
        host = cls(pm, configs, timeout, budgets=TimeBudgets(timeout) if timeout else None)
        if timeout and queue_timeout:
            host.hook_budgets["queue_message"] = TimeBudgets(queue_timeout)
        enabled = [
            d for d in found.values()
            if not d.error and configs.get(d.name, d.schema()).enabled
        ]
        # pluggy calls the last registered first: register by descending priority.
        enabled.sort(key=lambda d: (configs.get(d.name, d.schema()).priority, d.name),
                     reverse=True)
        for d in enabled:
            config = configs.get(d.name) or d.schema()
            try:
                plugin = d.obj(config) if isinstance(d.obj, type) else d.obj
                pm.register(plugin, name=d.name)
                _check_hooks(pm, d.name)
            except Exception as exc:  # noqa: BLE001
                msg = f"plugin {d.name}: {type(exc).__name__}: {exc}"
                log.error("%s; plugin skipped", msg)
                host.errors.append(msg)
                if pm.has_plugin(d.name):
                    pm.unregister(name=d.name)
        host.order = [d.name for d in reversed(enabled) if pm.has_plugin(d.name)]
        return host

    # --- introspection ---------------------------------------------------------------

    def hooks_of(self, name: str) -> list[str]:
        plugin = self.pm.get_plugin(name)
        return sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])

    # --- dispatch --------------------------------------------------------------------

    _cache: dict[str, list] = field(factory=dict)

    def _impls(self, hook: str) -> list:
        """Implementations in call order; fixed for the life of this host."""
        impls = self._cache.get(hook)
        if impls is None:
            # get_hookimpls() is in reverse call order (pluggy calls LIFO).
            impls = self._cache[hook] = list(reversed(
                getattr(self.pm.hook, hook).get_hookimpls()))
        return impls

    def _call(self, impl, kwargs: dict[str, Any], budgets: TimeBudgets | None = None) -> Any:
        args = {a: kwargs[a] for a in impl.argnames}
        budgets = budgets or self.budgets
        if budgets is None:
            return impl.function(**args)
        return budgets.run(lambda: impl.function(**args))

    def decide(
        self,
        event: str,
        session: SessionContext,
        transaction: Transaction | None = None,
        **kwargs: Any,
    ) -> tuple[Verdict | None, str]:
        """Ask plugins in order; the first verdict that stops decides.

        Returns (verdict or None, name of the plugin that decided). A plugin in
        monitor mode has its verdict traced as "would have" and is ignored, and
        so is every verdict a plugin marks ``as_monitor()``.
        """
        impls = self._impls(f"on_{event}")
        if not impls:
            return None, ""
        hook = f"on_{event}"
        kwargs = {"session": session, "transaction": transaction, **kwargs}
        for impl in impls:
            name = impl.plugin_name
            started = time.monotonic()
            try:
                verdict = self._call(impl, kwargs)
            except Exception as exc:  # noqa: BLE001 - the exception policy
                log.error("session %s: plugin %s failed in %s after %.3fs",
                          session.session_id, name, hook, time.monotonic() - started,
                          exc_info=not isinstance(exc, TimeBudgetExceeded))
                verdict = PLUGIN_FAILURE
                _record(session, transaction, event, name, verdict, "enforce",
                        f"{type(exc).__name__}: {exc}")
                return verdict, name
            if verdict is not None and not _is_verdict(verdict):
                log.error("plugin %s returned %r from %s, not a Verdict", name, verdict, hook)
                _record(session, transaction, event, name, PLUGIN_FAILURE, "enforce",
                        f"bad return value {verdict!r}")
                return PLUGIN_FAILURE, name
            if verdict is not None and verdict.monitored:
                for would in verdict.monitored:
                    _record(session, transaction, event, name, would, "monitor")
            if verdict is None or verdict.action is Action.CONTINUE:
                if log.isEnabledFor(logging.DEBUG):
                    _record(session, transaction, event, name, verdict or Verdict(
                        Action.CONTINUE), "enforce", debug=True)
                continue
            mode = self.configs[name].mode if name in self.configs else "enforce"
            if mode == "monitor" and verdict.action is not Action.ACCEPT:
                _record(session, transaction, event, name, verdict, "monitor")
                continue
            _record(session, transaction, event, name, verdict, mode)
            return verdict, name
        return None, ""

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call every implementation; failures are logged and ignored."""
        for impl in self._impls(hook):
            try:
                self._call(impl, kwargs)
            except Exception:  # noqa: BLE001
                log.exception("plugin %s failed in %s", impl.plugin_name, hook)

    def implements(self, hook: str) -> bool:
        """Does any enabled plugin implement ``hook``?"""
        return bool(self._impls(hook))

    def first(self, hook: str, **kwargs: Any) -> tuple[Any, str]:
        """First non-None result and the plugin that gave it, each call under the
        time budget. Exceptions, TimeBudgetExceeded included, propagate (the
        caller maps them to a reply: 451 for queue_message, no AUTH or 454 for
        the AUTH hooks, the relay plugin's 451 for lookup_recipient)."""
        budgets = self.hook_budgets.get(hook)
        for impl in self._impls(hook):
            result = self._call(impl, kwargs, budgets)
            if result is not None:
                return result, impl.plugin_name
        return None, ""


def _is_verdict(verdict: Any) -> bool:
    return isinstance(verdict, Verdict) and (not verdict.monitored or all(
        isinstance(would, Verdict) for would in verdict.monitored))


def _check_hooks(pm: pluggy.PluginManager, name: str) -> None:
    """Like ``check_pending()`` but for one plugin, so a typo'd hook name skips
    that plugin only; so does a wrapper hook, which the host cannot call."""
    for hook_name in dir(pm.hook):
        if hook_name.startswith("_"):
            continue
        caller = getattr(pm.hook, hook_name)
        mine = [i for i in caller.get_hookimpls() if i.plugin_name == name]
        if not mine:
            continue
        if caller.spec is None:
            raise pluggy.PluginValidationError(
                pm.get_plugin(name), f"unknown hook {hook_name!r} (not in appliance.hooks.specs)"
            )
        if any(i.wrapper or i.hookwrapper for i in mine):
            raise pluggy.PluginValidationError(
                pm.get_plugin(name),
                f"hook {hook_name!r} is a wrapper (wrapper=True or hookwrapper=True),"
                " which smtp-appliance does not support: implement it as a plain hook")


def _record(
    session: SessionContext,
    transaction: Transaction | None,
    event: str,
    plugin: str,
    verdict: Verdict,
    mode: str,
    text: str | None = None,
    debug: bool = False,
) -> None:
    if verdict.action in (Action.REJECT, Action.TMPREJECT, Action.ABORT) and verdict.reply:
        code, enhanced, vtext = verdict.reply_parts()
    else:
        code, enhanced, vtext = verdict.code, verdict.enhanced, verdict.text
    entry = TraceEntry(event, plugin, verdict.action.value, code, enhanced, text or vtext,
                       mode, verdict.rule)
    session.trace.append(entry)
    if transaction is not None:
        transaction.trace.append(entry)
    level = logging.DEBUG if debug else logging.INFO
    if log.isEnabledFor(level):  # like every session line: the session id as a field
        log.log(level, "trace %s", entry, extra={"fields": {"session": session.session_id}})
