"""Verdicts: what a plugin answers to an event.

A hook returns a :class:`Verdict` or ``None`` (carry on). The vocabulary is the
config's one: accept, continue, reject, tmpreject, discard, abort.
``code``/``enhanced``/``text`` override the default reply for the action.

A plugin with a monitor setting of its own (per list, per limit, per listener)
returns ``verdict.as_monitor()``: the plugin host traces and logs it as "would
have" and asks the next plugin, so that only the host writes the decision trace.
"""

from __future__ import annotations

import enum

from attrs import evolve, frozen


class Action(enum.Enum):
    ACCEPT = "accept"        # stop asking other plugins; accept this step
    CONTINUE = "continue"    # no decision; ask the next plugin
    REJECT = "reject"        # 5xx, permanent
    TMPREJECT = "tmpreject"  # 4xx, try again later
    DISCARD = "discard"      # pretend to accept, then drop (the message or recipient)
    ABORT = "abort"          # 421 and close the session


#: Default reply per action when the verdict names no code of its own.
_DEFAULTS = {
    Action.REJECT: (550, "5.7.1", "Rejected by policy"),
    Action.TMPREJECT: (451, "4.7.1", "Temporarily rejected by policy, try again later"),
    Action.ABORT: (421, "4.7.0", "Closing connection"),
}


@frozen
class Verdict:
    action: Action
    code: int | None = None
    enhanced: str | None = None
    text: str | None = None
    #: False: close the connection without any reply (abort only; ``Verdict.close``).
    reply: bool = True
    #: What the plugin would have answered but only monitors: traced as "(monitor)"
    #: by the host, in order, before this verdict is applied.
    monitored: tuple[Verdict, ...] = ()
    #: The rule that gave this verdict, when the plugin is made of rules (the
    #: ``rules`` plugin): the decision trace names it.
    rule: str = ""

    # Constructors that read like the config vocabulary.
    @classmethod
    def accept(cls, text: str | None = None) -> Verdict:
        return cls(Action.ACCEPT, text=text)

    @classmethod
    def reject(cls, text: str | None = None, code: int = 550, enhanced: str = "5.7.1") -> Verdict:
        return cls(Action.REJECT, code, enhanced, text)

    @classmethod
    def tmpreject(
        cls, text: str | None = None, code: int = 451, enhanced: str = "4.7.1"
    ) -> Verdict:
        return cls(Action.TMPREJECT, code, enhanced, text)

    @classmethod
    def discard(cls, text: str | None = None) -> Verdict:
        return cls(Action.DISCARD, text=text)

    @classmethod
    def abort(cls, text: str | None = None) -> Verdict:
        return cls(Action.ABORT, 421, "4.7.0", text)

    @classmethod
    def close(cls, text: str | None = None) -> Verdict:
        """Abort without a reply: the connection is just closed (``text`` is for
        the log and the trace only)."""
        return cls(Action.ABORT, text=text, reply=False)

    @property
    def stops(self) -> bool:
        """True when no later plugin is asked about this event."""
        return self.action is not Action.CONTINUE

    def as_monitor(self) -> Verdict:
        """This verdict traced as "would have", not applied: a ``continue`` that
        carries it. For a plugin's own monitor settings; the plugin-wide
        ``[plugins.NAME] mode = "monitor"`` needs nothing from the plugin."""
        return Verdict(Action.CONTINUE,
                       monitored=(*self.monitored, evolve(self, monitored=())))

    def then(self, later: Verdict | None) -> Verdict:
        """One hook's answers in the order it found them (a plugin that checks
        several limits): this verdict if it stops, else ``later`` (if any) with
        this one's monitored verdicts traced first."""
        if self.stops or later is None:
            return self
        return evolve(later, monitored=(*self.monitored, *later.monitored))

    def reply_parts(self) -> tuple[int, str, str]:
        """(code, enhanced, text) for a refusing verdict, filling in defaults."""
        code, enhanced, text = _DEFAULTS[self.action]
        return (self.code or code, self.enhanced or enhanced, self.text or text)

    def __str__(self) -> str:
        if self.action in _DEFAULTS and self.reply:
            code, enhanced, text = self.reply_parts()
            return f"{self.action.value} {code} {enhanced} {text}"
        return self.action.value + (f" {self.text}" if self.text else "")
