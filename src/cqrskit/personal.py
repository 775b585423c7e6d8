"""Personal data in events: declared on the event class, sealed with its subject's key.

Events are kept forever, yet a person may ask to be forgotten. So the fields of an event
that hold someone's personal data are stored encrypted with a key of that person (the
*data subject*), and forgetting them destroys the key: the events stay, and what they held
of that person can no longer be read by anyone (crypto-shredding)::

    @dataclass(frozen=True)
    class UserRegistered(Event):
        __data_subject__ = "id"                        # the field naming whose data it is
        __personal_fields__ = ("email", "display_name")
        id: str
        email: str
        display_name: str | None

    @dataclass(frozen=True)
    class UserForgotten(Event):
        __forgets__ = "id"    # appending it destroys the key of the subject named by "id"
        id: str

**Stored.** The personal fields that are not None leave the event's JSON object, and one
member takes their place, last: ``"$sealed": [subject, [their names], token]``. ``token`` is
the base64 of a fresh 96-bit nonce and the AES-256-GCM ciphertext of those fields' JSON,
authenticated with the event type and the subject (a token moved to another event does not
open). None stays None: it says nothing about anyone. The subject's field itself stays in
clear: it is the id the key is found by, and should be an opaque id, never personal data
itself.

**Keys.** One per subject, in the event store's database (the :class:`~cqrskit.KeyStore`
port), made in the transaction of the first append that seals something of the subject.
Appending an event whose class declares ``__forgets__`` destroys the key in the same
transaction as the event: the log records that the subject was forgotten exactly when the
key went. A forgotten subject is never given a key again: appending personal data of theirs
fails with :class:`~cqrskit.SubjectForgotten`.

**Read.** ``read_all`` and ``read_stream`` open sealed fields before anyone sees them:
projections, aggregates and upcasters get the plain values. A field whose key is gone (or
whose token does not open: a damaged or foreign one, logged once per read) reads as its
*placeholder*: None when the field's type admits None, else :data:`FORGOTTEN` for a ``str``
field; never an error that would stop a projection. A rebuild after forgetting therefore
sees the forgotten state. Fields are opened before upcasting: an upcaster gets the plain
values of its version, and None for a forgotten field that the current class does not
declare (a field of an older version only: so upcasters of personal fields accept None).
``read_all(..., sealed=True)`` gives the events as stored (the relay publishes those: a
consumer downstream never gets personal data in clear).

The cipher comes from the ``cryptography`` package (``pip install cqrskit[crypto]``);
registering an event class that declares personal fields without it is a
:class:`~cqrskit.ConfigurationError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from .errors import ConfigurationError, CqrsKitError

__all__ = ["FORGOTTEN", "KeyConflict", "PersonalFields", "forgets_field", "personal_fields"]

FORGOTTEN = "[forgotten]"
"""What a personal ``str`` field (one whose type does not admit None) reads as once its
subject was forgotten."""


class KeyConflict(CqrsKitError):
    """Two appends made the first key of one subject at the same time: the later one's
    sealed fields are under a key that lost. The store seals again with the winner's key
    and retries (see :meth:`~cqrskit.EventStore.append_streams`); it reaches a caller only
    after repeated losses."""

    def __init__(self, subject: str | None = None) -> None:
        whose = "a data subject" if subject is None else f"data subject {subject!r}"
        super().__init__(f"the key of {whose} was made by another append")
        self.subject = subject


@dataclass(frozen=True, slots=True)
class PersonalFields:
    """What an event class declares (see the module docstring), checked."""

    subject: str
    """The field holding the subject's id."""
    fields: tuple[str, ...]
    """The fields sealed with the subject's key."""
    placeholders: dict[str, Any]
    """What each field reads as once its key is gone."""


def personal_fields(cls: type[Any]) -> PersonalFields | None:
    """The checked declaration of an event class; None when it declares no personal data.

    Raises :class:`~cqrskit.ConfigurationError` for a declaration that cannot work: a
    subject field that does not exist, a personal field that does not exist or is the
    subject itself, or one whose type admits neither None nor a plain ``str``.
    """
    fields: tuple[str, ...] = tuple(getattr(cls, "__personal_fields__", ()))
    subject: str = getattr(cls, "__data_subject__", "")
    if not fields and not subject:
        return None
    name = cls.__qualname__
    if isinstance(getattr(cls, "__personal_fields__", ()), str):
        raise ConfigurationError(f"{name}.__personal_fields__ must be a tuple of field names")
    types = _field_types(cls)
    if not subject or subject not in types:
        raise ConfigurationError(
            f"{name} declares personal fields: __data_subject__ must name one of its fields"
        )
    if not fields:
        raise ConfigurationError(f"{name} names a data subject but no __personal_fields__")
    placeholders: dict[str, Any] = {}
    for field in fields:
        if field not in types:
            raise ConfigurationError(f"{name}: personal field {field!r} is not a field")
        if field == subject:
            raise ConfigurationError(
                f"{name}: the subject field {field!r} cannot be personal (keys are found by it)"
            )
        placeholders[field] = _placeholder(name, field, types[field])
    return PersonalFields(subject, fields, placeholders)


def forgets_field(cls: type[Any]) -> str | None:
    """The field naming the subject an event class forgets (``__forgets__``), if any."""
    field: str = getattr(cls, "__forgets__", "")
    if not field:
        return None
    if field not in _field_types(cls):
        raise ConfigurationError(f"{cls.__qualname__}.__forgets__ must name one of its fields")
    return field


def _field_types(cls: type[Any]) -> dict[str, msgspec.inspect.Type]:
    info = msgspec.inspect.type_info(cls)
    if not isinstance(info, msgspec.inspect.DataclassType):
        raise ConfigurationError(f"{cls.__qualname__} is not a dataclass")
    return {f.name: f.type for f in info.fields}


def _placeholder(name: str, field: str, kind: msgspec.inspect.Type) -> Any:
    options = kind.types if isinstance(kind, msgspec.inspect.UnionType) else (kind,)
    if any(isinstance(t, msgspec.inspect.NoneType) for t in options):
        return None
    plain = msgspec.inspect.StrType()
    if any(t == plain for t in options):
        return FORGOTTEN
    raise ConfigurationError(
        f"{name}: personal field {field!r} needs a type that admits None, or a plain str"
        f" (its placeholder once forgotten: None, or {FORGOTTEN!r})"
    )
