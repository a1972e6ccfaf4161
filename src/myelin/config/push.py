"""Config of push delivery and email, with Synapse's keys.

``push``: ``enabled`` (default true: pushers deliver), ``include_content``
(default true: the event's content goes to the push gateway),
``group_unread_count_by_room`` (default true: the badge counts rooms with
unread notifications, not the notifications). Synapse's top-level
``use_insecure_ssl_client_just_for_testing_do_not_use`` turns off
certificate checks of push gateways and identity servers (test rigs only).

``email`` (Synapse's section): ``smtp_host`` (default localhost),
``smtp_port`` (25), ``smtp_user``/``smtp_pass``, ``force_tls`` (implicit TLS),
``require_transport_security`` (STARTTLS or fail), ``enable_tls`` (default
true: STARTTLS when offered), ``notif_from`` (required once the section is
there; ``%(app)s`` is replaced by ``app_name``), ``app_name`` (Matrix),
``enable_notifs`` (false: no notification mails), ``notif_for_new_users``
(true: a user adding an email gets an email pusher), ``client_base_url``
(the link in notification mails), ``validation_token_lifetime`` (1h),
``notif_delay_before_mail`` (10m: how long a message stays unread before it
is mailed). Sending validation mails (``requestToken``) needs only the
section itself, as Synapse's local 3PID validation does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from myelin.config.reader import ConfigReader


@dataclass(frozen=True)
class PushConfig:
    enabled: bool = True
    include_content: bool = True
    group_unread_count_by_room: bool = True
    insecure_tls: bool = False


@dataclass(frozen=True)
class EmailConfig:
    notif_from: str
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_pass: str | None = None
    force_tls: bool = False
    require_transport_security: bool = False
    enable_tls: bool = True
    app_name: str = "Matrix"
    enable_notifs: bool = False
    notif_for_new_users: bool = True
    client_base_url: str | None = None
    validation_token_lifetime_ms: int = 3_600_000
    notif_delay_before_mail_ms: int = 600_000

    @property
    def sender(self) -> str:
        return self.notif_from.replace("%(app)s", self.app_name)


def read_push(r: ConfigReader) -> PushConfig:
    push = r.section("push")
    return PushConfig(
        enabled=push.bool_("enabled", True),
        include_content=push.bool_("include_content", True),
        group_unread_count_by_room=push.bool_("group_unread_count_by_room", True),
        insecure_tls=r.bool_("use_insecure_ssl_client_just_for_testing_do_not_use", False))


def read_email(r: ConfigReader, duration_ms: Any) -> EmailConfig | None:
    if r.raw("email") is None:
        return None
    s = r.section("email")
    notif_from = s.str_("notif_from", None)
    if notif_from is None:
        raise s.error("notif_from", "is required to send email (e.g. "
                                    "\"%(app)s <noreply@example.org>\")")
    lifetime = duration_ms(s, "validation_token_lifetime",
                           s.raw("validation_token_lifetime", "1h"))
    delay = duration_ms(s, "notif_delay_before_mail", s.raw("notif_delay_before_mail", "10m"))
    return EmailConfig(
        notif_from=notif_from,
        smtp_host=s.str_("smtp_host", "localhost"),
        smtp_port=s.int_("smtp_port", 25, minimum=1),
        smtp_user=s.str_("smtp_user", None),
        smtp_pass=s.str_("smtp_pass", None),
        force_tls=s.bool_("force_tls", False),
        require_transport_security=s.bool_("require_transport_security", False),
        enable_tls=s.bool_("enable_tls", True),
        app_name=s.str_("app_name", "Matrix"),
        enable_notifs=s.bool_("enable_notifs", False),
        notif_for_new_users=s.bool_("notif_for_new_users", True),
        client_base_url=s.str_("client_base_url", None),
        validation_token_lifetime_ms=lifetime if lifetime is not None else 3_600_000,
        notif_delay_before_mail_ms=delay if delay is not None else 600_000)
